"""The real microphone path: PulseAudio null sink as the default source, audio played into it.

``paplay -d vmic`` plays into a null sink whose monitor is the default source, so
``edgesdk trigger-word --mic`` records it through PortAudio exactly as from a microphone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apps.trigger_word.app import DEFAULT_MODEL
from sdk.sources.audio import write_wav
from tests.test_audio_tone_model import SR, tone_model, tone_stream

pytestmark = pytest.mark.mic
EDGESDK = str(Path(sys.executable).parent / "edgesdk")


def _pactl(*args: str) -> str:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=20, check=True).stdout


@pytest.fixture(scope="module")
def vmic() -> str:
    """A running PulseAudio with a null sink ``vmic`` whose monitor is the default source."""
    # "already running" (exit 1) is fine; `pactl info` below proves a server answers
    subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True, timeout=20)
    for _ in range(50):
        if subprocess.run(["pactl", "info"], capture_output=True, timeout=20).returncode == 0:
            break
        time.sleep(0.1)
    if "vmic\t" not in _pactl("list", "short", "sinks"):
        _pactl("load-module", "module-null-sink", "sink_name=vmic")
    _pactl("set-default-source", "vmic.monitor")
    return "vmic"


def _listen_and_play(model: Path | None, wav: Path, duration: float, *extra: str, lead_s: float = 0.3) -> tuple[list[dict], str]:
    """Run ``edgesdk trigger-word --mic --json`` while ``paplay`` plays ``wav`` into the virtual mic ``lead_s`` after it opens."""
    cmd = [EDGESDK, "trigger-word", "--mic", "--json", "--duration", str(duration), *extra]
    if model is not None:
        cmd += ["--model", str(model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # "listening for ..." once the microphone is open
        assert "listening" in first, first + proc.stderr.read()
        time.sleep(lead_s)
        subprocess.run(["paplay", "-d", "vmic", str(wav)], check=True, timeout=60)
        out, err = proc.communicate(timeout=duration + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()], first + err


@pytest.fixture(scope="module")
def tone_tflite(tmp_path_factory) -> Path:
    return tone_model(tmp_path_factory.mktemp("mic") / "tone.tflite")


@pytest.mark.tensorflow
def test_mic_tone_bursts_give_events(vmic, tone_tflite, tmp_path):
    wav = tmp_path / "bursts.wav"
    write_wav(wav, tone_stream([(1.0, 0.3), (3.0, 0.3)], 4.5, seed=5), SR)
    events, log = _listen_and_play(tone_tflite, wav, 7.0)
    assert len(events) == 2, log
    assert all(e["event"] == "trigger" and e["word"] == "tone" and e["score"] >= 0.5 for e in events)
    assert abs(events[1]["time"] - events[0]["time"] - 2.0) < 0.15  # stream time follows the audio


@pytest.mark.tensorflow
def test_mic_quiet_audio_gives_no_event(vmic, tone_tflite, tmp_path):
    wav = tmp_path / "other.wav"
    write_wav(wav, tone_stream([(1.0, 0.3)], 2.5, seed=6, freq=3000.0), SR)
    events, log = _listen_and_play(tone_tflite, wav, 4.0)
    assert events == [], log


def test_mic_records_at_native_rate_when_model_rate_is_refused(vmic, tmp_path, monkeypatch):
    import sounddevice as sd

    from sdk.sources.audio import MicrophoneSource

    real_check = sd.check_input_settings

    def no_16k(device=None, samplerate=None, **kw):  # a device that only records at its native rate
        if samplerate == 16000:
            raise sd.PortAudioError("Invalid sample rate")
        return real_check(device=device, samplerate=samplerate, **kw)

    monkeypatch.setattr(sd, "check_input_settings", no_16k)
    wav = tmp_path / "tone.wav"
    write_wav(wav, 0.5 * np.sin(2 * np.pi * 1000 * np.arange(3 * SR) / SR), SR)
    with MicrophoneSource(sample_rate=16000, duration=2.5) as mic:
        assert mic.open_rate == 44100
        player = subprocess.Popen(["paplay", "-d", "vmic", str(wav)])
        chunks = list(mic)
        player.wait(timeout=30)
    x = np.concatenate([c.samples for c in chunks])
    assert len(x) == int(2.5 * 16000) and all(c.sample_rate == 16000 for c in chunks)
    loud = x[np.abs(x) > 0.05]
    assert loud.size > 8000, "the played tone must be recorded"
    seg = x[-8000:] if np.abs(x[-8000:]).max() > 0.1 else loud[:8000]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert abs(np.fft.rfftfreq(len(seg), 1 / 16000)[spec.argmax()] - 1000) < 10


@pytest.mark.tensorflow
def test_mic_absent_device_lists_inputs(vmic, tone_tflite):
    r = subprocess.run(
        [EDGESDK, "trigger-word", "-m", str(tone_tflite), "--mic", "no-such-mic"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no-such-mic" in r.stderr and "input devices are:" in r.stderr and "pulse" in r.stderr


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the shipped default model is not built yet")
@pytest.mark.parametrize("sample,expected", [("activate.wav", 1), ("other.wav", 0)])
def test_mic_bundled_samples_with_default_model(vmic, sample, expected):
    """The demo's samples (espeak-ng sentences over noise, with and without the word) played into the microphone,
    detected at the card's own threshold (the sample scores 0.9999 from the file)."""
    wav = DEFAULT_MODEL.parent.parent / "samples" / sample
    events, log = _listen_and_play(None, wav, 6.0, lead_s=0.5)
    assert len(events) == expected, log
    assert all(e["word"] == "activate" for e in events)


@pytest.mark.tensorflow
def test_chime_is_played_through_sounddevice(vmic, tone_tflite, tmp_path):
    from sdk.sources.audio import MicrophoneSource

    wav = tmp_path / "burst.wav"
    write_wav(wav, tone_stream([(1.0, 0.3)], 2.0, seed=7, freq=1000.0), SR)
    # the default sink is vmic: record its monitor while the CLI chimes on a detection from a file
    with MicrophoneSource(sample_rate=SR, duration=6.0) as mic:
        proc = subprocess.Popen([EDGESDK, "trigger-word", "-m", str(tone_tflite), "-i", str(wav), "--chime", "--json", "-q"],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PULSE_SINK": "vmic"})  # fmt: skip
        x = np.concatenate([c.samples for c in mic])
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and len(out.splitlines()) == 1
    loud = np.flatnonzero(np.abs(x) > 0.05)
    assert loud.size > 0.08 * SR, "the chime must reach the sound server"
    seg = x[loud[0] : loud[0] + 2048]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert abs(np.fft.rfftfreq(len(seg), 1 / SR)[spec.argmax()] - 880) < 15


def test_input_device_by_index_and_name(vmic):
    from sdk.errors import SourceError
    from sdk.sources.audio import MicrophoneSource, input_devices, resolve_input_device

    # PortAudio was first initialised (conftest's probe) before this module started PulseAudio:
    # resolving a name rescans, so the server's device is found without restarting the process
    pulse = resolve_input_device("pulse")
    devs = {d["name"]: d["index"] for d in input_devices()}
    assert devs.get("pulse") == pulse
    assert resolve_input_device("PULSE") == resolve_input_device(str(devs["pulse"])) == resolve_input_device(devs["pulse"]) == devs["pulse"]
    assert resolve_input_device(None) is None
    with pytest.raises(SourceError, match="input devices are: .*pulse"):
        resolve_input_device(999)
    with pytest.raises(SourceError, match="'u' matches several input devices .*give the index"):
        resolve_input_device("u")  # pulse, default
    with MicrophoneSource(device="pulse", duration=0.2, chunk=800) as mic:
        chunks = list(mic)
    assert sum(len(c.samples) for c in chunks) == 3200 and chunks[0].time == 0.0
