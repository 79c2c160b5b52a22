"""A layout pass: NCHW graphs (ONNX heritage, GPU exports) rewritten so that TFLite sees NHWC.

Graphs converted from ONNX keep their activations channels-first and wrap every NHWC
convolution in a pair of ``Transpose`` ops (NanoDet-m from TF.js: 83 of them, half the
invoke time). This pass tracks, for every tensor, the permutation ``s`` in which it is
*stored* (``stored = transpose(original, s)``) instead of materialising it:

- a ``Transpose`` with a constant permutation becomes an ``Identity`` and only changes ``s``;
- element-wise ops keep ``s`` (constant operands are broadcast and permuted once);
- axis ops (``ConcatV2``, ``Split``/``SplitV``, ``Pad``/``PadV2``/``MirrorPad``, keep-dims
  reductions, ``Softmax`` on an axis that stays last) get their axis arguments remapped;
- ``Reshape`` keeps ``s`` when the dims it merges or splits stay adjacent and in order;
- NCHW ``Conv2D``/``DepthwiseConv2dNative``/pools/``BiasAdd``/``FusedBatchNormV3`` become
  their NHWC forms (stored channels-last);
- every other op gets its inputs in their original layout (one ``Transpose`` inserted where
  needed), and so do the graph outputs.

Image inputs that look NCHW (``[1, 1|3|4, H, W]``) become NHWC placeholders, so the converted
model takes ``[1, H, W, C]`` like every other detector. The rewritten graph computes the same
numbers as the original (:func:`converters.graphdef.run_graph` on both, in the importers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Perm = tuple[int, ...]
TO_NHWC: Perm = (0, 2, 3, 1)
UNARY = {"Identity", "LeakyRelu", "Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Log", "Sqrt", "Rsqrt",
         "Square", "Cast", "Softplus", "Softsign", "Floor", "Ceil", "Round", "Erf", "Reciprocal", "StopGradient", "Sin", "Cos", "HardSwish"}
BINARY = {"Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "SquaredDifference", "FloorDiv", "Greater", "Less",
          "Equal", "GreaterEqual", "LessEqual", "Select", "SelectV2"}
PADS = {"Pad": 1, "PadV2": 1, "MirrorPad": 1}
REDUCE = {"Mean", "Sum", "Max", "Min", "Prod"}
NCHW_OPS = {"Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "BiasAdd", "FusedBatchNorm", "FusedBatchNormV3"}


def inverse(p: Sequence[int]) -> Perm:
    out = [0] * len(p)
    for i, v in enumerate(p):
        out[v] = i
    return tuple(out)


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def nchw_inputs(gd: Any, inputs: Sequence[str], shapes: dict[str, list[int] | None]) -> list[str]:
    """The inputs shaped like channels-first images: ``[1, 1|3|4, H, W]`` with H, W ≥ 8."""
    out = []
    for n in inputs:
        s = shapes.get(n if ":" in n else f"{n}:0")
        if s and len(s) == 4 and s[1] in (1, 3, 4) and all(isinstance(d, int) and d >= 8 for d in s[2:]):
            out.append(n)
    return out


@dataclass
class Rewrite:
    """The pass's result.

    Attributes:
        graph_def: The rewritten graph.
        outputs: Output tensor names in the new graph (same order; renamed where a
            ``Transpose`` back to the original layout was added).
        converted_inputs: Inputs now taking NHWC.
        transposes: ``(before, after)`` counts of ``Transpose`` ops.
    """

    graph_def: Any
    outputs: list[str]
    converted_inputs: list[str]
    transposes: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def to_nhwc(gd: Any, inputs: Sequence[str], outputs: Sequence[str], convert_inputs: Sequence[str]) -> Rewrite:
    """Rewrite ``gd`` as described in the module docstring.

    Args:
        gd: The graph (``tf.compat.v1.GraphDef``), constants filled in, static input shapes.
        inputs: Its input tensor names.
        outputs: Its output tensor names.
        convert_inputs: Inputs (a subset of ``inputs``, rank 4) to turn into NHWC placeholders.

    Returns:
        The rewritten graph and the facts about it.
    """
    from converters.graphdef import static_shapes, topological

    p = _Pass(gd, static_shapes(gd))
    for name in topological(gd):
        p.visit(p.nodes[name], {n.split(":")[0] for n in convert_inputs})
    new_outputs = [p.materialize(_tname(o), identity(p.rank(_tname(o)))) for o in outputs]
    before = sum(n.op == "Transpose" for n in gd.node)
    after = sum(n.op == "Transpose" for n in p.out.node)
    return Rewrite(p.out, new_outputs, list(convert_inputs), (before, after), p.notes)


def _tname(name: str) -> str:
    name = name.lstrip("^")
    return name if ":" in name else f"{name}:0"


class _Pass:
    """One run of the rewrite (state per tensor: the permutation it is stored in)."""

    def __init__(self, gd: Any, shapes: dict[str, list[int] | None]) -> None:
        import tensorflow as tf

        self.tf = tf
        self.nodes = {n.name: n for n in gd.node}
        self.shapes = shapes
        self.out = tf.compat.v1.GraphDef()
        self.out.versions.CopyFrom(gd.versions)
        self.out.library.CopyFrom(gd.library)
        self.state: dict[str, Perm] = {}
        self.cache: dict[tuple[str, Perm], str] = {}
        self.notes: list[str] = []
        self._n = 0
        self.n_outputs: dict[str, int] = {}
        for k in shapes:
            node = k.rsplit(":", 1)[0]
            self.n_outputs[node] = self.n_outputs.get(node, 0) + 1

    # -- helpers ---------------------------------------------------------------------------
    def rank(self, t: str) -> int:
        s = self.shapes.get(t)
        return len(s) if s is not None else -1

    def perm(self, t: str) -> Perm:
        r = self.rank(t)
        return self.state.get(t, identity(max(r, 0)))

    def const(self, t: str) -> np.ndarray | None:
        node = self.nodes.get(t.split(":")[0])
        if node is None or node.op != "Const":
            return None
        return self.tf.make_ndarray(node.attr["value"].tensor)

    def add_const(self, value: np.ndarray, hint: str, dtype: Any = None) -> str:
        self._n += 1
        node = self.out.node.add()
        node.name = f"{hint}/nhwc_const_{self._n}"
        node.op = "Const"
        proto = self.tf.make_tensor_proto(value, dtype=dtype)
        node.attr["value"].tensor.CopyFrom(proto)
        node.attr["dtype"].type = proto.dtype
        return f"{node.name}:0"

    def materialize(self, t: str, target: Perm) -> str:
        """A tensor holding ``t`` stored in ``target`` (a Transpose when its state differs)."""
        s = self.perm(t)
        if s == target or self.rank(t) < 0:
            return t
        key = (t, target)
        if key not in self.cache:
            q = [inverse(s)[v] for v in target]
            node = self.out.node.add()
            node.name = f"{t.replace(':', '_')}/nhwc_to_{''.join(map(str, target))}"
            node.op = "Transpose"
            node.input.extend([t, self.add_const(np.array(q, np.int32), node.name)])
            node.attr["T"].type = self._dtype(t)
            node.attr["Tperm"].type = self.tf.int32.as_datatype_enum
            self.cache[key] = f"{node.name}:0"
            self.shapes[self.cache[key]] = self.shapes.get(t)
            self.state[self.cache[key]] = target
        return self.cache[key]

    def _dtype(self, t: str) -> int:
        node = self.nodes[t.split(":")[0]]
        for key in ("T", "dtype", "DstT"):
            if key in node.attr:
                return node.attr[key].type
        return self.tf.float32.as_datatype_enum

    def emit(self, node: Any, inputs: Sequence[str], out_state: Perm | None) -> Any:
        new = self.out.node.add()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(inputs)
        for k in range(max(1, self.n_outputs.get(node.name, 0))):
            t = f"{node.name}:{k}"
            self.state[t] = out_state if out_state is not None else identity(max(self.rank(t), 0))
        return new

    # -- the visit -----------------------------------------------------------------------
    def visit(self, node: Any, convert_inputs: set[str]) -> None:
        data = [i for i in node.input if not i.startswith("^")]
        ctrl = [i for i in node.input if i.startswith("^")]
        op = node.op
        if op == "Placeholder" and node.name in convert_inputs:
            new = self.emit(node, [], TO_NHWC)
            dims = new.attr["shape"].shape.dim
            vals = [d.size for d in dims]
            for d, v in zip(dims, [vals[i] for i in TO_NHWC]):
                d.size = v
            self.notes.append(f"input {node.name}: NCHW {vals} taken as NHWC {[vals[i] for i in TO_NHWC]}")
            return
        handler = getattr(self, f"_op_{op}", None) or self._by_kind(op)
        if handler is None or not handler(node, [_tname(i) for i in data], ctrl):
            self.emit(node, [self.materialize(_tname(i), identity(max(self.rank(_tname(i)), 0))) for i in data] + ctrl, None)

    def _by_kind(self, op: str) -> Any:
        if op in UNARY:
            return self._unary
        if op in BINARY:
            return self._binary
        if op in PADS:
            return self._pad
        if op in REDUCE:
            return self._reduce
        if op in NCHW_OPS:
            return self._nchw_op
        if op in ("Split", "SplitV"):
            return self._split
        return None

    def _op_Const(self, node: Any, data: list[str], ctrl: list[str]) -> bool:  # noqa: N802 - op name
        self.emit(node, ctrl, None)
        return True

    def _op_Transpose(self, node: Any, data: list[str], ctrl: list[str]) -> bool:  # noqa: N802
        p = self.const(data[1])
        if p is None or self.rank(data[0]) < 0:
            return False
        s, p = self.perm(data[0]), [int(v) for v in p.reshape(-1)]
        out_state = tuple(inverse(p)[v] for v in s)  # stored bytes unchanged; only the bookkeeping moves
        new = self.emit(node, [data[0], *ctrl], out_state)
        new.op = "Identity"
        for k in list(new.attr):
            if k != "T":
                del new.attr[k]
        return True

    def _unary(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        if len(data) != 1:
            return False
        self.emit(node, [data[0], *ctrl], self.perm(data[0]))
        return True

    def _binary(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        out_t = f"{node.name}:0"
        r = self.rank(out_t)
        live = [t for t in data if self.const(t) is None]
        states = {self.perm(t) for t in live}
        if r < 1 or not live or len(states) != 1 or any(self.rank(t) != r for t in live):
            return False
        s = states.pop()
        if s == identity(r):
            return False
        ins = []
        for t in data:
            c = self.const(t)
            if c is None:
                ins.append(t)
            elif c.ndim == 0 or c.size == 1 and c.ndim <= r:
                ins.append(t)
            elif c.ndim <= r:
                full = c.reshape((1,) * (r - c.ndim) + c.shape)
                ins.append(self.add_const(np.ascontiguousarray(full.transpose(s)), node.name))
            else:
                return False
        self.emit(node, ins + ctrl, s)
        return True

    def _axis(self, t: str, axis: int) -> int:
        """Where original axis ``axis`` of ``t`` is stored."""
        s = self.perm(t)
        return inverse(s)[axis % len(s)]

    def _op_ConcatV2(self, node: Any, data: list[str], ctrl: list[str]) -> bool:  # noqa: N802
        vals, axis = data[:-1], self.const(data[-1])
        states = {self.perm(t) for t in vals}
        if axis is None or len(states) != 1 or any(self.rank(t) != self.rank(vals[0]) for t in vals):
            return False
        s = states.pop()
        new_axis = self._axis(vals[0], int(axis))
        self.emit(node, [*vals, self.add_const(np.array(new_axis, axis.dtype), node.name), *ctrl], s)
        return True

    def _split(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        if node.op == "Split":
            dim_t, val = data
            ins_fn = lambda d: [d, val]  # noqa: E731 - Split(split_dim, value)
        else:
            val, sizes, dim_t = data
            ins_fn = lambda d: [val, sizes, d]  # noqa: E731 - SplitV(value, size_splits, split_dim)
        dim = self.const(dim_t)
        if dim is None or self.rank(val) < 0:
            return False
        new_dim = self.add_const(np.array(self._axis(val, int(dim)), dim.dtype), node.name)
        self.emit(node, [*ins_fn(new_dim), *ctrl], self.perm(val))
        return True

    def _pad(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        x, pads = data[0], self.const(data[1])
        if pads is None or self.rank(x) < 0:
            return False
        s = self.perm(x)
        new = self.add_const(np.ascontiguousarray(pads[list(s)]), node.name)
        self.emit(node, [x, new, *data[2:], *ctrl], s)
        return True

    def _reduce(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        x, axes = data[0], self.const(data[1])
        if axes is None or not node.attr["keep_dims"].b or self.rank(x) < 0:
            return False
        new_axes = np.array([self._axis(x, int(a)) for a in axes.reshape(-1)], axes.dtype).reshape(axes.shape)
        self.emit(node, [x, self.add_const(new_axes, node.name), *ctrl], self.perm(x))
        return True

    def _op_Softmax(self, node: Any, data: list[str], ctrl: list[str]) -> bool:  # noqa: N802
        s = self.perm(data[0])
        if not s or s[-1] != len(s) - 1:
            return False
        self.emit(node, [data[0], *ctrl], s)
        return True

    def _nchw_op(self, node: Any, data: list[str], ctrl: list[str]) -> bool:
        """NCHW convolutions, pools, bias and batch norm as their NHWC forms (channels last)."""
        if node.attr["data_format"].s != b"NCHW":
            return False
        ins = [self.materialize(data[0], TO_NHWC), *data[1:]]
        new = self.emit(node, ins + ctrl, None)
        new.attr["data_format"].s = b"NHWC"
        for key in ("strides", "ksize", "dilations"):
            if key in new.attr and len(new.attr[key].list.i) == 4:
                v = list(new.attr[key].list.i)
                del new.attr[key].list.i[:]
                new.attr[key].list.i.extend([v[i] for i in TO_NHWC])
        self.state[f"{node.name}:0"] = TO_NHWC
        return True

    def _op_Reshape(self, node: Any, data: list[str], ctrl: list[str]) -> bool:  # noqa: N802
        x, out_t = data[0], f"{node.name}:0"
        src, dst = self.shapes.get(x), self.shapes.get(out_t)
        if not src or not dst or any(d is None for d in src + dst) or self.perm(x) == identity(len(src)):
            return False
        plan = _reshape_plan(list(src), list(dst), self.perm(x))
        if plan is None:
            return False
        stored_shape, out_state = plan
        shape_dtype = self.tf.dtypes.as_dtype(node.attr["Tshape"].type if "Tshape" in node.attr else self.tf.int32).as_numpy_dtype
        self.emit(node, [x, self.add_const(np.array(stored_shape, shape_dtype), node.name), *ctrl], out_state)
        return True


def _groups(src: list[int], dst: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Split a reshape into groups of consecutive source dims that become consecutive target dims."""
    if 0 in src or 0 in dst:
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj, pi, pj = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                gi.append(i)
                pi *= src[i]
                i += 1
            else:
                gj.append(j)
                pj *= dst[j]
                j += 1
        groups.append((gi, gj))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(src)))  # trailing size-1 dims join the last group
    groups[-1][1].extend(range(j, len(dst)))
    return groups


def _reshape_plan(src: list[int], dst: list[int], s: Perm) -> tuple[list[int], Perm] | None:
    """The stored target shape and state when ``s``-stored ``src`` reshapes to ``dst`` without moving data."""
    groups = _groups(src, dst)
    if groups is None:
        return None
    owner = {d: g for g, (gi, _) in enumerate(groups) for d in gi}
    order: list[int] = []  # groups in stored order
    k = 0
    while k < len(s):
        g = owner[s[k]]
        gi = groups[g][0]
        if g in order or list(s[k : k + len(gi)]) != gi:
            return None  # a group's dims are not adjacent and in order where they are stored
        order.append(g)
        k += len(gi)
    out_dims = [j for g in order for j in groups[g][1]]
    # stored target dim m holds original target dim out_dims[m]
    return [dst[j] for j in out_dims], tuple(out_dims)
