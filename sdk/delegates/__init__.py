"""Delegates: where a model runs (CPU/XNNPACK, Edge TPU, GPU, any external delegate library).

A delegate string is parsed into a :class:`DelegateSpec`:

- ``cpu`` (or ``xnnpack``): the default CPU kernels with XNNPACK.
- ``edgetpu`` / ``edgetpu:usb`` / ``edgetpu:usb:0`` / ``edgetpu:pci:1``: ``libedgetpu`` with
  pycoral's device grammar.
- ``gpu`` or ``gpu:/path/libtensorflowlite_gpu_delegate.so``.
- a path to any external delegate ``.so`` (options passed separately).

Each kind lives in its own module registered in ``REGISTRY``; ``load`` returns a backend
delegate object (or ``None`` for CPU) or raises :class:`DelegateLoadError` with the fix.
"""

from __future__ import annotations

import ctypes
import difflib
import importlib
import re
from dataclasses import dataclass, field

from sdk.errors import ConfigError, EdgeSDKError

REGISTRY: dict[str, str] = {
    "cpu": "sdk.delegates.cpu",
    "edgetpu": "sdk.delegates.edgetpu",
    "gpu": "sdk.delegates.gpu",
    "external": "sdk.delegates.external",
}
_ALIASES = {"xnnpack": "cpu", "tpu": "edgetpu"}
_DEVICE_RE = re.compile(r"^(usb|pci)?(:\d+)?$")


class DelegateLoadError(EdgeSDKError):
    """A delegate could not be loaded; the message names the cause and the fix."""


@dataclass(frozen=True)
class DelegateSpec:
    """A parsed delegate request."""

    kind: str
    device: str = ""  # Edge TPU device ("usb:0") or library path for gpu/external
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}:{self.device}" if self.device else self.kind


def parse_delegate(text: str | None, options: dict[str, str] | None = None) -> DelegateSpec:
    """Parse a delegate string (see module docstring).

    Raises:
        ConfigError: For an unknown delegate name or a malformed Edge TPU device.
    """
    options = dict(options or {})
    if not text:
        return DelegateSpec("cpu", options=options)
    kind, _, device = text.partition(":")
    kind = _ALIASES.get(kind.lower(), kind.lower())
    if kind not in REGISTRY and ("/" in text or text.endswith((".so", ".dylib", ".dll")) or ".so." in text):
        return DelegateSpec("external", text, options)
    if kind not in REGISTRY or kind == "external":
        close = difflib.get_close_matches(kind, ["cpu", "edgetpu", "gpu"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown delegate {text!r}; use cpu, edgetpu[:usb|:usb:N|:pci:N], gpu[:LIB.so] or a path to a delegate .so.{hint}"
        )
    if kind == "edgetpu" and device and not _DEVICE_RE.match(device if device.startswith(("usb", "pci")) else f":{device}"):
        raise ConfigError(f"invalid Edge TPU device {device!r}; use usb, usb:N, pci or pci:N (pycoral's grammar)")
    if kind == "cpu" and device:
        raise ConfigError(f"the cpu delegate takes no device, got {text!r}")
    return DelegateSpec(kind, device, options)


def preload_library(library: str, fix: str) -> None:
    """``dlopen`` ``library`` first, so a missing library is a clean error.

    LiteRT's ``Delegate`` prints an ``AttributeError`` traceback at exit when its own load
    fails (FINDINGS.md); loading it ourselves first avoids constructing it at all.

    Raises:
        DelegateLoadError: If the library cannot be loaded.
    """
    try:
        ctypes.CDLL(library)
    except OSError as e:
        raise DelegateLoadError(f"{library} not found ({_short(e)}): {fix}") from e


def _short(e: BaseException) -> str:
    msg = str(e).split(":")[-1].strip() or type(e).__name__
    return msg[:120]


def load(spec: DelegateSpec, backend):  # noqa: ANN001,ANN201 - backend delegate objects are untyped
    """Load ``spec`` on ``backend``; ``None`` means "CPU kernels, no delegate object"."""
    mod = importlib.import_module(REGISTRY[spec.kind])
    return mod.load(spec, backend)
