"""What the running app shares with the web view: the latest frame and a log of recent events.

The app's loop only ever *publishes*: it swaps a reference under a lock and notifies, which
costs microseconds and never waits on a viewer. Viewers read whatever is newest when they are
ready, so a slow or stalled viewer misses frames instead of holding the app back.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class FrameSlot:
    """The latest frame and its detections; JPEG-encoded once per frame, on demand, for all viewers.

    Args:
        draw: ``draw(image, dets) -> image`` for the boxes and labels (called at most once per frame).
        quality: JPEG quality.
    """

    def __init__(self, draw: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None = None, quality: int = 80) -> None:
        self.draw = draw
        self.quality = quality
        self.cond = threading.Condition()
        self.seq = 0
        self._frame: tuple[np.ndarray, Sequence[Any]] | None = None
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self.encoded = 0

    def publish(self, image: np.ndarray, dets: Sequence[Any] = ()) -> None:
        """Make ``image`` (BGR uint8, not modified afterwards by the caller) the latest frame. Never blocks on viewers."""
        with self.cond:
            self._frame = (image, dets)
            self.seq += 1
            self.cond.notify_all()

    def wait_newer(self, seq: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a frame newer than ``seq``; the newest sequence number."""
        with self.cond:
            if self.seq <= seq:
                self.cond.wait(timeout)
            return self.seq

    def jpeg(self) -> tuple[int, bytes]:
        """``(seq, JPEG bytes)`` of the latest frame, drawn and encoded once however many viewers ask."""
        import cv2

        with self._encode_lock:
            with self.cond:
                seq, frame = self.seq, self._frame
            if frame is None or self._jpeg[0] == seq:
                return self._jpeg
            image, dets = frame
            if self.draw is not None and dets:
                image = self.draw(image, dets)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                self._jpeg = (seq, buf.tobytes())
                self.encoded += 1
            return self._jpeg


class EventLog:
    """A bounded history of JSON-able items (events, scores) with sequence numbers, for Server-Sent Events.

    Args:
        size: Items kept; a viewer that falls further behind skips the oldest ones.
    """

    def __init__(self, size: int = 1000) -> None:
        self.cond = threading.Condition()
        self.items: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self.last = 0

    def add(self, kind: str, obj: dict[str, Any]) -> None:
        """Append ``obj`` as an item of ``kind`` (the SSE event name)."""
        with self.cond:
            self.last = next(self._seq)
            self.items.append((self.last, kind, obj))
            self.cond.notify_all()

    def since(self, seq: int, timeout: float = 0.0) -> list[tuple[int, str, dict[str, Any]]]:
        """Items after ``seq``, waiting up to ``timeout`` seconds for one when there are none yet."""
        with self.cond:
            if self.last <= seq and timeout > 0:
                self.cond.wait(timeout)
            return [it for it in self.items if it[0] > seq]
