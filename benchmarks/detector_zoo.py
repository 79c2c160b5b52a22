"""The detector zoo: one tiny model per output layout, run through ``edgesdk detect`` with and without flags.

The models are built with TensorFlow by ``tests/zoo_build.py`` (YOLOv2 and YOLOv3-tiny-style
anchor grids, YOLOv5, YOLOv8, YOLOX decoded and raw grid, SSD raw head and SSD with the real
``TFLite_Detection_PostProcess`` op, NanoDet levels); each scores the cells of one stride by their
colour, so a scene of coloured squares has known detections. For each model the table gives how
``edgesdk detect`` recognised it, the flags it needs, how many guesses it said on stderr, the
agreement of its detections with an independent reference decode (``tests/zoo.py``: matched /
total, a match being the same class at IoU ≥ 0.9, and the largest score difference) without
flags and with the documented ones, and the decoder's p50 time on the model's outputs.

    .venv/bin/python benchmarks/detector_zoo.py [--runs 500]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdk.console import table  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "edgesdk-bench" / "zoo"


def detect(model: Path, image: Path, flags: list[str]) -> tuple[int, list[dict], str]:
    """``edgesdk detect`` in this process: exit code, detections of the one image, stderr."""
    from cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["detect", "-m", str(model), "-s", str(image), "--json", "--stats-every", "0", *flags])
    lines = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    return code, (lines[0]["detections"] if lines else []), err.getvalue()


def decode_time(model: Path, frame: np.ndarray, flags: list[str], runs: int) -> tuple[float, str]:
    """p50 µs of the decoder (``decode_raw`` as the Detector calls it) on this frame's outputs, and how it was chosen."""
    from apps.detect.app import Detector, Settings
    from sdk.runner import Runner

    anchors = flags[flags.index("--anchors") + 1] if "--anchors" in flags else None
    det = Detector(Runner(model, threads=1), Settings(anchors=anchors), say=lambda g: None)
    x, _ = det.preprocess(frame)
    outs = det.runner.run(x, raw=det._raw)
    fn = (lambda: det.decoder.decode_raw(outs, det._quant, det.conf)) if det._raw else (lambda: det.decoder(outs, det.conf))
    for _ in range(20):
        fn()
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - t0
    how = det.reason.split(" (", 1)[1].split(")")[0].split(":")[0].replace("output shapes", "shapes").replace(" makes the outputs", "").split(" [[")[0]
    return float(np.median(t) * 1e6), f"{det.decoder.name} ({how})"


def _agree(got: list[dict], want: list, code: int) -> str:
    from tests.zoo import agreement

    if code:
        return "refused"
    m, n, d = agreement(got, want)
    return f"{m}/{n}" + (f" (Δ{d:.3f})" if m else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    import cv2

    from sdk.decoders import REGISTRY
    from tests.zoo import SPECS, build_zoo, reference, scene

    t0 = time.perf_counter()
    zoo = build_zoo(CACHE)
    print(f"zoo built in {CACHE} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for name, spec in SPECS.items():
        spec = {**spec, "name": name}
        if name == "nanodet" and "nanodet" not in REGISTRY:
            rows.append({"model": name, "layout": spec["layout"], "recognised as": "pending (no nanodet decoder yet)"})
            continue
        model, image = zoo / f"{name}.tflite", zoo / f"{name}.png"
        frame = scene(spec)[0]
        cv2.imwrite(str(image), frame)
        want = reference(model, spec, frame)
        code, got, err = detect(model, image, [])
        micros, recognised = decode_time(model, frame, spec["flags"], args.runs)
        with_flags = "-"
        if spec["flags"]:
            code2, got2, _ = detect(model, image, spec["flags"])
            with_flags = _agree(got2, want, code2)
        rows.append({
            "model": name,
            "layout": spec["layout"],
            "recognised as": recognised,
            "flags needed": " ".join(f"{f} '{v}'" if " " in v else f"{f} {v}" for f, v in zip(spec["flags"][::2], spec["flags"][1::2])) or "none",
            "guesses said": sum(ln.startswith("detect: guessed") or ": guessed " in ln for ln in err.splitlines()),
            "no flags": _agree(got, want, code),
            "with flags": with_flags,
            "decode p50 us": round(micros, 1),
        })
    print(table(rows))
    print("agreement: detections matched (same class, IoU >= 0.9) / the larger of the two counts, Δ the largest score difference; "
          "decode: one frame's outputs, 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
