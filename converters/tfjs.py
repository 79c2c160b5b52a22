"""TensorFlow.js graph models (``model.json`` + binary weight shards) read into a TF GraphDef.

A TF.js graph model is a GraphDef written as JSON (``modelTopology``) whose ``Const`` nodes
carry no values; the values are concatenated, in manifest order, in the shard files that
``weightsManifest`` lists, optionally quantised to ``uint8``/``uint16`` (``q * scale + min``) or
``float16``. Measured on real files (FINDINGS.md): TF.js writes int64 constants as int32, so
the dtype a constant gets is the one its node declares, not the manifest's.

:func:`read_tfjs` checks everything that can be wrong with the files (missing shard, wrong byte
count, an op TensorFlow does not know) and raises one-line :class:`~sdk.errors.ModelFormatError`
messages naming the file and the fix; the converter's fused ops and ``Prelu`` are split back into
plain ops (:mod:`converters.tfjs_ops`). Imports TensorFlow (host side only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError

# TF.js manifest dtype -> NumPy dtype of the stored bytes
STORED = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}
MAX_JSON_BYTES = 64 << 20


@dataclass
class ImportedGraph:
    """A GraphDef with its chosen inputs and outputs, ready for :mod:`converters.graphdef`.

    Attributes:
        graph_def: The ``tf.compat.v1.GraphDef`` with every constant filled in.
        inputs: Input tensor names (``name:0``), in model order.
        outputs: Output tensor names, in model order.
        files: The files read (for the card's SHA-256 and the error messages).
        info: Facts for the card's ``source`` (format, producer...).
    """

    graph_def: Any
    inputs: list[str]
    outputs: list[str]
    files: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def is_tfjs(path: Path) -> bool:
    """True for a ``.json`` file whose first bytes look like a TF.js model (cheap, no parsing)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b'"modelTopology"' in head or b'"weightsManifest"' in head or b'"format"' in head


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed ``model.json``.

    Raises:
        ModelFormatError: Not JSON, too large, or not a TF.js graph model.
    """
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelFormatError(f"{path}: {path.stat().st_size} bytes is too large for a TF.js model.json (weights belong in the .bin shards)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e}); expected a TF.js model.json") from e
    if not isinstance(doc, dict) or "modelTopology" not in doc or "weightsManifest" not in doc:
        raise ModelFormatError(f"{path}: no modelTopology/weightsManifest; expected a TF.js model.json written by tensorflowjs_converter")
    fmt = doc.get("format", "graph-model")
    topo = doc["modelTopology"]
    if fmt == "layers-model" or (isinstance(topo, dict) and "model_config" in topo):
        raise ModelFormatError(f"{path}: a TF.js layers model (Keras JSON); convert it to Keras with "
                               "`tensorflowjs_converter --input_format tfjs_layers_model --output_format keras` and convert the .h5")
    if not isinstance(topo, dict) or not isinstance(topo.get("node"), list):
        raise ModelFormatError(f"{path}: modelTopology has no node list; expected a TF.js graph model")
    return doc


def read_weights(path: Path, manifest: Sequence[Mapping[str, Any]]) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Every weight of the manifest, dequantised, as float32/int32/bool arrays (manifest dtypes).

    Raises:
        ModelFormatError: A missing or short/long shard, an unknown dtype or quantisation.
    """
    values: dict[str, np.ndarray] = {}
    files: list[Path] = []
    for g, group in enumerate(manifest):
        paths = [path.parent / p for p in group.get("paths", [])]
        for p in paths:
            if not p.is_file():
                raise ModelFormatError(f"{path}: weight shard {p.name} (group {g}) is missing; copy it beside model.json")
            # a shard path must stay inside the model folder (no ../ escapes)
            if path.parent.resolve() not in p.resolve().parents:
                raise ModelFormatError(f"{path}: weight shard path {p.name!r} leaves the model folder; refusing to read it")
        files += paths
        blob = b"".join(p.read_bytes() for p in paths)
        specs = group.get("weights", [])
        need = sum(_nbytes(path, w) for w in specs)
        if need != len(blob):
            names = ", ".join(p.name for p in paths)
            raise ModelFormatError(f"{path}: weight shards {names} hold {len(blob)} bytes but the manifest describes {need}; "
                                   "the shards are truncated or belong to another model.json")
        offset = 0
        for w in specs:
            n = _nbytes(path, w)
            values[w["name"]] = _decode(w, blob[offset : offset + n])
            offset += n
    return values, files


def _nbytes(path: Path, w: Mapping[str, Any]) -> int:
    stored = (w.get("quantization") or {}).get("dtype", w.get("dtype"))
    if stored not in STORED:
        raise ModelFormatError(f"{path}: weight {w.get('name')!r} has dtype {stored!r}; supported: {', '.join(STORED)} (string weights are not)")
    return int(np.prod(w.get("shape", []), dtype=np.int64)) * np.dtype(STORED[stored]).itemsize


def _decode(w: Mapping[str, Any], raw: bytes) -> np.ndarray:
    q = w.get("quantization") or {}
    shape = [int(d) for d in w.get("shape", [])]
    stored = np.frombuffer(raw, STORED[q.get("dtype", w["dtype"])]).reshape(shape)
    if q.get("dtype") in ("uint8", "uint16"):
        out = stored.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
    else:
        out = stored.astype(np.float32) if q.get("dtype") == "float16" else stored
    if w["dtype"] == "int32" and out.dtype != np.int32:
        out = np.round(out).astype(np.int32)
    return out


def read_tfjs(path: str | Path) -> ImportedGraph:
    """Read a TF.js graph model into a GraphDef whose constants hold their values.

    Args:
        path: The ``model.json`` file (its shards beside it).

    Returns:
        The graph with inputs and outputs from the model's ``signature`` (else its
        placeholders and the nodes nothing consumes).

    Raises:
        ModelFormatError: Unreadable JSON, missing/wrong-size shards, a constant without
            weights, or an op this TensorFlow does not know.
    """
    from google.protobuf import json_format

    from converters.graphdef import check_ops, default_io, tf_dtype_name

    p = Path(path)
    doc = read_manifest(p)
    values, shards = read_weights(p, doc["weightsManifest"])
    topo = {k: v for k, v in doc["modelTopology"].items() if k in ("node", "versions", "library")}
    gd = _graph_def_class()()
    try:
        json_format.ParseDict(topo, gd, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise ModelFormatError(f"{p}: modelTopology is not a TensorFlow GraphDef ({str(e)[:200]})") from e
    from converters.tfjs_ops import unfuse

    for node in gd.node:
        if node.op != "Const":
            continue
        if node.name not in values:
            raise ModelFormatError(f"{p}: constant {node.name!r} has no weights in weightsManifest; the model.json is incomplete")
        dtype = tf_dtype_name(node.attr["dtype"].type)
        node.attr["value"].tensor.CopyFrom(_tensor_proto(values[node.name], dtype))
    changes = unfuse(gd, str(p))  # before the op check: FusedDepthwiseConv2dNative and Prelu are TF.js-only
    check_ops(gd, p)
    inputs, outputs = _signature_io(doc.get("signature") or {})
    if not inputs or not outputs:
        inputs, outputs = default_io(gd)
    info = {"format": "tfjs-graph-model", "file": p.name, "shards": [s.name for s in shards], "changes": changes}
    for key in ("generatedBy", "convertedBy"):
        if isinstance(doc.get(key), str):
            info[key] = doc[key]
    return ImportedGraph(gd, inputs, outputs, [p, *shards], info)


def _graph_def_class() -> Any:
    import tensorflow as tf

    return tf.compat.v1.GraphDef


def _tensor_proto(value: np.ndarray, dtype: str) -> Any:
    """A TensorProto of ``value`` cast to the node's own dtype (int64 stored as int32 becomes int64)."""
    import tensorflow as tf

    np_dtype = tf.dtypes.as_dtype(dtype).as_numpy_dtype
    return tf.make_tensor_proto(np.asarray(value).astype(np_dtype), dtype=dtype, shape=list(value.shape))


def _signature_io(sig: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Tensor names of the model.json ``signature`` (outputs in name order: Identity, Identity_1...)."""
    def names(part: Any) -> list[str]:
        if not isinstance(part, Mapping):
            return []
        out = [str(v.get("name", k)) if isinstance(v, Mapping) else str(k) for k, v in part.items()]
        return [n if ":" in n else f"{n}:0" for n in out]

    outs = names(sig.get("outputs"))
    return names(sig.get("inputs")), sorted(outs, key=_natural)


def _natural(name: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
