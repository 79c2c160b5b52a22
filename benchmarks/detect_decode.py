"""Decode + NMS cost of every decoder, and the detect pipeline's cost beside ``invoke()``.

1. YOLOv8 ``[1, 84, 8400]`` float outputs shaped like real ones (most cells low, each object a
   cluster of neighbouring candidates, and a worst case of hundreds of scattered ones): decode
   and NMS p50/p90 (target ≤ 2 ms).
2. Every decoder on int8 outputs of its real size (YOLOv5 ``[1, 25200, 85]``, YOLOv8, YOLOX-nano
   ``[1, 3549, 85]``, YOLOv3 grids at 416, SSD MobileNet raw ``[1, 1917, 4]`` + ``[1, 1917, 91]``),
   20 objects, at ``--conf 0.25`` and ``0.001``: decode + NMS through ``decode_raw`` (threshold in
   the quantized domain, dequantize what passes) and the old way (dequantize everything first).
   Target: YOLOv5 int8 ≤ 1 ms p50 at 0.25.
3. The whole pipeline of a YOLOv8n-shaped int8 model this script builds (Keras: the YOLOv8n
   backbone, neck and DFL head with random weights, input int8 640x640, output int8
   ``[1, 84, 8400]``; class biases set so ~40 cells pass 0.25, as a trained model's few
   objects do) on camera-sized frames, 2 threads: pre + post as a share of ``invoke()``
   (target ≤ 10%). ``--model M`` times another model instead.

    .venv/bin/python benchmarks/detect_decode.py [--runs 300] [--model M.tflite] [--threads 2] [--frame 1280x720]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.console import table  # noqa: E402
from sdk.decoders import choose_decoder, make_decoder  # noqa: E402
from sdk.nms import nms  # noqa: E402
from sdk.quant import dequantize, quantize  # noqa: E402

W = H = 640
CACHE = Path(tempfile.gettempdir()) / "edgesdk-bench"


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


def _q(x: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    lo, hi = float(min(x.min(), 0)), float(max(x.max(), 0))
    scale = (hi - lo) / 255
    zp = int(np.clip(round(-128 - lo / scale), -128, 127))
    return quantize(x, scale, zp, np.int8), (scale, zp)


def int8_outputs(rng: np.random.Generator) -> dict[str, tuple[list, tuple[int, int], dict]]:
    """Each family's int8 outputs at real size with 20 objects of ~10 candidates: (outputs, input size, card)."""
    cases: dict[str, tuple[list, tuple[int, int], dict]] = {}
    v5 = np.zeros((1, 25200, 85), np.float32)
    v5[0, :, :4] = rng.uniform(0, 1, (25200, 4))
    v5[0, :, 4] = rng.beta(0.3, 300, 25200)  # background objectness ~0.001, class probabilities ~0.05
    v5[0, :, 5:] = rng.beta(0.5, 10, (25200, 80))
    for rows in np.array_split(rng.choice(25200, 200, replace=False), 20):  # 20 objects of 10 cells
        v5[0, rows, 4] = rng.uniform(0.5, 1, len(rows))
        v5[0, rows, 5 + rng.integers(0, 80)] = rng.uniform(0.6, 0.95, len(rows))
    cases["yolov5 [1,25200,85]"] = ([v5], (640, 640), {"decoder": "yolov5"})
    cases["yolov8 [1,84,8400]"] = ([v8_output(20, 10, 0) / np.array([W, H, W, H] + [1] * 80, np.float32)[None, :, None]], (640, 640), {})
    yx = v5[:, ::7][:, :3549].copy()  # a few of the objects' cells
    yx[0, :, :4] *= 416
    cases["yolox [1,3549,85]"] = ([yx], (416, 416), {"decoder": "yolox", "grid": False})
    grids = []
    for g in (52, 26, 13):
        t = rng.normal(0, 1, (1, g, g, 3 * 85)).astype(np.float32)
        t.reshape(g, g, 3, 85)[..., 4] = rng.normal(-8, 1.5, (g, g, 3))
        grids.append(t)
    cases["yolov3 3 grids @416"] = (grids, (416, 416), {"decoder": "yolov3"})
    enc = rng.normal(0, 1, (1, 1917, 4)).astype(np.float32)
    logits = rng.normal(-7, 1.5, (1, 1917, 91)).astype(np.float32)
    logits[0, rng.choice(1917, 200, replace=False), rng.integers(1, 91, 200)] = rng.uniform(0, 4, 200)
    cases["ssd raw [1,1917,91]"] = ([enc, logits], (300, 300), {"decoder": "ssd"})
    return cases


def decoder_table(runs: int) -> None:
    rows = []
    for name, (outs, size, card) in int8_outputs(np.random.default_rng(0)).items():
        q = [_q(o) for o in outs]
        stored, quant = [a for a, _ in q], [p for _, p in q]
        dec, _ = choose_decoder([o.shape for o in outs], size, card)
        for conf in (0.25, 0.001):
            def raw() -> None:
                b, s, c = dec.decode_raw(stored, quant, conf)  # noqa: B023
                nms(b, s, c, 0.45, 300)

            def old() -> None:
                b, s, c = dec([dequantize(a, *p) for a, p in zip(stored, quant)], conf)  # noqa: B023
                nms(b, s, c, 0.45, 300)

            r50, r90 = timed(raw, runs)
            o50, _ = timed(old, max(20, runs // 5))
            n = len(dec.decode_raw(stored, quant, conf)[1])
            rows.append({"int8 output": name, "conf": conf, "candidates": n, "decode_raw+nms p50": r50, "p90": r90, "dequantize all first p50": o50})
    print(table(rows, floatfmt=".3f"))


def build_yolov8n(path: Path) -> None:
    """The YOLOv8n-shaped int8 model, built in a child process (keeps TensorFlow out of the timings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "yolov8n_shaped.py"), str(path)], check=True, timeout=1800)


def camera_frames(size: tuple[int, int], n: int = 30) -> list[np.ndarray]:
    """``n`` frames of the bundled demo video scaled to a camera size (content only sets the candidates)."""
    import cv2

    cap = cv2.VideoCapture(str(ROOT / "apps" / "detect" / "samples" / "demo.mp4"))
    frames = []
    while len(frames) < n and (f := cap.read()[1]) is not None:
        frames.append(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
    return frames


def pipeline(model: str, threads: int, frame_size: tuple[int, int], passes: int = 4) -> None:
    """Per-stage p50/mean of the detect pipeline, frames decoded beforehand, and pre + post vs invoke()."""
    from apps.detect.app import Detector, Settings
    from sdk.runner import Runner

    frames = camera_frames(frame_size)
    det = Detector(Runner(model, threads=threads), Settings(conf=0.25), say=lambda g: None)
    for f in frames[:5]:
        det(f)
    det.stats.reset()
    found = 0
    for _ in range(passes):
        for f in frames:
            found += len(det(f))
    s = det.stats.summaries()
    rows = [{"stage": k, "p50_ms": v["p50_ms"], "mean_ms": v["mean_ms"], "p90_ms": v["p90_ms"]} for k, v in s.items()]
    print(table(rows, floatfmt=".3f"))
    for stat in ("p50_ms", "mean_ms"):
        extra = s["pre"][stat] + s["post"][stat]
        print(f"pre + post ({stat[:-3]}): {extra:.2f} ms = {100 * extra / s['infer'][stat]:.1f}% of invoke() "
              f"(pipeline / invoke = {(extra + s['infer'][stat]) / s['infer'][stat]:.3f}x)")
    print(f"{model}: {len(frames)} frames of {frame_size[0]}x{frame_size[1]} x {passes}, threads {threads}, conf 0.25, "
          f"{found / (passes * len(frames)):.1f} detections a frame; {det.reason}")


def v8_table(runs: int) -> None:
    dec = make_decoder("yolov8", (W, H))
    rows = []
    for name, objects, per, scattered in (("5 objects × 10", 5, 10, 0), ("20 objects × 10", 20, 10, 0), ("50 objects × 8", 50, 8, 0), ("300 scattered", 0, 0, 300)):
        out = v8_output(objects, per, scattered)
        boxes, scores, cls = dec([out], 0.25)
        kept = nms(boxes, scores, cls, 0.45, 300)
        d50, _ = timed(lambda: dec([out], 0.25), runs)  # noqa: B023
        n50, _ = timed(lambda: nms(boxes, scores, cls, 0.45, 300), runs)  # noqa: B023

        def both() -> None:
            b, s, c = dec([out], 0.25)  # noqa: B023
            nms(b, s, c, 0.45, 300)

        t50, t90 = timed(both, runs)
        rows.append({"case [1,84,8400] float": name, "candidates": len(scores), "kept": len(kept), "decode_p50": d50, "nms_p50": n50, "total_p50": t50, "total_p90": t90})
    print(table(rows, floatfmt=".3f"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--model", default=None, help="time the pipeline of this .tflite instead of the YOLOv8n-shaped one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frame", default="1280x720", help="camera frame size WxH")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    v8_table(args.runs)
    print()
    decoder_table(args.runs)
    print(f"times in ms over {args.runs} runs, IoU 0.45, class-aware NMS, NumPy {np.__version__}")
    if not args.skip_pipeline:
        model = Path(args.model) if args.model else CACHE / "yolov8n_shaped_int8.tflite"
        if not model.is_file():
            print(f"\nbuilding {model} (once)...", flush=True)
            build_yolov8n(model)
        print()
        w, h = (int(v) for v in args.frame.split("x"))
        pipeline(str(model), args.threads, (w, h))


if __name__ == "__main__":
    main()
