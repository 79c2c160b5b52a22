"""``nanodet``: anchor-free GFL heads (NanoDet, NanoDet-Plus, GFL) with distribution boxes.

Per level (stride ``s``, a grid of ``ceil(h/s) × ceil(w/s)`` cells in row-major order) the
model gives class scores ``[1, N, C]`` and box distributions ``[1, N, 4·B]``: for each side
(left, top, right, bottom) ``B`` logits over the distances ``0..B-1``. The distance is the
softmax expectation times the stride, measured from the cell centre ``((col + o)·s,
(row + o)·s)`` with ``o`` the card's ``center_offset`` (0.5 by default). A single output
``[1, ΣN, C + 4·B]`` (NanoDet-Plus exports) works too, with the levels concatenated in stride
order.

Card ``output`` keys: ``strides`` (default: inferred per level from N and the input size),
``bins`` (``B``; default: from the box channels, said in the log line), ``score``
(``probability``, default, sigmoid applied in the model, or ``logit``), ``center_offset``,
``num_classes`` (single-output layout only).

Quantised outputs: scores are compared with the threshold in their stored domain, and only
the rows that pass have their scores and box distributions dequantized.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sdk.decoders.base import Decoder, Guess, Quant, Result, dequantize_some, empty_result, q_threshold, shape_error
from sdk.errors import ModelFormatError

STRIDE_CANDIDATES = (8, 16, 32, 64, 128)
COMMON_BINS = (8, 11, 17)  # reg_max 7 (NanoDet-Plus), 10 (NanoDet-m), 16 (GFL)


@dataclass
class _Level:
    """Where one level's scores and boxes live (output index, row offset) and its grid."""

    stride: int
    cols: int
    rows: int
    score_out: int
    box_out: int
    offset: int = 0  # first row inside a concatenated output


@dataclass
class NanoDetDecoder(Decoder):
    """GFL distribution boxes + per-class scores, per stride level or concatenated."""

    strides: tuple[int, ...] | None = None
    bins: int | None = None
    score: str = "probability"
    center_offset: float = 0.5
    classes: int | None = None
    levels: list[_Level] = field(default_factory=list, init=False)
    single: bool = field(default=False, init=False)

    convention: ClassVar[Mapping[str, Any]] = {
        "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395], "channel_order": "bgr", "letterbox": True,
        "why": "NanoDet's training recipe (BGR, ImageNet mean/std in 0-255 units)",
    }

    def __post_init__(self) -> None:
        self.name = "nanodet"
        self._centres: dict[int, np.ndarray] = {}

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> NanoDetDecoder:
        """Read ``strides``, ``bins``, ``score``, ``center_offset``, ``num_classes`` from the card.

        Raises:
            ModelFormatError: A value of the wrong kind.
        """
        try:
            strides = tuple(int(s) for s in params["strides"]) if params.get("strides") else None
            bins = int(params["bins"]) if params.get("bins") is not None else None
            offset = float(params.get("center_offset", 0.5))
            classes = int(params["num_classes"]) if params.get("num_classes") is not None else None
        except (TypeError, ValueError) as e:
            raise ModelFormatError(f"card output: nanodet strides/bins/center_offset/num_classes must be numbers ({e})") from e
        score = str(params.get("score", "probability"))
        if score not in ("probability", "logit") or (bins is not None and bins < 2) or (strides and min(strides) < 1):
            raise ModelFormatError(f"card output: nanodet needs score probability|logit, bins >= 2 and positive strides; got {score!r}, {bins}, {strides}")
        return cls(input_size, strides=strides, bins=bins, score=score, center_offset=offset, classes=classes)

    # -- geometry --------------------------------------------------------------------------
    def _grid(self, stride: int) -> tuple[int, int]:
        w, h = self.input_size
        return math.ceil(w / stride), math.ceil(h / stride)

    def _stride_for(self, n: int) -> int | None:
        for s in self.strides or STRIDE_CANDIDATES:
            c, r = self._grid(s)
            if c * r == n:
                return s
        return None

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Pair score and box outputs per level (by N and channel count) and find each level's stride.

        Raises:
            ModelFormatError: Outputs that are not ``[1, N, k]``, an N no stride explains, or
                pairs that cannot be told apart.
        """
        dims = [list(s[-2:]) for s in shapes]
        if any(len(s) < 2 or any(d != 1 for d in s[:-2]) for s in shapes):
            raise shape_error(self.name, shapes, "expects [1, N, C] scores and [1, N, 4*bins] boxes per level")
        if len(shapes) == 1:
            self._locate_single(dims[0][0], dims[0][1], shapes)
            return
        by_n: dict[int, list[int]] = {}
        for i, (n, _) in enumerate(dims):
            by_n.setdefault(n, []).append(i)
        if any(len(v) != 2 for v in by_n.values()):
            raise shape_error(self.name, shapes, "expects one scores and one boxes output per level (two outputs with the same N)")
        chans = sorted({dims[i][1] for v in by_n.values() for i in v})
        bins = self.bins or _guess_bins(chans, shapes)
        if not self.bins:
            self.guesses.append(Guess(f"bins: {bins} per box side (the {4 * bins}-channel outputs)", "bins", "output.bins"))
        self.levels = []
        for n, pair in sorted(by_n.items(), reverse=True):
            boxes = [i for i in pair if dims[i][1] == 4 * bins]
            if not boxes:
                raise shape_error(self.name, shapes, f"no output of N={n} has 4 x {bins} box channels")
            if len(boxes) == 2:
                raise shape_error(self.name, shapes, f"both outputs of N={n} have {4 * bins} channels (as many classes as box bins)")
            b = boxes[0]
            s = self._stride_for(n)
            if s is None:
                raise shape_error(self.name, shapes, f"N={n} is no grid of the input {list(self.input_size)} at strides {self.strides or STRIDE_CANDIDATES}")
            c, r = self._grid(s)
            self.levels.append(_Level(s, c, r, pair[0] if pair[1] == b else pair[1], b))
        self.bins, self.single = bins, False

    def _locate_single(self, n: int, k: int, shapes: Sequence[Sequence[int]]) -> None:
        strides = self.strides or (8, 16, 32, 64)
        total = 0
        self.levels = []
        for s in strides:
            c, r = self._grid(s)
            self.levels.append(_Level(s, c, r, 0, 0, total))
            total += c * r
            if total == n:
                break
        if total != n:
            raise shape_error(self.name, shapes, f"N={n} is not the cell count of strides {strides} at input {list(self.input_size)}")
        bins = self.bins or 8
        if self.classes is not None and self.classes + 4 * bins != k:
            raise shape_error(self.name, shapes, f"{k} channels != num_classes {self.classes} + 4 x {bins} bins")
        if k <= 4 * bins:
            raise shape_error(self.name, shapes, f"{k} channels leave no classes beside 4 x {bins} bins")
        self.bins, self.single = bins, True

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: the scores' last axis (single output: channels less the box bins)."""
        if self.single:
            return int(shapes[0][-1]) - 4 * int(self.bins or 0)
        return int(shapes[self.levels[0].score_out][-1])

    def _centre(self, lv: _Level) -> np.ndarray:
        """``[rows·cols, 2]`` float32 cell centres in input pixels (cached per stride)."""
        got = self._centres.get(lv.stride)
        if got is None:
            ys, xs = np.mgrid[0 : lv.rows, 0 : lv.cols].astype(np.float32)
            got = (np.stack([xs.ravel(), ys.ravel()], 1) + np.float32(self.center_offset)) * np.float32(lv.stride)
            self._centres[lv.stride] = got
        return got

    # -- decoding ------------------------------------------------------------------------
    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode float outputs in model order."""
        return self._decode(outputs, [None] * len(outputs), conf)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`: scores thresholded while still quantized."""
        return self._decode(outputs, list(quant), conf)

    def _threshold(self, conf: float, q: Quant, dtype: np.dtype) -> float | int:
        t = conf if self.score == "probability" else _logit(conf)
        if q is None:
            return t
        qt = q_threshold(float(t), float(q[0]), int(q[1]), dtype.str) if math.isfinite(t) else None
        if qt is None:  # wide types or an infinite logit: compare in float
            return t
        return qt

    def _decode(self, outputs: Sequence[np.ndarray], quant: list[Quant], conf: float) -> Result:
        if not self.levels:
            raise shape_error(self.name, [o.shape for o in outputs], "locate() was not called")
        parts = [self._level(outputs, quant, lv, conf) for lv in self.levels]
        parts = [p for p in parts if p is not None]
        if not parts:
            return empty_result()
        return tuple(np.concatenate(x) for x in zip(*parts))  # type: ignore[return-value]

    def _rows(self, outputs: Sequence[np.ndarray], lv: _Level) -> tuple[np.ndarray, np.ndarray]:
        """This level's ``[N, C]`` scores and ``[N, 4·B]`` distributions (views, stored dtype)."""
        nb = 4 * int(self.bins or 0)
        n = lv.rows * lv.cols
        if self.single:
            out = outputs[0].reshape(-1, outputs[0].shape[-1])[lv.offset : lv.offset + n]
            return out[:, :-nb], out[:, -nb:]
        s, b = outputs[lv.score_out], outputs[lv.box_out]
        if s.shape[-2] != n or b.shape[-1] != nb:
            raise shape_error(self.name, [o.shape for o in outputs], f"level stride {lv.stride} expects N={n} and {nb} box channels")
        return s.reshape(n, -1), b.reshape(n, nb)

    def _level(self, outputs: Sequence[np.ndarray], quant: list[Quant], lv: _Level, conf: float) -> Result | None:
        scores, dist = self._rows(outputs, lv)
        qs = quant[lv.score_out]
        qb = quant[lv.box_out]
        thr = self._threshold(conf, qs, scores.dtype)
        keep = np.flatnonzero((scores >= thr).any(axis=1))
        if keep.size == 0:
            return None
        rows = scores[keep]
        cls = rows.argmax(axis=1)  # dequantizing is monotonic (positive scale): same class
        best = rows[np.arange(keep.size), cls]
        best = dequantize_some(best, qs) if qs is not None else best.astype(np.float32)
        if self.score == "logit":
            best = (1.0 / (1.0 + np.exp(-best))).astype(np.float32)
        d = dist[keep]
        d = dequantize_some(d, qb) if qb is not None else d.astype(np.float32)
        boxes = self._boxes(d, keep, lv)
        return boxes, best.astype(np.float32), cls.astype(np.int64)

    def _boxes(self, d: np.ndarray, keep: np.ndarray, lv: _Level) -> np.ndarray:
        """Softmax expectation per side × stride, around the kept cells' centres, clipped to the input."""
        bins = int(self.bins or 0)
        d = d.reshape(-1, 4, bins)
        e = np.exp(d - d.max(axis=2, keepdims=True))
        dist = (e @ np.arange(bins, dtype=np.float32)) / e.sum(axis=2) * np.float32(lv.stride)
        c = self._centre(lv)[keep]
        out = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1).astype(np.float32)
        w, h = self.input_size
        np.clip(out, 0, np.array([w, h, w, h], np.float32), out=out)
        return out


def _guess_bins(chans: Sequence[int], shapes: Sequence[Sequence[int]]) -> int:
    """The bin count from the two channel counts: the one that is 4 × a common bin count."""
    fits = [c // 4 for c in chans if c % 4 == 0 and c // 4 in COMMON_BINS]
    if len(chans) == 2 and len(fits) == 1:
        return fits[0]
    raise shape_error("nanodet", shapes, f"cannot tell box channels from class channels among {list(chans)}; set output.bins in the model card")


def _logit(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def looks_like_nanodet(shapes: Sequence[Sequence[int]], input_size: tuple[int, int]) -> str | None:
    """Why ``shapes`` look like per-level NanoDet outputs (pairs of [1, N, k] at grid sizes), else None."""
    if len(shapes) < 4 or len(shapes) % 2 or any(len(s) != 3 or s[0] != 1 for s in shapes):
        return None
    dec = NanoDetDecoder(input_size)
    try:
        dec.locate(shapes)
    except ModelFormatError:
        return None
    return f"{len(dec.levels)} levels of [1, N, C] scores + [1, N, 4x{dec.bins}] distributions at strides {[lv.stride for lv in dec.levels]}"
