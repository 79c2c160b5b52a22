"""Keras Applications (``weights=None``) through ``convert_modes``: size, conversion time, p50 and the accuracy lines.

Random weights give nearly constant outputs, so the report's top-1 column says
"not meaningful" rather than a misleading percentage; cosine and max error still show how
faithful each mode is. Calibration/eval: 50/20 random images with values in [0, 255], fed as the
model's raw input. p50: the CPU runner (all cores, XNNPACK), 30 runs after warm-up. A mode the
converter or the interpreter refuses shows its one-line error in the note column.
Full run: ~17 min on this project's 2-core host.

Usage: ``python benchmarks/keras_applications.py [--models MobileNetV2 ...] [--modes fp32 int8 ...] [--runs 30]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "NASNetMobile", "DenseNet121")
MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]


def build(name: str, work: Path) -> Path:
    import keras

    model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3))
    path = work / f"{name}.keras"
    model.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    from converters.convert import convert_modes
    from converters.report import format_modes, summary_row

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    calib = (rng.random((50, 224, 224, 3)) * 255).astype(np.float32)
    evals = (rng.random((20, 224, 224, 3)) * 255).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgesdk-bench-apps-") as tmp:
        work = Path(tmp)
        for name in args.models:
            path = build(name, work)
            out = work / name
            out.mkdir()
            rows = []
            for mode in args.modes:  # one call per mode: the time is the mode's own
                t0 = time.perf_counter()
                res = convert_modes(str(path), [mode], output=out, calibration=calib, eval_data=evals, progress=False, latency_runs=args.runs)[mode]
                row = summary_row(mode, None if isinstance(res, str) else res.report, res if isinstance(res, str) else None)
                rows.append({**row, "convert s": f"{time.perf_counter() - t0:.1f}"})
            print(f"\n{name} (weights=None, 224x224x3):\n{format_modes(rows)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
