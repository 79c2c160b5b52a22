"""Routes for recurrent models: a streaming step model, a ``WHILE`` loop, or unrolling.

Measured with TF 2.21 (see /tmp/findings_convert.md and FINDINGS.md): unrolling copies the
recurrent cell per time step, so an unrolled int8 model grows with the sequence (the course's
1,375-step trigger-word model: 108 MB int8, 556 s); a ``WHILE`` loop stays small but
full-int8 of it crashes the converter. A **step model** converts a few steps of the network
with the recurrent state as explicit input and output tensors: no loop, weights stored once,
every mode works, and it is what a microphone app runs anyway. The device runtime carries the
state between invokes (:class:`sdk.runner.StreamState`).

A model streams when it is one chain ``input → time-local layers and valid Conv1D/pooling →
recurrent layers (return_sequences, forwards) mixed with per-step layers``. The front's
receptive field ``R`` and stride ``S`` fix the step model's window: ``k`` output steps read
``R + S (k - 1)`` frames and the next invoke starts ``S k`` frames later, so streaming a
sequence from a zero state gives exactly the full model's outputs.

Route choice (:func:`choose_route`): sequences of at most :data:`UNROLL_MAX_STEPS` steps keep
today's behaviour (float modes as a loop, integer modes unrolled); longer or unknown lengths
stream when the structure allows, else loop. ``route`` overrides it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

ROUTES = ("auto", "stream", "loop", "unroll")
UNROLL_MAX_STEPS = 64
DEFAULT_STREAM_STEPS = 4
RNN = ("GRU", "LSTM", "SimpleRNN")
POINTWISE = ("Dense", "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
             "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
             "Rescaling", "Identity", "TimeDistributed", "Masking")


@dataclass
class StreamPlan:
    """How a model streams: window, hop and state tensors of its step model."""

    frames: int
    hop_frames: int
    steps: int
    receptive: int
    stride: int
    features: int
    sequence_frames: int | None
    sequence_steps: int | None
    states: list[dict[str, Any]] = field(default_factory=list)
    layers: list[Any] = field(default_factory=list, repr=False, compare=False)  # the chain, found before step models add nodes

    def invokes_for(self, n_frames: int) -> int:
        """Invokes that cover every output step of an ``n_frames`` sequence."""
        return math.ceil(self.steps_for(n_frames) / self.steps)

    def steps_for(self, n_frames: int) -> int:
        return max(0, (n_frames - self.receptive) // self.stride + 1)

    def card(self, output_names: list[str]) -> dict[str, Any]:
        """The card's ``input.stream`` section; ``output_names`` in the step model's output order."""
        states = [{"input": s["input"], "output": output_names[1 + i], "shape": s["shape"], "layer": s["layer"]} for i, s in enumerate(self.states)]
        seq = {"frames": self.sequence_frames, "steps": self.sequence_steps} if self.sequence_frames else None
        return {"input": "frames", "outputs": [output_names[0]], "frames": self.frames, "hop_frames": self.hop_frames,
                "steps": self.steps, "state": states, **({"sequence": seq} if seq else {})}

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"}


def _cls(layer: Any) -> str:
    return type(layer).__name__


def chain(model: Any) -> list[Any] | str:
    """The model's layers as one chain (input layer excluded), or why it is not one."""
    import keras

    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        return "the model is not a single-input, single-output Keras model"
    layers = [ly for ly in model.layers if _cls(ly) != "InputLayer"]
    prev = model.inputs[0]
    for ly in layers:
        nodes = getattr(ly, "_inbound_nodes", [])
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or nodes[0].input_tensors[0] is not prev:
            return f"layer {ly.name!r} is not part of one straight chain of layers"
        prev = ly.output
    return layers


def plan(model: Any, steps: int = DEFAULT_STREAM_STEPS) -> tuple[StreamPlan | None, str]:
    """The model's :class:`StreamPlan`, or ``(None, why it cannot stream)``."""
    layers = chain(model)
    if isinstance(layers, str):
        return None, layers
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 3 or shape[2] is None:
        return None, f"the input {list(shape)} is not [batch, time, features]"
    receptive, stride, seen_rnn, states = 1, 1, False, []
    for ly in layers:
        cls = _cls(ly)
        if cls in RNN:
            cfg = ly.get_config()
            if not cfg.get("return_sequences") or cfg.get("go_backwards"):
                return None, f"recurrent layer {ly.name!r} must return sequences and run forwards to stream"
            n = 2 if cls == "LSTM" else 1
            states += [{"layer": ly.name, "input": f"state_{ly.name}" + (("_h", "_c")[i] if n == 2 else ""), "shape": [1, int(cfg["units"])]}
                       for i in range(n)]
            seen_rnn = True
        elif cls in ("Conv1D", "MaxPooling1D", "AveragePooling1D") and not seen_rnn:
            k, s, why = _window(ly)
            if why:
                return None, why
            receptive += (k - 1) * stride
            stride *= s
        elif cls not in POINTWISE:
            return None, f"layer {ly.name!r} ({cls}) mixes time steps{' after a recurrent layer' if seen_rnn else ''}"
    if not seen_rnn:
        return None, "no recurrent layer"
    t_in = shape[1]
    t_out = (t_in - receptive) // stride + 1 if t_in else None
    k = max(1, min(steps, t_out or steps))
    return StreamPlan(receptive + stride * (k - 1), stride * k, k, receptive, stride, int(shape[2]), t_in, t_out, states, layers), ""


def _window(ly: Any) -> tuple[int, int, str]:
    cfg = ly.get_config()
    if cfg.get("padding", "valid") != "valid" or cfg.get("data_format", "channels_last") != "channels_last":
        return 0, 0, f"layer {ly.name!r} needs padding='valid' and channels_last to stream (it has {cfg.get('padding')!r})"
    if _cls(ly) == "Conv1D":
        k, s, d = int(cfg["kernel_size"][0]), int(cfg["strides"][0]), int(cfg["dilation_rate"][0])
        return d * (k - 1) + 1, s, ""
    pool = int(cfg["pool_size"][0])
    strides = cfg.get("strides") or cfg["pool_size"]
    return pool, int(strides[0]), ""


def sequence_steps(model: Any) -> int | None:
    """Time steps the recurrent layers run over (``None`` when dynamic or unknown)."""
    for ly in getattr(model, "layers", []):
        if _cls(ly) in RNN or _cls(ly) == "Bidirectional":
            shape = tuple(ly.input.shape) if hasattr(ly, "input") else ()
            return shape[1] if len(shape) == 3 else None
    return None


def choose_route(requested: str, mode: str, target: str, steps: int | None, stream_plan: StreamPlan | None) -> tuple[str, str]:
    """``(route, why)`` for one mode: ``stream``, ``loop`` or ``unroll``."""
    integer = mode in ("int8", "int16x8") or target == "edgetpu"
    if requested == "stream" and stream_plan is None:
        requested = "auto"
    if requested != "auto":
        return requested, "as requested"
    if steps is not None and steps <= UNROLL_MAX_STEPS:
        if integer:
            return "unroll", f"{steps} steps (short): unrolled, since full-integer conversion of a loop crashes the converter"
        return "loop", f"{steps} steps (short): one WHILE loop"
    length = f"{steps} steps" if steps else "a dynamic number of steps"
    if stream_plan is not None:
        return "stream", f"{length}: a step model with the recurrent state as input/output tensors ({stream_plan.steps} steps per invoke)"
    return "loop", f"{length}, and the model cannot stream: one WHILE loop"


def step_model(model: Any, p: StreamPlan, batch: int | None) -> Any:
    """The step model: ``frames [batch, p.frames, F]`` + states in, ``[y, *states]`` out, weights shared with ``model``."""
    import keras

    frames = keras.Input((p.frames, p.features), batch_size=batch, name="frames")
    x, ins, outs = frames, [frames], []
    for ly in p.layers:
        cls = _cls(ly)
        if cls in RNN:
            cfg = {**ly.get_config(), "return_sequences": True, "return_state": True, "unroll": True, "stateful": False, "go_backwards": False}
            clone = type(ly).from_config(cfg)
            states = [keras.Input((s["shape"][1],), batch_size=batch, name=s["input"]) for s in p.states if s["layer"] == ly.name]
            res = clone(x, initial_state=states if len(states) > 1 else states[0])
            clone.set_weights(ly.get_weights())
            x = res[0]
            ins += states
            outs += list(res[1:])
        elif cls == "TimeDistributed" and _cls(ly.layer) == "Dense":
            x = ly.layer(x)  # Dense on [batch, steps, n] is one FULLY_CONNECTED over every step
        else:
            x = ly(x)
    return keras.Model(ins, [x, *outs], name=f"{model.name}_step")


def stream_keras(step: Any, p: StreamPlan, x: np.ndarray, keep_inputs: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run a (batch ``None``) step model over sequences ``x [N, T, F]`` from a zero state.

    Returns:
        The outputs ``[N, steps, ...]`` and, with ``keep_inputs`` > 0, about that many
        per-invoke input samples (window and states), spread over the sequences.
    """
    import tensorflow as tf

    n_inv = p.invokes_for(x.shape[1])
    padded = _pad(x, (n_inv - 1) * p.hop_frames + p.frames)
    state = {s["input"]: np.zeros((len(x), s["shape"][1]), np.float32) for s in p.states}
    names = [s["input"] for s in p.states]
    every = max(1, math.ceil(len(x) * n_inv / keep_inputs)) if keep_inputs else 0
    call = tf.function(lambda feeds: step(feeds, training=False))
    ys, kept = [], {k: [] for k in ["frames", *names]}
    for j in range(n_inv):
        feeds = {"frames": padded[:, j * p.hop_frames : j * p.hop_frames + p.frames], **state}
        if every:
            rows = [i for i in range(len(x)) if (j * len(x) + i) % every == 0]
            for k in kept:
                kept[k].append(np.asarray(feeds[k])[rows])
        res = [np.asarray(r) for r in call({k: tf.constant(v) for k, v in feeds.items()})]
        ys.append(res[0])
        state = dict(zip(names, res[1:]))
    y = np.concatenate(ys, axis=1)[:, : p.steps_for(x.shape[1])]
    return y, ({k: np.concatenate(v) for k, v in kept.items()} if every else {})


def _pad(x: np.ndarray, n_frames: int) -> np.ndarray:
    """``x`` with zero frames appended up to ``n_frames`` (later frames only reach steps past the end, which are cut)."""
    if x.shape[1] >= n_frames:
        return x[:, :n_frames]
    return np.concatenate([x, np.zeros((x.shape[0], n_frames - x.shape[1], *x.shape[2:]), x.dtype)], axis=1)
