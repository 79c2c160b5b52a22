"""Backend: ``tensorflow.lite`` (full TensorFlow; the last resort, host machines only)."""

from __future__ import annotations

from sdk.backends import Backend

NAME = "tensorflow"
INSTALL_HINT = "Install TensorFlow with `pip install tensorflow`, or better `pip install ai-edge-litert`."


def load() -> Backend:
    import tensorflow as tf

    return Backend(NAME, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate, tf)
