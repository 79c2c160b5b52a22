"""Edge TPU readiness of a ``.tflite`` model, read from the flatbuffer alone.

Facts from Coral's "TensorFlow models on the Edge TPU" (https://coral.ai/docs/edgetpu/models-intro/):
only full 8-bit quantized models with static tensor sizes; for tensors of more than 3
dimensions only the 3 innermost may be larger than 1; a fixed set of ops; the compiler maps
ops in order up to the **first unsupported op** and everything after it runs on the CPU.

It lives in ``sdk`` (no TensorFlow, no ``converters``) because ``edgesdk inspect --edgetpu``
runs on a device install; running ``edgetpu_compiler`` stays host-side in
:mod:`converters.edgetpu`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdk.console import table
from sdk.tflite_file import OpInfo, TFLiteFile

# op -> constraint the compiler checks beyond int8 tensors (informational, shown in the table)
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "", "SUB": "", "MUL": "", "MAXIMUM": "", "MINIMUM": "", "SQUARED_DIFFERENCE": "", "RSQRT": "",
    "LOGISTIC": "", "TANH": "", "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "PRELU": "", "HARD_SWISH": "", "SOFTMAX": "1-D input",
    "CONV_2D": "", "DEPTHWISE_CONV_2D": "", "TRANSPOSE_CONV": "", "FULLY_CONNECTED": "default weight format only",
    "AVERAGE_POOL_2D": "no fused activation", "MAX_POOL_2D": "no fused activation", "L2_NORMALIZATION": "",
    "CONCATENATION": "no fused activation; a constant input must be all zeros (2 inputs)",
    "MEAN": "reduces along x/y only", "SUM": "", "REDUCE_MAX": "", "REDUCE_MIN": "",
    "PAD": "pads along x/y only", "RESHAPE": "", "SQUEEZE": "", "EXPAND_DIMS": "", "PACK": "", "SPLIT": "", "SLICE": "",
    "STRIDED_SLICE": "", "TRANSPOSE": "", "SPACE_TO_DEPTH": "", "RESIZE_BILINEAR": "3-D input/output; may stay on CPU for precision",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output", "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional only", "QUANTIZE": "int8 to int8 only",
}
OP_HINTS: dict[str, str] = {
    "WHILE": "a recurrent layer (GRU/LSTM) became a WHILE loop: unroll it (edgesdk convert --target edgetpu does)",
    "DEQUANTIZE": "float weights or activations remain: convert with --mode int8 (full integer)",
    "GATHER": "replace the lookup by a one-hot matmul or move it to post-processing",
    "DIV": "multiply by a constant reciprocal instead",
    "EXP": "move the exponent to post-processing, or use LOGISTIC/SOFTMAX",
    "GELU": "use relu or hard_swish",
    "CAST": "remove dtype casts from the graph",
    "ARG_MAX": "take the argmax in post-processing",
    "UNPACK": "unrolled GRU/LSTM steps use UNPACK, which the Edge TPU lacks: put recurrent layers last (they run on the CPU) or replace them with Conv1D",
}
DTYPE_HINT = "convert with --mode int8 (full integer); fp32/fp16/dynamic/int16x8 models cannot run on the Edge TPU"


@dataclass
class OpVerdict:
    """Where one op of the main subgraph is predicted to run, and why."""

    index: int
    op: str
    device: str  # "TPU" or "CPU"
    reason: str = ""
    constraint: str = ""


@dataclass
class Readiness:
    """Predicted Edge TPU mapping of one model.

    Attributes:
        ready: True when every op is predicted to map to the TPU.
        problems: ``{"check", "message", "hint"}`` per problem.
        ops: Per-op verdicts of the main subgraph, in execution order.
    """

    model: str
    problems: list[dict[str, str]] = field(default_factory=list)
    ops: list[OpVerdict] = field(default_factory=list)

    @property
    def tpu_ops(self) -> int:
        return sum(o.device == "TPU" for o in self.ops)

    @property
    def ready(self) -> bool:
        return not self.problems and self.tpu_ops == len(self.ops)

    def add(self, check: str, message: str, hint: str) -> None:
        self.problems.append({"check": check, "message": message, "hint": hint})

    def to_json(self) -> dict[str, Any]:
        first_cpu = next((o.index for o in self.ops if o.device == "CPU" and o.reason != "float I/O edge"), None)
        return {
            "model": self.model, "ready": self.ready, "tpu_ops": self.tpu_ops, "cpu_ops": len(self.ops) - self.tpu_ops,
            "first_cpu_op": first_cpu, "problems": self.problems, "ops": [asdict(o) for o in self.ops],
        }


def readiness(model: str | Path | bytes | TFLiteFile) -> Readiness:
    """Check ``model`` against the Edge TPU's requirements, offline.

    Args:
        model: A ``.tflite`` path, its bytes or an already parsed :class:`TFLiteFile`.

    Returns:
        The problems found and the predicted device of every op.
    """
    f = model if isinstance(model, TFLiteFile) else (TFLiteFile(model) if isinstance(model, (bytes, bytearray)) else TFLiteFile.from_path(model))
    r = Readiness(model=f.name)
    _check_tensors(f, r)
    _check_concat_ranges(f, r)
    _map_ops(f, r)
    return r


def _check_tensors(f: TFLiteFile, r: Readiness) -> None:
    if len(f.subgraphs) > 1:
        r.add("single subgraph", f"{len(f.subgraphs)} subgraphs (control flow such as WHILE)", OP_HINTS["WHILE"])
    for t in f.inputs:
        if t.is_dynamic:
            r.add("static shapes", f"input {t.name!r} has dynamic shape {list(t.shape_signature)}", "fix the input shape; edgesdk convert fixes the batch to 1")
        if t.shape and t.shape[0] != 1:
            r.add("batch 1", f"input {t.name!r} has batch {t.shape[0]}", "convert with batch 1 (edgesdk convert does)")
    floats = [t for sg in f.subgraphs for t in sg.tensors if t.dtype.startswith("float") and not _edge(f, t.index)]
    if floats:
        r.add("8-bit tensors", f"{len(floats)} float tensors (e.g. {floats[0].name!r})", DTYPE_HINT)
    other = sorted({t.dtype for t in f.main.tensors if t.dtype not in ("int8", "uint8", "int32", "float32") and not t.dtype.startswith("float")})
    if other:
        r.add("8-bit tensors", f"tensor types {other} (int16 activations?)", "use --mode int8, not int16x8")


def _edge(f: TFLiteFile, index: int) -> bool:
    return index in f.main.inputs or index in f.main.outputs


def _check_concat_ranges(f: TFLiteFile, r: Readiness) -> None:
    """A concat whose inputs have very different scales shares one scale and crushes the small-range part."""
    ts = f.main.tensors
    producer = {o: op for op in f.main.ops for o in op.outputs}

    def source_scale(i: int) -> float | None:
        # int8 concat inputs must share the output's scale, so the converter inserts
        # requantizing QUANTIZE ops: the range a tensor really had is before them
        op = producer.get(i)
        while op is not None and op.name == "QUANTIZE" and ts[op.inputs[0]].dtype in ("int8", "uint8"):
            i = op.inputs[0]
            op = producer.get(i)
        return ts[i].scales[0] if ts[i].scales else None

    for op in f.main.ops:
        if op.name != "CONCATENATION":
            continue
        scales = [s for s in (source_scale(i) for i in op.inputs if i >= 0) if s]
        if len(scales) >= 2 and min(scales) > 0 and max(scales) / min(scales) >= 20:
            r.add(
                "concat ranges",
                f"op {op.index} CONCATENATION joins tensors whose ranges differ {max(scales) / min(scales):.0f}x (e.g. boxes and scores)",
                "concat of boxes and scores mixes ranges: emit them as separate outputs (or normalise boxes to 0-1 first)",
            )


def _map_ops(f: TFLiteFile, r: Readiness) -> None:
    """Ops in execution order; the first unsupported op sends it and everything after it to the CPU."""
    ts = f.main.tensors
    cut: str | None = None
    for op in f.main.ops:
        reason = _unsupported(op, ts, f)
        if reason == "float I/O edge":
            r.ops.append(OpVerdict(op.index, op.name, "CPU", reason, "use --io int8/uint8 to keep it off the CPU"))
            continue
        if cut is None and reason:
            cut = f"after op {op.index} {op.name}"
            hint = DTYPE_HINT if reason.startswith("works on") else OP_HINTS.get(op.name, f"replace {op.name} with an Edge TPU op or move it to post-processing")
            r.add("supported ops", f"op {op.index} {op.name}: {reason}; it and every later op run on the CPU", hint)
        device = "CPU" if (cut or reason) else "TPU"
        r.ops.append(OpVerdict(op.index, op.name, device, reason or (cut and f"runs on the CPU: graph cut {cut}") or "", SUPPORTED_OPS.get(op.name, "")))


def _unsupported(op: OpInfo, ts: tuple, f: TFLiteFile) -> str:
    """Why ``op`` cannot map to the TPU, or ``""``."""
    tensors = [ts[i] for i in (*op.inputs, *op.outputs) if i >= 0]
    if op.name in ("QUANTIZE", "DEQUANTIZE") and any(t.dtype.startswith("float") and _edge(f, t.index) for t in tensors):
        return "float I/O edge"
    if op.name not in SUPPORTED_OPS:
        return "not supported by the Edge TPU"
    acts = [t for t in tensors if not t.has_data]
    bad = [t for t in acts if t.dtype not in ("int8", "uint8")]
    if bad:
        return f"works on {bad[0].dtype} tensors; the Edge TPU needs int8/uint8"
    for t in acts:
        if len(t.shape) > 3 and sum(d > 1 for d in t.shape[:-3]) > 0:
            return f"tensor {list(t.shape)} has more than 3 dimensions larger than 1"
    return ""


def format_readiness(info: dict[str, Any]) -> str:
    """Human text for :meth:`Readiness.to_json` output."""
    head = "Edge TPU: ready, all {n} ops map to the TPU".format(n=info["tpu_ops"]) if info["ready"] else (
        f"Edge TPU: not ready: {info['tpu_ops']} ops on the TPU, {info['cpu_ops']} on the CPU"
    )
    lines = [head]
    for p in info["problems"]:
        lines.append(f"  - {p['check']}: {p['message']}\n    fix: {p['hint']}")
    rows = [{"#": o["index"], "op": o["op"], "runs on": o["device"], "why": o["reason"], "constraint": o["constraint"]} for o in info["ops"]]
    lines += ["", table(rows)]
    comp = info.get("compiler")
    if comp:
        lines += ["", f"edgetpu_compiler: {comp.get('message', '')}"]
        if comp.get("ops"):
            lines.append(table(comp["ops"]))
    return "\n".join(lines)
