"""``--mode all`` on two models: size, p50 latency (Runner, CPU) and accuracy vs Keras per mode.

Not a test: prints tables. Models are built here with random weights (BatchNorm statistics
randomised as after training) and calibrated/evaluated on held-apart samples of the same
distribution. Usage: ``python benchmarks/convert_modes.py [--runs 50] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]


def cnn(keras, rng):
    """A small image classifier: 3 conv blocks (Conv → BN → ReLU → MaxPool), 96×96×3 → 10 classes."""
    inp = keras.Input((96, 96, 3))
    x = inp
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x), name="cnn")
    _randomise_bn(model, rng)
    return model, lambda n: rng.random((n, 96, 96, 3), dtype=np.float32)


def trigger_word(keras, rng):
    """The course's trigger-word model, scaled down: 2 s of 101-bin spectrogram frames at 10 ms."""
    inp = keras.Input((200, 101))
    x = keras.layers.Conv1D(64, 15, strides=4)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Dropout(0.8)(x)
    x = keras.layers.GRU(64, return_sequences=True)(x)
    x = keras.layers.Dropout(0.8)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GRU(64, return_sequences=True)(x)
    x = keras.layers.Dropout(0.8)(x)
    x = keras.layers.BatchNormalization()(x)
    out = keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid"))(x)
    model = keras.Model(inp, out, name="trigger_word")
    _randomise_bn(model, rng)
    return model, lambda n: rng.standard_normal((n, 200, 101)).astype(np.float32)


def _randomise_bn(model, rng) -> None:
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])


def bench(name: str, build, folder: Path, runs: int) -> str:
    import keras

    from converters.convert import convert_modes
    from converters.report import format_modes, summary_row

    rng = np.random.default_rng(0)
    model, sample = build(keras, rng)
    path = folder / f"{name}.keras"
    model.save(path)
    calib, evals = sample(200), sample(50)
    t0 = time.perf_counter()
    results = convert_modes(str(path), MODES, output=folder, calibration=calib, eval_data=evals, progress=False, latency_runs=runs)
    took = time.perf_counter() - t0
    rows = [summary_row(m, None, r) if isinstance(r, str) else summary_row(m, r.report) for m, r in results.items()]
    keras_kib = path.stat().st_size / 1024
    return f"{name} ({model.count_params():,} parameters, .keras {keras_kib:.0f} KiB; all modes in {took:.0f} s):\n{format_modes(rows)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=50, help="invocations per latency p50")
    ap.add_argument("--keep", type=Path, help="keep the models in this folder")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="edgesdk-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"CPU: {os.cpu_count()} cores, latency: Runner (ai_edge_litert, default threads), {args.runs} runs after 3 warm-ups\n")
        for name, build in (("cnn", cnn), ("trigger_word", trigger_word)):
            print(bench(name, build, folder, args.runs), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
