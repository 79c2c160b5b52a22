"""Any external delegate library implementing ``tflite_plugin_create_delegate``."""

from __future__ import annotations

import ctypes
from pathlib import Path

from sdk.delegates import DelegateLoadError, DelegateSpec, preload_library

PLUGIN_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def load(spec: DelegateSpec, backend):  # noqa: ANN001,ANN201
    path = spec.device
    if "/" not in path and Path(path).is_file():  # a file in the current folder, not a name for the loader's search path
        path = str(Path(path).resolve())
    if "/" in path and not Path(path).exists():
        raise DelegateLoadError(f"{path}: no such delegate library; check the path")
    preload_library(path, "check that the file is a delegate library built for this machine")
    # LiteRT's Delegate prints an AttributeError traceback from __del__ when a symbol is
    # missing; asking for both symbols first refuses such a library before it gets that far
    lib = ctypes.CDLL(path)
    missing = [s for s in PLUGIN_SYMBOLS if not hasattr(lib, s)]
    if missing:
        raise DelegateLoadError(f"{path}: not a TFLite external delegate (it does not export {', '.join(missing)})")
    try:
        return backend.load_delegate(path, dict(spec.options))
    except (ValueError, RuntimeError, OSError, AttributeError) as e:
        raise DelegateLoadError(
            f"{path}: not a usable TFLite external delegate ({e}); it must export tflite_plugin_create_delegate"
        ) from e
