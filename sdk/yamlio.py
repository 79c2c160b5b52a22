"""The one way edgesdk reads and writes YAML: configs, profiles, registries, model cards.

YAML files come from users, downloads and model files, so reading one must never cost
more than the file's size. Four rules make it so:

- **No anchors or aliases.** An alias re-uses a node, and a few hundred bytes of nested
  aliases ("billion laughs") expand to gigabytes once a consumer walks or prints the
  result. A budget of N aliases does not help: nine levels of nine aliases each are 81
  aliases and 387 million leaves. No edgesdk file needs them (each is a few flat
  mappings), so they are refused outright at the first ``&`` or ``*``, and :func:`dumps`
  never writes them.
- **Bounded input**: at most ``max_bytes`` bytes are read, nesting at most
  :data:`MAX_DEPTH` levels, a single value at most :data:`MAX_SCALAR` characters.
- **Text only**: the bytes must be UTF-8 without NUL bytes; binary input is one line, not
  a ``UnicodeDecodeError`` traceback.
- **Short messages**: an error shows at most :data:`VALUE_CHARS` characters of any value
  (:func:`clip`), so a hostile file cannot flood the terminal.

Duplicate keys are refused too (YAML would silently keep the last one).
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from sdk.errors import ConfigError, EdgeSDKError
from sdk.paths import not_special

MAX_BYTES = 1 << 20  # the largest shipped card or registry is a few kB; 1 MiB leaves room for 10k labels
MAX_DEPTH = 32
MAX_SCALAR = 64 * 1024
VALUE_CHARS = 200

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 10
_repr.maxlevel = 3


def clip(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``...`` marks the cut), never expanding nested data in full."""
    return cut(_repr.repr(value) if isinstance(value, (list, tuple, dict, set, frozenset, str, bytes)) else repr(value), limit)


def cut(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks the cut): for messages that may quote a large value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _prefix(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


class _Refused(yaml.MarkedYAMLError):
    """A rule of this module broken at ``problem_mark``."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors/aliases, with depth and value-size limits and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(problem="YAML anchors and aliases (&name, *name) are not accepted; write each value out in full",
                           problem_mark=event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR:
            raise _Refused(problem=f"a value of {len(event.value)} characters (at most {MAX_SCALAR})", problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base class says so with its own message
                    continue
                if duplicate:
                    raise _Refused(problem=f"duplicate key {clip(key)}", problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a shared object twice instead of as an anchor and an alias (which :func:`loads` refuses)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def read_bytes(path: str | Path, what: str = "file", where: str | None = None, max_bytes: int = MAX_BYTES,
               error: type[EdgeSDKError] = ConfigError) -> bytes:
    """The bytes of ``path``, refusing files larger than ``max_bytes`` without reading them whole.

    Args:
        path: The file.
        what: What the file is, for messages (``config``, ``model card``).
        where: Message prefix; ``None`` for the path, ``""`` for none (the caller adds its own).
        max_bytes: The most bytes accepted.
        error: The exception class raised.

    Raises:
        error: The file cannot be read or is too large.
    """
    p = Path(path)
    where = str(p) if where is None else where
    not_special(p, f"give a {what if what.endswith('file') else what + ' file'}", error, where=where)
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise error(_prefix(where, f"cannot read {what} ({e.strerror or e}); check the path")) from e
    if len(data) > max_bytes:
        raise error(_prefix(where, f"larger than {max_bytes} bytes; a {what} is a small text file, check that this is the right file"))
    return data


def decode(data: bytes, what: str = "file", where: str = "", error: type[EdgeSDKError] = ConfigError) -> str:
    """``data`` as text: UTF-8 (a BOM is allowed), without NUL bytes.

    Raises:
        error: Binary or non-UTF-8 bytes, naming the offset.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise error(_prefix(where, f"binary data (a NUL byte at offset {nul}), not a {what}; a {what} is UTF-8 YAML text"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(_prefix(where, f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the {what} as UTF-8")) from e


def loads(text: str | bytes, what: str = "YAML document", where: str = "", max_bytes: int = MAX_BYTES,
          error: type[EdgeSDKError] = ConfigError) -> Any:
    """Parse one YAML document under this module's rules; an empty document is ``None``.

    Args:
        text: The document, as text or as bytes (checked by :func:`decode`).
        what: What the document is, for messages.
        where: Message prefix (a path, ``models.x.card``); ``""`` for none.
        max_bytes: The longest document accepted, in bytes of UTF-8.
        error: The exception class raised.

    Raises:
        error: Too large, binary, not YAML, or breaking a rule (aliases, depth, value size, duplicate keys).
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error(_prefix(where, f"{what} larger than {max_bytes} bytes; check that this is the right file"))
    if isinstance(text, bytes):
        text = decode(text, what, where, error)
    elif "\0" in text:
        raise error(_prefix(where, f"binary data (a NUL character at offset {text.index(chr(0))}), not a {what}"))
    try:
        return _parse(text)
    except yaml.MarkedYAMLError as e:
        raise error(_prefix(where, f"{what} is not valid YAML ({_marked(e)})")) from e
    except yaml.YAMLError as e:  # ReaderError (control characters) has no mark
        raise error(_prefix(where, f"{what} is not valid YAML ({cut(str(e).splitlines()[0] if str(e) else type(e).__name__)})")) from e
    except (ValueError, TypeError, RecursionError, MemoryError) as e:  # e.g. an integer of more than 4300 digits
        raise error(_prefix(where, f"{what} holds a value that cannot be read ({type(e).__name__}: {cut(str(e))})")) from e


def _parse(text: str) -> Any:
    loader = _StrictLoader(text)  # the reader checks for control characters here already
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _marked(e: yaml.MarkedYAMLError) -> str:
    """``line L, column C: problem`` in one line, at most :data:`VALUE_CHARS` characters of it from the file."""
    mark = e.problem_mark or e.context_mark
    problem = cut(" ".join(str(e.problem or e.context or "syntax error").split()))
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_file(path: str | Path, what: str = "YAML file", where: str | None = None, max_bytes: int = MAX_BYTES,
              error: type[EdgeSDKError] = ConfigError) -> Any:
    """Read and parse the YAML file ``path`` (see :func:`read_bytes` and :func:`loads`).

    Args:
        path: The file.
        what: What it is, for messages (``config``, ``device profile``, ``model registry``).
        where: Message prefix; ``None`` for the path, ``""`` for none (the caller adds its own).
        max_bytes: The largest file accepted.
        error: The exception class raised.

    Raises:
        error: On any problem, in one line.
    """
    where = str(path) if where is None else where
    # loads() is not given where twice: read_bytes and loads both prefix the same way
    return loads(read_bytes(path, what, where, max_bytes, error), what, where, max_bytes, error)


def dumps(data: Any, sort_keys: bool = False, flow: bool | None = False) -> str:
    """``data`` as YAML text that :func:`loads` reads back (no anchors or aliases, Unicode kept)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=sort_keys, allow_unicode=True, default_flow_style=flow)
