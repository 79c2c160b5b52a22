"""Anchor-grid layouts (darknet): raw ``tx, ty, tw, th, to, class logits`` per anchor per cell.

``yolov2`` — course-style anchor grid, one scale: ``[S, S, A*(5+C)]`` or ``[S, S, A, 5+C]``.
``x = (sigmoid(tx) + cx) * stride``, ``w = exp(tw) * anchor_w``, score =
``sigmoid(to) * softmax(classes)``. Anchors in grid cells (``anchor_units: grid``, default
for v2) or pixels.
``yolov3`` — the same grid on one or several scales, classes by ``sigmoid`` (not softmax),
anchors in input pixels (default). Anchors are listed per scale from the finest grid
(largest S) to the coarsest; outputs are matched to them by grid size.

Card keys: ``output.anchors`` (default: the published ones below) and ``output.anchor_units``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Result, empty_result, shape_error, xywh_to_xyxy
from sdk.errors import ModelFormatError

# Published defaults (darknet cfgs; the course's yolo_anchors.txt for v2, in grid cells)
V2_ANCHORS = [[0.57273, 0.677385], [1.87446, 2.06253], [3.33843, 5.47434], [7.88282, 3.52778], [9.77052, 9.16828]]
V3_ANCHORS = [
    [[10, 13], [16, 30], [33, 23]],
    [[30, 61], [62, 45], [59, 119]],
    [[116, 90], [156, 198], [373, 326]],
]
V3_TINY_ANCHORS = [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]


def _grid(o: np.ndarray) -> np.ndarray:
    """Drop the batch axis of ``[1, S, S, A, 5+C]`` or ``[1, S, S, A*(5+C)]``."""
    return o[0] if o.ndim == 5 or (o.ndim == 4 and o.shape[0] == 1) else o


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class AnchorGridDecoder(Decoder):
    """YOLOv2 (one grid, softmax classes) and YOLOv3 (several grids, sigmoid classes).

    ``anchors``: per scale ``[A, 2]`` (w, h), finest grid first; ``anchor_units``: ``grid``
    (multiplied by the stride) or ``pixels``.
    """

    anchors: Sequence[Any] = ()
    anchor_units: str = "pixels"
    softmax: bool = False

    def __post_init__(self) -> None:
        self.name = "yolov2" if self.softmax else "yolov3"
        scales = self.anchors
        if scales and np.asarray(scales[0], dtype=object).ndim == 1:  # a flat list of pairs: one scale
            scales = [scales]
        try:
            self._anchors = [np.asarray(s, np.float32).reshape(-1, 2) for s in scales]
        except ValueError as e:
            raise ModelFormatError(f"card output.anchors must be [w, h] pairs per scale, got {self.anchors!r}") from e
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """``yolov2`` or ``yolov3`` with the card's anchors, else the published defaults.

        Raises:
            ModelFormatError: ``anchor_units`` other than ``grid``/``pixels``, or anchors that
                are not ``[w, h]`` pairs.
        """
        v2 = name == "yolov2"
        anchors = params.get("anchors") or (V2_ANCHORS if v2 else V3_ANCHORS)
        unit = params.get("anchor_units", "grid" if v2 else "pixels")
        if unit not in ("grid", "pixels"):
            raise ModelFormatError(f"card output.anchor_units must be grid or pixels, got {unit!r}")
        # grid outputs are always centre-size, in pixels once decoded: the box options do not apply
        return cls(input_size, "xywh", None, anchors=anchors, anchor_units=unit, softmax=v2)

    def _match(self, outputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each output reshaped to ``[Sh, Sw, A, 5+C]``, paired with its anchors (finest grid first)."""
        shapes = [o.shape for o in outputs]
        grids = [_grid(o) for o in outputs]
        order = sorted(range(len(grids)), key=lambda i: -grids[i].shape[0] * grids[i].shape[1])
        if len(order) != len(self._anchors):
            raise shape_error(self.name, shapes, f"{len(order)} grid outputs but anchors for {len(self._anchors)} scales")
        pairs = []
        for i, anchors in zip(order, self._anchors):
            g = grids[i]
            if g.ndim not in (3, 4) or g.shape[-1] % (1 if g.ndim == 4 else len(anchors)):
                raise shape_error(self.name, shapes, f"expects [1, S, S, A*(5+C)] with A={len(anchors)}")
            g = g.reshape(g.shape[0], g.shape[1], len(anchors), -1)
            if g.shape[2] != len(anchors) or g.shape[3] < 6:
                raise shape_error(self.name, shapes, f"expects {len(anchors)} anchors of 5+C values per cell")
            pairs.append((g, anchors))
        return pairs

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: values per anchor of the first output less box and objectness."""
        g = _grid(np.empty(shapes[0], np.uint8))
        return (g.shape[-1] if g.ndim == 4 else g.shape[-1] // len(self._anchors[0])) - 5

    def _offsets(self, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
        if (sh, sw) not in self._grids:
            cy, cx = np.meshgrid(np.arange(sh, dtype=np.float32), np.arange(sw, dtype=np.float32), indexing="ij")
            self._grids[(sh, sw)] = (cx, cy)
        return self._grids[(sh, sw)]

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode every grid output (any order) and concatenate the candidates."""
        parts = [self._scale(g, anchors, conf) for g, anchors in self._match(outputs)]
        boxes, scores, cls = (np.concatenate(x) for x in zip(*parts))
        return boxes, scores.astype(np.float32), cls

    def _scale(self, g: np.ndarray, anchors: np.ndarray, conf: float) -> Result:
        sh, sw, na, _ = g.shape
        w, h = self.input_size
        stride = np.array([w / sw, h / sh], np.float32)
        obj = _sigmoid(g[..., 4])
        iy, ix, ia = np.nonzero(obj >= conf)  # score = obj * prob <= obj: filter before the rest
        if iy.size == 0:
            return empty_result()
        t = g[iy, ix, ia].astype(np.float32)
        cx, cy = self._offsets(sh, sw)
        xy = (_sigmoid(t[:, :2]) + np.stack([cx[iy, ix], cy[iy, ix]], axis=1)) * stride
        wh = np.exp(np.minimum(t[:, 2:4], 20.0)) * anchors[ia]
        if self.anchor_units == "grid":
            wh *= stride
        logits = t[:, 5:]
        if self.softmax:
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        else:
            probs = _sigmoid(logits)
        probs *= obj[iy, ix, ia][:, None]
        cls = probs.argmax(axis=1)
        score = probs[np.arange(cls.size), cls]
        ok = score >= conf
        return xywh_to_xyxy(np.concatenate([xy, wh], axis=1)[ok]), score[ok], cls[ok]
