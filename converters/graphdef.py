"""What the graph importers (:mod:`converters.tfjs`, :mod:`converters.frozen_graph`) share.

An imported GraphDef is checked (every op known to this TensorFlow), run (the reference the
converted model is compared against), and written as a SavedModel folder with one
``serving_default`` signature, which :func:`converters.convert.convert` already converts.
Imports TensorFlow (host side only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError

# TF 2.21's oneDNN kernels segfault running some imported graphs (a TF.js BlazeFace with
# depthwise convolutions): the import and the converter run in child processes started without
# them (converters.child_proc). Not set here: changing this process's environment would change
# the numerics of every TensorFlow process it starts later (training workers among them).


def tf_dtype_name(code: int) -> str:
    """``DT_INT64`` enum value → ``"int64"``."""
    import tensorflow as tf

    return tf.dtypes.as_dtype(code).name


def check_ops(gd: Any, path: Path) -> None:
    """Raise ModelFormatError naming the first op this TensorFlow does not know.

    Raises:
        ModelFormatError: ``{path}: op 'X' (node 'n') is not a TensorFlow op ...``.
    """
    from tensorflow.python.framework import op_def_registry

    for node in gd.node:
        if op_def_registry.get(node.op) is None:
            raise ModelFormatError(
                f"{path}: op {node.op!r} (node {node.name!r}) is not a TensorFlow {_tf_version()} op; the graph was written by a "
                "newer or patched TensorFlow, or holds a custom op: re-export it with standard ops"
            )


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def tensor_name(name: str) -> str:
    """``node`` → ``node:0``; ``node:1`` unchanged."""
    return name if ":" in name else f"{name}:0"


def default_io(gd: Any) -> tuple[list[str], list[str]]:
    """Placeholders as inputs, and the outputs of nodes no other node reads (Const and NoOp excluded)."""
    used = {i.lstrip("^").split(":")[0] for n in gd.node for i in n.input}
    inputs = [f"{n.name}:0" for n in gd.node if n.op == "Placeholder"]
    outputs = [f"{n.name}:0" for n in gd.node if n.name not in used and n.op not in ("Const", "NoOp", "Placeholder", "Assert")]
    return inputs, outputs


def import_graph(gd: Any) -> Any:
    """A ``tf.Graph`` holding ``gd`` (names unprefixed).

    Raises:
        ModelFormatError: TensorFlow refuses the graph (bad attr, dangling input...).
    """
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        try:
            tf.graph_util.import_graph_def(gd, name="")
        except (ValueError, TypeError, tf.errors.OpError) as e:
            raise ModelFormatError(f"the graph cannot be imported into TensorFlow: {str(e).splitlines()[0][:240]}") from e
    return g


def static_shapes(gd: Any) -> dict[str, list[int] | None]:
    """Every tensor's static shape (``None`` where unknown), by tensor name."""
    g = import_graph(gd)
    out: dict[str, list[int] | None] = {}
    for op in g.get_operations():
        for t in op.outputs:
            out[t.name] = t.shape.as_list() if t.shape.rank is not None else None
    return out


def check_io(gd: Any, inputs: Sequence[str], outputs: Sequence[str], where: str) -> None:
    """Raise ModelFormatError when an input or output names no tensor of ``gd``."""
    g = import_graph(gd)
    for role, names in (("inputs", inputs), ("outputs", outputs)):
        for n in names:
            try:
                g.get_tensor_by_name(tensor_name(n))
            except (KeyError, ValueError) as e:
                near = sorted({op.name for op in g.get_operations() if n.split(":")[0].lower() in op.name.lower()})[:3]
                hint = f" (similar: {', '.join(near)})" if near else ""
                raise ModelFormatError(f"{where}: {role}: no tensor {n!r} in the graph{hint}", param=role) from e


def run_graph(gd: Any, inputs: Sequence[str], outputs: Sequence[str], arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run ``gd`` in TensorFlow: feed ``arrays`` to ``inputs``, fetch ``outputs``."""
    fn = graph_function(gd, inputs, outputs, [np.asarray(a).shape for a in arrays])
    return [np.asarray(o) for o in fn(*[np.asarray(a) for a in arrays])]


def graph_function(gd: Any, inputs: Sequence[str], outputs: Sequence[str], shapes: Sequence[Sequence[int]] | None = None,
                   keys: Sequence[str] | None = None) -> Any:
    """A ``tf.function`` importing ``gd`` with ``inputs`` fed by its arguments and returning ``outputs``.

    Args:
        gd: The graph; nodes that ``outputs`` do not need are pruned first.
        inputs: Tensor names fed by the arguments.
        outputs: Tensor names returned (a tuple in this order).
        shapes: Argument shapes (default: the inputs' static shapes).
        keys: Argument names (default: from the tensor names).
    """
    import tensorflow as tf

    gd = prune(gd, outputs)
    g = import_graph(gd)
    ts = [g.get_tensor_by_name(tensor_name(n)) for n in inputs]
    shapes = shapes or [t.shape.as_list() for t in ts]
    keys = keys or [_key(n) for n in inputs]
    specs = [tf.TensorSpec(s, t.dtype, name=k) for s, t, k in zip(shapes, ts, keys)]
    feeds = [tensor_name(n) for n in inputs]
    fetches = [tensor_name(n) for n in outputs]

    @tf.function(input_signature=specs, autograph=False)
    def run(*args: Any) -> Any:
        return tuple(tf.graph_util.import_graph_def(gd, input_map=dict(zip(feeds, args)), return_elements=fetches, name="g"))

    return run


def prune(gd: Any, outputs: Sequence[str]) -> Any:
    """``gd`` without the nodes ``outputs`` do not depend on."""
    import tensorflow as tf

    return tf.compat.v1.graph_util.extract_sub_graph(gd, sorted({n.split(":")[0] for n in outputs}))


def write_saved_model(gd: Any, inputs: Sequence[str], outputs: Sequence[str], folder: Path) -> list[str]:
    """Write ``gd`` as a SavedModel whose ``serving_default`` maps inputs to ``output_<i>``.

    Output keys are zero-padded (``output_00``...) when there are ten or more, so that the
    key order (which the converter and the report use) is the model's output order.

    Returns:
        The signature's input keys, in model order.
    """
    import tensorflow as tf

    fn = graph_function(gd, inputs, outputs)
    width = 2 if len(outputs) >= 10 else 1
    specs = fn.input_signature

    class Imported(tf.Module):
        @tf.function(input_signature=specs, autograph=False)
        def serve(self, *args: Any) -> dict[str, Any]:
            return {f"output_{i:0{width}d}": tf.identity(o) for i, o in enumerate(fn(*args))}

    module = Imported()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve.get_concrete_function()})
    return [s.name for s in specs]


def _key(name: str) -> str:
    """A signature key from a tensor name (``input_1:0`` → ``input_1``; ``a/b:1`` → ``a_b_1``)."""
    node, _, idx = name.partition(":")
    key = node.replace("/", "_").replace("-", "_")
    return key if idx in ("", "0") else f"{key}_{idx}"


def compare(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Per output: shape and max absolute difference (relative to the output's range)."""
    rows = []
    for a, b in zip(ref, got):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        err = float(np.max(np.abs(a - b))) if a.size else 0.0
        span = float(np.ptp(a)) if a.size else 0.0
        rows.append({"shape": list(a.shape), "max_abs_diff": err, "range": span})
    return rows


def feeds_for(shapes: Mapping[str, list[int] | None], inputs: Sequence[str], seed: int = 0) -> list[np.ndarray]:
    """Random normal inputs of the inputs' static shapes (unknown axes: 1 for batch, else 32)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in inputs:
        shape = shapes.get(tensor_name(n))
        if shape is None:
            raise ModelFormatError(f"input {n!r} has no static shape; give the graph a fixed input shape", param="inputs")
        dims = [d if d is not None else (1 if i == 0 else 32) for i, d in enumerate(shape)]
        out.append(rng.standard_normal(dims).astype(np.float32))
    return out


def topological(gd: Any) -> list[str]:
    """Node names, every node after the nodes it reads (GraphDefs need not be sorted)."""
    names = [n.name for n in gd.node]
    deps = {n.name: {i.lstrip("^").split(":")[0] for i in n.input} for n in gd.node}
    users: dict[str, list[str]] = {k: [] for k in names}
    for k, ds in deps.items():
        for d in ds:
            users.setdefault(d, []).append(k)
    left = {k: len(v) for k, v in deps.items()}
    ready = deque(k for k in names if left[k] == 0)
    order = []
    while ready:
        k = ready.popleft()
        order.append(k)
        for u in users.get(k, []):
            left[u] -= 1
            if left[u] == 0:
                ready.append(u)
    if len(order) != len(names):
        raise ModelFormatError("the graph has a cycle or an input no node produces; it cannot be rewritten to NHWC")
    return order
