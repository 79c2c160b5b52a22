"""Lazy imports of optional heavy dependencies, with install hints."""

from __future__ import annotations

import importlib
from types import ModuleType

from sdk.errors import BackendUnavailableError

# module name -> pip requirement that provides it
_PIP_NAMES = {
    "cv2": "opencv-python-headless",
    "sounddevice": "sounddevice",
    "tensorflow": "tensorflow  (or: pip install 'edgesdk[host]')",
    "ai_edge_litert": "ai-edge-litert",
    "yaml": "pyyaml",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an error saying how to install it.

    Args:
        module: Importable module name, e.g. ``"cv2"``.
        purpose: What the caller needs it for, shown in the error.

    Returns:
        The imported module.

    Raises:
        BackendUnavailableError: When the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pip_name = _PIP_NAMES.get(module, module)
        why = f" for {purpose}" if purpose else ""
        raise BackendUnavailableError(
            f"This requires the {module} module{why}. You can install it via `pip install {pip_name}`."
        ) from e
