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

A download goes to a ``.part`` file beside the destination, is hashed as it streams, and is
renamed into place only after every check passed: a wrong hash, a dropped connection or
Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.card import ModelCard, atomic_write, embed_card, read_card
from sdk.errors import ConfigError, EdgeSDKError

log = logging.getLogger("edgesdk")
REGISTRY = Path(__file__).with_name("models_registry.yaml")
FORMATS = ("tflite", "dlib-dat")


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
        ConfigError: On a missing file, unknown keys, a bad hash or format.
    """
    import yaml

    from sdk.config import from_dict

    p = Path(path) if path else REGISTRY
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the model registry ({e})") from e
    models = data.get("models") or {}
    if not isinstance(models, dict) or set(data) - {"models"}:
        raise ConfigError(f"{p}: expected a top-level 'models:' mapping of NAME -> entry")
    out = {}
    for name, raw in models.items():
        entry = from_dict(RegistryEntry, raw, f"models.{name}")
        for key in ("sha256", "member_sha256"):
            v = getattr(entry, key)
            if (v or key == "sha256") and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
                raise ConfigError(f"{p}: models.{name}.{key} must be 64 lowercase hex digits, got {v!r}")
        if entry.format not in FORMATS:
            raise ConfigError(f"{p}: models.{name}.format must be one of {FORMATS}, got {entry.format!r}")
        if entry.compression not in ("none", "bz2"):
            raise ConfigError(f"{p}: models.{name}.compression must be none or bz2, got {entry.compression!r}")
        out[str(name)] = entry
    return out


def _progress(done: int, total: int | None, t0: float, stream: Any) -> None:
    rate = done / max(time.monotonic() - t0, 1e-6) / 1e6
    if total:
        bar = "#" * int(30 * done / total)
        stream.write(f"\r  [{bar:<30}] {done / 1e6:7.1f}/{total / 1e6:.1f} MB {rate:5.1f} MB/s")
    else:
        stream.write(f"\r  {done / 1e6:7.1f} MB {rate:5.1f} MB/s")
    stream.flush()


def download(url: str, dest: Path, sha256: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """Stream ``url`` to ``dest`` (via ``dest.part``), checking length and SHA-256.

    Raises:
        DownloadError: Network error, a connection dropped early, or a checksum mismatch.
    """
    part = dest.with_name(dest.name + ".part")
    digest, done = hashlib.sha256(), 0
    stream = sys.stderr
    t0 = shown = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            while chunk := resp.read(1 << 16):
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
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
        part.unlink(missing_ok=True)


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
        raise ConfigError(f"unknown model {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (known: {', '.join(sorted(entries)) or 'none'}; see `edgesdk models list`)")
    e = entries[name]
    out_dir = Path(dest_dir) if dest_dir else default_models_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / e.filename
    raw = out_dir / f".{name}.download"
    log.info("downloading %s (%s)", e.url, e.license)
    download(e.url, raw, e.sha256, progress)
    try:
        data = _extract(raw, e)
    finally:
        raw.unlink(missing_ok=True)
    card = None
    if e.format == "tflite":
        if e.card and read_card(data) is None:
            data = embed_card(data, ModelCard.from_dict({**e.card, "license": e.card.get("license", e.license)}, f"models.{name}.card"))
        card = read_card(data)
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
