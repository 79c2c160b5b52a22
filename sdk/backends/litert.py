"""Backend: ``ai_edge_litert`` (LiteRT, the maintained successor of tflite_runtime)."""

from __future__ import annotations

from sdk.backends import Backend

NAME = "ai_edge_litert"
INSTALL_HINT = "Install it with `pip install ai-edge-litert`."


def load() -> Backend:
    import ai_edge_litert
    from ai_edge_litert import interpreter

    return Backend(NAME, getattr(ai_edge_litert, "__version__", "?"), interpreter.Interpreter, interpreter.load_delegate, ai_edge_litert)
