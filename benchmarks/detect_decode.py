"""Decode + NMS cost of YOLO outputs (target: a [1, 84, 8400] output in ≤ 2 ms).

Synthetic outputs shaped like real ones: most of the 8400 cells score low, each object lights
up a cluster of neighbouring cells with jittered boxes (what a trained YOLOv8 produces), and a
worst case with hundreds of scattered candidates. Prints p50/p90 in ms, and an int8 output
decoded both ways (dequantize everything first, or ``Decoder.decode_raw``).

With ``--model``, also the whole per-frame pipeline of that model on a video (default: the
bundled demo) and the share of the frame time spent outside ``invoke()`` (target ≤ 15%).

    .venv/bin/python benchmarks/detect_decode.py [--runs 300] [--model M.tflite [--video V] [--threads N]]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sdk.console import table
from sdk.decoders import make_decoder
from sdk.nms import nms
from sdk.runner import TensorSpec

W = H = 640


def v8_output(objects: int, per_object: int, scattered: int, seed: int = 0) -> np.ndarray:
    """A float ``[1, 84, 8400]`` with ``objects`` clusters of ``per_object`` candidates and ``scattered`` loose ones."""
    rng = np.random.default_rng(seed)
    out = np.zeros((1, 84, 8400), np.float32)
    out[0, :4] = rng.uniform(0, W, (4, 8400))
    out[0, 4:] = rng.uniform(0, 0.02, (80, 8400))  # background
    cells = rng.permutation(8400)
    k = 0
    for _ in range(objects):
        cx, cy, w, h = rng.uniform(40, 600), rng.uniform(40, 600), rng.uniform(20, 200), rng.uniform(20, 200)
        cls = rng.integers(0, 80)
        for _ in range(per_object):
            out[0, :4, cells[k]] = [cx + rng.normal(0, 3), cy + rng.normal(0, 3), w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
            out[0, 4 + cls, cells[k]] = rng.uniform(0.3, 0.95)
            k += 1
    for _ in range(scattered):
        out[0, :4, cells[k]] = [rng.uniform(0, W), rng.uniform(0, H), rng.uniform(10, 80), rng.uniform(10, 80)]
        out[0, 4 + rng.integers(0, 80), cells[k]] = rng.uniform(0.3, 0.95)
        k += 1
    return out


def timed(fn, runs: int) -> tuple[float, float]:
    for _ in range(10):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
    return float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 90) * 1e3)


def pipeline(model: str, video: str, threads: int | None, passes: int = 5) -> None:
    """Per-stage p50/mean of the detect pipeline over every frame of ``video``, decoded up front."""
    import cv2

    from apps.detect.app import Detector
    from sdk.runner import Runner

    cap = cv2.VideoCapture(video)
    frames = []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    det = Detector(Runner(model, threads=threads))
    for f in frames[:10]:
        det(f)
    det.stats.reset()
    for _ in range(passes):
        for f in frames:
            det(f)
    s = det.stats.summaries()
    rows = [{"stage": k, "p50_ms": v["p50_ms"], "mean_ms": v["mean_ms"]} for k, v in s.items()]
    print(table(rows, floatfmt=".3f"))
    for stat in ("p50_ms", "mean_ms"):
        total = sum(v[stat] for v in s.values())
        print(f"outside invoke() ({stat[:-3]}): {100 * (total - s['infer'][stat]) / total:.1f}% of the frame time")
    print(f"{model}, {len(frames)} frames × {passes} of {video}, threads {det.runner.threads}, {det.reason}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--model", default=None, help="also time the whole pipeline of this .tflite on --video")
    ap.add_argument("--video", default="apps/detect/samples/demo.mp4")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.model:
        pipeline(args.model, args.video, args.threads)
        print()
    dec = make_decoder("yolov8", (W, H))
    rows = []
    cases = [("5 objects × 10", 5, 10, 0), ("20 objects × 10", 20, 10, 0), ("50 objects × 8", 50, 8, 0), ("300 scattered", 0, 0, 300)]
    for name, objects, per, scattered in cases:
        out = v8_output(objects, per, scattered)
        boxes, scores, cls = dec([out], 0.25)
        kept = nms(boxes, scores, cls, 0.45, 300)
        d50, d90 = timed(lambda: dec([out], 0.25), args.runs)  # noqa: B023
        n50, n90 = timed(lambda: nms(boxes, scores, cls, 0.45, 300), args.runs)  # noqa: B023

        def both() -> None:
            b, s, c = dec([out], 0.25)  # noqa: B023
            nms(b, s, c, 0.45, 300)

        t50, t90 = timed(both, args.runs)
        rows.append({"case [1,84,8400]": name, "candidates": len(scores), "kept": len(kept), "decode_p50": d50, "nms_p50": n50, "total_p50": t50, "total_p90": t90})
    print(table(rows, floatfmt=".3f"))
    spec = TensorSpec("out", 0, (1, 84, 8400), np.dtype(np.int8), 0.0039, -128)
    q = spec.quantize(v8_output(20, 10, 0))
    quant = [(spec.scale, spec.zero_point)]
    deq50, _ = timed(lambda: spec.dequantize(q), args.runs)
    full50, _ = timed(lambda: nms(*dec([spec.dequantize(q)], 0.25), 0.45, 300), args.runs)
    raw50, _ = timed(lambda: nms(*dec.decode_raw([q], quant, 0.25), 0.45, 300), args.runs)
    print(f"\nint8 [1, 84, 8400], 20 objects × 10: dequantize all ({deq50:.3f}) + decode + NMS p50 {full50:.3f} ms; "
          f"decode_raw (threshold in int8, dequantize what passes) + NMS p50 {raw50:.3f} ms")
    print(f"times in ms over {args.runs} runs, score threshold 0.25, IoU 0.45, class-aware NMS, NumPy {np.__version__}")


if __name__ == "__main__":
    main()
