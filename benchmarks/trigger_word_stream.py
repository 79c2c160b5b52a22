"""Streaming cost of the default trigger-word detector: ms per 80 ms hop, x real time, and where it goes.

Feeds a few minutes of speech through ``TriggerWordDetector.process()`` on one thread, in chunks
of 1280 samples (one hop, as a microphone delivers it), 4000 (several hops per call, batched
into one front-end call) and the whole file at once (``0``: file processing, 16 hops per call).
One thread means the mel's BLAS calls too: ``OPENBLAS_NUM_THREADS`` is 1 unless set (on a busy
2-core machine a second OpenBLAS thread made file processing 4x slower). The audio is the
bundled samples and Allison's asterisk prompts (``asterisk-core-sounds-en-wav``, resampled to
16 kHz; low noise alone when not installed), in a fixed order, with a little noise. Not a test.

Columns: hops scored; ms per hop, median and best of ``--repeats`` uninstrumented passes (a
shared machine's other jobs only ever add time); x real time from the median; then one
instrumented pass split into the mel spectrogram, the front end's ``Runner.run`` (mostly its
invoke), the head's and the rest (buffering, quantizing, threshold logic, Python), with the mel
frames computed per hop (8 when every frame is computed once).
Target of issue 23: >= 300x real time on one core for both chunk sizes.

    .venv/bin/python benchmarks/trigger_word_stream.py [--model M.tflite] [--chunks 1280 4000 0] [--repeats 5] [--seconds 240]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when NumPy is first imported

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.trigger_word.app import DEFAULT_MODEL, TriggerWordDetector  # noqa: E402
from benchmarks.detect_coco_default import cpu_flags  # noqa: E402
from sdk.console import table  # noqa: E402
from sdk.runner import Runner  # noqa: E402
from sdk.sources.audio import read_wav  # noqa: E402

SAMPLES = ROOT / "apps" / "trigger_word" / "samples"
PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def speech(seconds: float, rate: int = 16000) -> np.ndarray:
    """``seconds`` of audio: the bundled samples, then prompts in name order, each followed by a pause."""
    rng = np.random.default_rng(0)
    files = sorted(SAMPLES.glob("*.wav")) + (sorted(PROMPTS.glob("*.wav")) if PROMPTS.is_dir() else [])
    parts, n = [], 0
    for f in files:
        if n >= seconds * rate:
            break
        x, _ = read_wav(f, rate)
        parts += [x, np.zeros(int(rng.integers(1000, 8000)), np.float32)]
        n += x.shape[0] + parts[-1].shape[0]
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    x = np.concatenate([x, np.zeros(max(0, int(seconds * rate) - x.shape[0]), np.float32)])[: int(seconds * rate)]
    return x + (0.003 * rng.standard_normal(x.shape[0])).astype(np.float32)


def stream(det: TriggerWordDetector, x: np.ndarray, chunk: int) -> float:
    """Seconds to feed ``x`` through ``det.process`` in chunks of ``chunk`` samples (0: all at once)."""
    chunk = chunk or x.shape[0]
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], chunk):
        det.process(x[i : i + chunk])
    return time.perf_counter() - t0


@contextmanager
def stages(det: TriggerWordDetector) -> Iterator[dict[str, float]]:
    """Seconds spent in the mel spectrogram, the front end's and the head's ``Runner.run`` while inside."""
    acc = {"mel": 0.0, "front": 0.0, "head": 0.0, "front_calls": 0, "mel_frames": 0}
    mel, run = det.features.mel, Runner.run

    def timed_mel(x: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = mel(x)
        acc["mel"] += time.perf_counter() - t
        acc["mel_frames"] += out.shape[0]
        return out

    def timed_run(runner: Runner, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        t = time.perf_counter()
        out = run(runner, *args, **kwargs)
        key = "head" if runner is det.runner else "front"  # every other runner is the front end's
        acc[key] += time.perf_counter() - t
        acc["front_calls"] += key == "front"
        return out

    det.features.mel, Runner.run = timed_mel, timed_run
    try:
        yield acc
    finally:
        det.features.mel, Runner.run = mel, run


def row(model: Path, x: np.ndarray, chunk: int, repeats: int) -> dict[str, Any]:
    rate = 16000
    walls = []
    for _ in range(repeats):
        det = TriggerWordDetector(Runner(model, threads=1))
        walls.append(stream(det, x, chunk))
    hops = max(0, (x.shape[0] // det.hop_samples) - (-(-det.window_samples // det.hop_samples)) + 1)
    det = TriggerWordDetector(Runner(model, threads=1))
    with stages(det) as acc:
        wall = stream(det, x, chunk)

    def ms(s: float) -> float:
        return round(1000 * s / hops, 3)

    med = float(np.median(walls))
    return {"chunk": chunk or "file", "hops": hops, "ms/hop median": ms(med), "ms/hop best": ms(min(walls)),
            "x real time": round(x.shape[0] / rate / med), "mel ms/hop": ms(acc["mel"]), "front end ms/hop": ms(acc["front"]),
            "head ms/hop": ms(acc["head"]), "other ms/hop": ms(wall - acc["mel"] - acc["front"] - acc["head"]),
            "front calls": acc["front_calls"], "mel frames/hop": round(acc["mel_frames"] / hops, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trigger-word model with a speech-embedding front end")
    ap.add_argument("--chunks", type=int, nargs="+", default=[1280, 4000, 0], help="samples per process() call (0: the whole file)")
    ap.add_argument("--repeats", type=int, default=5, help="uninstrumented passes per chunk size")
    ap.add_argument("--seconds", type=float, default=240.0, help="seconds of audio")
    args = ap.parse_args(argv)
    x = speech(args.seconds)
    rows = [row(args.model, x, c, args.repeats) for c in args.chunks]
    print(f"{args.model.name}, {x.shape[0] / 16000:.0f} s of audio, 1 thread (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}), "
          f"median of {args.repeats} passes; "
          f"CPU flags: {cpu_flags()}; load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(table(rows, floatfmt=".3f"))
    for r in rows:
        print(f"chunk {r['chunk']}: {r['x real time']}x real time (target >= 300x): {'met' if r['x real time'] >= 300 else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
