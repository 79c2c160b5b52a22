"""Anchor-grid layouts (darknet): raw ``tx, ty, tw, th, to, class logits`` per anchor per cell.

``yolov2`` — course-style anchor grid, one scale: ``[S, S, A*(5+C)]`` or ``[S, S, A, 5+C]``.
``x = (sigmoid(tx) + cx) * stride``, ``w = exp(tw) * anchor_w``, score =
``sigmoid(to) * softmax(classes)``. Anchors in grid cells (``anchor_units: grid``, default
for v2) or pixels.
``yolov3`` — the same grid on one or several scales (YOLOv3, v3/v4-tiny, Yolo-Fastest), classes
by ``sigmoid`` (not softmax), anchors in input pixels (default). Anchors are listed per scale
from the finest grid (largest S) to the coarsest; outputs are matched to them by grid size. A
flat list of pairs for several grids is split evenly, smallest anchors to the finest grid.

Card keys: ``output.anchors`` and ``output.anchor_units``. Without anchors, the published
defaults below are used (darknet's for 1 v2 grid, YOLOv3's for 3 grids, YOLOv3-tiny's for 2)
and listed in :attr:`~sdk.decoders.base.Decoder.guesses`: wrong anchors give wrong box sizes.

``decode_raw`` compares objectness with the threshold in the quantized domain (a 256-entry
table of ``sigmoid(value) >= conf``) and dequantizes only the anchors that pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Guess, Quant, Result, dequantize_some, empty_result, passing, shape_error, sigmoid, xywh_to_xyxy
from sdk.errors import ModelFormatError

# Published defaults (darknet cfgs; the course's yolo_anchors.txt for v2, in grid cells)
V2_ANCHORS = [[0.57273, 0.677385], [1.87446, 2.06253], [3.33843, 5.47434], [7.88282, 3.52778], [9.77052, 9.16828]]
V3_ANCHORS = [
    [[10, 13], [16, 30], [33, 23]],
    [[30, 61], [62, 45], [59, 119]],
    [[116, 90], [156, 198], [373, 326]],
]
V3_TINY_ANCHORS = [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]


def parse_anchors(value: Any) -> list[Any]:
    """Anchors from the card or a command line: nested lists, or text ``"w,h w,h ..."`` with
    ``;`` between scales (``"10,14 23,27; 81,82 135,169"``).

    Raises:
        ModelFormatError: (``param="anchors"``) text that is not ``w,h`` number pairs.
    """
    if not isinstance(value, str):
        return list(value)
    scales = []
    for part in value.split(";"):
        pairs = part.replace("x", ",").split()
        try:
            scale = [[float(a) for a in p.split(",")] for p in pairs]
        except ValueError:
            scale = []
        if not scale or any(len(p) != 2 or min(p) <= 0 for p in scale):
            raise ModelFormatError(
                f"anchors must be positive w,h pairs separated by spaces (scales by ';'), e.g. '10,14 23,27 37,58', got {value!r}",
                param="anchors",
            )
        scales.append(scale)
    return scales[0] if len(scales) == 1 else scales


def _grid(o: np.ndarray | Sequence[int]) -> tuple[int, ...]:
    """Shape of ``[1, S, S, A, 5+C]`` or ``[1, S, S, A*(5+C)]`` without its batch axis."""
    s = tuple(o.shape if isinstance(o, np.ndarray) else o)
    return s[1:] if len(s) == 5 or (len(s) == 4 and s[0] == 1) else s


@dataclass
class AnchorGridDecoder(Decoder):
    """YOLOv2 (one grid, softmax classes) and YOLOv3 (several grids, sigmoid classes).

    ``anchors``: per scale ``[A, 2]`` (w, h), finest grid first, or one flat list of pairs
    (split evenly over the grids); empty: the published defaults for the number of grids.
    ``anchor_units``: ``grid`` (multiplied by the stride) or ``pixels``.
    """

    anchors: Sequence[Any] = ()
    anchor_units: str = "pixels"
    softmax: bool = False

    def __post_init__(self) -> None:
        self.name = "yolov2" if self.softmax else "yolov3"
        self._anchors: list[np.ndarray] = []
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """``yolov2`` or ``yolov3`` with the card's anchors (defaults chosen in :meth:`locate`).

        Raises:
            ModelFormatError: ``anchor_units`` other than ``grid``/``pixels``, or anchors that
                are not ``[w, h]`` pairs.
        """
        v2 = name == "yolov2"
        unit = params.get("anchor_units", "grid" if v2 else "pixels")
        if unit not in ("grid", "pixels"):
            raise ModelFormatError(f"card output.anchor_units must be grid or pixels, got {unit!r}")
        # grid outputs are always centre-size, in pixels once decoded: the box options do not apply
        return cls(input_size, "xywh", None, anchors=parse_anchors(params.get("anchors") or []), anchor_units=unit, softmax=v2)

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Check the grid shapes and give each grid its anchors (defaults said in :attr:`guesses`).

        Raises:
            ModelFormatError: Outputs that are not grids, or anchors that do not fit them.
        """
        grids = [_grid(s) for s in shapes]
        # a model's grid outputs have their batch axis: [1, S, S, k] or [1, S, S, A, k]
        if not grids or any(len(s) not in (4, 5) or s[0] != 1 or min(s) < 1 for s in shapes):
            raise shape_error(self.name, shapes, "expects grids [1, S, S, A*(5+C)] or [1, S, S, A, 5+C]")
        if self.softmax and len(grids) != 1:
            raise shape_error(self.name, shapes, f"yolov2 has one grid, got {len(grids)} outputs (several grids: yolov3)")
        scales = self._scales(len(grids), shapes)
        order = sorted(range(len(grids)), key=lambda i: -grids[i][0] * grids[i][1])
        per_anchor = set()
        for i, anchors in zip(order, scales):
            g = grids[i]
            if g[-1] % (1 if len(g) == 4 else len(anchors)) or (len(g) == 4 and g[2] != len(anchors)):
                raise ModelFormatError(
                    f"outputs {[list(s) for s in shapes]}: set anchors to this model's (w,h pairs, '10,14 23,27 ...') or check the "
                    f"output layout: grid {list(shapes[i])} does not hold {len(anchors)} of them per cell",
                    param="anchors",
                )
            per_anchor.add(g[-1] if len(g) == 4 else g[-1] // len(anchors))
        if len(per_anchor) != 1 or min(per_anchor) < 6:
            raise shape_error(self.name, shapes, "expects 5+C values per anchor (C ≥ 1), the same C on every grid")
        self._anchors = [scales[order.index(i)] for i in range(len(grids))]  # in output order
        self._per_anchor = per_anchor.pop()

    def _scales(self, n: int, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Anchors per scale, finest first, for ``n`` grids (the published defaults when none were given)."""
        anchors: Any = self.anchors
        if not len(anchors):
            defaults = {(True, 1): (V2_ANCHORS, "darknet YOLOv2"), (False, 3): (V3_ANCHORS, "YOLOv3"), (False, 2): (V3_TINY_ANCHORS, "YOLOv3-tiny")}
            if (self.softmax, n) not in defaults:
                raise ModelFormatError(
                    f"outputs {[list(s) for s in shapes]}: set anchors (w,h pairs in input pixels, '10,14 23,27 ...', ';' between "
                    f"scales): no published default fits {n} anchor grid(s)",
                    param="anchors",
                )
            anchors, which = defaults[(self.softmax, n)]
            shown = "; ".join(" ".join(f"{w:g},{h:g}" for w, h in np.asarray(s).reshape(-1, 2)) for s in (anchors if n > 1 else [anchors]))
            guess = Guess(f"anchors: the {which} defaults for {n} grid(s) ({shown}); wrong anchors give wrong box sizes", "anchors", "output.anchors")
            if guess not in self.guesses:
                self.guesses.append(guess)
        try:
            flat = np.asarray(anchors, dtype=np.float32)
            scales = [flat.reshape(-1, 2)] if flat.ndim <= 2 else [np.asarray(s, np.float32).reshape(-1, 2) for s in anchors]
        except ValueError:  # ragged: scales of different sizes
            try:
                scales = [np.asarray(s, np.float32).reshape(-1, 2) for s in anchors]
            except ValueError as e:
                raise ModelFormatError(f"anchors must be [w, h] pairs per scale, got {self.anchors!r}", param="anchors") from e
        if len(scales) == 1 and n > 1:
            pairs = scales[0][np.argsort(scales[0].prod(axis=1), kind="stable")]
            if len(pairs) % n:
                raise ModelFormatError(f"anchors: {len(pairs)} pairs cannot be split evenly over {n} grids; list them per scale with ';'", param="anchors")
            scales = list(pairs.reshape(n, -1, 2))
        if len(scales) != n:
            raise ModelFormatError(f"anchors are given for {len(scales)} scale(s) but the model has {n} grid output(s)", param="anchors")
        return scales

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: values per anchor less box and objectness."""
        if not self._anchors:
            self.locate(shapes)
        return self._per_anchor - 5

    def _offsets(self, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
        if (sh, sw) not in self._grids:
            cy, cx = np.meshgrid(np.arange(sh, dtype=np.float32), np.arange(sw, dtype=np.float32), indexing="ij")
            self._grids[(sh, sw)] = (cx, cy)
        return self._grids[(sh, sw)]

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode every grid output (any order) and concatenate the candidates."""
        return self._decode(outputs, [None] * len(outputs), conf)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`, thresholding 8-bit objectness before dequantizing."""
        return self._decode(outputs, quant, conf)

    def _decode(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        if not self._anchors or len(outputs) != len(self._anchors):
            self.locate([o.shape for o in outputs])
        parts = []
        for o, anchors, q in zip(outputs, self._anchors, quant):
            g = _grid(o)
            parts.append(self._scale(o.reshape(g[0], g[1], len(anchors), -1), anchors, conf, q))
        boxes, scores, cls = (np.concatenate(x) for x in zip(*parts))
        return boxes, scores.astype(np.float32), cls

    def _scale(self, g: np.ndarray, anchors: np.ndarray, conf: float, q: Quant) -> Result:
        sh, sw, _, _ = g.shape
        table = None if q is None else passing(conf, float(q[0]), int(q[1]), g.dtype.str, True)
        if q is not None and table is None:  # 16-bit: dequantize this grid
            g, q = dequantize_some(g, q), None
        # score = obj * prob <= obj: filter on objectness before the rest
        hit = table.take(g[..., 4].view(np.uint8)) if table is not None else sigmoid(np.ascontiguousarray(g[..., 4], np.float32)) >= conf
        iy, ix, ia = np.nonzero(hit)
        if iy.size == 0:
            return empty_result()
        t = g[iy, ix, ia]
        t = dequantize_some(t, q) if q is not None else t.astype(np.float32)
        w, h = self.input_size
        stride = np.array([w / sw, h / sh], np.float32)
        cx, cy = self._offsets(sh, sw)
        xy = (sigmoid(t[:, :2]) + np.stack([cx[iy, ix], cy[iy, ix]], axis=1)) * stride
        wh = np.exp(np.minimum(t[:, 2:4], 20.0)) * anchors[ia]
        if self.anchor_units == "grid":
            wh *= stride
        logits = t[:, 5:]
        if self.softmax:
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        else:
            probs = sigmoid(logits)
        probs *= sigmoid(t[:, 4])[:, None]
        cls = probs.argmax(axis=1)
        score = probs[np.arange(cls.size), cls]
        ok = score >= conf
        return xywh_to_xyxy(np.concatenate([xy, wh], axis=1)[ok]), score[ok], cls[ok]
