"""YOLO output decoders (NumPy, vectorised): raw model outputs → candidate boxes before NMS.

Every decoder returns ``(boxes, scores, class_ids)``: ``[K, 4]`` float32 ``x1, y1, x2, y2`` in
model-input pixels (undo the letterbox with :meth:`sdk.image.Letterbox.unmap`), ``[K]``
float32 scores and ``[K]`` int class ids, keeping only candidates with ``score >= conf``
(best class per box). Outputs arrive as floats: the Runner dequantizes int8 tensors with each
output's own scale and zero point. A batch axis of 1 is optional.

Layouts (decoder names, as written in the model card's ``output.decoder``):

``yolov2`` — course-style anchor grid, one scale: ``[S, S, A*(5+C)]`` or ``[S, S, A, 5+C]``
    holding raw ``tx, ty, tw, th, to, class logits``. ``x = (sigmoid(tx) + cx) * stride``,
    ``w = exp(tw) * anchor_w``, score = ``sigmoid(to) * softmax(classes)``. Anchors in grid
    cells (``anchor_units: grid``, default for v2) or pixels.
``yolov3`` — the same grid on one or several scales, classes by ``sigmoid`` (not softmax),
    anchors in input pixels (default). Anchors are listed per scale from the finest grid
    (largest S) to the coarsest; outputs are matched to them by grid size.
``yolov5`` — ``[N, 5+C]`` rows ``cx, cy, w, h, objectness, class probs``; score = obj × prob.
``yolov8`` — anchor-free ``[4+C, N]`` (Ultralytics YOLOv8/YOLO11, channels first) or
    ``[N, 4+C]``: ``cx, cy, w, h, class probs``.
``yolo-split`` — the int8-safe head: two outputs, ``boxes [N, 4]`` and ``scores [N, C]``
    (class probabilities, sigmoid applied). Boxes normalised to [0, 1] of the input size,
    ``box_format`` ``xywh`` (centre, default) or ``xyxy``. Each output gets its own int8
    scale, so scores keep their resolution. Which output holds the boxes: the card's
    ``output.boxes`` / ``output.scores`` (output names as the Runner reports them, e.g.
    ``output_0``, or indices), else the one output with last axis 4, else the one named
    ``*box*``; when C is 4 too and neither tells, it is an error.

Quantized outputs: :meth:`Decoder.decode_raw` takes the tensors as stored (int8...) with each
output's ``(scale, zero_point)``. For ``yolo-split`` and ``yolov8`` it compares scores with
the threshold in the quantized domain (the smallest stored value whose dequantized score
passes) and dequantizes only the rows that pass, giving exactly what dequantizing everything
and calling the decoder gives; other layouts dequantize, then decode.

Card ``output`` keys read here: ``decoder``, ``anchors``, ``anchor_units`` (``grid`` |
``pixels``), ``box_format`` (``xywh`` | ``xyxy``), ``box_units`` (``normalized`` | ``pixels``;
default: detected per frame from the value range, boxes ≤ 2 meaning normalised), ``boxes``
and ``scores`` (``yolo-split`` output roles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError
from sdk.quant import dequantize  # the Runner's arithmetic: both paths agree bit for bit

DECODERS = ("yolov2", "yolov3", "yolov5", "yolov8", "yolo-split")
FLAG_TO_DECODER = {"v2": "yolov2", "v3": "yolov3", "v5": "yolov5", "v8": "yolov8", "v11": "yolov8"}
# Published defaults (darknet cfgs; the course's yolo_anchors.txt for v2, in grid cells)
V2_ANCHORS = [[0.57273, 0.677385], [1.87446, 2.06253], [3.33843, 5.47434], [7.88282, 3.52778], [9.77052, 9.16828]]
V3_ANCHORS = [
    [[10, 13], [16, 30], [33, 23]],
    [[30, 61], [62, 45], [59, 119]],
    [[116, 90], [156, 198], [373, 326]],
]
V3_TINY_ANCHORS = [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]
Result = tuple[np.ndarray, np.ndarray, np.ndarray]
Quant = tuple[float, int] | None  # an output's (scale, zero point); None: stored as float


def _empty() -> Result:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """``[K, 4]`` centre-size boxes → corner boxes (new float32 array)."""
    out = np.empty(b.shape, np.float32)
    half = b[:, 2:4] * 0.5
    out[:, :2] = b[:, :2] - half
    out[:, 2:] = b[:, :2] + half
    return out


@lru_cache(maxsize=64)
def _q_threshold(conf: float, scale: float, zero_point: int, dtype: str) -> int | None:
    """The smallest stored value whose dequantized score is ``>= conf``.

    Found by dequantizing every value of the type, so ``q >= threshold`` selects exactly what
    ``dequantize(q) >= conf`` selects. ``None`` when no threshold applies (float outputs,
    wide integer types, a non-positive scale). When no value passes, one past the type's
    maximum (NumPy compares it correctly: nothing passes).
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize > 2 or not scale > 0:
        return None
    info = np.iinfo(dt)
    values = np.arange(info.min, info.max + 1, dtype=np.int64)
    ok = np.flatnonzero(dequantize(values, scale, zero_point) >= conf)
    return int(values[ok[0]]) if ok.size else info.max + 1


@lru_cache(maxsize=64)
def _lut(scale: float, zero_point: int, dtype: str) -> np.ndarray | None:
    """8-bit types: float32 ``[256]`` indexed by the stored byte, built with :func:`dequantize`."""
    dt = np.dtype(dtype)
    if dt.itemsize != 1:
        return None
    return dequantize(np.arange(256, dtype=np.uint8).view(dt), scale, zero_point)


def _dequantize_some(q: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    """:func:`dequantize` as one table lookup for 8-bit values (same numbers, fewer passes)."""
    lut = _lut(float(quant[0]), int(quant[1]), q.dtype.str)
    return dequantize(q, *quant) if lut is None else lut.take(q.view(np.uint8))


def _squeeze(a: np.ndarray, rank: int) -> np.ndarray:
    while a.ndim > rank and a.shape[0] == 1:
        a = a[0]
    return a


def _shape_error(name: str, shapes: Sequence[Sequence[int]], why: str) -> ModelFormatError:
    return ModelFormatError(
        f"outputs {[list(s) for s in shapes]} do not fit the {name} decoder ({why}); "
        "pass --yolo {v2,v3,v5,v8} matching the model, or give the model a card with output.decoder"
    )


@dataclass
class Decoder:
    """Base: ``decoder(outputs, conf) -> (boxes_xyxy, scores, class_ids)`` in input pixels."""

    input_size: tuple[int, int]  # (w, h)
    box_format: str = "xywh"
    box_units: str | None = None  # None: detect per call
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        """Subclasses set ``name`` here (dataclass calls it only if the base defines it)."""

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        raise NotImplementedError

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """Decode outputs as stored in the model (``Runner.run(x, raw=True)``).

        Args:
            outputs: Output tensors in model order, in their stored dtype.
            quant: Per output ``(scale, zero_point)``, or ``None`` where it is float.
            conf: Score threshold.

        Returns:
            Exactly what ``self([dequantized outputs], conf)`` returns; this base version
            dequantizes everything, subclasses skip the work for rows below ``conf``.
        """
        return self([o if q is None else dequantize(o, *q) for o, q in zip(outputs, quant)], conf)

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        raise NotImplementedError

    def _to_pixels(self, boxes: np.ndarray, normalized: bool) -> np.ndarray:
        out = xywh_to_xyxy(boxes) if self.box_format == "xywh" else np.asarray(boxes, np.float32)
        if normalized:
            out *= self._size4
        return out

    @cached_property
    def _size4(self) -> np.ndarray:
        w, h = self.input_size
        return np.array([w, h, w, h], np.float32)

    def _normalized(self, box_rows: np.ndarray, quant: Quant = None) -> bool:
        if self.box_units is not None:
            return self.box_units == "normalized"
        if box_rows.size == 0:
            return True
        # centres of every candidate span the image: their max tells normalised from pixels
        if quant is None:
            return float(np.abs(box_rows).max()) <= 2.0
        # dequantizing is monotonic: the largest |value| is at the smallest or largest stored one
        ends = dequantize(np.array([box_rows.min(), box_rows.max()]), *quant)
        return float(np.abs(ends).max()) <= 2.0


class YoloV8Decoder(Decoder):
    """Anchor-free ``[4+C, N]`` or ``[N, 4+C]`` (the smaller axis is the channel axis)."""

    def __post_init__(self) -> None:
        self.name = "yolov8"

    def _table(self, outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
        if len(outputs) != 1:
            raise _shape_error(self.name, [o.shape for o in outputs], f"expects one output, got {len(outputs)}")
        a = _squeeze(outputs[0], 2)
        if a.ndim != 2 or min(a.shape) < 5:
            raise _shape_error(self.name, [outputs[0].shape], "expects [1, 4+C, N] or [1, N, 4+C]")
        return a, a.shape[0] < a.shape[1]

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        return min(s for s in shapes[0] if s != 1) - 4

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        return self._decode(outputs, conf, None)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        q = quant[0] if len(quant) == 1 else None
        threshold = None if q is None else _q_threshold(conf, float(q[0]), int(q[1]), outputs[0].dtype.str)
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
            return _empty()
        cls = a[4:, keep].argmax(axis=0)
        boxes, best = a[:4, keep].T, best[keep]
        normalized = self._normalized(a[:4], q)
        if q is not None:
            boxes, best = _dequantize_some(boxes, q), _dequantize_some(best, q)
        return self._to_pixels(boxes, normalized), best.astype(np.float32), cls


class YoloV5Decoder(Decoder):
    """``[N, 5+C]`` with objectness (either orientation; the larger axis is N)."""

    def __post_init__(self) -> None:
        self.name = "yolov5"

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        return min(s for s in shapes[0] if s != 1) - 5

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        if len(outputs) != 1:
            raise _shape_error(self.name, [o.shape for o in outputs], f"expects one output, got {len(outputs)}")
        a = _squeeze(outputs[0], 2)
        if a.ndim != 2 or min(a.shape) < 6:
            raise _shape_error(self.name, [outputs[0].shape], "expects [1, N, 5+C]")
        if a.shape[0] < a.shape[1]:
            a = a.T
        obj = a[:, 4]
        cand = np.flatnonzero(obj >= conf)  # score = obj * prob <= obj: a cheap first cut
        if cand.size == 0:
            return _empty()
        probs = a[cand, 5:] * obj[cand, None]
        cls = probs.argmax(axis=1)
        score = probs[np.arange(cand.size), cls]
        ok = score >= conf
        boxes = self._to_pixels(a[cand[ok], :4], self._normalized(a[:, :4]))
        return boxes, score[ok].astype(np.float32), cls[ok]


class SplitDecoder(Decoder):
    """``boxes [N, 4]`` (normalised) + ``scores [N, C]``: the int8-safe two-output head."""

    def __post_init__(self) -> None:
        self.name = "yolo-split"
        self.box_index = 0
        self._plan: tuple[Any, ...] | None = None  # decode_raw's tables for the last (conf, quant)

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Find which output holds the boxes: the card's ``boxes``/``scores`` roles, else shapes, else names.

        Raises:
            ModelFormatError: Shapes that do not fit, a role naming no output, or two
                ``[1, N, 4]`` outputs (4 classes) with nothing saying which holds the boxes.
        """
        if len(shapes) != 2:
            raise _shape_error(self.name, shapes, f"expects two outputs (boxes, scores), got {len(shapes)}")
        # the last two axes; anything before them must be a batch of 1 (C may be 1: one class)
        dims = [list(s[-2:]) for s in shapes]
        if any(len(s) < 2 or any(d != 1 for d in s[:-2]) for s in shapes) or dims[0][0] != dims[1][0]:
            raise _shape_error(self.name, shapes, "expects boxes [1, N, 4] and scores [1, N, C] with the same N")
        by_role = _role_index(roles or {}, names, shapes)
        fours = [i for i, d in enumerate(dims) if d[1] == 4]
        if by_role is not None:
            if dims[by_role][1] != 4:
                raise _shape_error(self.name, shapes, f"the card's output roles put the boxes in output {by_role}, whose last axis is not 4")
            self.box_index = by_role
            return
        if not fours:
            raise _shape_error(self.name, shapes, "no output has a last axis of 4 for the boxes")
        if len(fours) == 2:
            named = [i for i, n in enumerate(names or ()) if "box" in n.lower()]
            if len(named) != 1:
                shown = [list(s) for s in shapes]
                raise ModelFormatError(
                    f"outputs {shown} (names {list(names or [])}) are ambiguous for the yolo-split decoder: both have a last "
                    "axis of 4 (4 classes) and nothing says which holds the boxes; set output.boxes and output.scores in "
                    "the model card to the output names (edgesdk train detect records them), or pass --yolo matching the model"
                )
            fours = named
        self.box_index = fours[0]

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        return int(shapes[1 - self.box_index][-1])

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        return self._decode(outputs, conf)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        if len(outputs) != 2 or len(quant) != 2:
            raise _shape_error(self.name, [o.shape for o in outputs], "expects two outputs")
        key = (conf, list(quant), outputs[0].dtype, outputs[1].dtype, self.box_index)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, *self._make_plan(outputs, quant, conf))
        threshold, lut_s, lut_b, scaled = self._plan[1:]
        if threshold is None:
            return super().decode_raw(outputs, quant, conf)
        return self._decode(outputs, threshold, lut_s, lut_b, scaled)

    def _make_plan(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> tuple[Any, ...]:
        """``(threshold, score table, box table, box table scaled to pixels)``; threshold None: no fast path."""
        qb, qs = quant[self.box_index], quant[1 - self.box_index]
        st, bt = outputs[1 - self.box_index].dtype.str, outputs[self.box_index].dtype.str
        threshold = None if qs is None else _q_threshold(conf, float(qs[0]), int(qs[1]), st)
        lut_s = None if qs is None else _lut(float(qs[0]), int(qs[1]), st)
        lut_b = None if qb is None else _lut(float(qb[0]), int(qb[1]), bt)
        if threshold is None or lut_s is None or (qb is not None and lut_b is None):  # 16-bit: dequantize all
            return None, None, None, False
        w, h = self.input_size
        if lut_b is not None and self.box_format == "xyxy" and self.box_units != "pixels" and w == h:
            # corners × size straight from the table: the same float32 products _to_pixels makes
            return threshold, lut_s, lut_b * np.float32(w), True
        return threshold, lut_s, lut_b, False

    def _decode(self, outputs: Sequence[np.ndarray], threshold: float | int, lut_s: np.ndarray | None = None, lut_b: np.ndarray | None = None, scaled: bool = False) -> Result:
        """Decode floats, or stored 8-bit values: scores compared with ``threshold`` in their own
        domain, then only the passing rows dequantized through the tables ``lut_s`` / ``lut_b``."""
        if len(outputs) != 2:
            raise _shape_error(self.name, [o.shape for o in outputs], "expects two outputs")
        scores = outputs[1 - self.box_index]
        c = scores.shape[-1]
        keep = np.flatnonzero((scores.reshape(-1, c) >= threshold).any(axis=1))  # rows, ascending, each once
        if keep.size == 0:
            return _empty()
        rows = scores.reshape(-1, c)[keep]
        cls = rows.argmax(axis=1)  # dequantizing is monotonic: the same class either way
        best = rows[np.arange(keep.size), cls]
        boxes = outputs[self.box_index].reshape(-1, 4)[keep]
        best = best.astype(np.float32) if lut_s is None else lut_s.take(best.view(np.uint8))
        if lut_b is not None:
            boxes = lut_b.take(boxes.view(np.uint8))
            if scaled:
                return boxes, best, cls
        return self._to_pixels(boxes, self.box_units != "pixels"), best, cls


def _role_index(roles: Mapping[str, Any], names: Sequence[str] | None, shapes: Sequence[Sequence[int]]) -> int | None:
    """Index of the boxes output from the card's ``output.boxes`` / ``output.scores``, or None."""
    found: dict[str, int] = {}
    for role in ("boxes", "scores"):
        ref = roles.get(role)
        if ref is None:
            continue
        if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(shapes):
            found[role] = ref
        elif isinstance(ref, str) and names and ref in names:
            found[role] = list(names).index(ref)
        else:
            raise ModelFormatError(
                f"card output.{role} is {ref!r}, which names no output of this model (outputs {list(names or [])}, "
                f"shapes {[list(s) for s in shapes]}); fix the card or pass --yolo matching the model"
            )
    if "boxes" in found and "scores" in found and found["boxes"] == found["scores"]:
        raise ModelFormatError(f"card output.boxes and output.scores both name output {found['boxes']}; they must differ")
    if "boxes" in found:
        return found["boxes"]
    return 1 - found["scores"] if "scores" in found else None


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

    def _match(self, outputs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each output reshaped to ``[Sh, Sw, A, 5+C]``, paired with its anchors (finest grid first)."""
        shapes = [o.shape for o in outputs]
        grids = [_grid(o) for o in outputs]
        order = sorted(range(len(grids)), key=lambda i: -grids[i].shape[0] * grids[i].shape[1])
        if len(order) != len(self._anchors):
            raise _shape_error(self.name, shapes, f"{len(order)} grid outputs but anchors for {len(self._anchors)} scales")
        pairs = []
        for i, anchors in zip(order, self._anchors):
            g = grids[i]
            if g.ndim not in (3, 4) or g.shape[-1] % (1 if g.ndim == 4 else len(anchors)):
                raise _shape_error(self.name, shapes, f"expects [1, S, S, A*(5+C)] with A={len(anchors)}")
            g = g.reshape(g.shape[0], g.shape[1], len(anchors), -1)
            if g.shape[2] != len(anchors) or g.shape[3] < 6:
                raise _shape_error(self.name, shapes, f"expects {len(anchors)} anchors of 5+C values per cell")
            pairs.append((g, anchors))
        return pairs

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        g = _grid(np.empty(shapes[0], np.uint8))
        return (g.shape[-1] if g.ndim == 4 else g.shape[-1] // len(self._anchors[0])) - 5

    def _offsets(self, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
        if (sh, sw) not in self._grids:
            cy, cx = np.meshgrid(np.arange(sh, dtype=np.float32), np.arange(sw, dtype=np.float32), indexing="ij")
            self._grids[(sh, sw)] = (cx, cy)
        return self._grids[(sh, sw)]

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
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
            return _empty()
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


def make_decoder(name: str, input_size: tuple[int, int], params: Mapping[str, Any] | None = None) -> Decoder:
    """A decoder by name (``yolov2``…``yolo-split``) with card ``output`` parameters."""
    p = dict(params or {})
    fmt = str(p.get("box_format", "xywh"))
    units = p.get("box_units")
    if fmt not in ("xywh", "xyxy") or units not in (None, "normalized", "pixels"):
        raise ModelFormatError(f"card output.box_format must be xywh|xyxy and box_units normalized|pixels, got {fmt!r}, {units!r}")
    if name == "yolov8":
        return YoloV8Decoder(input_size, fmt, units)
    if name == "yolov5":
        return YoloV5Decoder(input_size, fmt, units)
    if name == "yolo-split":
        return SplitDecoder(input_size, fmt, units)
    if name in ("yolov2", "yolov3"):
        v2 = name == "yolov2"
        anchors = p.get("anchors") or (V2_ANCHORS if v2 else V3_ANCHORS)
        unit = p.get("anchor_units", "grid" if v2 else "pixels")
        if unit not in ("grid", "pixels"):
            raise ModelFormatError(f"card output.anchor_units must be grid or pixels, got {unit!r}")
        return AnchorGridDecoder(input_size, "xywh", None, anchors=anchors, anchor_units=unit, softmax=v2)
    raise ModelFormatError(f"unknown YOLO decoder {name!r}; expected one of {DECODERS} (or --yolo {{v2,v3,v5,v8}})")


def _guess(shapes: Sequence[tuple[int, ...]], input_size: tuple[int, int]) -> tuple[str, str]:
    """Decoder name and why, from output shapes alone."""
    if len(shapes) == 2 and all(len(s) in (2, 3) for s in shapes):
        return "yolo-split", "two [1, N, k] outputs: boxes + scores"
    if shapes and all(len(s) in (4, 5) for s in shapes):
        if len(shapes) == 1:
            return "yolov2", "one anchor grid"
        return "yolov3", f"{len(shapes)} anchor grids"
    if len(shapes) == 1 and len(shapes[0]) in (2, 3):
        a, b = shapes[0][-2:]
        if a < b:
            return "yolov8", "channels-first [1, 4+C, N]"
        w, h = input_size
        cells = sum((w // s) * (h // s) for s in (8, 16, 32))
        if a == cells:
            return "yolov8", f"N = {a} = one box per cell at strides 8/16/32"
        return "yolov5", "[1, N, 5+C] rows" + (" (N = 3 anchors per cell at strides 8/16/32)" if a == 3 * cells else "")
    raise ModelFormatError(
        f"outputs {[list(s) for s in shapes]} match no YOLO layout (v2/v3 grids [1, S, S, A*(5+C)], v5 [1, N, 5+C], "
        "v8 [1, 4+C, N], split boxes [1, N, 4] + scores [1, N, C]); pass --yolo {v2,v3,v5,v8} or give the model a card"
    )


def choose_decoder(
    shapes: Sequence[Sequence[int]],
    input_size: tuple[int, int],
    card_output: Mapping[str, Any] | None = None,
    ultralytics: Mapping[str, Any] | None = None,
    override: str | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Decoder, str]:
    """Pick the decoder: ``--yolo`` override, else the card, else Ultralytics metadata, else shapes.

    Args:
        shapes: Output tensor shapes in model order.
        input_size: Model input ``(w, h)``.
        card_output: The model card's ``output`` mapping (decoder parameters), if any.
        ultralytics: :func:`sdk.card.ultralytics_metadata` of the model, if any.
        override: ``v2``/``v3``/``v5``/``v8`` (or a decoder name) from ``--yolo``.
        names: Output names as the Runner reports them (for the card's ``boxes``/``scores``
            roles, else a ``box`` name when shapes are ambiguous).

    Returns:
        The decoder, checked against the shapes, and a one-line reason for the log.

    Raises:
        ModelFormatError: When the outputs fit no decoder (the message shows the shapes).
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    params = dict(card_output or {})
    if override:
        name, reason = FLAG_TO_DECODER.get(override, override), f"--yolo {override}"
    elif params.get("decoder"):
        name, reason = FLAG_TO_DECODER.get(str(params["decoder"]), str(params["decoder"])), "model card"
    elif ultralytics:
        task = ultralytics.get("task", "detect")
        if task != "detect":
            raise ModelFormatError(f"Ultralytics metadata says task {task!r}; edgesdk detect runs detection models only")
        name, reason = "yolov8", f"Ultralytics metadata (task detect, {len(ultralytics.get('names') or [])} classes)"
    else:
        name, why = _guess(shapes, input_size)
        reason = f"output shapes {[list(s) for s in shapes]}: {why}"
    if name == "yolov8" and len(shapes) == 2:
        name = "yolo-split"
    if name == "yolov3" and not params.get("anchors") and len(shapes) == 2:
        params["anchors"] = V3_TINY_ANCHORS
    dec = make_decoder(name, input_size, params)
    if isinstance(dec, SplitDecoder):
        dec.locate(shapes, names, params)
    dec([np.zeros(s, np.float32) for s in shapes], 2.0)  # shape check now, not on the first frame
    if name in ("yolov2", "yolov3") and not params.get("anchors"):
        reason += f", default {name} anchors"
    return dec, f"{dec.name} decoder ({reason}), {dec.num_classes(shapes)} classes"
