"""``edgesdk demo`` part for the trigger-word app: the default model on two bundled samples.

``samples/activate.wav`` says the word once in a sentence over noise, ``samples/other.wav``
says a similar sentence without it (both rebuilt by ``samples/make_samples.sh``).
"""

from __future__ import annotations

import time
from pathlib import Path

from sdk.console import Output

SAMPLES = Path(__file__).resolve().parent / "samples"


def demo(out: Output) -> None:
    """Run the default model on the bundled samples and print the events."""
    from apps.trigger_word.app import DEFAULT_MODEL, TriggerWordDetector
    from sdk.sources.audio import WavFileSource

    if not DEFAULT_MODEL.is_file():
        out.emit(
            {"app": "trigger-word", "status": "default model missing", "model": str(DEFAULT_MODEL)},
            f"default model {DEFAULT_MODEL} is missing; build it with `edgesdk train trigger-word`",
        )
        return
    det = TriggerWordDetector(DEFAULT_MODEL)
    out.text(f"model {DEFAULT_MODEL.name}: word {det.word!r}, threshold {det.threshold:g}")
    for name in ("activate.wav", "other.wav"):
        det.reset()
        start = time.perf_counter()
        with WavFileSource(SAMPLES / name, sample_rate=det.sample_rate) as src:
            events = list(det.run(src))
            duration = src.duration
        wall = time.perf_counter() - start
        peak = det.logic.peak
        found = ", ".join(f"{e['time']:.2f} s (score {e['score']:.2f})" for e in events) or f"none (peak score {peak:.2f})"
        obj = {"app": "trigger-word", "sample": name, "events": events, "peak_score": round(peak, 4)}
        obj.update(audio_s=round(duration, 2), speed_x_realtime=round(duration / wall))
        out.emit(obj, f"  {name} ({duration:.1f} s, {duration / wall:.0f}x real time): detections: {found}")
