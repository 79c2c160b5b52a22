"""Non-maximum suppression, class-aware or class-agnostic, vectorised.

Greedy NMS in score order, four strategies with identical results:

* few candidates (a small model's frame: up to ``SMALL_MAX``, with at most ``SMALL_PAIRS``
  same-class pairs): plain Python over the box lists, each candidate tested only against the
  kept boxes of its class — a dozen NumPy calls on tiny arrays cost more than the arithmetic;
* up to ``MATRIX_MAX`` candidates: one IoU matrix (masked to same-class pairs when class-aware),
  the greedy pass ORs its boolean rows;
* class-aware with more than ``PAIRS_MIN`` candidates (and at most ``PAIRS_MAX`` same-class
  pairs): IoU of same-class pairs only, then a greedy pass over the boxes overlapping a later one;
* beyond that: each kept box against every survivor in one vector operation (no quadratic
  memory); classes are separated by shifting each class's boxes beyond every coordinate.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

# up to SMALL_MAX candidates with at most SMALL_PAIRS same-class pairs, plain Python beats an IoU
# matrix (measured: 10 boxes of 6 classes 15 vs 45 us; 16 boxes of one class 100 vs 52 us)
SMALL_MAX, SMALL_PAIRS = 32, 60
MATRIX_MAX = 512  # up to this many candidates, an IoU matrix is cheaper than per-box vectors
# class-aware with more than PAIRS_MIN candidates and at most PAIRS_MAX same-class pairs: IoU of
# those pairs only, which beats the full matrix there (measured with benchmarks/detect_decode.py)
PAIRS_MIN, PAIRS_MAX = 150, 2_000_000


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a [N, 4]`` and ``b [M, 4]`` (x1, y1, x2, y2) → ``[N, M]`` float32."""
    return iou_matrix_f64(np.asarray(a, np.float64), np.asarray(b, np.float64)).astype(np.float32)


def iou_matrix_f64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`iou_matrix` in the inputs' precision (float64 for NMS)."""
    a = a.reshape(-1, 4)
    b = b.reshape(-1, 4)
    # per-coordinate columns: broadcasting over a trailing axis of 2 is many times slower
    ax1, ay1, ax2, ay2 = (a[:, k : k + 1] for k in range(4))
    bx1, by1, bx2, by2 = (b[:, k] for k in range(4))
    w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    np.clip(w, 0, None, out=w)
    h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    np.clip(h, 0, None, out=h)
    inter = w * h
    area_a = np.clip(ax2 - ax1, 0, None) * np.clip(ay2 - ay1, 0, None)
    area_b = np.clip(bx2 - bx1, 0, None) * np.clip(by2 - by1, 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None = None,
    iou: float = 0.45,
    max_det: int = 300,
    agnostic: bool = False,
    max_candidates: int = 30000,
) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, highest score first.

    Args:
        boxes: ``[N, 4]`` x1, y1, x2, y2.
        scores: ``[N]``; ties keep the lower index first.
        class_ids: ``[N]`` ints; boxes of different classes never suppress each other
            unless ``agnostic`` (``None`` means one class).
        iou: Suppress a box whose IoU with a kept box is greater than this.
        max_det: Keep at most this many boxes.
        agnostic: Ignore classes.
        max_candidates: Only the best this many boxes enter NMS (bounds the worst case).

    Returns:
        ``[K]`` int64 indices into ``boxes``.
    """
    n = len(scores)
    if n <= 1 or max_det <= 0:
        return np.zeros(min(n, max(max_det, 0)), np.int64)
    if n <= min(SMALL_MAX, max_candidates):
        cls_list = None if class_ids is None or agnostic else np.asarray(class_ids).reshape(-1).tolist()
        # its cost grows with the same-class pairs: all n(n-1)/2 when one class
        few = n * (n - 1) // 2 <= SMALL_PAIRS
        if few or sum(k * (k - 1) // 2 for k in (Counter(cls_list).values() if cls_list is not None else (n,))) <= SMALL_PAIRS:
            return _greedy_small(np.asarray(boxes).reshape(-1, 4).tolist(), np.asarray(scores).reshape(-1).tolist(), iou, max_det, cls_list)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:max_candidates]
    # float64: class offsets (below) must not cost precision in the IoU
    b = np.asarray(boxes, np.float64).reshape(-1, 4)[order]
    cls = None if class_ids is None or agnostic else np.asarray(class_ids).reshape(-1)[order]
    if cls is not None and PAIRS_MIN < order.size and _pair_count(cls) <= PAIRS_MAX:
        return order[_greedy_pairs(b, iou, max_det, cls)]
    if order.size <= MATRIX_MAX:
        return order[_greedy_matrix(b, iou, max_det, cls)]
    if cls is not None:
        # an offset beyond every coordinate puts each class in its own region of the plane
        b = b + (cls.astype(np.float64) * (float(np.abs(b).max()) * 2 + 1))[:, None]
    return order[_greedy_vector(b, iou, max_det)]


def _greedy_small(boxes: list, scores: list, iou: float, max_det: int, classes: list | None) -> np.ndarray:
    """Greedy NMS on a few boxes as Python lists: each one against the kept boxes of its class."""
    # sorted() is stable with reverse=True too: equal scores keep the lower index first
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    kept: dict[Any, list[tuple[float, float, float, float, float]]] = {}  # kept boxes by class
    keep: list[int] = []
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
        same = kept.setdefault(classes[i] if classes is not None else 0, [])
        for kx1, ky1, kx2, ky2, k_area in same:
            w = min(x2, kx2) - max(x1, kx1)
            h = min(y2, ky2) - max(y1, ky1)
            # IoU > iou without a division, as in the other paths
            if w > 0 and h > 0 and w * h > iou * (area + k_area - w * h):
                break
        else:
            keep.append(i)
            if len(keep) >= max_det:
                break
            same.append((x1, y1, x2, y2, area))
    return np.array(keep, np.int64)


def _overlaps(b: np.ndarray, iou: float) -> np.ndarray:
    """Boolean ``[N, N]``: IoU > ``iou``, tested as ``inter > iou * union`` (no division)."""
    if len(b) <= 64:  # few boxes: fewer, broadcast calls beat per-coordinate ones
        f = b.astype(np.float32)
        wh = np.minimum(f[:, None, 2:], f[None, :, 2:])
        wh -= np.maximum(f[:, None, :2], f[None, :, :2])
        np.maximum(wh, 0, out=wh)
        inter = wh[..., 0] * wh[..., 1]
        d = f[:, 2:] - f[:, :2]
        np.maximum(d, 0, out=d)
        area = d[:, 0] * d[:, 1]
        union = area[:, None] + area
        union -= inter
        union *= np.float32(iou)
        return inter > union
    # float32 halves the memory traffic of the N×N temporaries; relative error ~1e-7
    x1, y1, x2, y2 = b.astype(np.float32).T
    w = np.minimum(x2[:, None], x2)
    w -= np.maximum(x1[:, None], x1)
    np.maximum(w, 0, out=w)
    h = np.minimum(y2[:, None], y2)
    h -= np.maximum(y1[:, None], y1)
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    h = np.add(area[:, None], area, out=h)
    h -= w  # union
    h *= np.float32(iou)
    return w > h


def _greedy_matrix(b: np.ndarray, iou: float, max_det: int, cls: np.ndarray | None) -> np.ndarray:
    """Greedy NMS over a precomputed overlap matrix: one cheap row OR per visited box."""
    over = _overlaps(b, iou)
    if cls is not None:
        over &= cls[:, None] == cls
    removed = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= max_det:
            break
        removed |= over[i]
    return np.asarray(keep, np.int64)


def _pair_count(cls: np.ndarray) -> int:
    n = np.unique(cls, return_counts=True)[1].astype(np.int64)
    return int((n * (n - 1) // 2).sum())


def same_class_pairs(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)``, ``i < j``, of equal class, in O(N log N + pairs) without an N² mask."""
    pos = np.argsort(cls, kind="stable")  # stable: indices stay ascending inside each class
    sc = cls[pos]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    sizes = np.diff(np.r_[starts, sc.size])
    after = np.repeat(sizes, sizes) - (np.arange(sc.size) - np.repeat(starts, sizes)) - 1  # later boxes of its class
    first = np.repeat(np.arange(sc.size), after)
    second = first + 1 + np.arange(first.size) - np.repeat(np.cumsum(after) - after, after)
    return pos[first], pos[second]


def _greedy_pairs(b: np.ndarray, iou: float, max_det: int, cls: np.ndarray) -> np.ndarray:
    """Class-aware greedy NMS on same-class pairs only (boxes already in score order).

    IoU is computed for the same-class pairs alone, far fewer than N² when there are several
    classes; the greedy pass then visits only boxes that overlap a later one.
    """
    ii, jj = same_class_pairs(cls)
    w = np.minimum(b[ii, 2], b[jj, 2]) - np.maximum(b[ii, 0], b[jj, 0])
    h = np.minimum(b[ii, 3], b[jj, 3]) - np.maximum(b[ii, 1], b[jj, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area[ii] + area[jj] - inter
    over = inter > iou * union  # IoU > iou without a division (union 0 means inter 0)
    ii, jj = ii[over], jj[over]
    removed = np.zeros(len(b), bool)
    if ii.size:
        o = np.argsort(ii, kind="stable")
        ii, jj = ii[o], jj[o]
        starts = np.flatnonzero(np.r_[True, ii[1:] != ii[:-1]])
        ends = np.r_[starts[1:], ii.size]
        for s, e in zip(starts.tolist(), ends.tolist()):
            if not removed[ii[s]]:  # row i can only be removed by earlier rows, already done
                removed[jj[s:e]] = True
    return np.flatnonzero(~removed)[:max_det]


def _greedy_vector(b: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Greedy NMS without a matrix (many candidates): each kept box against all survivors."""
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    alive = np.arange(len(b))
    keep = []
    while alive.size and len(keep) < max_det:
        i = alive[0]
        keep.append(i)
        rest = alive[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        ov = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive = rest[ov <= iou]
    return np.asarray(keep, np.int64)
