"""A small registry of public models: download, verify by SHA-256, extract, attach a card.

The registry is YAML (``sdk/models_registry.yaml``, or ``--registry FILE``)::

    models:
      NAME:
        url: https://...              # the file to download (a model, or an archive holding it)
        sha256: <64 hex>              # of the downloaded file, checked before anything is kept
        license: Apache-2.0
        format: tflite                # tflite (card attached) | dlib-dat (converted to fp32 TFLite on a host)
        member: path/in/archive       # optional: extract this member of a .zip/.whl/.tar[.gz|.bz2]
        member_sha256: <64 hex>       # optional: of the extracted member
        compression: none             # or bz2 (the file or member is bzip2-compressed)
        filename: out.tflite          # name of the kept file
        description: one line
        card: {task: ..., input: {...}, output: {...}}   # model card attached to a tflite without one

A download goes to a new temporary ``.part`` file beside the destination, is hashed as it
streams, and is renamed into place only after every check passed: a wrong hash, a dropped
connection or Ctrl-C leaves nothing behind. The registry is read through :mod:`sdk.yamlio`
(bounded, no aliases); ``filename`` is reduced to a plain base name and the installed path is
checked to lie inside the destination folder, so a registry can never write elsewhere; ``url``
must be http(s).
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import os
import re
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.card import ModelCard, atomic_write, embed_card, read_card
from sdk.errors import ConfigError, EdgeSDKError
from sdk.yamlio import clip, cut, load_file

log = logging.getLogger("edgesdk")
REGISTRY = Path(__file__).with_name("models_registry.yaml")
FORMATS = ("tflite", "dlib-dat")
MAX_DOWNLOAD = 4 << 30  # the largest registry file is tens of MB; a server streaming forever must not fill the disk
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


class DownloadError(EdgeSDKError, OSError):
    """A registry download failed: network, size or checksum."""


@dataclass(frozen=True)
class RegistryEntry:
    """One registry model (see the module docstring for the fields)."""

    url: str
    sha256: str
    license: str
    format: str
    filename: str
    description: str = ""
    member: str = ""
    member_sha256: str = ""
    compression: str = "none"
    card: dict[str, Any] = field(default_factory=dict)


def default_models_dir() -> Path:
    """``$XDG_DATA_HOME/edgesdk/models`` (default ``~/.local/share/edgesdk/models``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "edgesdk" / "models"


def load_registry(path: str | Path | None = None) -> dict[str, RegistryEntry]:
    """The registry's entries by name.

    Raises:
        ConfigError: On a missing, binary or oversized file, a top level that is not a
            ``models:`` mapping, unknown keys, a bad hash, format or URL scheme.
    """
    from sdk.config import from_dict

    p = Path(path) if path else REGISTRY
    data = load_file(p, "model registry")
    if data is None:
        data = {}
    if not isinstance(data, dict) or set(data) - {"models"}:
        got = f"a {type(data).__name__}" if not isinstance(data, dict) else f"the keys {clip(sorted(map(str, data)))}"
        raise ConfigError(f"{p}: expected a top-level 'models:' mapping of NAME -> entry, got {got}")
    if not isinstance(data.get("models") or {}, dict):
        raise ConfigError(f"{p}: models: expected a mapping of NAME -> entry, got a {type(data['models']).__name__}")
    out = {}
    for name, raw in (data.get("models") or {}).items():
        try:
            entry = from_dict(RegistryEntry, raw, f"models.{name}")
        except ConfigError as e:
            raise ConfigError(f"{p}: {cut(str(e), 400)}") from e  # the message may quote a large value from the file
        for key in ("sha256", "member_sha256"):
            v = getattr(entry, key)
            if (v or key == "sha256") and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
                raise ConfigError(f"{p}: models.{name}.{key} must be 64 lowercase hex digits, got {clip(v)}")
        if entry.format not in FORMATS:
            raise ConfigError(f"{p}: models.{name}.format must be one of {FORMATS}, got {clip(entry.format)}")
        if entry.compression not in ("none", "bz2"):
            raise ConfigError(f"{p}: models.{name}.compression must be none or bz2, got {clip(entry.compression)}")
        if urllib.parse.urlsplit(entry.url).scheme not in ("https", "http"):
            # urlopen would also read file:// and ftp://: a registry must not make pull copy local files
            raise ConfigError(f"{p}: models.{name}.url must be an https:// (or http://) URL, got {clip(entry.url)}")
        out[str(name)] = entry
    return out


def safe_filename(filename: str, fallback: str) -> str:
    """``filename`` reduced to a plain base name: no folders, no leading dots, only ``A-Z a-z 0-9 . _ + -``.

    A registry names the file it installs, never a path: ``../../.bashrc`` becomes ``bashrc``.
    ``fallback`` (made safe the same way) is used when nothing is left.
    """
    def reduce(text: str) -> str:
        base = re.split(r"[\\/]", str(text).strip())[-1]
        return _UNSAFE.sub("_", base).lstrip(".")[:128]

    return reduce(filename) or reduce(fallback) or "model"


def _progress(done: int, total: int | None, t0: float, stream: Any) -> None:
    rate = done / max(time.monotonic() - t0, 1e-6) / 1e6
    if total:
        bar = "#" * int(30 * done / total)
        stream.write(f"\r  [{bar:<30}] {done / 1e6:7.1f}/{total / 1e6:.1f} MB {rate:5.1f} MB/s")
    else:
        stream.write(f"\r  {done / 1e6:7.1f} MB {rate:5.1f} MB/s")
    stream.flush()


def download(url: str, dest: Path, sha256: str, progress: bool = True, timeout: float = 30.0, max_bytes: int = MAX_DOWNLOAD) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file beside it, checking length and SHA-256.

    The temporary file is removed on any failure, Ctrl-C included; ``dest`` appears (by a
    rename) only after every check passed.

    Raises:
        DownloadError: Network error, a connection dropped early, more than ``max_bytes``, or a checksum mismatch.
        ConfigError: ``dest``'s folder is not writable.
    """
    digest, done = hashlib.sha256(), 0
    stream = sys.stderr
    part = _temp_in(dest.parent, dest.name)
    t0 = shown = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            if (total or 0) > max_bytes:
                raise DownloadError(f"{url}: the server announces {total} bytes, more than max_bytes={max_bytes}; nothing kept")
            while chunk := resp.read(1 << 16):
                done += len(chunk)
                if done > max_bytes:
                    raise DownloadError(f"{url}: more than max_bytes={max_bytes} bytes; nothing kept")
                fh.write(chunk)
                digest.update(chunk)
                if progress and (time.monotonic() - shown > 0.1 or done == total):
                    _progress(done, total, t0, stream)
                    shown = time.monotonic()
        if progress:
            stream.write("\n")
        if total is not None and done != total:
            raise DownloadError(f"{url}: connection dropped after {done} of {total} bytes; run `edgesdk models pull` again")
        got = digest.hexdigest()
        if got != sha256:
            raise DownloadError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the file changed or was corrupted, nothing kept")
        os.replace(part, dest)
        return dest
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, DownloadError):
            raise
        reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else (getattr(e, "reason", None) or e)
        raise DownloadError(f"{url}: download failed after {done} bytes ({reason}); check the network and run again") from e
    finally:
        part.unlink(missing_ok=True)  # after a success the rename already moved it


def _temp_in(folder: Path, name: str) -> Path:
    """A new, empty, private temporary file in ``folder`` (O_EXCL: never an existing file or a planted symlink)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise ConfigError(f"cannot write in {folder} ({e.strerror or e}); choose a writable folder") from e
    os.close(fd)
    return Path(tmp)


def _extract(data_path: Path, entry: RegistryEntry) -> bytes:
    """The model bytes: the archive member (if any), decompressed (if bz2), checked."""
    if entry.member:
        if zipfile.is_zipfile(data_path):
            with zipfile.ZipFile(data_path) as z:
                try:
                    data = z.read(entry.member)
                except KeyError as e:
                    raise DownloadError(f"{entry.url}: archive has no member {entry.member!r}") from e
        else:
            try:
                with tarfile.open(data_path) as t:
                    fh = t.extractfile(entry.member)
                    if fh is None:
                        raise KeyError(entry.member)
                    data = fh.read()
            except (tarfile.TarError, KeyError) as e:
                raise DownloadError(f"{entry.url}: not an archive holding {entry.member!r} ({e})") from e
    else:
        data = data_path.read_bytes()
    if entry.compression == "bz2":
        data = bz2.decompress(data)
    if entry.member_sha256 and hashlib.sha256(data).hexdigest() != entry.member_sha256:
        raise DownloadError(f"{entry.url}: {entry.member or 'model'} sha256 mismatch (expected {entry.member_sha256}); nothing kept")
    return data


def _models_dir(dest_dir: str | Path | None) -> Path:
    """``dest_dir`` (default :func:`default_models_dir`), created if missing.

    Raises:
        ConfigError: It is a file, cannot be created or is not writable.
    """
    out_dir = Path(dest_dir) if dest_dir else default_models_dir()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"dest_dir {out_dir} is a file, not a folder; choose a folder for the models", param="dest_dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"dest_dir {out_dir}: cannot create it ({e.strerror or e}); choose a folder you can write", param="dest_dir") from e
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"dest_dir {out_dir}: not writable; choose a folder you can write", param="dest_dir")
    return out_dir


def pull(name: str, dest_dir: str | Path | None = None, registry: str | Path | None = None, progress: bool = True,
         convert: Callable[[Path], Path] | None = None) -> dict[str, Any]:
    """Download, verify and install registry model ``name`` into ``dest_dir``.

    A ``dlib-dat`` model is also converted to TFLite when ``convert`` is given: a function of
    the downloaded file returning the ``.tflite`` it wrote (the host-side converter; the device
    runtime has none, and then ``next`` says what to run on a host).

    Returns:
        ``{"name", "path", "format", "license", "sha256", "card", "tflite", "next"}``
        (``next``: a command still to run, or ``None``).

    Raises:
        ConfigError: Unknown name. DownloadError: Network or checksum failure (nothing kept).
    """
    entries = load_registry(registry)
    if name not in entries:
        import difflib

        close = difflib.get_close_matches(name, entries, n=1)
        raise ConfigError(f"unknown model {clip(name)}" + (f"; did you mean {clip(close[0])}?" if close else "")
                          + f" (known: {', '.join(sorted(entries)) or 'none'}; see `edgesdk models list`)")
    e = entries[name]
    out_dir = _models_dir(dest_dir)
    filename = safe_filename(e.filename, f"{name}.{'tflite' if e.format == 'tflite' else 'dat'}")
    target = out_dir / filename
    if target.resolve().parent != out_dir.resolve():  # e.g. a symlink planted under that name
        raise ConfigError(f"{target} resolves outside {out_dir}; remove it or choose another dest_dir", param="dest_dir")
    log.debug("downloading %s (%s)", e.url, e.license)  # the progress bar says it; -v shows the URL
    raw = None
    try:
        raw = _temp_in(out_dir, filename)
        download(e.url, raw, e.sha256, progress)
        data = _extract(raw, e)
    finally:
        if raw is not None:
            raw.unlink(missing_ok=True)
    card = None
    if e.format == "tflite":
        if e.card and read_card(data) is None:
            data = embed_card(data, ModelCard.from_dict({**e.card, "license": e.card.get("license", e.license)}, f"models.{name}.card"))
        card = read_card(data)
    if filename != e.filename:  # said once the file is really installed under the other name
        log.warning("models.%s.filename %s is not a plain file name; installed it as %s", name, clip(e.filename), filename)
    atomic_write(target, data)
    nxt, tflite = None, str(target) if e.format == "tflite" else None
    if e.format == "dlib-dat":
        if convert is not None:
            tflite = str(convert(target))
            card = read_card(tflite)
        else:
            nxt = "pip install 'edgesdk[host]' and run `edgesdk models pull` again on a host to convert it to TFLite"
    return {"name": name, "path": str(target), "format": e.format, "license": e.license, "sha256": hashlib.sha256(data).hexdigest(),
            "card": card.task if card else None, "tflite": tflite, "next": nxt}
