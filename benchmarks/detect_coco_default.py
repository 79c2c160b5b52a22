"""The shipped COCO detectors: file size, ``invoke()`` latency and the pipeline on the bundled photos.

    .venv/bin/python benchmarks/detect_coco_default.py [--threads 2] [--runs 50] [--rounds 5]

Models: ``detect_fp32.tflite`` / ``detect_int8.tflite`` (NanoDet-m 416, the default of
``edgesdk detect``) and ``person_ssdlite_int8.tflite`` when present. Latency is the Runner's
``invoke()`` (XNNPACK on the CPU) on a fixed input, measured in ``--rounds`` interleaved rounds
of ``--runs`` after warm-up; the best round's p50 is shown with the median round's, because a
shared machine's other jobs only ever add time. The CPU flags and load average are printed
beside the numbers (int8 speed depends on VNNI/AMX). Target of the issue: int8 p50 ≤ 12 ms at
2 threads. The card's measured quality (import exactness, int8 against fp32, Edge TPU
readiness) is printed from the int8 card.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.console import table  # noqa: E402
from sdk.runner import Runner  # noqa: E402

MODELS = ROOT / "apps" / "detect" / "models"
PHOTOS = ROOT / "apps" / "detect" / "samples" / "photos"
NAMES = ("detect_fp32.tflite", "detect_int8.tflite", "person_ssdlite_int8.tflite")


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = sorted(set(re.findall(r"\b(avx2|avx512f|avx512_vnni|amx_int8|asimddp|asimd)\b", text)))
    return " ".join(flags) or "none of avx2/avx512f/avx512_vnni/amx_int8/asimddp"


def rounds(paths: list[Path], threads: int, runs: int, n_rounds: int) -> dict[str, list[float]]:
    """Per model, the p50 of each interleaved round."""
    runners = {p.name: Runner(str(p), threads=threads) for p in paths}
    inputs = {k: np.random.default_rng(0).uniform(-1, 1, r.inputs[0].shape).astype(np.float32) for k, r in runners.items()}
    for k, r in runners.items():
        for _ in range(5):
            r.run(inputs[k])
    out: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(n_rounds):
        for k, r in runners.items():
            r.stats.reset()
            for _ in range(runs):
                r.run(inputs[k])
            out[k].append(r.stats.summary("infer")["p50_ms"])
    return out


def pipeline(threads: int) -> dict[str, float]:
    """Per-stage p50 of the detect pipeline (default model) over the bundled photos, 5 passes."""
    import cv2

    from apps.detect.app import DEFAULT_MODEL, Detector

    det = Detector(Runner(DEFAULT_MODEL, threads=threads))
    images = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    for _ in range(5):
        for img in images:
            det(img)
    return {k: round(v["p50_ms"], 2) for k, v in det.stats.summaries().items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    paths = [MODELS / n for n in NAMES if (MODELS / n).is_file()]
    if not paths:
        print("no shipped detector found; run scripts/build_detect_default.py", file=sys.stderr)
        return 1
    res = rounds(paths, args.threads, args.runs, args.rounds)
    rows = [{"model": k, "MB": round((MODELS / k).stat().st_size / 1e6, 2), "p50 ms best round": round(min(v), 2),
             "p50 ms median round": round(float(np.median(v)), 2)} for k, v in res.items()]
    print(f"invoke() p50, {args.threads} thread(s), {args.rounds} rounds x {args.runs} runs; CPU flags: {cpu_flags()}; "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(table(rows))
    if "detect_int8.tflite" in res:
        best = min(res["detect_int8.tflite"])
        print(f"default int8 p50 {best:.2f} ms (target <= 12 ms at 2 threads): {'met' if best <= 12 else 'not met'} on this machine")
        print("pipeline p50 per stage (ms) on the bundled photos:", pipeline(args.threads))
        from sdk.card import read_card

        card = read_card(MODELS / "detect_int8.tflite")
        if card is not None:
            for key in ("exactness", "int8_vs_fp32", "edgetpu_readiness"):
                print(f"card metrics.{key}: {card.metrics.get(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
