"""Interpreter backends, tried in a declared order.

Each backend module exposes ``NAME``, ``load() -> Backend``. The first importable backend in
``ORDER`` wins unless one is named. ``tflite_runtime`` is supported when it imports (it breaks
under NumPy 2, see FINDINGS.md) and never required.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdk.errors import BackendUnavailableError

log = logging.getLogger(__name__)

# name -> module implementing it; explicit registration, no discovery magic
REGISTRY: dict[str, str] = {
    "ai_edge_litert": "sdk.backends.litert",
    "tflite_runtime": "sdk.backends.tflite_runtime",
    "tensorflow": "sdk.backends.tensorflow_lite",
}
ORDER: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")


@dataclass(frozen=True)
class Backend:
    """An importable interpreter backend."""

    name: str
    version: str
    interpreter_cls: Callable[..., Any]
    load_delegate: Callable[..., Any]
    module: Any  # the top-level package, e.g. ai_edge_litert


def load_backend(name: str) -> Backend:
    """Import backend ``name`` and check it can create an interpreter.

    Raises:
        BackendUnavailableError: If the name is unknown or the backend cannot be used.
    """
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(ORDER)}.{hint}")
    mod = importlib.import_module(REGISTRY[name])
    try:
        return mod.load()
    except BackendUnavailableError:
        raise
    except Exception as e:  # ImportError, or NumPy ABI errors (tflite_runtime under NumPy 2)
        raise BackendUnavailableError(f"backend {name} is not usable: {type(e).__name__}: {e}. {mod.INSTALL_HINT}") from e


def find_backend(name: str | None = None) -> Backend:
    """The named backend, or the first usable one in ``ORDER``.

    Raises:
        BackendUnavailableError: When none can be used; the message lists why each failed.
    """
    if name:
        return load_backend(name)
    reasons = []
    for candidate in ORDER:
        try:
            return load_backend(candidate)
        except BackendUnavailableError as e:
            log.debug("backend %s unavailable: %s", candidate, e)
            reasons.append(f"{candidate}: {e}")
    raise BackendUnavailableError(
        "no TFLite interpreter backend is importable; install one with `pip install ai-edge-litert` ("
        + "; ".join(reasons)
        + ")"
    )


def available_backends() -> dict[str, str]:
    """Backend name to version, or to the reason it cannot be used.

    TensorFlow is only looked up, not imported (that takes seconds and floods stderr).
    """
    import importlib.metadata
    import importlib.util

    out = {}
    for candidate in ORDER:
        try:
            found = importlib.util.find_spec(candidate) is not None
        except (ImportError, ValueError):  # a broken or blocked install
            found = False
        if not found:
            out[candidate] = "not installed"
            continue
        if candidate == "tensorflow":
            out[candidate] = f"{importlib.metadata.version('tensorflow')} (installed, not imported)"
            continue
        try:
            out[candidate] = load_backend(candidate).version
        except BackendUnavailableError as e:
            out[candidate] = f"unavailable ({e})"
    return out
