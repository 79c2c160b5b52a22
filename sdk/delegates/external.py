"""Any external delegate library implementing ``tflite_plugin_create_delegate``."""

from __future__ import annotations

from pathlib import Path

from sdk.delegates import DelegateLoadError, DelegateSpec, preload_library


def load(spec: DelegateSpec, backend):  # noqa: ANN001,ANN201
    path = spec.device
    if "/" in path and not Path(path).exists():
        raise DelegateLoadError(f"{path}: no such delegate library; check the path")
    preload_library(path, "check that the file is a delegate library built for this machine")
    try:
        return backend.load_delegate(path, dict(spec.options))
    except (ValueError, RuntimeError, OSError, AttributeError) as e:
        raise DelegateLoadError(
            f"{path}: not a usable TFLite external delegate ({e}); it must export tflite_plugin_create_delegate"
        ) from e
