"""Small value types shared by the apps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels, corners ``(x1, y1)`` top-left and ``(x2, y2)`` bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when either is empty)."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def scale(self, sx: float, sy: float) -> Box:
        """This box with x scaled by ``sx`` and y by ``sy``."""
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def as_list(self, ndigits: int = 1) -> list[float]:
        return [round(float(v), ndigits) for v in (self.x1, self.y1, self.x2, self.y2)]


@dataclass(frozen=True)
class Detection:
    """One detected object."""

    box: Box
    score: float
    class_id: int
    label: str = ""

    def to_json(self) -> dict:
        return {"label": self.label, "class_id": self.class_id, "score": round(float(self.score), 4), "box": self.box.as_list()}


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] and the stream time (s) of the first sample."""

    samples: np.ndarray
    sample_rate: int
    time: float


@dataclass(frozen=True)
class Frame:
    """One BGR image (H, W, 3 uint8) with its index, stream time (s) and origin."""

    image: np.ndarray
    index: int
    time: float
    path: str | None = None
    dropped: int = field(default=0)
