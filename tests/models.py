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


# --- tf.keras 2.x files, written with h5py as tf.keras 2.x writes them (no TensorFlow 2.x needed) -----

TFKERAS2_VERSION = "2.13.1"


def _init(name: str, **config: object) -> dict:
    return {"class_name": name, "config": {"seed": None, **config} if name not in ("Zeros", "Ones") else {}}


def _layer(cls: str, name: str, inbound: str | None, **config: object) -> dict:
    cfg = {"name": name, "trainable": True, "dtype": "float32", **config}
    return {"class_name": cls, "config": cfg, "name": name, "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else []}


def _bn(name: str, inbound: str) -> dict:
    regs = {k: None for k in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")}
    return _layer("BatchNormalization", name, inbound, axis=[2], momentum=0.99, epsilon=0.001, center=True, scale=True,
                  beta_initializer=_init("Zeros"), gamma_initializer=_init("Ones"), moving_mean_initializer=_init("Zeros"),
                  moving_variance_initializer=_init("Ones"), **regs)


def _gru(name: str, inbound: str, units: int) -> dict:
    nones = {k: None for k in ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                                "kernel_constraint", "recurrent_constraint", "bias_constraint")}
    return _layer("GRU", name, inbound, return_sequences=True, return_state=False, go_backwards=False, stateful=False, unroll=False,
                  time_major=False, units=units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                  kernel_initializer=_init("GlorotUniform"), recurrent_initializer=_init("Orthogonal", gain=1.0),
                  bias_initializer=_init("Zeros"), dropout=0.0, recurrent_dropout=0.0, implementation=2, reset_after=True, **nones)


def course_trigger_word_config(frames: int = 5511, bins: int = 101, filters: int = 196, units: int = 128) -> dict:
    """The course's trigger-word network as tf.keras 2.x serialises it (``model.to_json()``)."""
    nones = {k: None for k in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")}
    layers = [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, frames, bins], "dtype": "float32", "sparse": False,
                                                 "ragged": False, "name": "input_1"}, "name": "input_1", "inbound_nodes": []},
        _layer("Conv1D", "conv1d", "input_1", filters=filters, kernel_size=[15], strides=[4], padding="valid", data_format="channels_last",
               dilation_rate=[1], groups=1, activation="linear", use_bias=True, kernel_initializer=_init("GlorotUniform"),
               bias_initializer=_init("Zeros"), **nones),
        _bn("batch_normalization", "conv1d"),
        _layer("Activation", "activation", "batch_normalization", activation="relu"),
        _layer("Dropout", "dropout", "activation", rate=0.8, noise_shape=None, seed=None),
        _gru("gru", "dropout", units),
        _layer("Dropout", "dropout_1", "gru", rate=0.8, noise_shape=None, seed=None),
        _bn("batch_normalization_1", "dropout_1"),
        _gru("gru_1", "batch_normalization_1", units),
        _layer("Dropout", "dropout_2", "gru_1", rate=0.8, noise_shape=None, seed=None),
        _bn("batch_normalization_2", "dropout_2"),
        _layer("Dropout", "dropout_3", "batch_normalization_2", rate=0.8, noise_shape=None, seed=None),
        _layer("TimeDistributed", "time_distributed", "dropout_3",
               layer={"class_name": "Dense", "config": {"name": "dense", "trainable": True, "dtype": "float32", "units": 1, "activation": "sigmoid",
                                                        "use_bias": True, "kernel_initializer": _init("GlorotUniform"),
                                                        "bias_initializer": _init("Zeros"), **nones}}),
    ]
    return {"class_name": "Functional", "config": {"name": "model", "trainable": True, "layers": layers,
                                                   "input_layers": [["input_1", 0, 0]], "output_layers": [["time_distributed", 0, 0]]}}


def course_trigger_word_weights(frames: int = 5511, bins: int = 101, filters: int = 196, units: int = 128,
                                seed: int = 0) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """Trained-looking weights for :func:`course_trigger_word_config`, per layer in tf.keras 2's h5 order and names."""
    rng = np.random.default_rng(seed)

    def glorot(*shape: int) -> np.ndarray:
        lim = np.sqrt(6.0 / (shape[-2] * (np.prod(shape[:-2]) if len(shape) > 2 else 1) + shape[-1]))
        return rng.uniform(-lim, lim, shape).astype(np.float32)

    def bn(name: str, n: int) -> tuple[str, list]:
        return name, [(f"{name}/gamma:0", rng.uniform(0.7, 1.3, n).astype(np.float32)), (f"{name}/beta:0", rng.normal(0, 0.1, n).astype(np.float32)),
                      (f"{name}/moving_mean:0", rng.normal(0, 0.3, n).astype(np.float32)),
                      (f"{name}/moving_variance:0", rng.uniform(0.5, 2.0, n).astype(np.float32))]

    def gru(name: str, n_in: int) -> tuple[str, list]:
        return name, [(f"{name}/gru_cell/kernel:0", glorot(n_in, 3 * units)), (f"{name}/gru_cell/recurrent_kernel:0", glorot(units, 3 * units)),
                      (f"{name}/gru_cell/bias:0", rng.normal(0, 0.3, (2, 3 * units)).astype(np.float32))]

    return [
        ("conv1d", [("conv1d/kernel:0", glorot(15, bins, filters)), ("conv1d/bias:0", rng.normal(0, 0.1, filters).astype(np.float32))]),
        bn("batch_normalization", filters), gru("gru", filters), bn("batch_normalization_1", units), gru("gru_1", units),
        bn("batch_normalization_2", units),
        ("time_distributed", [("time_distributed/kernel:0", glorot(units, 1)), ("time_distributed/bias:0", np.array([-1.0], np.float32))]),
    ]


def write_tfkeras2_h5(path: Path, config: dict, weights: list[tuple[str, list[tuple[str, np.ndarray]]]],
                      keras_version: str = TFKERAS2_VERSION) -> Path:
    """An ``.h5`` laid out as tf.keras 2.x's ``model.save('m.h5')`` writes it.

    Root attributes ``keras_version``/``backend``/``model_config``; group ``model_weights``
    with ``layer_names`` (every layer, weightless ones too) and, per layer, ``weight_names``
    and the datasets at those names.
    """
    import json

    import h5py

    names_with_weights = dict(weights)
    all_layers = [layer["config"]["name"] for layer in config["config"]["layers"]]
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = keras_version
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = keras_version
        g.attrs["layer_names"] = np.array([n.encode() for n in all_layers])
        for name in all_layers:
            lg = g.create_group(name)
            ws = names_with_weights.get(name, [])
            lg.attrs["weight_names"] = np.array([w.encode() for w, _ in ws], dtype="S" if ws else "S1")
            for wname, value in ws:
                lg.create_dataset(wname, data=value)
    return path
