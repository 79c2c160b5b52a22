"""tf.keras 2.x model files for Keras 3: translate the layer configs, then load as usual.

Keras 3 reads the legacy ``.h5`` layout (weights in ``model_weights/<layer>/`` in the
order ``trainable + non_trainable``) but refuses layer arguments it removed or renamed
(``Unrecognized keyword arguments passed to GRU: {'time_major': False}``). This module
rewrites a tf.keras 2 config into one Keras 3 accepts, writes a translated copy of the
``.h5`` into the conversion's work folder and lets Keras load that copy, weights included.
What cannot be translated is a :class:`~sdk.errors.ModelFormatError` naming the layer and
the argument, with a fix. Runs in the converter child (imports h5py, not TensorFlow).

Translations (each only where the value is the tf.keras 2 one):

* ``InputLayer``: ``batch_input_shape`` → ``batch_shape``; ``ragged: false`` dropped.
* GRU/LSTM/SimpleRNN: ``time_major: false`` dropped (``true`` is refused);
  ``implementation`` dropped (Keras 3 picks its own kernels); a GRU without
  ``reset_after`` (Keras ≤ 2.1) is ``reset_after: false``, confirmed by its bias shape.
* ``hard_sigmoid`` means ``clip(0.2 x + 0.5, 0, 1)`` in tf.keras 2 and ``relu6(x + 3) / 6``
  in Keras 3: it is replaced by :func:`hard_sigmoid_v2`, the tf.keras 2 formula.
* ``TimeDistributed``/``Bidirectional``: the inner layer's config gets ``module: keras.layers``.
* Initializers, regularizers and constraints only shape training: they are dropped.
* ``BatchNormalization``: ``axis: [2]`` → ``2``; ``fused``, ``renorm*`` (off),
  ``virtual_batch_size`` (none) and ``adjustment`` (none) dropped.
* ``dtype`` policies (``mixed_float16``...) → ``float32``; ``Embedding.input_length`` dropped.
* ``Lambda``: tf.keras 2's ``[code, defaults, closure]`` + ``function_type`` becomes Keras 3's
  ``__lambda__`` dict; whether it may load is decided by :mod:`converters.loader`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sdk.errors import ModelFormatError

RNN_CLASSES = ("GRU", "LSTM", "SimpleRNN", "GRUV2", "LSTMV2", "CuDNNGRU", "CuDNNLSTM", "RNN")
DROPPED_TRAINING_KEYS = ("_initializer", "_regularizer", "_constraint")
HARD_SIGMOID = "edgesdk_hard_sigmoid_v2"


def hard_sigmoid_v2(x: Any) -> Any:
    """tf.keras 2's ``hard_sigmoid``: ``clip(0.2 * x + 0.5, 0, 1)`` (Keras 3's has slope 1/6)."""
    from keras import ops

    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def h5_info(path: Path) -> dict[str, Any]:
    """``keras_version``, ``backend`` and the decoded ``model_config`` of an ``.h5`` (``{}`` keys when absent)."""
    import h5py

    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        bias_shapes = _gru_bias_shapes(f)
    cfg = attrs.get("model_config")
    return {"keras_version": str(attrs.get("keras_version", "")), "backend": attrs.get("backend"),
            "config": json.loads(cfg) if isinstance(cfg, str) else None, "gru_bias_shapes": bias_shapes}


def _gru_bias_shapes(f: Any) -> dict[str, tuple[int, ...]]:
    """Per layer name, the shape of its weight named ``.../bias:0`` (tells GRU ``reset_after`` apart)."""
    out: dict[str, tuple[int, ...]] = {}
    g = f.get("model_weights")
    if g is None:
        return out

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "shape") and name.endswith("bias:0"):
            out.setdefault(name.split("/")[0], tuple(obj.shape))

    g.visititems(visit)
    return out


def is_tfkeras2(info: dict[str, Any]) -> bool:
    """Whether an ``.h5``'s attributes say tf.keras / Keras 2.x (or 1.x) wrote it."""
    version = info.get("keras_version") or ""
    return bool(version) and not version.startswith("3")


def translate(config: Any, where: str, bias_shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[Any, list[str]]:
    """A Keras 3 loadable copy of a tf.keras 2 model config, and notes on what changed.

    Args:
        config: The decoded ``model_config`` (``{"class_name": ..., "config": ...}``).
        where: The file name, for messages.
        bias_shapes: Per layer, its bias shape (see :func:`h5_info`).

    Raises:
        ModelFormatError: For an argument Keras 3 cannot honour, naming layer, argument and fix.
    """
    notes: set[str] = set()
    out = _walk(json.loads(json.dumps(config)), where, bias_shapes or {}, notes)
    return out, sorted(notes)


def _walk(node: Any, where: str, bias: dict[str, tuple[int, ...]], notes: set[str]) -> Any:
    if isinstance(node, list):
        return [_walk(v, where, bias, notes) for v in node]
    if not isinstance(node, dict):
        return node
    cls, cfg = node.get("class_name"), node.get("config")
    if isinstance(cls, str) and isinstance(cfg, dict) and "name" in cfg:
        _layer(cls, cfg, where, bias, notes)
    return {k: _walk(v, where, bias, notes) for k, v in node.items()}


def _layer(cls: str, cfg: dict[str, Any], where: str, bias: dict[str, tuple[int, ...]], notes: set[str]) -> None:
    """Translate one layer's ``config`` in place."""
    name = cfg.get("name")
    _drop_training_only(cfg, notes)
    _dtype(cfg, notes)
    if cls == "InputLayer":
        if "batch_input_shape" in cfg:
            cfg["batch_shape"] = cfg.pop("batch_input_shape")
        if cfg.pop("ragged", False):
            raise ModelFormatError(f"{where}: layer {name!r}: ragged inputs cannot be converted to TFLite; rebuild the model with a dense input")
    elif cls in RNN_CLASSES:
        _recurrent(cls, cfg, where, bias.get(str(name)), notes)
    elif cls == "BatchNormalization":
        _batchnorm(cfg, where)
    elif cls == "Lambda":
        _legacy_lambda(cfg)
    elif cls == "Embedding":
        cfg.pop("input_length", None)
    elif cls in ("TimeDistributed", "Bidirectional"):
        # Keras 3 deserialises a wrapper's inner layer with the new format, which locates built-ins by module
        for key in ("layer", "backward_layer"):
            inner = cfg.get(key)
            if isinstance(inner, dict) and "module" not in inner:
                inner["module"], inner["registered_name"] = "keras.layers", None
    for key in ("activation", "recurrent_activation"):
        if cfg.get(key) == "hard_sigmoid":
            cfg[key] = HARD_SIGMOID
            notes.add(f"hard_sigmoid kept as tf.keras 2 computes it (clip(0.2x + 0.5, 0, 1)) in {name!r}")


def _legacy_lambda(cfg: dict[str, Any]) -> None:
    """tf.keras 2 stores a Lambda's function as ``[code, defaults, closure]`` + ``function_type``; Keras 3 as a dict."""
    for key in ("function", "output_shape"):
        kind = cfg.pop(f"{key}_type", None)
        cfg.pop(f"{key}_module", None)
        value = cfg.get(key)
        if kind == "lambda" and isinstance(value, (list, tuple)) and len(value) == 3:
            cfg[key] = {"class_name": "__lambda__", "config": {"code": value[0], "defaults": value[1], "closure": value[2]}}
        elif kind == "function" and isinstance(value, str):
            cfg[key] = {"module": None, "class_name": "function", "config": value, "registered_name": value}
    cfg.pop("module", None)


def _drop_training_only(cfg: dict[str, Any], notes: set[str]) -> None:
    for key in [k for k in cfg if k.endswith(DROPPED_TRAINING_KEYS) or k == "activity_regularizer"]:
        if cfg.pop(key) is not None and key.endswith(("_regularizer", "_constraint")):
            notes.add("regularizers and constraints dropped (they only act in training)")


def _dtype(cfg: dict[str, Any], notes: set[str]) -> None:
    d = cfg.get("dtype")
    if isinstance(d, dict):  # a mixed-precision policy
        policy = (d.get("config") or {}).get("name", "float32")
        cfg["dtype"] = "float32"
        if policy != "float32":
            notes.add(f"dtype policy {policy!r} loaded as float32 (the converter quantizes by --mode)")


def _recurrent(cls: str, cfg: dict[str, Any], where: str, bias_shape: tuple[int, ...] | None, notes: set[str]) -> None:
    name = cfg.get("name")
    if cfg.pop("time_major", False):
        raise ModelFormatError(f"{where}: layer {name!r}: argument time_major=True has no Keras 3 equivalent; "
                               "re-save the model with time_major=False (transpose the input instead)")
    cfg.pop("implementation", None)
    if cls.startswith("CuDNN"):
        raise ModelFormatError(f"{where}: layer {name!r}: {cls} is a CUDA-only tf.keras 1 layer; rebuild it as {cls[5:]} "
                               "(reset_after=True for GRU) with the same weights and save again")
    if cls in ("GRU", "GRUV2") and "reset_after" not in cfg:
        # Keras <= 2.1 GRUs had one bias per gate (shape [3 * units]); reset_after came later with a [2, 3 * units] bias
        cfg["reset_after"] = bias_shape is not None and len(bias_shape) == 2
        notes.add(f"GRU {name!r} without reset_after: {'true' if cfg['reset_after'] else 'false'}, read from its bias shape")
    if cfg.get("stateful"):
        notes.add(f"stateful {cls} {name!r} converted with zero initial state per call")
        cfg["stateful"] = False


def _batchnorm(cfg: dict[str, Any], where: str) -> None:
    name = cfg.get("name")
    axis = cfg.get("axis")
    if isinstance(axis, list):
        if len(axis) != 1:
            raise ModelFormatError(f"{where}: layer {name!r}: BatchNormalization over several axes {axis} has no Keras 3 equivalent; "
                                   "reshape so that one axis holds the features and save again")
        cfg["axis"] = axis[0]
    for key, off in (("renorm", False), ("virtual_batch_size", None), ("adjustment", None)):
        if cfg.get(key, off) != off:
            raise ModelFormatError(f"{where}: layer {name!r}: BatchNormalization argument {key}={cfg[key]!r} is not in Keras 3; "
                                   f"save the model with {key}={off!r} (inference uses the moving statistics either way)")
        cfg.pop(key, None)
    for key in ("fused", "renorm_clipping", "renorm_momentum"):
        cfg.pop(key, None)


def translated_copy(path: Path, work: Path, info: dict[str, Any]) -> tuple[Path, list[str]]:
    """Copy ``path`` into ``work`` with its ``model_config`` translated; returns (copy, notes).

    Raises:
        ModelFormatError: No model config (a weights-only file) or an untranslatable argument.
    """
    import h5py

    if info.get("config") is None:
        raise ModelFormatError(f"{path.name}: an .h5 without a model config (saved with save_weights?); "
                               "save the whole model (model.save('m.h5')) or rebuild it in code and load these weights")
    cfg, notes = translate(info["config"], path.name, info.get("gru_bias_shapes"))
    copy = work / f"tfkeras2_{path.name}"
    shutil.copyfile(path, copy)
    with h5py.File(copy, "r+") as f:
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs.pop("training_config", None)  # an old optimizer config is not needed to convert
    return copy, [f"tf.keras {info.get('keras_version')} file: layer arguments translated for Keras 3", *notes]


def custom_objects() -> dict[str, Any]:
    """The objects translated configs refer to."""
    return {HARD_SIGMOID: hard_sigmoid_v2}
