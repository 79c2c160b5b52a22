"""One-output row layouts: a table of boxes, one row (or column) per candidate.

``yolov5`` — ``[N, 5+C]`` rows ``cx, cy, w, h, objectness, class probs``; score = obj × prob.
``yolov8`` — anchor-free ``[4+C, N]`` (Ultralytics YOLOv8/YOLO11, channels first) or
``[N, 4+C]``: ``cx, cy, w, h, class probs``. Its ``decode_raw`` compares scores with the
threshold in the quantized domain and dequantizes only the columns that pass.

Boxes are centre-size by default (``output.box_format``), normalised or in pixels
(``output.box_units``; unset: told per frame from the value range).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdk.decoders.base import Decoder, Quant, Result, dequantize_some, empty_result, q_threshold, shape_error


def _squeeze(a: np.ndarray, rank: int) -> np.ndarray:
    while a.ndim > rank and a.shape[0] == 1:
        a = a[0]
    return a


class YoloV8Decoder(Decoder):
    """Anchor-free ``[4+C, N]`` or ``[N, 4+C]`` (the smaller axis is the channel axis)."""

    def __post_init__(self) -> None:
        self.name = "yolov8"

    def _table(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
        if len(outputs) != 1:
            raise shape_error(self.name, [o.shape for o in outputs], f"expects one output, got {len(outputs)}")
        a = _squeeze(outputs[0], 2)
        if a.ndim != 2 or min(a.shape) < 5:
            raise shape_error(self.name, [outputs[0].shape], "expects [1, 4+C, N] or [1, N, 4+C]")
        return a, a.shape[0] < a.shape[1]

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: the channel axis (the smaller one) less the 4 box values."""
        return min(s for s in shapes[0] if s != 1) - 4

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode the float ``[1, 4+C, N]`` (or ``[1, N, 4+C]``) output."""
        return self._decode(outputs, conf, None)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`, thresholding 8/16-bit outputs before dequantizing."""
        q = quant[0] if len(quant) == 1 else None
        threshold = None if q is None else q_threshold(conf, float(q[0]), int(q[1]), outputs[0].dtype.str)
        if threshold is None:
            return super().decode_raw(outputs, quant, conf)
        return self._decode(outputs, threshold, q)

    def _decode(self, outputs: Sequence[np.ndarray], threshold: float | int, q: Quant) -> Result:
        """Decode floats (``q`` None), or stored integers with ``threshold`` in their domain."""
        a, channels_first = self._table(outputs)
        if not channels_first:
            a = a.T  # a view: [4+C, N] either way
        best = a[4:].max(axis=0)
        keep = np.flatnonzero(best >= threshold)
        if keep.size == 0:
            return empty_result()
        cls = a[4:, keep].argmax(axis=0)
        boxes, best = a[:4, keep].T, best[keep]
        normalized = self._normalized(a[:4], q)
        if q is not None:
            boxes, best = dequantize_some(boxes, q), dequantize_some(best, q)
        return self._to_pixels(boxes, normalized), best.astype(np.float32), cls


class YoloV5Decoder(Decoder):
    """``[N, 5+C]`` with objectness (either orientation; the larger axis is N)."""

    def __post_init__(self) -> None:
        self.name = "yolov5"

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: the row length (the smaller axis) less box and objectness."""
        return min(s for s in shapes[0] if s != 1) - 5

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode the float ``[1, N, 5+C]`` output; score = objectness × class probability."""
        if len(outputs) != 1:
            raise shape_error(self.name, [o.shape for o in outputs], f"expects one output, got {len(outputs)}")
        a = _squeeze(outputs[0], 2)
        if a.ndim != 2 or min(a.shape) < 6:
            raise shape_error(self.name, [outputs[0].shape], "expects [1, N, 5+C]")
        if a.shape[0] < a.shape[1]:
            a = a.T
        obj = a[:, 4]
        cand = np.flatnonzero(obj >= conf)  # score = obj * prob <= obj: a cheap first cut
        if cand.size == 0:
            return empty_result()
        probs = a[cand, 5:] * obj[cand, None]
        cls = probs.argmax(axis=1)
        score = probs[np.arange(cand.size), cls]
        ok = score >= conf
        boxes = self._to_pixels(a[cand[ok], :4], self._normalized(a[:, :4]))
        return boxes, score[ok].astype(np.float32), cls[ok]
