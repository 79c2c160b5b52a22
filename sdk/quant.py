"""Affine int8/uint8/int16 quantization arithmetic, in one place.

:class:`sdk.runner.TensorSpec`, the YOLO decoders' quantized-domain paths and the image
pre-processing tables all use these two functions, so their numbers agree bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quantize(x: Any, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Float values to ``dtype``: ``round(x / scale) + zero_point`` (half to even), saturated."""
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale))
    q += zero_point
    np.clip(q, info.min, info.max, out=q)
    return q.astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Stored integers to float32: ``(q - zero_point) * scale``."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
