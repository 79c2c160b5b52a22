"""YOLOX (decoded in the graph and raw grid) and the YOLOv5 objectness fast path, against hand-computed boxes."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

from sdk.decoders import choose_decoder, make_decoder
from sdk.decoders.yolox import cells
from sdk.errors import ModelFormatError
from sdk.quant import dequantize

S = 64  # cells at strides 8/16/32: 64 + 16 + 4 = 84 rows


def _cell_row(stride: int, gx: int, gy: int) -> int:
    """Row of cell (gx, gy) of ``stride`` in the concatenated table (strides 8, 16, 32, row-major)."""
    offset = sum((S // s) ** 2 for s in (8, 16, 32) if s < stride)
    return offset + gy * (S // stride) + gx


def _table(raw: bool) -> np.ndarray:
    t = np.zeros((1, cells((S, S), (8, 16, 32)), 85), np.float32)
    if not raw:  # decoded rows: centres of their cells, stride-sized, as a real export's are
        for st in (8, 16, 32):
            for gy in range(S // st):
                for gx in range(S // st):
                    t[0, _cell_row(st, gx, gy), :4] = [(gx + 0.5) * st, (gy + 0.5) * st, st, st]
    r = _cell_row(16, 2, 1)  # cell (2, 1) of stride 16: x 32..48, y 16..32
    t[0, r, :4] = [0.25, 0.75, math.log(2), 0.0] if raw else [36.0, 28.0, 32.0, 16.0]
    t[0, r, 4], t[0, r, 5 + 7] = 0.9, 0.8  # score 0.72, class 7
    r2 = _cell_row(32, 1, 1)
    t[0, r2, :4] = [0.5, 0.5, 0.0, math.log(0.5)] if raw else [48.0, 48.0, 32.0, 16.0]
    t[0, r2, 4], t[0, r2, 5 + 79] = 0.5, 0.9  # score 0.45, class 79
    return t


@pytest.mark.parametrize("raw", [False, True])
def test_yolox_decoded_and_raw_grid_give_the_same_boxes(raw, caplog):
    t = _table(raw)
    dec, why = choose_decoder([t.shape], (S, S))
    assert dec.name == "yolox" and "YOLOX" in why and "80 classes" in why
    assert dec.convention["channel_order"] == "bgr" and dec.convention["std"] == 1.0
    with caplog.at_level(logging.INFO, logger="edgesdk"):
        boxes, scores, cls = dec([t], 0.25)
    assert ("raw grid offsets" if raw else "decoded in the graph") in caplog.text and "output.grid" in caplog.text
    order = np.argsort(-scores)
    np.testing.assert_allclose(boxes[order], [[20, 20, 52, 36], [32, 40, 64, 56]], atol=1e-4)
    np.testing.assert_allclose(scores[order], [0.72, 0.45], rtol=1e-6)
    assert cls[order].tolist() == [7, 79]
    caplog.clear()
    dec, _ = choose_decoder([t.shape], (S, S), {"decoder": "yolox", "grid": raw})
    with caplog.at_level(logging.INFO, logger="edgesdk"):
        np.testing.assert_allclose(dec([t], 0.25)[0][order], boxes[order], atol=1e-5)
    assert "guessed" not in caplog.text  # the card says which: nothing to guess


def test_yolox_recognised_by_shape_at_real_sizes_and_orientation():
    dec, why = choose_decoder([(1, 3549, 85)], (416, 416))  # YOLOX-nano
    assert dec.name == "yolox" and dec.num_classes([(1, 3549, 85)]) == 80 and dec.guesses[0].param == "decoder"
    dec, _ = choose_decoder([(1, 85, 8400)], (640, 640))
    assert dec.name == "yolox" and dec.rows_first is False
    dec, _ = choose_decoder([(1, 8400, 25)], (640, 640))
    assert dec.name == "yolox" and dec.num_classes([(1, 8400, 25)]) == 20
    assert choose_decoder([(1, 8400, 84)], (640, 640))[0].name == "yolov8"  # Ultralytics' COCO head, rows first
    assert choose_decoder([(1, 84, 8400)], (640, 640))[0].name == "yolov8"


def test_yolox_card_errors():
    with pytest.raises(ModelFormatError, match="grid must be true"):
        make_decoder("yolox", (S, S), {"grid": "yes"})
    with pytest.raises(ModelFormatError, match="strides must be a list"):
        make_decoder("yolox", (S, S), {"strides": [8, 0]})
    with pytest.raises(ModelFormatError, match="raw grid has one row per cell"):
        choose_decoder([(1, 100, 85)], (S, S), {"decoder": "yolox", "grid": True})
    dec, _ = choose_decoder([(1, 100, 85)], (S, S), {"decoder": "yolox"})  # not one row per cell: decoded rows
    assert dec.grid is False


def _q(x: np.ndarray, rng) -> tuple[np.ndarray, tuple[float, int]]:
    lo, hi = float(min(x.min(), 0)), float(max(x.max(), 0))
    scale = (hi - lo) / 255 or 1.0
    zp = int(np.clip(round(-128 - lo / scale) + int(rng.integers(-2, 3)), -128, 127))
    return np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int8), (scale, zp)


@pytest.mark.parametrize("seed", range(4))
def test_objectness_thresholded_in_int8_gives_exactly_the_float_path(seed):
    """yolov5 and yolox decode_raw (objectness compared while still int8) == dequantize all, then decode."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 9))
    n = 3 * cells((S, S), (8, 16, 32))
    v5 = np.concatenate([rng.uniform(0, 1, (1, n, 4)), rng.beta(0.5, 3, (1, n, 1 + c))], axis=2).astype(np.float32)
    nx = cells((S, S), (8, 16, 32))
    yx = np.concatenate([rng.normal(0.5, 1, (1, nx, 4)), rng.beta(0.5, 3, (1, nx, 1 + c))], axis=2).astype(np.float32)
    cases = [("yolov5", v5, {}), ("yolov5", v5.transpose(0, 2, 1).copy(), {}), ("yolox", yx, {"grid": True}), ("yolox", yx * 10, {"grid": False})]
    for name, t, card in cases:
        q, p = _q(t, rng)
        dec, _ = choose_decoder([q.shape], (S, S), {"decoder": name, **card})
        floats = [dequantize(q, *p)]
        for conf in (0.0, 0.001, 0.1, 0.25, float(rng.uniform(0, 1)), 1.0):
            want, got = dec(floats, conf), dec.decode_raw([q], [p], conf)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)


def test_no_overflow_warnings_on_extreme_logits():
    """Grid and raw-grid decoders exponentiate logits: values far out of range must not warn."""
    g = np.full((1, 8, 8, 3 * 7), -1e4, np.float32)
    g[0, 2, 3, 0:5] = [1e4, -1e4, 1e4, 1e4, 50]
    g[0, 2, 3, 5:7] = [1e4, -1e4]
    t = _table(True)
    t[0, :, :4] = 1e4
    t[0, 0, 4:] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        boxes, scores, _ = choose_decoder([g.shape], (S, S), {"decoder": "yolov3", "anchors": [[10, 10], [20, 20], [30, 30]]})[0]([g], 0.001)
        assert np.isfinite(boxes).all() and scores.size == 1
        choose_decoder([t.shape], (S, S), {"decoder": "yolox", "grid": True})[0]([t], 0.001)
