"""The runtime part of ``edgesdk demo``: convert a small Keras CNN, inspect and benchmark it.

On a device install (no TensorFlow) the conversion is skipped and the built-in probe model
is benchmarked instead, so the demo still shows the runtime working.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

from sdk.console import Output


def _small_cnn(path: Path):  # noqa: ANN202 - returns calibration data
    import numpy as np

    from sdk._native import captured_native_stderr

    with captured_native_stderr():  # TensorFlow's C++ start-up chatter
        import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((128, 128, 3), name="image")
    x = inp
    for filters in (16, 32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    keras.Model(inp, out).save(path)
    rng = np.random.default_rng(0)
    return rng.random((100, 128, 128, 3), dtype=np.float32)


def runtime_demo(out: Output) -> None:
    """Convert (when TensorFlow is here), inspect and benchmark a small model."""
    from cli.bench import measure
    from cli.inspect_cmd import inspect_model

    work = Path(tempfile.mkdtemp(prefix="edgesdk-demo-"))
    models: list[Path] = []
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("converters.convert"):
        from converters.convert import convert

        out.text("[runtime] converting a small Keras CNN (128x128x3 → 10 classes) to fp32 and full-int8 TFLite ...")
        keras_path = work / "cnn.keras"
        calib = _small_cnn(keras_path)
        for mode in ("fp32", "int8"):
            res = convert(keras_path, mode=mode, output=work / f"cnn_{mode}.tflite", calibration=calib, eval_data=calib[:20], progress=False)
            models.append(res.path)
    else:
        from sdk.backends._probe import PROBE_MODEL

        out.text("[runtime] TensorFlow is not installed here (device install): benchmarking the built-in probe model")
        probe = work / "probe.tflite"
        probe.write_bytes(PROBE_MODEL)
        models.append(probe)
    args = argparse.Namespace(runs=30, warmup=3, json=True, delegate=None, threads=None, backend=None, require_delegate=False, delegate_option=[])
    for m in models:
        info = inspect_model(str(m))
        result = measure(str(m), args)
        summary = {
            "app": "runtime",
            "model": m.name,
            "size_kib": round(info["size_bytes"] / 1024, 1),
            "input": f"{info['inputs'][0]['dtype']} {info['inputs'][0]['shape']}",
            "ops": len(info["ops"]),
            "p50_ms": result["p50_ms"],
            "backend": result["backend"],
        }
        metrics = (info.get("card") or {}).get("metrics") or {}
        text = f"  {m.name}: {summary['size_kib']} KiB, input {summary['input']}, p50 {summary['p50_ms']:.3f} ms on {result['backend']}"
        if metrics:
            summary["metrics"] = metrics
        out.emit(summary, text)
