"""``yolox``: YOLOX (Megvii) — ``[N, 5+C]`` rows, one per cell at strides 8/16/32, with objectness.

Rows are ``cx, cy, w, h, objectness, class scores`` with sigmoid already applied to the scores
(score = objectness × class). Two export variants:

* decoded in the graph (``decode_in_inference``, the usual TFLite/ONNX export): boxes are
  centre-size in input pixels — exactly the ``yolov5`` row layout;
* raw grid: ``tx, ty, tw, th`` per cell, decoded here as ``cx = (tx + gx) * stride``,
  ``w = exp(tw) * stride`` over the cells of every stride in turn, row-major.

Which one a model is: card ``output.grid`` (``true``: raw grid), else told from the first frame
(raw offsets stay within a few units; decoded centres span the image) and said once on stderr.
YOLOX models take BGR pixels in 0–255 with no normalisation (:attr:`convention`).

Card keys: ``output.grid``, ``output.strides`` (default ``[8, 16, 32]``), ``box_units``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Quant, box_options, shape_error, xywh_to_xyxy
from sdk.decoders.rows import YoloV5Decoder
from sdk.errors import ModelFormatError
from sdk.quant import dequantize

log = logging.getLogger("edgesdk")


def cells(input_size: tuple[int, int], strides: Sequence[int]) -> int:
    """Grid cells over all ``strides`` for an input of ``(w, h)``."""
    w, h = input_size
    return sum((w // s) * (h // s) for s in strides)


class YoloXDecoder(YoloV5Decoder):
    """YOLOX rows, decoded in the graph or raw grid (see the module docstring)."""

    convention = {"mean": 0.0, "std": 1.0, "channel_order": "bgr", "letterbox": True, "why": "the YOLOX convention (BGR, 0-255, no normalisation)"}

    def __post_init__(self) -> None:
        self.name = "yolox"
        self.grid: bool | None = None
        self.strides: tuple[int, ...] = (8, 16, 32)
        self._cells: np.ndarray | None = None  # [N, 3]: gx, gy, stride per row

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """YOLOX with the card's ``grid``, ``strides`` and box units (pixels unless it says).

        Raises:
            ModelFormatError: A ``grid`` that is not true/false, or strides that are not positive integers.
        """
        fmt, units = box_options(params)
        dec = cls(input_size, fmt, units or "pixels")
        grid = params.get("grid")
        if grid not in (None, True, False):
            raise ModelFormatError(f"card output.grid must be true (raw grid outputs) or false (decoded in the graph), got {grid!r}")
        dec.grid = grid
        strides = params.get("strides", dec.strides)
        if not isinstance(strides, (list, tuple)) or not strides or not all(isinstance(s, int) and s > 0 for s in strides):
            raise ModelFormatError(f"card output.strides must be a list of positive integers, got {strides!r}")
        dec.strides = tuple(strides)
        return dec

    def expected_rows(self) -> int:
        """One row per cell at the card's strides."""
        return cells(self.input_size, self.strides)

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """As :meth:`YoloV5Decoder.locate`; rows that are not one per cell cannot be a raw grid.

        Raises:
            ModelFormatError: Not one ``[1, N, 5+C]`` output, or a card's ``grid: true`` with N not one row per cell.
        """
        super().locate(shapes, names, roles)
        dims = [d for d in shapes[0] if d != 1]
        n = dims[0] if self.rows_first else dims[1]
        if n != self.expected_rows():
            if self.grid:
                raise shape_error(self.name, shapes, f"a raw grid has one row per cell at strides {list(self.strides)}: {self.expected_rows()} rows, not {n}")
            self.grid = False

    def _boxes(self, box_rows: np.ndarray, index: np.ndarray, table: np.ndarray, q: Quant) -> np.ndarray:
        """Pixel corner boxes of the kept rows: straight from the rows, or decoded on the grid."""
        if self.grid is None:
            self.grid = self._looks_raw(table, q)
        if not self.grid:
            return super()._boxes(box_rows, index, table, q)
        g = self._grid_cells(table.shape[0])[index]
        xywh = np.empty((len(index), 4), np.float32)
        xywh[:, :2] = (box_rows[:, :2] + g[:, :2]) * g[:, 2:3]
        xywh[:, 2:] = np.exp(np.minimum(box_rows[:, 2:4], 20.0)) * g[:, 2:3]
        return xywh_to_xyxy(xywh)

    def _looks_raw(self, table: np.ndarray, q: Quant) -> bool:
        """Raw grid offsets stay within a few units; decoded centres span the input (said once)."""
        centres = table[:, :2]
        ends = np.array([centres.min(), centres.max()])
        big = float(np.abs(dequantize(ends, *q) if q is not None else ends).max())
        raw = big < 0.1 * min(self.input_size)
        what = "raw grid offsets: decoding them on the grid" if raw else "boxes decoded in the graph"
        log.info(
            "yolox: guessed %s (box centres of the first frame reach %.3g for a %dx%d input); "
            "set output.grid (true: raw grid) in the model card if that is wrong", what, big, *self.input_size
        )
        return raw

    def _grid_cells(self, n: int) -> np.ndarray:
        if self._cells is None or len(self._cells) != n:
            w, h = self.input_size
            parts = []
            for s in self.strides:
                gy, gx = np.meshgrid(np.arange(h // s, dtype=np.float32), np.arange(w // s, dtype=np.float32), indexing="ij")
                parts.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, s, np.float32)], axis=1))
            grid = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
            if len(grid) != n:
                raise ModelFormatError(f"yolox raw grid: {n} rows, but {len(grid)} cells at strides {list(self.strides)}; set output.strides in the model card")
            self._cells = grid
        return self._cells
