"""Each YOLO decoder against hand-built tensors whose boxes are known, and the decoder choice."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.decoders import choose_decoder, make_decoder
from sdk.decoders.grid import V2_ANCHORS
from sdk.errors import ModelFormatError

W, H = 320, 256
# (x1, y1, x2, y2), class, score
TRUTH = [((40.0, 30.0, 120.0, 90.0), 2, 0.9), ((200.0, 100.0, 300.0, 250.0), 0, 0.7)]


def _xywh(b: tuple[float, ...]) -> list[float]:
    x1, y1, x2, y2 = b
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _sorted(res):
    boxes, scores, cls = res
    order = np.argsort(-scores)
    return boxes[order], scores[order], cls[order]


def _check(res, truth=TRUTH, atol=1e-3):
    boxes, scores, cls = _sorted(res)
    assert len(scores) == len(truth)
    for (box, c, s), b, sc, k in zip(truth, boxes, scores, cls):
        np.testing.assert_allclose(b, box, atol=atol)
        assert k == c
        assert sc == pytest.approx(s, abs=1e-4)


def v8_tensor(n: int = 60, c: int = 5, normalized: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.zeros((1, 4 + c, n), np.float32)
    t[0, :4] = rng.uniform(0, 200, (4, n))
    t[0, 4:] = rng.uniform(0, 0.2, (c, n))  # background below the threshold
    for j, (box, cls, s) in zip((7, 33), TRUTH):
        t[0, :4, j] = _xywh(box)
        t[0, 4 + cls, j] = s
    if normalized:
        t[0, :4] /= np.array([W, H, W, H], np.float32)[:, None]
    return t


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_yolov8_both_orientations_and_units(normalized, transpose):
    t = v8_tensor(normalized=normalized)
    if transpose:
        t = t.transpose(0, 2, 1).copy()
    dec = make_decoder("yolov8", (W, H))
    _check(dec([t], 0.25))


def test_yolov8_nothing_above_threshold():
    boxes, scores, cls = make_decoder("yolov8", (W, H))([v8_tensor()], 0.95)
    assert boxes.shape == (0, 4) and scores.size == 0 and cls.size == 0


def test_yolov5_objectness_times_class():
    n, c = 50, 4
    t = np.zeros((1, n, 5 + c), np.float32)
    t[0, :, :4] = 100
    t[0, :, 4] = 0.1
    t[0, :, 5:] = 0.9
    for j, (box, cls, s) in zip((3, 40), TRUTH):
        t[0, j, :4] = _xywh(box)
        t[0, j, 4] = 1.0 if j == 3 else 0.875
        t[0, j, 5:] = 0.05
        t[0, j, 5 + cls] = s / t[0, j, 4]
    t[0, 10, 4], t[0, 10, 5:] = 0.95, 0.1  # high objectness, low class prob: score 0.095, dropped
    _check(make_decoder("yolov5", (W, H))([t], 0.25))


@pytest.mark.parametrize("fmt", ["xywh", "xyxy"])
def test_split_head_normalised_boxes_separate_scores(fmt):
    n, c = 40, 3
    boxes = np.full((1, n, 4), 0.5, np.float32)
    scores = np.full((1, n, c), 0.01, np.float32)
    for j, (box, cls, s) in zip((5, 20), TRUTH):
        b = _xywh(box) if fmt == "xywh" else list(box)
        boxes[0, j] = np.array(b) / np.array([W, H, W, H])
        scores[0, j, cls] = s
    dec, why = choose_decoder([scores.shape, boxes.shape], (W, H), card_output={"decoder": "yolo-split", "box_format": fmt})
    assert dec.name == "yolo-split" and "model card" in why
    _check(dec([scores, boxes], 0.25))


def _grid_logits(s: int, anchors: np.ndarray, c: int, truth, stride: float, softmax: bool) -> np.ndarray:
    """A raw ``[1, s, s, A*(5+C)]`` tensor whose decoding gives ``truth`` (boxes in pixels)."""
    a = len(anchors)
    g = np.full((s, s, a, 5 + c), -10.0, np.float32)  # sigmoid(-10) ≈ 0: nothing elsewhere
    for box, cls, score in truth:
        cx, cy, w, h = _xywh(box)
        gx, gy = int(cx // stride), int(cy // stride)
        fx, fy = cx / stride - gx, cy / stride - gy
        k = 0
        g[gy, gx, k, 0:2] = np.log([fx / (1 - fx), fy / (1 - fy)])
        g[gy, gx, k, 2:4] = np.log([w / anchors[k][0], h / anchors[k][1]])
        if softmax:  # class prob 1 (others -inf-ish), objectness carries the score
            g[gy, gx, k, 5:] = -50
            g[gy, gx, k, 5 + cls] = 50
        else:
            g[gy, gx, k, 5 + cls] = 50
        g[gy, gx, k, 4] = np.log(score / (1 - score))
    return g.reshape(1, s, s, a * (5 + c))


def test_yolov2_course_grid_anchors_in_cells():
    s, c = 8, 4
    stride = 256 / s
    anchors_px = np.array(V2_ANCHORS) * stride
    truth = [((64.0, 70.0, 160.0, 128.0), 1, 0.8), ((20.0, 150.0, 60.0, 250.0), 3, 0.6)]
    t = _grid_logits(s, anchors_px, c, truth, stride, softmax=True)
    dec, why = choose_decoder([t.shape], (256, 256))
    assert dec.name == "yolov2" and "4 classes" in why
    assert [g.param for g in dec.guesses] == ["decoder", "anchors"] and "darknet YOLOv2 defaults" in dec.guesses[1].what
    _check(dec([t], 0.25), truth, atol=1e-2)


def test_yolov3_three_scales_in_any_output_order():
    c = 2
    anchors = [[[10, 12], [20, 25], [30, 30]], [[40, 50], [60, 60], [70, 90]], [[100, 110], [150, 160], [200, 220]]]
    truth_by_scale = [
        [((10.0, 10.0, 21.0, 23.0), 0, 0.7)],
        [((100.0, 100.0, 141.0, 151.0), 1, 0.8)],
        [((150.0, 30.0, 252.0, 142.0), 0, 0.9)],
    ]
    outs = [
        _grid_logits(256 // st, np.array(a, np.float32), c, tr, st, softmax=False)
        for st, a, tr in zip((8, 16, 32), anchors, truth_by_scale)
    ]
    outs = [outs[2], outs[0], outs[1]]  # models list outputs in any order
    dec, _ = choose_decoder([o.shape for o in outs], (256, 256), card_output={"decoder": "yolov3", "anchors": anchors})
    truth = sorted(sum(truth_by_scale, []), key=lambda t: -t[2])
    _check(dec(outs, 0.25), truth, atol=1e-2)


def test_yolov3_5d_grid_without_flattening():
    c = 2
    anchors = [[[30, 30], [60, 60]]]
    truth = [((100.0, 100.0, 131.0, 129.0), 1, 0.75)]
    t = _grid_logits(16, np.array(anchors[0], np.float32), c, truth, 16, softmax=False).reshape(1, 16, 16, 2, 7)
    dec, _ = choose_decoder([t.shape], (256, 256), card_output={"anchors": anchors}, override="v3")
    _check(dec([t], 0.25), truth, atol=1e-2)


def test_choice_order_override_card_ultralytics_shapes():
    shape = [(1, 84, 8400)]
    _, why = choose_decoder(shape, (640, 640))
    assert why.startswith("yolov8") and "output shapes" in why and "80 classes" in why
    _, why = choose_decoder(shape, (640, 640), ultralytics={"task": "detect", "names": ["a"] * 80})
    assert "Ultralytics metadata" in why
    _, why = choose_decoder([(1, 25200, 85)], (640, 640))
    assert why.startswith("yolov5") and "3 anchors per cell" in why
    dec, why = choose_decoder([(1, 8400, 84)], (640, 640))
    assert dec.name == "yolov8"  # N = one box per cell: anchor-free even though rows come first
    dec, why = choose_decoder([(1, 8400, 85)], (640, 640), override="v5")
    assert dec.name == "yolov5" and "decoder=v5" in why and not dec.guesses


def test_no_matching_layout_names_shapes_and_flag():
    with pytest.raises(ModelFormatError, match=r"\[1, 10\].*set decoder") as e:
        choose_decoder([(1, 10), (1, 3), (1, 7)], (64, 64))
    assert e.value.param == "decoder"
    with pytest.raises(ModelFormatError, match=r"set anchors.*\[1, 8, 8, 31\] does not hold 5 of them") as e:
        choose_decoder([(1, 8, 8, 31)], (64, 64), override="v2")
    assert e.value.param == "anchors"
    with pytest.raises(ModelFormatError, match=r"do not fit the yolov2 layout.*set decoder"):
        choose_decoder([(1, 10, 4), (1, 10)], (64, 64), override="v2")
    with pytest.raises(ModelFormatError, match="unknown decoder 'retinanet'"):
        choose_decoder([(1, 84, 8400)], (64, 64), card_output={"decoder": "retinanet"})
    with pytest.raises(ModelFormatError, match="task 'segment'"):
        choose_decoder([(1, 84, 8400)], (64, 64), ultralytics={"task": "segment"})


def _quantize(x: np.ndarray, rng) -> tuple[np.ndarray, tuple[float, int]]:
    """``x`` as int8 with a scale/zero point fitted to its range (as a converter would)."""
    lo, hi = float(min(x.min(), 0)), float(max(x.max(), 0))
    scale = (hi - lo) / 255 or 1.0
    zp = int(np.clip(round(-128 - lo / scale), -128, 127)) + int(rng.integers(-2, 3))
    zp = int(np.clip(zp, -128, 127))
    return np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int8), (scale, zp)


@pytest.mark.parametrize("seed", range(6))
def test_quantized_domain_threshold_gives_exactly_the_float_path(seed):
    """decode_raw (compare in int8, dequantize the few rows that pass) == dequantize all, then decode."""
    from sdk.quant import dequantize

    rng = np.random.default_rng(seed)
    n, c = 300, int(rng.integers(1, 9))
    boxes = rng.uniform(0, 1, (1, n, 4)).astype(np.float32)
    scores = rng.beta(0.5, 3, (1, n, c)).astype(np.float32)
    qb, pb = _quantize(boxes, rng)
    qs, ps = _quantize(scores, rng)
    v8 = np.concatenate([rng.uniform(0, W, (1, 4, n)), rng.beta(0.5, 3, (1, c, n))], axis=1).astype(np.float32)
    q8, p8 = _quantize(v8, rng)
    cases = [(make_decoder("yolov8", (W, H)), [q8], [p8]), (make_decoder("yolov8", (W, H)), [q8.transpose(0, 2, 1)], [p8])]
    for fmt in ("xyxy", "xywh"):
        for size in ((W, H), (W, W)):  # a square input takes the table-scaled xyxy path
            split = make_decoder("yolo-split", size, {"box_format": fmt})
            split.box_index = seed % 2
            pair = [qs, qb] if split.box_index else [qb, qs]
            quant = [ps, pb] if split.box_index else [pb, ps]
            cases.append((split, pair, quant))
    for dec, outs, q in cases:
        floats = [dequantize(o, *p) for o, p in zip(outs, q)]
        for conf in (0.0, 0.001, 0.1, 0.25, float(rng.uniform(0, 1)), 0.999, 1.0):
            want = dec(floats, conf)
            got = dec.decode_raw(outs, q, conf)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)


def test_float_outputs_take_the_plain_path_through_decode_raw():
    t = v8_tensor()
    _check(make_decoder("yolov8", (W, H)).decode_raw([t], [None], 0.25))


def test_split_roles_from_the_card_names_or_indices():
    four = [(1, 50, 4), (1, 50, 4)]  # 4 classes: both outputs are [1, N, 4]
    names = ["output_1", "output_0"]
    for roles in ({"boxes": "output_0"}, {"scores": "output_1"}, {"boxes": "output_0", "scores": "output_1"}, {"boxes": 1}):
        dec, _ = choose_decoder(four, (W, H), {"decoder": "yolo-split", **roles}, names=names)
        assert dec.box_index == 1, roles
    with pytest.raises(ModelFormatError, match=r"\[\[1, 50, 4\], \[1, 50, 4\]\].*ambiguous.*output\.boxes.*set decoder"):
        choose_decoder(four, (W, H), {"decoder": "yolo-split"}, names=names)
    with pytest.raises(ModelFormatError, match=r"ambiguous.*set decoder"):
        choose_decoder(four, (W, H))  # no card at all: the shapes pick yolo-split, then cannot tell
    with pytest.raises(ModelFormatError, match=r"output\.boxes is 'boxes'.*names no output"):
        choose_decoder(four, (W, H), {"boxes": "boxes"}, names=names)
    with pytest.raises(ModelFormatError, match="must differ"):
        choose_decoder(four, (W, H), {"boxes": "output_0", "scores": "output_0"}, names=names)
    with pytest.raises(ModelFormatError, match="last axis is not 4"):
        choose_decoder([(1, 50, 4), (1, 50, 6)], (W, H), {"boxes": "output_1"}, names=["output_0", "output_1"])
    # unambiguous shapes and a single *box* name still work without a card
    assert choose_decoder([(1, 50, 6), (1, 50, 4)], (W, H))[0].box_index == 1
    assert choose_decoder(four, (W, H), names=["scores", "boxes"])[0].box_index == 1


def test_split_head_with_one_class():
    boxes = np.zeros((1, 30, 4), np.float32)
    scores = np.zeros((1, 30, 1), np.float32)
    boxes[0, 4] = [0.1, 0.2, 0.5, 0.6]
    scores[0, 4, 0] = 0.8
    dec, why = choose_decoder([boxes.shape, scores.shape], (W, H), {"decoder": "yolo-split", "box_format": "xyxy"})
    assert dec.box_index == 0 and dec.num_classes([boxes.shape, scores.shape]) == 1 and "1 classes" in why
    _check(dec([boxes, scores], 0.25), [((0.1 * W, 0.2 * H, 0.5 * W, 0.6 * H), 0, 0.8)])


def test_anchor_text_and_flat_lists_split_over_grids():
    from sdk.decoders.grid import parse_anchors

    assert parse_anchors("10,14 23,27 37,58") == [[10, 14], [23, 27], [37, 58]]
    assert parse_anchors("10,14 23,27; 81x82 135,169") == [[[10, 14], [23, 27]], [[81, 82], [135, 169]]]
    for bad in ("10,14 23", "a,b", "10,-1", ""):
        with pytest.raises(ModelFormatError, match="anchors must be positive w,h pairs") as e:
            parse_anchors(bad)
        assert e.value.param == "anchors"
    c = 2
    flat = [[60, 60], [10, 12], [20, 25], [70, 90], [30, 30], [40, 50]]  # any order: sorted by area, split per grid
    truth_fine, truth_coarse = [((10.0, 10.0, 21.0, 23.0), 0, 0.7)], [((100.0, 100.0, 141.0, 151.0), 1, 0.8)]
    outs = [
        _grid_logits(16, np.array([[10, 12], [20, 25], [30, 30]], np.float32), c, truth_fine, 16, softmax=False),
        _grid_logits(8, np.array([[40, 50], [60, 60], [70, 90]], np.float32), c, truth_coarse, 32, softmax=False),
    ]
    dec, _ = choose_decoder([o.shape for o in outs[::-1]], (256, 256), {"anchors": flat})
    assert dec.name == "yolov3" and not [g for g in dec.guesses if g.param == "anchors"]
    _check(dec(outs[::-1], 0.25), truth_coarse + truth_fine, atol=1e-2)
    dec, _ = choose_decoder([o.shape for o in outs], (256, 256))  # no anchors: YOLOv3-tiny's, said
    assert any("YOLOv3-tiny defaults" in g.what and g.param == "anchors" for g in dec.guesses)
    with pytest.raises(ModelFormatError, match="5 pairs cannot be split evenly over 2 grids") as e:
        choose_decoder([o.shape for o in outs], (256, 256), {"anchors": flat[:5]})
    assert e.value.param == "anchors"
    with pytest.raises(ModelFormatError, match="no published default fits 4 anchor grid"):
        choose_decoder([o.shape for o in outs] * 2, (256, 256))


@pytest.mark.parametrize("seed", range(4))
def test_grid_objectness_thresholded_in_int8_gives_exactly_the_float_path(seed):
    from sdk.quant import dequantize

    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 6))
    grids = [rng.normal(-3, 3, (1, 13, 13, 3 * (5 + c))).astype(np.float32), rng.normal(-3, 3, (1, 26, 26, 3 * (5 + c))).astype(np.float32)]
    for softmax in (False, True):
        name = "yolov2" if softmax else "yolov3"
        outs = grids[:1] if softmax else grids
        card = {"anchors": [[1, 2], [2, 3], [3, 1]]} if softmax else {}
        q = [_quantize(o, rng) for o in outs]
        dec, _ = choose_decoder([o.shape for o in outs], (416, 416), {"decoder": name, **card})
        floats = [dequantize(a, *p) for a, p in q]
        for conf in (0.0, 0.001, 0.1, 0.25, float(rng.uniform(0, 1)), 0.999, 1.0):
            want, got = dec(floats, conf), dec.decode_raw([a for a, _ in q], [p for _, p in q], conf)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
