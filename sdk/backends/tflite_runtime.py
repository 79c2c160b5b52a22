"""Backend: ``tflite_runtime`` (last release 2.14; fails under NumPy 2, supported when it works)."""

from __future__ import annotations

from sdk.backends import Backend

NAME = "tflite_runtime"
INSTALL_HINT = "tflite-runtime 2.14 needs NumPy < 2; prefer `pip install ai-edge-litert`."


def load() -> Backend:
    import numpy as np
    import tflite_runtime
    from tflite_runtime import interpreter

    # Under NumPy 2 the import succeeds but every Interpreter() fails (_ARRAY_API not found):
    # probe with the smallest valid model so the failure shows here, not later.
    from sdk.backends._probe import probe_interpreter

    probe_interpreter(interpreter.Interpreter, np)
    return Backend(NAME, getattr(tflite_runtime, "__version__", "?"), interpreter.Interpreter, interpreter.load_delegate, tflite_runtime)
