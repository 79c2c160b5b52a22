"""sdk.audio (features, resampling) and sdk.sources.audio (WAV files) against direct references."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest

from sdk.audio import FeatureParams, LogMel, Resampler, mel_filterbank, resample, to_mono
from sdk.errors import ConfigError, SourceError
from sdk.sources.audio import WavFileSource, read_wav, write_wav


def naive_features(x: np.ndarray, p: FeatureParams) -> np.ndarray:
    """One frame at a time, straight from the definition in sdk/audio.py's docstring."""
    win, hop = p.win_length, p.hop_length
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    fb = mel_filterbank(p).astype(np.float64)
    rows = []
    i = 0
    while i + win <= len(x):
        spec = np.fft.rfft(x[i : i + win] * hann, n=p.n_fft)
        mel = np.log(np.maximum(fb @ (np.abs(spec) ** 2), p.log_floor))
        if p.kind == "mfcc":
            n = p.n_mels
            k = np.arange(p.n_mfcc)[:, None]
            dct = np.cos(np.pi / n * (np.arange(n)[None] + 0.5) * k) * np.sqrt(2.0 / n)
            dct[0] /= np.sqrt(2.0)
            mel = dct @ mel
        rows.append(mel)
        i += hop
    return np.array(rows, dtype=np.float64).reshape(-1, p.n_features)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
@pytest.mark.parametrize("n", [0, 399, 400, 401, 16000, 16123])
def test_features_match_naive_loop(kind, n, rng):
    p = FeatureParams(kind=kind)
    x = (0.3 * rng.standard_normal(n)).astype(np.float32)
    got = LogMel(p)(x)
    ref = naive_features(x.astype(np.float64), p)
    assert got.dtype == np.float32 and got.shape == ref.shape == (LogMel(p).frames_for(n), p.n_features)
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-4)


def test_feature_params_roundtrip_and_validation():
    p = FeatureParams(n_mels=32, kind="mfcc", n_mfcc=10)
    assert FeatureParams.from_dict(p.to_dict()) == p
    assert FeatureParams.from_dict({"n_mels": 64}).n_mels == 64
    with pytest.raises(ConfigError, match="n_melz"):
        FeatureParams.from_dict({"n_melz": 64})
    with pytest.raises(ConfigError, match="kind"):
        FeatureParams(kind="cqt")
    with pytest.raises(ConfigError, match="fmax"):
        FeatureParams(fmax=9000)


def test_tone_lands_in_the_right_mel_band():
    p = FeatureParams()
    t = np.arange(16000) / 16000
    feats = LogMel(p)(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    centres = np.linspace(0, 8000, p.n_fft // 2 + 1)[mel_filterbank(p).argmax(axis=1)]
    assert abs(centres[feats.mean(axis=0).argmax()] - 1000) < 120
    lm = LogMel(p)
    assert lm.frames_for(lm.samples_for(98)) == 98 and lm.frames_for(lm.samples_for(98) - 1) == 97


def _peak_hz(y: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / rate)[spec.argmax()])


@pytest.mark.parametrize("src,dst", [(22050, 16000), (44100, 16000), (48000, 16000), (8000, 16000), (16000, 8000), (11025, 16000)])
def test_resample_keeps_frequency_and_length(src, dst):
    n = int(src * 1.5)
    x = np.sin(2 * np.pi * 997.0 * np.arange(n) / src).astype(np.float32)
    y = resample(x, src, dst)
    assert len(y) == -(-n * dst // src)
    assert abs(_peak_hz(y, dst) - 997.0) < 2.0
    ref = np.sin(2 * np.pi * 997.0 * np.arange(len(y)) / dst)
    assert np.abs(y - ref)[100:-100].max() < 1e-3  # linear phase, no delay


def test_resample_removes_content_above_new_nyquist():
    x = np.sin(2 * np.pi * 12000 * np.arange(44100) / 44100).astype(np.float32)
    assert np.abs(resample(x, 44100, 16000))[200:-200].max() < 1e-3  # 12 kHz would alias to 4 kHz


def test_resample_equal_rates_exact_and_streaming_equals_offline(rng):
    x = rng.standard_normal(5000).astype(np.float32)
    assert np.array_equal(resample(x, 16000, 16000), x)
    r = Resampler(44100, 16000)
    parts = [r.process(x[i : i + s]) for i, s in zip(range(0, 5000, 777), [777] * 7)] + [r.flush()]
    np.testing.assert_array_equal(np.concatenate(parts), resample(x, 44100, 16000))


def test_to_mono():
    st = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    np.testing.assert_allclose(to_mono(st), 0.25)
    assert to_mono(np.zeros(4)).shape == (4,)


def _write_raw(path, data: bytes, rate: int, channels: int, bits: int, tag: int = 1, extensible: bool = False) -> None:
    """A WAV file written by hand (the stdlib writes only PCM), for float and extensible formats."""
    import struct

    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 4) + b"INFO"
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _encode(x: np.ndarray, bits: int, fmt: str) -> bytes:
    if fmt == "float":
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    if bits == 24:
        v = np.round(x * (2**23 - 1)).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return v.tobytes()
    return np.round(x * (2 ** (bits - 1) - 1)).astype(f"<i{bits // 8}").tobytes()


@pytest.mark.parametrize(
    "bits,fmt,rate,channels,ext",
    [(8, "pcm", 8000, 1, False), (16, "pcm", 16000, 1, False), (24, "pcm", 44100, 2, False), (32, "pcm", 22050, 1, False),
     (32, "float", 48000, 2, False), (64, "float", 16000, 1, False), (16, "pcm", 44100, 2, True), (32, "float", 8000, 1, True)],
)  # fmt: skip
def test_wav_formats(tmp_path, bits, fmt, rate, channels, ext):
    n = rate  # 1 s
    mono = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    x = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    if channels > 1:
        x[:, 1] *= 0.5  # channels differ: the downmix is their mean
    path = tmp_path / "x.wav"
    _write_raw(path, _encode(x.reshape(-1), bits, fmt), rate, channels, bits, 3 if fmt == "float" else 1, ext)
    with WavFileSource(path, sample_rate=16000, chunk=1000) as src:
        assert (src.native_rate, src.channels) == (rate, channels)
        chunks = list(src)
    assert [c.time for c in chunks[:3]] == [0.0, 1000 / 16000, 2000 / 16000]
    assert all(len(c.samples) == 1000 for c in chunks[:-1])
    y = np.concatenate([c.samples for c in chunks])
    assert len(y) == 16000
    gain = 0.5 * (0.75 if channels > 1 else 1.0)
    ref = gain * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    tol = 0.02 if bits == 8 else 2e-3
    assert np.abs(y - ref)[50:-50].max() < tol


def test_write_and_read_wav_roundtrip(tmp_path, rng):
    x = (0.2 * rng.standard_normal(3000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 16000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and np.abs(y - x).max() < 1e-4


def test_streaming_writer_sizes_and_truncation(tmp_path):
    x = 0.1 * np.ones(1600)
    path = tmp_path / "s.wav"
    _write_raw(path, _encode(x, 16, "pcm"), 16000, 1, 16)
    raw = bytearray(path.read_bytes())
    raw[-4 - 3200 : -3200] = b"\xff\xff\xff\xff"  # data size unknown (streaming writer)
    path.write_bytes(bytes(raw[:-1]))  # and truncated mid-sample
    y, _ = read_wav(path, 16000)
    assert len(y) == 1599


@pytest.mark.parametrize(
    "content,match",
    [(b"", "no RIFF"), (b"hello, this is a text file\n" * 10, "no RIFF"), (b"RIFF\x00\x00\x00\x00WAVE", "no fmt"),
     (b"\x89PNG\r\n\x1a\n" + bytes(100), "no RIFF")],
)  # fmt: skip
def test_bad_files_one_line_errors(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=match) as e:
        WavFileSource(path)
    assert "\n" not in str(e.value) and "bad.wav" in str(e.value)


def test_empty_and_unsupported_wav(tmp_path):
    _write_raw(tmp_path / "empty.wav", b"", 16000, 1, 16)
    with pytest.raises(SourceError, match="no audio samples"):
        WavFileSource(tmp_path / "empty.wav")
    _write_raw(tmp_path / "alaw.wav", bytes(100), 8000, 1, 8, tag=6)
    with pytest.raises(SourceError, match="unsupported WAV encoding"):
        WavFileSource(tmp_path / "alaw.wav")
    with pytest.raises(SourceError, match="cannot read"):
        WavFileSource(tmp_path / "missing.wav")


def test_feature_speed_table(rng):
    """Prints feature extraction and resampling speed, by wall and CPU time (no assertion on time)."""
    x = (0.1 * rng.standard_normal(16000 * 10)).astype(np.float32)
    jobs = {
        "logmel": LogMel(FeatureParams()),
        "mfcc": LogMel(FeatureParams(kind="mfcc")),
        "resample 16k->44.1k": lambda a: resample(a, 16000, 44100),
    }
    for name, fn in jobs.items():
        fn(x)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(5):
            fn(x)
        wall, cpu = (time.perf_counter() - t) / 5, (time.process_time() - cpu) / 5
        print(f"\n{name}: 10 s of audio in {wall * 1000:.1f} ms wall ({10 / wall:.0f}x real time), {cpu * 1000:.1f} ms CPU")
