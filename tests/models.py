"""Tiny TFLite models built with TensorFlow for the foundation tests (fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_cnn_tflite(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """A 8x8x3 → 3-class CNN as fp32 and full-int8 ``.tflite`` files, plus calibration data."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    calib = rng.random((32, 8, 8, 3), dtype=np.float32)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    paths = {"fp32": out_dir / "tiny_fp32.tflite", "int8": out_dir / "tiny_int8.tflite"}
    paths["fp32"].write_bytes(conv.convert())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c[None]] for c in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    paths["int8"].write_bytes(conv.convert())
    np.save(out_dir / "calib.npy", calib)
    np.save(out_dir / "keras_out.npy", model.predict(calib, verbose=0))
    return paths


def dynamic_batch_tflite(out_dir: Path) -> Path:
    """A model with a dynamic batch dimension ([-1, 4] → [-1, 2])."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def f(x):
        return tf.concat([tf.reduce_sum(x, axis=1, keepdims=True), tf.reduce_max(x, axis=1, keepdims=True)], axis=1)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    p = out_dir / "dynamic.tflite"
    p.write_bytes(conv.convert())
    return p
