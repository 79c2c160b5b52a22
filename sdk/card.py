"""The model card: what a model needs to run, embedded in the ``.tflite`` itself.

The card is YAML stored in a flatbuffer metadata entry named ``edgesdk`` (see
ARCHITECTURE.md). It is written without TensorFlow through the generated schema's object
API. Models without a card may carry Ultralytics' metadata (a zip appended to the file
holding ``temp_meta.txt``), which :func:`ultralytics_metadata` reads.
"""

from __future__ import annotations

import ast
import io
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, ModelFormatError
from sdk.tflite_file import TFLiteFile, pack, schema, unpack

METADATA_NAME = "edgesdk"
TASKS = ("trigger-word", "detect", "face-embed", "face-detect", "classify", "generic")


def _version() -> str:
    from sdk import __version__

    return __version__


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to run a model, as documented in ARCHITECTURE.md.

    ``input``, ``output``, ``quantization``, ``metrics`` and ``source`` are mappings whose
    keys depend on the task (audio feature parameters, YOLO decoder, embedding size...).
    """

    task: str = "generic"
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    notes: str = ""
    edgesdk_version: str = field(default_factory=_version)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "card") -> ModelCard:
        """Strictly build a card from a mapping (unknown keys are an error).

        Raises:
            ModelFormatError: On unknown keys or an unknown task.
        """
        from sdk.config import from_dict
        from sdk.errors import ConfigError

        try:
            card = from_dict(cls, data)
        except ConfigError as e:
            raise ModelFormatError(f"{where}: invalid model card: {e}") from e
        if card.task not in TASKS:
            raise ModelFormatError(f"{where}: unknown task {card.task!r} in model card; expected one of {TASKS}")
        return card

    def to_yaml(self) -> str:
        from sdk.yamlio import dumps

        return dumps(asdict(self))

    @classmethod
    def from_yaml(cls, text: str | bytes, where: str = "card") -> ModelCard:
        """Parse a card from YAML text or UTF-8 bytes (bounded, no aliases; see :mod:`sdk.yamlio`).

        Raises:
            ModelFormatError: Binary data, not YAML, or not a valid card.
        """
        from sdk.yamlio import loads

        data = loads(text, "model card", where, error=ModelFormatError)
        return cls.from_dict(data or {}, where)

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` applied (nested dicts are replaced, not merged)."""
        data = asdict(self)
        data.update(changes)
        return ModelCard(**data)


def read_card(model: str | Path | bytes | TFLiteFile) -> ModelCard | None:
    """The card embedded in ``model``, or ``None`` if it has none.

    Raises:
        ModelFormatError: If the file is not a TFLite model or its card is invalid.
    """
    f = model if isinstance(model, TFLiteFile) else _as_file(model)
    raw = f.metadata.get(METADATA_NAME)
    if raw is None:
        return None
    return ModelCard.from_yaml(raw.decode("utf-8", errors="replace"), f.name)


def _as_file(model: str | Path | bytes) -> TFLiteFile:
    if isinstance(model, (bytes, bytearray)):
        return TFLiteFile(bytes(model))
    return TFLiteFile.from_path(model)


def embed_card(data: bytes, card: ModelCard) -> bytes:
    """Return ``data`` (a ``.tflite`` flatbuffer) with ``card`` stored as its ``edgesdk`` metadata.

    An existing card is replaced. Other metadata and buffers are kept.

    Raises:
        ModelFormatError: If ``data`` is not a TFLite flatbuffer.
    """
    return embed_metadata(data, METADATA_NAME, card.to_yaml().encode())


def embed_metadata(data: bytes, name: str, payload: bytes) -> bytes:
    """Return ``data`` (a ``.tflite`` flatbuffer) with ``payload`` as its metadata entry ``name`` (replaced if present).

    Raises:
        ModelFormatError: If ``data`` is not a TFLite flatbuffer.
    """
    TFLiteFile(data)  # validates
    s = schema()
    model = unpack(data)
    buf = s.BufferT()
    buf.data = bytearray(payload)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    existing = [m for m in model.metadata if (m.name or b"") in (name, name.encode())]
    if existing:
        model.buffers[existing[0].buffer] = buf
    else:
        model.buffers.append(buf)
        md = s.MetadataT()
        md.name = name
        md.buffer = len(model.buffers) - 1
        model.metadata.append(md)
    return pack(model, len(data) + len(payload))


def atomic_write(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash or Ctrl-C never leaves a half-written file at ``path``. ``mode`` defaults to what
    ``open()`` would create under the current umask.
    """
    p = Path(path)
    if mode is None:  # what open() would give: mkstemp's 0600 would hide models from other users
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent or ".")
    except OSError as e:
        raise ConfigError(f"cannot write {p} ({e.strerror}); check that its folder exists and is writable") from e
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ConfigError(f"cannot write {p} ({e.strerror or e}); check the free space and that {p} is a writable file") from e
        raise


def write_card(path: str | Path, card: ModelCard, out: str | Path | None = None) -> None:
    """Embed ``card`` into the model at ``path`` (in place, or into ``out``), atomically."""
    data = Path(path).read_bytes()
    atomic_write(out or path, embed_card(data, card))


def ultralytics_metadata(model: str | Path | bytes) -> dict[str, Any] | None:
    """Ultralytics' export metadata (``names``, ``imgsz``, ``stride``, ``task``...), or ``None``.

    Ultralytics appends a zip archive holding ``temp_meta.txt`` (a Python-literal dict) to
    its TFLite exports; ``zipfile`` finds it from the end of the file.
    """
    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.endswith("meta.txt")]
            if not names:
                return None
            text = z.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    try:
        meta = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(meta, dict):
        return None
    names = meta.get("names")
    if isinstance(names, dict):
        meta["names"] = [names[k] for k in sorted(names)]
    return meta
