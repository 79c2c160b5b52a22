"""GPU: a GPU delegate library by path, or LiteRT's built-in GPU accelerator.

With ``gpu:/path/lib.so`` the library is loaded as an external delegate. With plain ``gpu``
the known delegate library names are tried; if none loads and the backend is
``ai_edge_litert``, :data:`LITERT_GPU` is returned and the runner uses LiteRT's
``CompiledModel`` with the GPU accelerator (which raises when no adapter exists; the
runner then falls back to the CPU itself, FINDINGS.md).
"""

from __future__ import annotations

from sdk.delegates import DelegateLoadError, DelegateSpec, preload_library

LIBRARIES = ("libtensorflowlite_gpu_delegate.so",)
FIX = "build libtensorflowlite_gpu_delegate.so for this board and use it as the delegate gpu:/path/to/it"
LITERT_GPU = "litert-gpu"


def load(spec: DelegateSpec, backend):  # noqa: ANN001,ANN201
    libs = (spec.device,) if spec.device else LIBRARIES
    errors = []
    for lib in libs:
        try:
            preload_library(lib, FIX)
            return backend.load_delegate(lib, dict(spec.options))
        except (DelegateLoadError, ValueError, RuntimeError, OSError) as e:
            errors.append(str(e))
    if not spec.device and backend.name == "ai_edge_litert":
        return LITERT_GPU
    raise DelegateLoadError("; ".join(errors))
