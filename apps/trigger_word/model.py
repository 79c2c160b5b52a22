"""Keras models for trigger words (host side; imports TensorFlow/Keras lazily).

All convert to full int8 with :func:`converters.convert.convert`:

* :func:`build_head` (default, ``--arch embedding``): small 1-D CNNs (three branches whose
  logits are averaged) over the last 16 embeddings (~2 s) of the frozen pretrained speech front end
  (:mod:`sdk.speech_embedding`); the device runs the front end once per 80 ms hop and the
  head on the newest 16 embeddings. The recipe averages separately trained heads
  (:func:`average_members`). The front end was trained on real speech, so the head
  learns the word from synthetic voices and still hears people.
* :func:`build_dscnn`: a small depthwise-separable 1-D CNN over log-mel frames
  ``[batch, frames, n_mels]`` of one window (~1.2 s), one sigmoid score per window; the
  device runs it every hop (~100 ms). Trained from scratch: fine on synthetic voices, weak
  on real ones (``../shared/FINDINGS.md``).
* :func:`build_course`: the course's model, Conv1D -> BN -> ReLU -> Dropout -> GRU -> GRU ->
  TimeDistributed Dense sigmoid, one score per output step (the detector reads the newest
  steps). The converter unrolls its GRUs for int8 (see FINDINGS.md: larger file).
"""

from __future__ import annotations

from typing import Any

ARCHS = ("embedding", "dscnn", "course")


def _keras() -> Any:
    from sdk.lazy import require

    return require("keras", "building trigger-word models (pip install 'edgesdk[host]')")


def _stateless_layer(name: str, doc: str, fn: Any) -> Any:
    """A registered Keras layer class ``name`` computing ``fn(keras, x)``, defined on first use (Keras stays lazy)."""
    if name in globals():
        return globals()[name]
    keras = _keras()
    cls = type(name, (keras.layers.Layer,), {"__doc__": doc, "__module__": __name__, "__qualname__": name,
                                             "call": lambda self, x: fn(keras, x)})  # fmt: skip
    globals()[name] = keras.saving.register_keras_serializable(package="edgesdk")(cls)
    return cls


def level_norm_layer() -> Any:
    """:class:`LevelNorm`: subtracts each window's mean log-energy, so microphone gain is irrelevant (like CMN)."""
    return _stateless_layer("LevelNorm", level_norm_layer.__doc__, lambda k, x: x - k.ops.mean(x, axis=(1, 2), keepdims=True))


def floored_leaky_relu_layer() -> Any:
    """:class:`FlooredLeakyReLU`: ``max(leaky_relu(x, 0.2), -0.4)``, the speech embedding's activation."""
    return _stateless_layer(
        "FlooredLeakyReLU", floored_leaky_relu_layer.__doc__, lambda k, x: k.ops.maximum(k.ops.leaky_relu(x, negative_slope=0.2), -0.4)
    )


def __getattr__(name: str) -> Any:
    # lets the converter's child process import "apps.trigger_word.model:LevelNorm" (and the others)
    layers = {"LevelNorm": level_norm_layer, "FlooredLeakyReLU": floored_leaky_relu_layer}
    if name in layers:
        return layers[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_dscnn(frames: int, n_features: int, filters: int = 64, blocks: int = 4, kernel: int = 9, dropout: float = 0.2) -> Any:
    """Depthwise-separable 1-D CNN over time (mel bands as channels), single sigmoid output.

    Args:
        frames: Frames per window.
        n_features: Mel bands (or MFCCs) per frame.
        filters: Channels of every layer.
        blocks: Depthwise-separable blocks; every other one halves the time axis.
        kernel: Depthwise kernel length (frames).
        dropout: Dropout after every block.

    Returns:
        An uncompiled ``keras.Model`` ``[B, frames, n_features] -> [B, 1]``.
    """
    keras = _keras()
    L = keras.layers
    inp = keras.Input((frames, n_features), name="logmel")
    x = level_norm_layer()(name="level_norm")(inp)
    x = L.Conv1D(filters, 5, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    for i in range(blocks):
        x = L.DepthwiseConv1D(kernel, strides=2 if i % 2 == 0 else 1, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv1D(filters, 1, use_bias=False, name=f"pw{i}")(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Dropout(dropout)(x)
    # flatten keeps *where* in the window the word ended, so the score rises right after the end
    x = L.Flatten()(x)
    out = L.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(inp, out, name="trigger_dscnn")


def build_head(
    frames: int, n_features: int, filters: int = 48, hidden: int = 32, dropout: float = 0.3, heads: int = 1, l2: float = 0.0
) -> Any:
    """A head over speech embeddings ``[batch, frames, n_features]`` (16 x 96), single sigmoid output.

    With ``heads`` > 1 it is an ensemble in one model: independent branches whose logits
    (layers ``logit_0``...) are averaged; :func:`branch_logits` gives training one loss per branch.

    Args:
        frames: Embeddings per window.
        n_features: Embedding size.
        filters: Channels of the two convolutions.
        hidden: Units of the dense layer.
        dropout: Dropout before the dense layers.
        heads: Branches averaged.
        l2: L2 penalty on every kernel.

    Returns:
        An uncompiled ``keras.Model`` ``[B, frames, n_features] -> [B, 1]``; its layer
        ``logit`` is the score before the sigmoid.
    """
    keras = _keras()
    L = keras.layers
    reg = keras.regularizers.l2(l2) if l2 else None
    inp = keras.Input((frames, n_features), name="embeddings")
    logits = []
    for h in range(heads):
        sfx = f"_{h}" if heads > 1 else ""
        x = L.BatchNormalization(name=f"input_norm{sfx}")(inp)
        for i in range(2):
            x = L.Conv1D(filters, 3, use_bias=False, kernel_regularizer=reg, name=f"conv{i}{sfx}")(x)
            x = L.ReLU()(L.BatchNormalization()(x))
        # flatten keeps *where* in the window the word ended, so the score rises right after the end
        x = L.Dropout(dropout)(L.Flatten()(x))
        x = L.Dense(hidden, activation="relu", kernel_regularizer=reg, name=f"hidden{sfx}")(x)
        logits.append(L.Dense(1, kernel_regularizer=reg, name="logit" if heads == 1 else f"logit{sfx}")(L.Dropout(dropout)(x)))
    if heads > 1:
        logits = [L.Average(name="logit")(logits)]
    # training fits the logits (branch_logits) and conversion stops at them (logit_model): an int8
    # logit keeps resolution near a score of 1, where a quantized sigmoid has steps of 1/256
    out = L.Activation("sigmoid", name="score")(logits[0])
    return keras.Model(inp, out, name="trigger_head")


def branch_logits(model: Any) -> Any | None:
    """``[B, heads]``: the logit of every branch of a :func:`build_head` model (sharing its weights), or ``None`` for other models."""
    keras = _keras()
    names = {layer.name for layer in model.layers}
    if "logit" not in names:
        return None
    outs = [layer.output for layer in model.layers if layer.name.startswith("logit_")] or [model.get_layer("logit").output]
    return keras.Model(model.input, keras.layers.Concatenate(name="branches")(outs) if len(outs) > 1 else outs[0], name=f"{model.name}_branches")


def average_members(models: list[Any]) -> Any:
    """One model whose logit is the mean of ``models``' logits (an ensemble of separately trained heads); one model is returned as is."""
    if len(models) == 1:
        return models[0]
    keras = _keras()
    inp = keras.Input(models[0].input.shape[1:], name=models[0].input.name)
    logits = [keras.Model(m.input, m.get_layer("logit").output, name=f"member{i}")(inp) for i, m in enumerate(models)]
    out = keras.layers.Activation("sigmoid", name="score")(keras.layers.Average(name="logit")(logits))
    return keras.Model(inp, out, name=models[0].name)


def logit_model(model: Any) -> Any | None:
    """The model up to its ``logit`` layer (for conversion), or ``None`` when it has none."""
    keras = _keras()
    names = {layer.name for layer in model.layers}
    return keras.Model(model.input, model.get_layer("logit").output, name=f"{model.name}_logit") if "logit" in names else None


def build_course(frames: int, n_features: int, conv_filters: int = 196, kernel: int = 15, stride: int = 4, units: int = 128, dropout: float = 0.5) -> Any:
    """The course's trigger-word model (Conv1D, two GRUs, per-step sigmoid).

    Args:
        frames: Input frames (the course used 10 s; a ~1-2 s window keeps the unrolled int8 model small).
        n_features: Mel bands per frame.
        conv_filters: Conv1D filters (course: 196).
        kernel: Conv1D kernel (course: 15).
        stride: Conv1D stride (course: 4).
        units: GRU units (course: 128).
        dropout: Dropout rate (the course used 0.8).

    Returns:
        An uncompiled ``keras.Model`` ``[B, frames, n_features] -> [B, steps, 1]``.
    """
    keras = _keras()
    L = keras.layers
    inp = keras.Input((frames, n_features), name="logmel")
    x = level_norm_layer()(name="level_norm")(inp)
    x = L.Conv1D(conv_filters, kernel, strides=stride, name="conv")(x)
    x = L.Dropout(dropout)(L.ReLU()(L.BatchNormalization()(x)))
    x = L.GRU(units, return_sequences=True, name="gru1")(x)
    x = L.BatchNormalization()(L.Dropout(dropout)(x))
    x = L.GRU(units, return_sequences=True, name="gru2")(x)
    x = L.Dropout(dropout)(L.BatchNormalization()(L.Dropout(dropout)(x)))
    out = L.TimeDistributed(L.Dense(1, activation="sigmoid"), name="score")(x)
    return keras.Model(inp, out, name="trigger_course")


def course_steps(frames: int, kernel: int = 15, stride: int = 4) -> int:
    """Output steps of :func:`build_course` for ``frames`` input frames (valid padding)."""
    return (frames - kernel) // stride + 1


def build(arch: str, frames: int, n_features: int, **kwargs: Any) -> Any:
    """Build ``arch`` (one of :data:`ARCHS`)."""
    from sdk.errors import ConfigError

    if arch == "embedding":
        return build_head(frames, n_features, **kwargs)
    if arch == "dscnn":
        return build_dscnn(frames, n_features, **kwargs)
    if arch == "course":
        return build_course(frames, n_features, **kwargs)
    raise ConfigError(f"arch: expected one of {', '.join(ARCHS)}, got {arch!r}", param="arch")
