"""The ``nanodet`` decoder: GFL distributions at any strides and bin count, quantized fast path, detection by shape."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.decoders import choose_decoder, make_decoder
from sdk.decoders.nanodet import NanoDetDecoder, looks_like_nanodet
from sdk.errors import ModelFormatError
from sdk.quant import quantize

SIZE = (64, 48)  # w, h: grids 8x6 at stride 8, 4x3 at 16


def peaked(distances: list[float], bins: int, sharp: float = 30.0) -> np.ndarray:
    """Distribution logits whose softmax expectation is (close to) each side's distance in bins."""
    idx = np.arange(bins, dtype=np.float32)
    return np.concatenate([-sharp * (idx - d) ** 2 for d in distances]).astype(np.float32)


def outputs(bins: int = 5, classes: int = 3, strides: tuple[int, ...] = (8, 16), size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """Per level scores [1, N, C] then distributions [1, N, 4*bins], all empty (scores 0)."""
    w, h = size
    scores = [np.zeros((1, -(-w // s) * -(-h // s), classes), np.float32) for s in strides]
    dists = [np.zeros((1, s.shape[1], 4 * bins), np.float32) for s in scores]
    return scores + dists


def test_one_cell_decodes_to_its_box():
    outs = outputs()
    # stride 8, row 2, col 3: centre (3.5*8, 2.5*8) = (28, 20); sides l,t,r,b = 1, 2, 3, 0.5 bins
    cell = 2 * 8 + 3
    outs[0][0, cell, 1] = 0.9
    outs[2][0, cell] = peaked([1, 2, 3, 0.5], 5, sharp=200.0)
    dec = make_decoder("nanodet", SIZE, {"strides": [8, 16], "bins": 5})
    dec.locate([o.shape for o in outs])
    boxes, scores, cls = dec(outs, 0.5)
    assert cls.tolist() == [1] and scores.tolist() == [pytest.approx(0.9)]
    np.testing.assert_allclose(boxes[0], [28 - 8, 20 - 16, 28 + 24, 20 + 4], atol=0.05)


def test_any_stride_set_bin_count_and_output_order():
    outs = outputs(bins=8, classes=2, strides=(8, 16, 32), size=(64, 64))
    outs[2][0, 3, 0] = 0.7  # stride 32 (2x2 grid), cell (row 1, col 1): centre (48, 48)
    outs[5][0, 3] = peaked([1, 1, 0, 0], 8, sharp=200.0)
    order = [5, 0, 3, 1, 4, 2]  # a converter's shuffled output order
    shuffled = [outs[i] for i in order]
    dec, reason = choose_decoder([o.shape for o in shuffled], (64, 64), {"decoder": "nanodet"})
    assert [lv.stride for lv in dec.levels] == [8, 16, 32] and dec.bins == 8
    boxes, scores, cls = dec(shuffled, 0.5)
    np.testing.assert_allclose(boxes, [[16, 16, 48, 48]], atol=0.05)
    assert "nanodet" in reason


def test_shapes_alone_choose_nanodet_and_say_the_bins_guess():
    outs = outputs(bins=11, classes=80, strides=(8, 16, 32), size=(416, 416))
    shapes = [o.shape for o in outs]
    assert looks_like_nanodet(shapes, (416, 416))
    dec, reason = choose_decoder(shapes, (416, 416))
    assert dec.name == "nanodet" and "strides [8, 16, 32]" in reason and dec.num_classes(shapes) == 80
    assert any(g.card_key == "output.bins" for g in dec.guesses)
    assert any(g.card_key == "output.decoder" for g in dec.guesses)


def test_quantized_path_equals_dequantizing_everything():
    rng = np.random.default_rng(0)
    outs = outputs(bins=11, classes=80, strides=(8, 16, 32), size=(416, 416))
    for k in range(3):
        outs[k][:] = rng.uniform(0, 0.6, outs[k].shape) ** 3
        outs[k + 3][:] = rng.normal(0, 3, outs[k + 3].shape)
    quant = [(1 / 256, -128)] * 3 + [(0.08, 3)] * 3
    stored = [quantize(o, s, z, np.int8) for o, (s, z) in zip(outs, quant)]
    dec = make_decoder("nanodet", (416, 416), {})
    dec.locate([o.shape for o in outs])
    fast = dec.decode_raw(stored, quant, 0.1)
    slow = dec([(q.astype(np.float32) - z) * np.float32(s) for q, (s, z) in zip(stored, quant)], 0.1)
    assert len(fast[1]) > 10
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_logit_scores_and_the_single_output_layout():
    bins, classes = 8, 4
    w = h = 32
    n = 4 * 4 + 2 * 2 + 1  # strides 8, 16, 32
    out = np.full((1, n, classes + 4 * bins), -9.0, np.float32)
    out[0, 16 + 3, 2] = 2.0  # stride 16, cell (1, 1): centre (24, 24)
    out[0, 16 + 3, classes:] = peaked([0.5, 0.5, 0.5, 0.5], bins, sharp=200.0)
    dec = make_decoder("nanodet", (w, h), {"strides": [8, 16, 32], "bins": bins, "score": "logit", "num_classes": classes})
    dec.locate([out.shape])
    boxes, scores, cls = dec([out], 0.5)
    assert cls.tolist() == [2] and scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-5)
    np.testing.assert_allclose(boxes, [[16, 16, 32, 32]], atol=0.05)
    stored = quantize(out, 0.1, 0, np.int8)
    np.testing.assert_array_equal(dec.decode_raw([stored], [(0.1, 0)], 0.5)[1], dec([stored.astype(np.float32) * np.float32(0.1)], 0.5)[1])


def test_shapes_that_do_not_fit_are_clear_errors():
    dec = NanoDetDecoder(SIZE)
    with pytest.raises(ModelFormatError, match="nanodet"):
        dec.locate([(1, 48, 3), (1, 48, 20), (1, 13, 3), (1, 13, 20)])  # 13 cells: no grid of 64x48
    with pytest.raises(ModelFormatError, match="cannot tell box channels"):
        NanoDetDecoder(SIZE).locate([(1, 48, 3), (1, 48, 24), (1, 12, 3), (1, 12, 24)])  # 24 = 4 x 6: not a usual bin count
    with pytest.raises(ModelFormatError, match="score"):
        make_decoder("nanodet", SIZE, {"score": "softmax"})
    assert looks_like_nanodet([(1, 100, 4), (1, 100, 80)], SIZE) is None
