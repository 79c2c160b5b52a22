"""Edge TPU: ``libedgetpu`` loaded as an external delegate, device chosen with pycoral's grammar."""

from __future__ import annotations

import platform

from sdk.delegates import DelegateLoadError, DelegateSpec, preload_library

LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1"
)
FIX = (
    "install the Edge TPU runtime (`sudo apt install libedgetpu1-std` from Coral's package repository, "
    "see https://coral.ai/software/#debian-packages) and plug in the accelerator"
)


def load(spec: DelegateSpec, backend):  # noqa: ANN001,ANN201
    preload_library(LIBRARY, FIX)
    options = dict(spec.options)
    if spec.device:
        options.setdefault("device", spec.device)
    try:
        return backend.load_delegate(LIBRARY, options)
    except (ValueError, RuntimeError, OSError) as e:
        raise DelegateLoadError(f"{LIBRARY} loaded but no Edge TPU answered ({e or 'no device'}): {FIX}") from e
