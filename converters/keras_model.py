"""Loading Keras models and rebuilding them into a shape the TFLite converter handles.

Runs inside the converter child process (imports TensorFlow/Keras). Measured with TF 2.21 /
Keras 3 (FINDINGS.md): a dynamic batch breaks GRU conversion, and a recurrent ``WHILE``
loop crashes full-integer quantization, so models are rebuilt from their config with the
batch fixed to 1 and recurrent layers unrolled when the mode needs it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConversionError, ModelFormatError

RECURRENT = ("GRU", "LSTM", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


class SavedModelFn:
    """A TF SavedModel's ``serving_default`` signature, used like a model."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        try:
            self.obj = tf.saved_model.load(str(path))
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{path}: not a TensorFlow SavedModel ({str(e).splitlines()[0][:200]})") from e
        sigs = getattr(self.obj, "signatures", {})
        if "serving_default" not in sigs:
            raise ModelFormatError(f"{path}: the SavedModel has no 'serving_default' signature; export it with model.export(path)")
        self.fn = sigs["serving_default"]
        self.path = path
        spec = self.fn.structured_input_signature[1]
        self.input_keys = sorted(spec)
        self.input_specs = [spec[k] for k in self.input_keys]
        self.name = path.name

    @property
    def input_shape_list(self) -> list[tuple]:
        return [tuple(s.shape.as_list()) for s in self.input_specs]

    def predict(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = self.fn(**{k: a for k, a in zip(self.input_keys, arrays)})
        return [np.asarray(out[k]) for k in sorted(out)]

    def batch1_function(self) -> Any:
        """A concrete function of the signature with the batch axis fixed to 1."""
        import tensorflow as tf

        specs = [tf.TensorSpec([1, *s.shape.as_list()[1:]], s.dtype, name=k) for k, s in zip(self.input_keys, self.input_specs)]
        fn = self.fn

        @tf.function(input_signature=specs)
        def serve(*args):
            return fn(**dict(zip(self.input_keys, args)))

        return serve.get_concrete_function()


def input_shapes(model: Any) -> list[tuple]:
    """Input shapes with the batch axis (``None`` for dynamic dims)."""
    if isinstance(model, SavedModelFn):
        return model.input_shape_list
    return [tuple(t.shape) for t in model.inputs]


def recurrent_layers(model: Any) -> list[str]:
    """Names of recurrent layers (also inside Bidirectional/TimeDistributed wrappers)."""
    if isinstance(model, SavedModelFn):
        return []
    names: list[str] = []

    def walk(cfg: Any) -> None:
        if isinstance(cfg, dict):
            if cfg.get("class_name") in RECURRENT and isinstance(cfg.get("config"), dict):
                names.append(cfg["config"].get("name", cfg["class_name"]))
            for v in cfg.values():
                walk(v)
        elif isinstance(cfg, list):
            for v in cfg:
                walk(v)

    try:
        walk(_serialized(model))
    except NotImplementedError:
        pass
    return names


def _serialized(model: Any) -> dict[str, Any]:
    import keras

    return keras.saving.serialize_keras_object(model)


@functools.cache
def l2_layer() -> type:
    """A layer computing ``tf.nn.l2_normalize``, which the converter fuses into one L2_NORMALIZATION op.

    Keras 3's ``UnitNormalization`` lowers to SQUARE/SUM/RSQRT/MINIMUM/MUL instead, and the
    converter leaves its SQUARE in float even for full-int8 (a DEQUANTIZE/QUANTIZE pair).
    """
    import keras
    import tensorflow as tf

    class EdgesdkL2Normalize(keras.layers.Layer):
        def __init__(self, axis: int = -1, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.axis = axis

        def call(self, x: Any) -> Any:
            return tf.nn.l2_normalize(x, axis=self.axis)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "axis": self.axis}

    return EdgesdkL2Normalize


def rebuild(model: Any, *, unroll: bool, custom_objects: dict[str, Any], trust: bool = False) -> tuple[Any, list[str]]:
    """The same model with batch 1, (if ``unroll``) unrolled recurrent layers, ``TimeDistributed(Dense)`` as one Dense.

    ``trust`` allows Lambda code again (the loaded model already passed the loader's checks).

    Returns:
        ``(model, notes)``. Subclassed models cannot be rebuilt from config; they are
        returned unchanged (the converter then fixes the batch through its input signature).

    Raises:
        ConversionError: If unrolling needs a fixed number of time steps the model lacks.
    """
    import keras

    if isinstance(model, SavedModelFn):
        return model, ["SavedModel: converted through its serving signature with batch 1 (recurrent layers are not unrolled)"]
    try:
        cfg = _serialized(model)
    except NotImplementedError:
        return model, ["subclassed model: not rebuilt from config; batch fixed through the input signature"]
    notes: list[str] = []
    changed = _patch(cfg, unroll, notes)
    fused = [n for n in notes if n.startswith("L2:")]
    merged = [n for n in notes if n.startswith("TD:")]
    notes = [n for n in notes if not n.startswith(("L2:", "TD:"))]  # the recurrent layers unrolled
    if unroll and notes:
        for shape in input_shapes(model):
            if any(d is None for d in shape[1:]):
                raise ConversionError(
                    f"unrolling {notes[0]} needs a fixed number of time steps, but the model input is {list(shape)}; "
                    "rebuild it with keras.Input(shape=(T, ...)) or convert with mode fp32/fp16/dynamic"
                )
    if not changed:
        return model, []
    try:
        objects = {**custom_objects, "EdgesdkL2Normalize": l2_layer()}
        new = keras.saving.deserialize_keras_object(cfg, custom_objects=objects, safe_mode=not trust)
        new.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - any rebuild failure means "convert as is"
        return model, [f"could not rebuild with batch 1 ({str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no reason given'}); converting as is"]
    out = ["batch fixed to 1"]
    if merged:
        out.append("TimeDistributed(Dense) converted as one Dense over every step: " + ", ".join(n[3:] for n in merged))
    if fused:
        out.append("UnitNormalization converted as one L2_NORMALIZATION op (stays integer)")
    if unroll and notes:
        out.append("unrolled recurrent layers: " + ", ".join(notes))
    return new, out


def _patch(cfg: Any, unroll: bool, notes: list[str]) -> bool:
    """Fix batch axes to 1, set ``unroll`` on recurrent layers, swap UnitNormalization and TimeDistributed(Dense), in place.

    Returns True if anything changed; ``notes`` gets the unrolled layer names, ``L2:<name>`` and ``TD:<name>``.
    """
    changed = False
    if isinstance(cfg, dict):
        inner = cfg.get("config")
        cls = cfg.get("class_name")
        if cls == "InputLayer" and isinstance(inner, dict):
            for key in ("batch_shape", "batch_input_shape"):
                shape = inner.get(key)
                if isinstance(shape, (list, tuple)) and shape and shape[0] != 1:
                    inner[key] = [1, *shape[1:]]
                    changed = True
        if cls in RECURRENT and isinstance(inner, dict) and unroll and not inner.get("unroll"):
            inner["unroll"] = True
            notes.append(str(inner.get("name", cls)))
            changed = True
        if cls == "TimeDistributed" and isinstance(inner, dict) and isinstance(inner.get("layer"), dict) and inner["layer"].get("class_name") == "Dense":
            # Dense already maps every step of a [batch, steps, n] tensor: one FULLY_CONNECTED instead of one per step
            dense = dict(inner["layer"]["config"], name=inner.get("name"))
            cfg.update(class_name="Dense", module="keras.layers", registered_name=None, config=dense)
            for node in cfg.get("inbound_nodes") or []:
                if isinstance(node, dict) and isinstance(node.get("kwargs"), dict):
                    node["kwargs"].pop("mask", None)  # TimeDistributed's call takes a mask, Dense's does not
            notes.append(f"TD:{dense['name']}")
            changed = True
        if cls == "UnitNormalization" and isinstance(inner, dict) and inner.get("axis") in (-1, [-1]):
            cfg.update(class_name="EdgesdkL2Normalize", module=None, registered_name="EdgesdkL2Normalize")
            inner["axis"] = -1
            notes.append(f"L2:{inner.get('name')}")
            changed = True
        shape = cfg.get("build_input_shape")
        if isinstance(shape, (list, tuple)) and shape and shape[0] != 1:
            cfg["build_input_shape"] = [1, *shape[1:]]
            changed = True
        for v in cfg.values():
            changed |= _patch(v, unroll, notes)
    elif isinstance(cfg, list):
        for v in cfg:
            changed |= _patch(v, unroll, notes)
    return changed


def predict(model: Any, arrays: list[np.ndarray], batch: int = 32) -> list[np.ndarray]:
    """Float outputs of the Keras (or SavedModel) model, one array per output."""
    chunks: list[list[np.ndarray]] = []
    n = len(arrays[0])
    for s in range(0, n, batch):
        part = [a[s : s + batch] for a in arrays]
        try:
            chunks.append(_call(model, part))
        except (ValueError, TypeError):  # a model built for batch 1 only
            for k in range(len(part[0])):
                chunks.append(_call(model, [a[k : k + 1] for a in part]))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _call(model: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(model, SavedModelFn):
        return model.predict(arrays)
    out = model(arrays if len(arrays) > 1 else arrays[0], training=False)
    outs = list(out.values()) if isinstance(out, dict) else (list(out) if isinstance(out, (list, tuple)) else [out])
    return [np.asarray(o) for o in outs]
