"""Read a ``.tflite`` flatbuffer without an interpreter: tensors, ops, subgraphs, metadata.

Used by ``edgesdk inspect``, the model card and the Edge TPU readiness analysis. Only the
generated TFLite schema that ships with ``ai-edge-litert`` and the ``flatbuffers`` package
are needed, never TensorFlow.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError
from sdk.paths import not_special

FILE_IDENTIFIER = b"TFL3"


@cache
def schema() -> ModuleType:
    """The generated TFLite flatbuffer schema module.

    It ships with ``ai_edge_litert``; only where TensorFlow is the sole backend is its copy used.
    """
    import importlib

    from sdk.lazy import require

    try:
        return importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError:
        try:
            return importlib.import_module("tensorflow.lite.python.schema_py_generated")
        except ImportError:
            return require("ai_edge_litert.schema_py_generated", "reading .tflite files")


def unpack(data: bytes) -> Any:
    """``data`` as the schema's mutable object tree (``ModelT``), for editing and :func:`pack`."""
    return schema().ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack(model: Any, size_hint: int = 0) -> bytes:
    """A ``ModelT`` (from :func:`unpack`) back to ``.tflite`` bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


@cache
def _enum_names(enum_cls_name: str) -> dict[int, str]:
    cls = getattr(schema(), enum_cls_name)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def tensor_type_name(code: int) -> str:
    """``TensorType`` code to a lower-case NumPy-like name (``int8``, ``float32``...)."""
    return _enum_names("TensorType").get(code, f"type{code}").lower()


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a subgraph as stored in the file."""

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    is_variable: bool
    has_data: bool

    @property
    def is_quantized(self) -> bool:
        return len(self.scales) > 0

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OpInfo:
    """One operator: its name (builtin op name or custom code), inputs and outputs."""

    index: int
    subgraph: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom: bool


@dataclass(frozen=True)
class SubgraphInfo:
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]


class TFLiteFile:
    """A parsed ``.tflite`` file.

    Attributes:
        data: The whole file's bytes.
        subgraphs: Parsed subgraphs; ``subgraphs[0]`` is the main one.
        metadata: Metadata entries, name to raw bytes.
        signatures: Signature keys defined in the model.
    """

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.name = name
        self.data = bytes(data)
        if len(self.data) < 8 or self.data[4:8] != FILE_IDENTIFIER:
            raise ModelFormatError(
                f"{name}: not a TFLite model (no 'TFL3' flatbuffer identifier); expected a .tflite file "
                "written by the TFLite converter or `edgesdk convert`"
            )
        try:
            self._parse()
        except ModelFormatError:
            raise
        except Exception as e:  # flatbuffers raises assorted errors on corrupt data
            raise ModelFormatError(f"{name}: corrupt or truncated TFLite file ({type(e).__name__}: {e})") from e

    @classmethod
    def from_path(cls, path: str | Path) -> TFLiteFile:
        """Read and parse ``path``.

        Raises:
            ModelFormatError: If the file is missing, unreadable, or not a valid TFLite flatbuffer.
        """
        p = Path(path)
        if p.is_dir():
            raise ModelFormatError(f"{p}: is a directory; expected a .tflite file")
        not_special(p, "expected a .tflite file", ModelFormatError)
        try:
            data = p.read_bytes()
        except FileNotFoundError as e:
            raise ModelFormatError(f"{p}: no such file; check the path") from e
        except OSError as e:
            raise ModelFormatError(f"{p}: cannot read ({e.strerror})") from e
        return cls(data, str(p))

    def _parse(self) -> None:
        s = schema()
        m = s.Model.GetRootAs(self.data, 0)
        n_buffers = m.BuffersLength()
        self.version = m.Version()
        self.description = (m.Description() or b"").decode(errors="replace")
        self._buffer_sizes = []
        for i in range(n_buffers):
            b = m.Buffers(i)
            size = b.DataLength() or int(b.Size() if hasattr(b, "Size") else 0)
            self._buffer_sizes.append(size)
        opcodes = []
        op_names = _enum_names("BuiltinOperator")
        for i in range(m.OperatorCodesLength()):
            oc = m.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == s.BuiltinOperator.CUSTOM:
                opcodes.append(((oc.CustomCode() or b"?").decode(errors="replace"), True))
            else:
                opcodes.append((op_names.get(code, f"OP_{code}"), False))
        subgraphs = []
        for g in range(m.SubgraphsLength()):
            sg = m.Subgraphs(g)
            tensors = tuple(self._tensor(sg.Tensors(t), t) for t in range(sg.TensorsLength()))
            ops = []
            for k in range(sg.OperatorsLength()):
                op = sg.Operators(k)
                name, custom = opcodes[op.OpcodeIndex()]
                ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
                outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
                ops.append(OpInfo(k, g, name, ins, outs, custom))
            subgraphs.append(
                SubgraphInfo(
                    name=(sg.Name() or b"").decode(errors="replace"),
                    inputs=tuple(int(x) for x in sg.InputsAsNumpy()) if sg.InputsLength() else (),
                    outputs=tuple(int(x) for x in sg.OutputsAsNumpy()) if sg.OutputsLength() else (),
                    tensors=tensors,
                    ops=tuple(ops),
                )
            )
        if not subgraphs:
            raise ModelFormatError(f"{self.name}: the model has no subgraphs")
        self.subgraphs: tuple[SubgraphInfo, ...] = tuple(subgraphs)
        self.metadata: dict[str, bytes] = {}
        for i in range(m.MetadataLength()):
            md = m.Metadata(i)
            name = (md.Name() or b"").decode(errors="replace")
            buf = m.Buffers(md.Buffer())
            if buf.DataLength():
                self.metadata[name] = buf.DataAsNumpy().tobytes()
            elif buf.Offset():
                self.metadata[name] = self.data[buf.Offset() : buf.Offset() + buf.Size()]
            else:
                self.metadata[name] = b""
        self.signatures = tuple(
            (m.SignatureDefs(i).SignatureKey() or b"").decode() for i in range(m.SignatureDefsLength())
        )

    def _tensor(self, t, index: int) -> TensorInfo:
        q = t.Quantization()
        scales: tuple[float, ...] = ()
        zps: tuple[int, ...] = ()
        qdim = 0
        if q is not None and q.ScaleLength():
            scales = tuple(float(x) for x in q.ScaleAsNumpy())
            zps = tuple(int(x) for x in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,) * len(scales)
            qdim = q.QuantizedDimension()
        shape = tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        sig = tuple(int(x) for x in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        buf = t.Buffer()
        has_data = 0 < buf < len(self._buffer_sizes) and self._buffer_sizes[buf] > 0
        return TensorInfo(
            index=index,
            name=(t.Name() or b"").decode(errors="replace"),
            shape=shape,
            shape_signature=sig,
            dtype=tensor_type_name(t.Type()),
            scales=scales,
            zero_points=zps,
            quantized_dimension=qdim,
            is_variable=bool(t.IsVariable()),
            has_data=has_data,
        )

    @property
    def main(self) -> SubgraphInfo:
        return self.subgraphs[0]

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self.main.tensors[i] for i in self.main.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self.main.tensors[i] for i in self.main.outputs]

    @property
    def ops(self) -> list[OpInfo]:
        """Every operator of every subgraph."""
        return [op for sg in self.subgraphs for op in sg.ops]

    def op_histogram(self) -> dict[str, int]:
        """Operator name to count over all subgraphs, most frequent first."""
        return dict(collections.Counter(op.name for op in self.ops).most_common())

    def weight_dtypes(self) -> dict[str, int]:
        """Constant (weight) tensor dtype to count, main subgraph."""
        return dict(collections.Counter(t.dtype for t in self.main.tensors if t.has_data))

    def size_bytes(self) -> int:
        return len(self.data)


def dtype_of(name: str) -> np.dtype:
    """NumPy dtype for a tensor type name from :func:`tensor_type_name`."""
    return np.dtype({"bool": np.bool_}.get(name, name))
