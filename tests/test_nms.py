"""NMS against a brute-force reference (hypothesis), on every path (small, pairs, matrix, vector)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sdk import nms as nms_mod
from sdk.nms import iou_matrix, nms
from sdk.types import Box


def reference(boxes, scores, classes, iou, max_det, agnostic):
    """The textbook algorithm, one pair at a time."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if len(keep) == max_det:
            break
        bi = Box(*boxes[i])
        if all(not ((agnostic or classes[i] == classes[k]) and bi.iou(Box(*boxes[k])) > iou) for k in keep):
            keep.append(i)
    return keep


box_st = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(1, 40), st.integers(1, 40)).map(
    lambda t: (float(t[0]), float(t[1]), float(t[0] + t[2]), float(t[1] + t[3]))
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(box_st, st.floats(0.01, 1.0), st.integers(0, 3)), min_size=0, max_size=40),
    iou=st.sampled_from([0.3, 0.45, 0.5, 0.7]),
    max_det=st.integers(1, 50),
    agnostic=st.booleans(),
    path=st.sampled_from(["small", "pairs", "matrix", "vector"]),
)
def test_nms_matches_brute_force(data, iou, max_det, agnostic, path):
    boxes = np.array([d[0] for d in data], np.float64).reshape(-1, 4)
    scores = np.array([d[1] for d in data], np.float64)
    classes = np.array([d[2] for d in data], np.int64)
    if len(data):
        # exact ties at the threshold are decided by float rounding; keep them out
        m = iou_matrix(boxes, boxes).astype(np.float64)
        assume(not np.any(np.abs(m - iou) < 1e-5))
    old = nms_mod.SMALL_MAX, nms_mod.SMALL_PAIRS, nms_mod.PAIRS_MIN, nms_mod.PAIRS_MAX, nms_mod.MATRIX_MAX
    nms_mod.SMALL_MAX, nms_mod.SMALL_PAIRS = (10**6, 10**6) if path == "small" else (0, 0)
    nms_mod.PAIRS_MIN, nms_mod.PAIRS_MAX = (-1, 10**6) if path == "pairs" else (0, 0)
    nms_mod.MATRIX_MAX = 0 if path == "vector" else 10**6
    try:
        got = nms(boxes, scores, classes, iou=iou, max_det=max_det, agnostic=agnostic)
    finally:
        nms_mod.SMALL_MAX, nms_mod.SMALL_PAIRS, nms_mod.PAIRS_MIN, nms_mod.PAIRS_MAX, nms_mod.MATRIX_MAX = old
    assert got.tolist() == reference(boxes.tolist(), scores.tolist(), classes.tolist(), iou, max_det, agnostic)


def test_class_aware_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, np.array([0, 0, 1])).tolist() == [0, 2]
    assert nms(boxes, scores, np.array([0, 0, 1]), agnostic=True).tolist() == [0]
    assert nms(boxes, scores, None).tolist() == [0]


def test_iou_matrix_matches_box_iou():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 50, (6, 4))
    a[:, 2:] += a[:, :2]
    m = iou_matrix(a, a[:3])
    for i in range(6):
        for j in range(3):
            assert m[i, j] == pytest.approx(Box(*a[i]).iou(Box(*a[j])), abs=1e-6)


def test_empty_and_max_det():
    assert nms(np.zeros((0, 4)), np.zeros(0)).size == 0
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.1, 0.3, 0.2]), max_det=2).tolist() == [1, 2]


def test_same_class_pairs_enumerates_exactly_the_equal_class_pairs(rng):
    from sdk.nms import same_class_pairs

    for _ in range(50):
        c = rng.integers(0, 5, rng.integers(0, 30))
        i, j = same_class_pairs(c)
        want = sorted((a, b) for a in range(len(c)) for b in range(a + 1, len(c)) if c[a] == c[b])
        assert sorted(zip(i.tolist(), j.tolist())) == want
