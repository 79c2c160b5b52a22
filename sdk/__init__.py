"""edgesdk device runtime: run TFLite models on small devices (never imports TensorFlow)."""

from __future__ import annotations

__version__ = "0.1.0"
