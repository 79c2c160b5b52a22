"""Audio sources: WAV files and microphones, as iterators of :class:`AudioChunk`.

Both are context managers yielding mono float32 chunks at the requested rate; ``time`` is
the stream time (seconds since the start) of each chunk's first sample. Neither ever prompts.
"""

from __future__ import annotations

import logging
import queue
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sdk.audio import Resampler
from sdk.errors import ConfigError, SourceError
from sdk.paths import not_special
from sdk.types import AudioChunk

log = logging.getLogger("edgesdk.audio")

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class _WavInfo:
    """What a WAV header says: format, channels, rate, sample width and where the samples are."""

    def __init__(self, fmt: int, channels: int, rate: int, bits: int, data_offset: int, n_frames: int) -> None:
        self.fmt, self.channels, self.rate, self.bits = fmt, channels, rate, bits
        self.data_offset, self.n_frames = data_offset, n_frames
        self.frame_bytes = channels * bits // 8


def _parse_header(f: BinaryIO, name: str, size: int) -> _WavInfo:
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        raise SourceError(f"{name}: not a WAV file (no RIFF/WAVE header); convert it, e.g. `sox IN -r 16000 -c 1 OUT.wav`")
    if head[:4] == b"RIFX":
        raise SourceError(f"{name}: big-endian RIFX WAV is not supported; convert it with `sox {name} -r 16000 OUT.wav`")
    fmt_info: tuple[int, int, int, int] | None = None
    while True:
        hdr = f.read(8)
        if len(hdr) < 8:
            raise SourceError(f"{name}: WAV file has no {'data' if fmt_info else 'fmt '} chunk (truncated or corrupt)")
        cid, csize = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if cid == b"fmt ":
            body = f.read(csize + (csize & 1))
            if len(body) < 16:
                raise SourceError(f"{name}: WAV fmt chunk is {len(body)} bytes, expected at least 16 (corrupt file)")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
            fmt_info = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt_info is None:
                raise SourceError(f"{name}: WAV data chunk comes before the fmt chunk (corrupt file)")
            offset = f.tell()
            # streaming writers leave the size at 0 or 0xFFFFFFFF: trust the file length instead
            avail = size - offset
            nbytes = avail if csize in (0, 0xFFFFFFFF) or csize > avail else csize
            info = _WavInfo(*fmt_info, offset, 0)
            _check_format(info, name)
            info.n_frames = nbytes // info.frame_bytes
            return info
        else:
            f.seek(csize + (csize & 1), 1)


def _check_format(info: _WavInfo, name: str) -> None:
    ok = (info.fmt == _PCM and info.bits in (8, 16, 24, 32)) or (info.fmt == _FLOAT and info.bits in (32, 64))
    if not ok:
        raise SourceError(
            f"{name}: unsupported WAV encoding (format tag {info.fmt}, {info.bits} bits); expected 8/16/24/32-bit PCM or "
            "32/64-bit float; convert with `sox IN -b 16 OUT.wav`"
        )
    if info.channels < 1 or info.rate < 1:
        raise SourceError(f"{name}: WAV header says {info.channels} channels at {info.rate} Hz (corrupt file)")


def _decode(raw: bytes, info: _WavInfo) -> np.ndarray:
    """Little-endian sample bytes to float32 ``[frames, channels]`` in [-1, 1]."""
    if info.fmt == _FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if info.bits == 32 else "<f8").astype(np.float32)
    elif info.bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif info.bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif info.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        x = v.astype(np.float32) / 8388608.0
    else:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    return x.reshape(-1, info.channels)


class WavFileSource:
    """A WAV file as mono chunks at ``sample_rate`` (resampled and downmixed as needed).

    Args:
        path: ``.wav`` file: 8/16/24/32-bit PCM or 32/64-bit float, any rate and channel count.
        sample_rate: Rate of the chunks produced (``None``: the file's own rate).
        chunk: Samples per chunk (at ``sample_rate``; the last may be shorter).

    Raises:
        SourceError: When the file is missing, empty, corrupt or not a supported WAV.
    """

    def __init__(self, path: str | Path, sample_rate: int | None = 16000, chunk: int = 1280) -> None:
        self.path = Path(path)
        self.chunk = int(chunk)
        if self.chunk < 1:
            raise SourceError(f"{path}: chunk must be >= 1 sample, got {chunk}")
        try:
            not_special(self.path, "give a .wav file", SourceError, where=str(path))
            size = self.path.stat().st_size
            with self.path.open("rb") as f:
                self.info = _parse_header(f, str(path), size)
        except OSError as e:
            if isinstance(e, SourceError):
                raise
            raise SourceError(f"{path}: cannot read audio file ({e.strerror or e})") from e
        if self.info.n_frames == 0:
            raise SourceError(f"{path}: WAV file contains no audio samples")
        self.sample_rate = int(sample_rate) if sample_rate else self.info.rate
        self._file: BinaryIO | None = None

    @property
    def native_rate(self) -> int:
        return self.info.rate

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.info.n_frames / self.info.rate

    def __enter__(self) -> WavFileSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __iter__(self) -> Iterator[AudioChunk]:
        info = self.info
        resampler = Resampler(info.rate, self.sample_rate)
        pending = np.zeros(0, dtype=np.float32)
        emitted = 0
        block = max(1, 65536 // info.frame_bytes)  # read ~64 kB at a time: bounded memory for long files
        self._file = self.path.open("rb")
        try:
            self._file.seek(info.data_offset)
            left = info.n_frames
            while True:
                n = min(block, left)
                raw = self._file.read(n * info.frame_bytes) if n else b""
                left -= n
                got = len(raw) // info.frame_bytes
                mono = _decode(raw[: got * info.frame_bytes], info).mean(axis=1, dtype=np.float32)
                if info.fmt == _FLOAT and not np.isfinite(mono).all():
                    raise SourceError(f"{self.path}: float WAV with NaN or infinite samples; re-export the audio")
                done = got == 0 or left == 0
                out = resampler.process(mono)
                if done:
                    out = np.concatenate([out, resampler.flush()])
                pending = np.concatenate([pending, out])
                while pending.shape[0] >= self.chunk or (done and pending.shape[0]):
                    piece, pending = pending[: self.chunk], pending[self.chunk :]
                    yield AudioChunk(piece, self.sample_rate, emitted / self.sample_rate)
                    emitted += piece.shape[0]
                if done:
                    return
        finally:
            self.close()


def wav_files(folder: str | Path, param: str) -> list[Path]:
    """The ``.wav`` files under ``folder`` (recursively, sorted).

    Args:
        folder: The folder.
        param: The caller's parameter that named ``folder`` (for the error message).

    Raises:
        ConfigError: When ``folder`` is not a folder or holds no ``.wav`` file (naming ``param``).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{param} {folder}: not a folder; give a folder of .wav files", param=param)
    files = sorted(root.rglob("*.wav"))
    if not files:
        raise ConfigError(f"{param} {folder}: no .wav files in it", param=param)
    return files


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Whole WAV file as mono float32, resampled to ``sample_rate`` when given.

    Returns:
        ``(samples, rate)``.

    Raises:
        SourceError: As :class:`WavFileSource`.
    """
    src = WavFileSource(path, sample_rate, 1 << 30)
    parts = [c.samples for c in src]
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), src.sample_rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono or ``[N, channels]`` float samples as 16-bit PCM WAV (atomically)."""
    import io
    import wave

    from sdk.card import atomic_write

    x = np.asarray(samples, dtype=np.float32)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    atomic_write(path, buf.getvalue())


def input_devices(rescan: bool = False) -> list[dict[str, Any]]:
    """Audio input devices PortAudio sees: index, name, channels, default rate.

    PortAudio lists devices once, when first used; ``rescan=True`` makes it look again
    (a sound server or USB microphone that appeared after start-up). Rescanning closes
    any open PortAudio stream, so it is done only before opening one.
    """
    from sdk.lazy import require

    sd = require("sounddevice", "recording from a microphone")
    try:
        if rescan:
            sd._terminate()  # sounddevice's documented way to re-enumerate devices
            sd._initialize()
        devices = sd.query_devices()
    except sd.PortAudioError as e:
        raise SourceError(f"cannot list audio devices: {e}") from e
    return [
        {"index": i, "name": d["name"], "channels": d["max_input_channels"], "default_rate": d["default_samplerate"]}
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def _device_list(devs: list[dict[str, Any]] | None = None) -> str:
    devs = input_devices() if devs is None else devs
    return "; ".join(f"{d['index']}: {d['name']} ({d['channels']} ch, {d['default_rate']:.0f} Hz)" for d in devs) or "none"


def resolve_input_device(device: int | str | None) -> int | None:
    """The PortAudio index of ``device`` (index, digits, or part of a name); ``None`` = default.

    When the device is not in PortAudio's list, the list is rescanned once first: a service
    started before PulseAudio, or a microphone plugged in later, is then found.

    Raises:
        SourceError: When no such input device exists (listing those that do), or a name
            matches several.
    """
    devs = input_devices()
    found = _matching_inputs(device, devs)
    if not found:
        devs = input_devices(rescan=True)
        found = _matching_inputs(device, devs)
    if device is None:
        if not found:
            raise SourceError("no audio input device found; connect a microphone or start PulseAudio (see `edgesdk doctor`)")
        return None
    if not found:
        raise SourceError(f"no audio input device {device!r}; input devices are: {_device_list(devs)}")
    if len(found) > 1:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in found)
        raise SourceError(f"device {device!r} matches several input devices ({names}); give the index", param="mic")
    return int(found[0]["index"])


def _matching_inputs(device: int | str | None, devs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs ``device`` names: all for ``None``, by index for digits, else by (part of) name, an exact name first."""
    if device is None:
        return devs
    if isinstance(device, int) or str(device).isdigit():
        return [d for d in devs if d["index"] == int(device)]
    matches = [d for d in devs if str(device).lower() in d["name"].lower()]
    exact = [d for d in matches if d["name"].lower() == str(device).lower()]
    return exact if len(exact) == 1 else matches


class MicrophoneSource:
    """A microphone as mono chunks at ``sample_rate``, via sounddevice (PortAudio).

    The PortAudio callback copies each block into a bounded queue; the iterator resamples
    when the device cannot record at ``sample_rate`` natively (it then opens at the device's
    default rate). If the consumer falls more than ``max_queue_s`` behind, blocks are dropped
    and counted in ``dropped`` (a warning is logged) rather than growing memory without bound.

    Args:
        device: ``None`` (default input), an index, or part of a device name.
        sample_rate: Rate of the chunks produced.
        chunk: Samples per chunk at ``sample_rate`` (approximate when resampling).
        max_queue_s: Seconds of audio the queue holds.
        duration: Stop after this many seconds of audio (``None``: until closed).
    """

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate: int = 16000,
        chunk: int = 1280,
        max_queue_s: float = 10.0,
        duration: float | None = None,
    ) -> None:
        from sdk.lazy import require

        self._sd = require("sounddevice", "recording from a microphone")
        self.sample_rate, self.chunk, self.duration = int(sample_rate), int(chunk), duration
        self.device = resolve_input_device(device)
        self.open_rate = self._pick_rate()
        block = max(1, round(self.chunk * self.open_rate / self.sample_rate))
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(2, int(max_queue_s * self.open_rate / block)))
        self._block = block
        self.dropped = 0
        self._stream: Any = None

    def _pick_rate(self) -> int:
        sd = self._sd
        try:
            sd.check_input_settings(device=self.device, samplerate=self.sample_rate, channels=1, dtype="float32")
            return self.sample_rate
        except (sd.PortAudioError, ValueError) as e:
            native = int(sd.query_devices(self.device, "input")["default_samplerate"])
            log.info("input device cannot record at %d Hz (%s); recording at %d Hz and resampling", self.sample_rate, e, native)
            return native

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped += frames

    def __enter__(self) -> MicrophoneSource:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        """Start recording (done by ``with`` or the first iteration)."""
        if self._stream is not None:
            return
        sd = self._sd
        try:
            self._stream = sd.InputStream(
                device=self.device, samplerate=self.open_rate, channels=1, dtype="float32", blocksize=self._block, callback=self._callback
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            self._stream = None
            raise SourceError(
                f"cannot open input device {self.device if self.device is not None else 'default'} "
                f"at {self.open_rate} Hz: {e}; input devices are: {_device_list()}"
            ) from e

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None

    def __iter__(self) -> Iterator[AudioChunk]:
        self.open()
        resampler = Resampler(self.open_rate, self.sample_rate)
        emitted, warned = 0, 0
        limit = None if self.duration is None else int(round(self.duration * self.sample_rate))
        try:
            while limit is None or emitted < limit:
                try:
                    block = self._queue.get(timeout=5.0)
                except queue.Empty as e:
                    raise SourceError(
                        f"input device {self.device if self.device is not None else 'default'} "
                        "delivered no audio for 5 s (device busy or disconnected?)"
                    ) from e
                if self.dropped > warned:
                    log.warning("audio input overflow: dropped %d samples (processing too slow)", self.dropped - warned)
                    warned = self.dropped
                out = resampler.process(block)
                if limit is not None:
                    out = out[: limit - emitted]
                if out.shape[0]:
                    yield AudioChunk(out, self.sample_rate, emitted / self.sample_rate)
                    emitted += out.shape[0]
        finally:
            self.close()
