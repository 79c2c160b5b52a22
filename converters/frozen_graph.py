"""TF1 frozen graphs (``frozen_inference_graph.pb``): a binary GraphDef with constants for weights.

:func:`read_frozen` parses the file, checks its ops, and cuts it to the tensors asked for:
an input may be any tensor of the graph (``FeatureExtractor/MobilenetV2/MobilenetV2/input``
skips an Object Detection API model's preprocessing and post-processing loops), which then
becomes a placeholder of its static shape (batch 1). Imports TensorFlow (host side only).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from converters.tfjs import ImportedGraph
from sdk.errors import ModelFormatError

MAX_PB_BYTES = 2 << 30  # protobuf's own limit
VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp", "ReadVariableOp")


def is_frozen_graph(path: Path) -> bool:
    """A ``.pb`` file that is not a SavedModel's ``saved_model.pb``."""
    return path.suffix.lower() == ".pb" and path.is_file() and path.name != "saved_model.pb"


def read_frozen(path: str | Path, inputs: Sequence[str] = (), outputs: Sequence[str] = (),
                input_shapes: Sequence[Sequence[int]] = ()) -> ImportedGraph:
    """Read and cut a frozen GraphDef.

    Args:
        path: The ``.pb`` file.
        inputs: Tensor (or node) names that become the model inputs; default: its placeholders.
        outputs: Tensor names the model returns; default: the nodes nothing reads.
        input_shapes: Per input, its shape (for a tensor whose shape the graph leaves open,
            e.g. after a preprocessing loop); default: its static shape with batch 1.

    Returns:
        The cut graph with its inputs and outputs as tensor names.

    Raises:
        ModelFormatError: Not a GraphDef, variables left (not frozen), unknown ops, or
            names that are no tensor of the graph (``param`` ``inputs``/``outputs``).
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from converters.graphdef import check_io, check_ops, default_io, tensor_name

    p = Path(path)
    if p.stat().st_size > MAX_PB_BYTES:
        raise ModelFormatError(f"{p}: larger than 2 GiB, which a GraphDef cannot be")
    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(p.read_bytes())
    except DecodeError as e:
        raise ModelFormatError(f"{p}: not a TensorFlow GraphDef ({e}); expected a frozen graph .pb (or pass a SavedModel folder)") from e
    if not gd.node:
        raise ModelFormatError(f"{p}: the GraphDef holds no nodes; a SavedModel's saved_model.pb is converted by passing its folder")
    variables = [n.name for n in gd.node if n.op in VARIABLE_OPS]
    if variables:
        raise ModelFormatError(f"{p}: the graph still has variables ({variables[0]}...); freeze it first "
                               "(tf.compat.v1.graph_util.convert_variables_to_constants) or pass the SavedModel folder")
    check_ops(gd, p)
    guessed_in, guessed_out = default_io(gd)
    ins = [tensor_name(n) for n in inputs] or guessed_in
    outs = [tensor_name(n) for n in outputs] or guessed_out
    if not inputs or not outputs:
        print(f"edgesdk: import: {p.name}: {'inputs ' + ','.join(ins) if not inputs else ''}{' and ' if not inputs and not outputs else ''}"
              f"{'outputs ' + ','.join(outs) if not outputs else ''} taken from the graph (override with --inputs/--outputs)",
              file=sys.stderr, flush=True)
    if not ins or not outs:
        raise ModelFormatError(f"{p}: cannot tell the graph's inputs and outputs; name them with --inputs NAME and --outputs NAME,...")
    check_io(gd, ins, outs, str(p))
    gd = cut(gd, ins, outs, input_shapes)
    return ImportedGraph(gd, ins, outs, [p], {"format": "tf-frozen-graph", "file": p.name, "inputs": ins, "outputs": outs})


def cut(gd: Any, inputs: Sequence[str], outputs: Sequence[str], input_shapes: Sequence[Sequence[int]] = ()) -> Any:
    """``gd`` with each input tensor produced by a placeholder (static shape, batch 1), pruned to ``outputs``.

    Raises:
        ModelFormatError: An input whose shape is unknown beyond the batch axis and not given
            in ``input_shapes``, or given but contradicting the graph.
    """
    if input_shapes and len(input_shapes) != len(inputs):
        raise ModelFormatError(f"input_shapes: {len(input_shapes)} shapes for {len(inputs)} inputs; give one per input", param="input_shapes")
    import tensorflow as tf

    from converters.graphdef import import_graph, prune

    g = import_graph(gd)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    for k, name in enumerate(inputs):
        t = g.get_tensor_by_name(name)
        if input_shapes:
            given = [int(d) for d in input_shapes[k]]
            if t.shape.rank is not None and not t.shape.is_compatible_with(given):
                raise ModelFormatError(f"input_shapes: {given} does not fit input {name!r} of shape {t.shape.as_list()}", param="input_shapes")
            node, _, idx = name.partition(":")
            _replace_with_placeholder(out, node, node if idx == "0" else f"{node}__{idx}", idx, t.dtype.as_datatype_enum, given)
            continue
        if t.op.type == "Placeholder" and t.shape.rank is not None and all(d is not None for d in t.shape.as_list()[1:]):
            _fix_batch(out, t.op.name, t.shape.as_list())
            continue
        shape = t.shape.as_list() if t.shape.rank is not None else None
        if shape is None or any(d is None for d in shape[1:]):
            raise ModelFormatError(f"input {name!r} has shape {shape}; only the batch axis may be unknown: give its shape "
                                   "(input_shapes) or pick a tensor with a fixed size", param="input_shapes")
        node, _, idx = name.partition(":")
        target = node if idx == "0" else f"{node}__{idx}"
        _replace_with_placeholder(out, node, target, idx, t.dtype.as_datatype_enum, [1, *shape[1:]])
    return prune(out, outputs)


def _fix_batch(gd: Any, node_name: str, shape: list[int | None]) -> None:
    for n in gd.node:
        if n.name == node_name and shape and shape[0] is None:
            n.attr["shape"].shape.dim[0].size = 1


def _replace_with_placeholder(gd: Any, node: str, target: str, idx: str, dtype: int, shape: list[int]) -> None:
    """Make ``target`` a placeholder standing for ``node:idx`` and point every reader at it."""
    if target == node:
        keep = [n for n in gd.node if n.name != node]
        del gd.node[:]
        gd.node.extend(keep)
    else:
        for n in gd.node:
            for k, i in enumerate(n.input):
                if i == f"{node}:{idx}":
                    n.input[k] = target
    ph = gd.node.add()
    ph.name, ph.op = target, "Placeholder"
    ph.attr["dtype"].type = dtype
    for d in shape:
        ph.attr["shape"].shape.dim.add().size = d
