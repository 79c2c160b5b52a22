"""The course's trigger-word model at full size, as tf.keras 2.x saved it, through ``edgesdk convert``.

Writes the Deep Learning Specialization's network (input 5511×101 → Conv1D(196, 15, s4) →
BN → ReLU → GRU(128) → GRU(128) → TimeDistributed(Dense sigmoid), 1,375 steps) as a tf.keras
2.13 ``.h5`` with trained-looking random weights, then converts it in every mode, one process
per mode, and prints: load time, conversion wall time, size, route, cosine vs Keras and
``edgesdk bench`` p50 (per invoke; a streaming invoke covers 4 steps = 29 ms of audio).
Calibration/eval inputs are course spectrograms (:class:`sdk.audio.CourseSpectrogram`) of 10 s of
synthetic audio (noise, tones and chirps at random levels).

``--fit-bn`` sets the first BatchNormalization's moving statistics from the data (as training
leaves them) instead of random ones; ``--loop`` adds fp32 as one WHILE loop over the whole window.

Usage: ``python benchmarks/course_trigger_word.py [--modes fp32 int8 ...] [--calibration 100] [--fit-bn] [--loop] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]
STREAM_INVOKES = math.ceil(1375 / 4)  # invokes of the default 4-step model per 10 s window (1,375 output steps)


def synthetic_spectrograms(n: int, seed: int) -> np.ndarray:
    """Course features of ``n`` 10 s clips: noise at random levels plus a few tones and chirps."""
    from sdk.audio import CourseSpectrogram

    feats = CourseSpectrogram()
    rate, rng = feats.params.sample_rate, np.random.default_rng(seed)
    t = np.arange(10 * rate) / rate
    out = np.empty((n, 5511, 101), np.float32)
    for i in range(n):
        x = rng.normal(0, 10 ** rng.uniform(-3, -1.5), t.shape)
        for _ in range(rng.integers(1, 5)):
            start, dur = rng.uniform(0, 9), rng.uniform(0.2, 1.0)
            f0, f1 = rng.uniform(200, 3000, 2)
            env = ((t > start) & (t < start + dur)).astype(np.float64)
            x += env * 10 ** rng.uniform(-2, -0.5) * np.sin(2 * np.pi * (f0 + (f1 - f0) * (t - start) / (2 * dur)) * (t - start))
        out[i] = feats(np.clip(x, -1, 1))
    return out


def fit_first_bn(weights: list, calib: np.ndarray) -> list:
    """``weights`` with the first BatchNormalization's moving statistics taken from the Conv1D outputs on ``calib``.

    Training leaves a BatchNormalization's moving mean/variance at its input's statistics; random
    ones (mean ~0, variance ~1) after a Conv1D over a linear power spectrogram (values up to ~1e6)
    leave the GRU inputs at ~1e5, far from what a trained model sees.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    layers = dict(weights)
    kernel, bias = (w for _, w in layers["conv1d"])
    k = kernel.shape[0]
    outs = [np.einsum("tck,kcf->tf", sliding_window_view(x, k, axis=0)[::4], kernel) + bias for x in calib]
    y = np.concatenate(outs)
    (gn, g), (bn_, b), (mn, _), (vn, _) = layers["batch_normalization"]
    fitted = [(gn, g), (bn_, b), (mn, y.mean(0).astype(np.float32)), (vn, y.var(0).astype(np.float32))]
    return [(name, fitted if name == "batch_normalization" else ws) for name, ws in weights]


def route_of(rep: dict) -> str:
    return rep.get("route", {}).get("route", "-")


def bench_p50(path: Path, runs: int) -> float:
    res = subprocess.run([sys.executable, "-m", "cli", "bench", "--json", str(path), "--runs", str(runs), "--threads", "2"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return float(json.loads(res.stdout.strip().splitlines()[0])["p50_ms"])


def load_time(h5: Path) -> float:
    code = ("import sys, time; sys.path.insert(0, '.'); from pathlib import Path; import keras; from converters import loader; "
            f"t = time.perf_counter(); loader.load_model(Path({str(h5)!r}), {{}}, work=Path({str(h5.parent)!r})); "
            "print(time.perf_counter() - t)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def cpu_flags() -> str:
    """The CPU features that decide int8 vs fp32 speed (FINDINGS.md: state them beside every speed figure)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in words) or "none of avx2/avx512/amx"


def convert_row(h5: Path, work: Path, mode: str, route: str, runs: int) -> dict:
    """Convert ``h5`` in ``mode`` through ``edgesdk convert`` (its own process, so the wall time includes TensorFlow's start)."""
    out = work / f"course_{mode}{'_loop' if route == 'loop' else ''}.tflite"
    cmd = [sys.executable, "-m", "cli", "convert", "--json", str(h5), "--mode", mode, "--eval", str(work / "eval.npy"), "-o", str(out),
           "--route", route] + (["--calibration", str(work / "calib.npy")] if mode in ("int8", "int16x8") else [])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode:
        return {"mode": mode, "error": (res.stderr.strip().splitlines() or ["?"])[-1][:120]}
    rep = json.loads(res.stdout.strip().splitlines()[-1])["report"]
    outs = rep["accuracy"]["outputs"]
    p50 = bench_p50(out, runs)
    return {"mode": mode, "route": route_of(rep), "convert_s": round(wall, 1), "size_MB": round(rep["size_bytes"] / 1e6, 3),
            "cosine": f"{min(o['cosine'] for o in outs):.4f}", "max_abs_err": f"{max(o['max_abs_err'] for o in outs):.3g}",
            "FULLY_CONNECTED": rep["ops"].get("FULLY_CONNECTED", 0), "p50_ms": round(p50, 3),
            "ms_per_10s": round(p50 * (STREAM_INVOKES if route_of(rep) == "stream" else 1), 1)}


def main(argv: list[str] | None = None) -> int:
    from tests.models import course_trigger_word_config, course_trigger_word_weights, write_tfkeras2_h5

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--calibration", type=int, default=100)
    ap.add_argument("--eval", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--loop", action="store_true", help="also convert fp32 with route loop (the full 10 s WHILE-loop model)")
    ap.add_argument("--fit-bn", action="store_true", help="the first BatchNormalization's moving statistics from the data, as training leaves them")
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="edgesdk-bench-course-"))
    work.mkdir(parents=True, exist_ok=True)
    calib = synthetic_spectrograms(args.calibration, 0)
    weights = course_trigger_word_weights()
    if args.fit_bn:
        weights = fit_first_bn(weights, calib[:20])
    h5 = write_tfkeras2_h5(work / "course.h5", course_trigger_word_config(), weights)
    np.save(work / "calib.npy", calib)
    np.save(work / "eval.npy", synthetic_spectrograms(args.eval, 1))
    print(f"model: {h5} ({h5.stat().st_size / 1e6:.2f} MB, tf.keras 2.13.1 layout, first BN {'fitted to the data' if args.fit_bn else 'random'}); load (translate + Keras 3 load): {load_time(h5):.2f} s")
    runs = [(m, "auto") for m in args.modes] + ([("fp32", "loop")] if args.loop else [])
    rows = [convert_row(h5, work, mode, route, args.runs) for mode, route in runs]
    from sdk.console import table

    print(table(rows))
    fp32 = next((r for r in rows if r["mode"] == "fp32" and r.get("route") == "stream"), None)
    int8 = next((r for r in rows if r["mode"] == "int8" and "size_MB" in r), None)
    if fp32 and int8:
        print(f"int8 / fp32 size: {int8['size_MB'] / fp32['size_MB']:.2f}x; int8 conversion {int8['convert_s']} s (wall, incl. TensorFlow start)")
    print(f"CPU flags: {cpu_flags()}")
    print("p50: one invoke; a streaming invoke is 4 output steps (16 frames, 29 ms of 44.1 kHz audio); a loop invoke is the whole 10 s window; "
          f"ms_per_10s: p50 x {STREAM_INVOKES} streaming invokes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
