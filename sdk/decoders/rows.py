"""One-output row layouts: a table of boxes, one row (or column) per candidate.

``yolov5`` — ``[N, 5+C]`` rows ``cx, cy, w, h, objectness, class probs``; score = obj × prob.
Its ``decode_raw`` compares objectness with the threshold in the quantized domain first.
``yolov8`` — anchor-free ``[4+C, N]`` (Ultralytics YOLOv8/YOLO11, channels first) or
``[N, 4+C]``: ``cx, cy, w, h, class probs``. Its ``decode_raw`` compares scores with the
threshold in the quantized domain and dequantizes only the columns that pass.

Boxes are centre-size by default (``output.box_format``), normalised or in pixels
(``output.box_units``; unset: told per frame from the value range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Quant, Result, dequantize_some, empty_result, passing, q_threshold, select, shape_error


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
    """``[N, 5+C]`` with objectness (either orientation; the larger axis is N).

    ``decode_raw`` compares 8-bit objectness with the threshold in the quantized domain (score =
    objectness × class probability can only pass where objectness does) and dequantizes the
    rows that pass.
    """

    def __post_init__(self) -> None:
        self.name = "yolov5"

    rows_first: bool | None = None  # set by locate(); None: the larger axis is N

    def expected_rows(self) -> int:
        """Rows a model of this family has at this input size (3 anchors per cell at strides 8/16/32)."""
        w, h = self.input_size
        return 3 * sum((w // s) * (h // s) for s in (8, 16, 32))

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Tell rows from columns by the row count the family expects (tiny inputs have fewer rows than values per row).

        Raises:
            ModelFormatError: Not one ``[1, N, 5+C]`` output.
        """
        dims = [d for d in shapes[0] if d != 1] if len(shapes) == 1 else []
        if len(dims) != 2 or min(dims) < 6:
            raise shape_error(self.name, shapes, "expects one output [1, N, 5+C]")
        n = self.expected_rows()
        self.rows_first = True if dims[0] == n else False if dims[1] == n else dims[0] >= dims[1]
        self._row_len = dims[1] if self.rows_first else dims[0]

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: the row length less box and objectness."""
        if self.rows_first is None:
            self.locate(shapes)
        return self._row_len - 5

    def _rows(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        if len(outputs) != 1:
            raise shape_error(self.name, [o.shape for o in outputs], f"expects one output, got {len(outputs)}")
        a = _squeeze(outputs[0], 2)
        if a.ndim != 2 or min(a.shape) < 6:
            raise shape_error(self.name, [outputs[0].shape], "expects [1, N, 5+C]")
        rows_first = a.shape[0] >= a.shape[1] if self.rows_first is None else self.rows_first
        return a if rows_first else a.T

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode the float ``[1, N, 5+C]`` output; score = objectness × class probability."""
        return self._decode(self._rows(outputs), conf, None, None)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`, thresholding 8-bit objectness before dequantizing."""
        q = quant[0] if len(quant) == 1 else None
        a = self._rows(outputs)
        table = None if q is None else passing(conf, float(q[0]), int(q[1]), a.dtype.str)
        if table is None:
            return super().decode_raw(outputs, quant, conf)
        return self._decode(a, conf, q, table)

    def _decode(self, a: np.ndarray, conf: float, q: Quant, table: np.ndarray | None) -> Result:
        """Rows ``a`` (floats, or stored 8-bit values with ``q`` and its :func:`passing` table)."""
        cand = select(a[:, 4], table) if table is not None else np.flatnonzero(a[:, 4] >= conf)
        if cand.size == 0:
            return empty_result()
        rows = dequantize_some(a[cand], q) if q is not None else a[cand].astype(np.float32, copy=False)
        probs = rows[:, 5:] * rows[:, 4:5]
        cls = probs.argmax(axis=1)
        score = probs[np.arange(cand.size), cls]
        ok = np.flatnonzero(score >= conf)
        boxes = self._boxes(rows[ok, :4], cand[ok], a, q)
        return boxes, score[ok].astype(np.float32), cls[ok]

    def _boxes(self, box_rows: np.ndarray, index: np.ndarray, table: np.ndarray, q: Quant) -> np.ndarray:
        """Corner boxes in pixels of the kept rows (``index`` into the whole ``table``)."""
        return self._to_pixels(box_rows, self._normalized(table[:, :4], q))
