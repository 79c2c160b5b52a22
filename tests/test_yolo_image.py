"""Letterbox round trip, normalisation and the quantized-input lookup table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import ConfigError
from sdk.image import Letterboxer, Preprocessor, letterbox, normalize
from sdk.runner import TensorSpec


@settings(max_examples=60, deadline=None)
@given(sw=st.integers(8, 900), sh=st.integers(8, 900), w=st.sampled_from([64, 320, 640]), h=st.sampled_from([64, 256, 640]))
def test_letterbox_round_trip(sw, sh, w, h):
    img = np.zeros((sh, sw, 3), np.uint8)
    out, lb = letterbox(img, (w, h))
    assert out.shape == (h, w, 3)
    boxes = np.array([[0, 0, sw, sh], [sw * 0.25, sh * 0.1, sw * 0.5, sh * 0.9]], np.float32)
    back = lb.unmap(lb.map(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3 * max(sw, sh))
    full = lb.map(boxes[:1])[0]  # the image fills one axis exactly and is centred on the other
    assert full[0] >= 0 and full[1] >= 0 and full[2] <= w + 1e-3 and full[3] <= h + 1e-3
    assert max(full[2] - full[0] - w, full[3] - full[1] - h) == pytest.approx(0, abs=1.0)


def test_letterbox_pads_grey_and_places_pixels():
    img = np.full((100, 200, 3), 255, np.uint8)
    out, lb = letterbox(img, (64, 64))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (pytest.approx(0.32), 0.0, 16.0)
    assert (out[:16] == 114).all() and (out[48:] == 114).all() and (out[16:48] == 255).all()
    # a box in model pixels maps back to original pixels and is clipped to the image
    np.testing.assert_allclose(lb.unmap(np.array([[0, 16, 32, 48], [-10, 0, 70, 70]])), [[0, 0, 100, 100], [0, 0, 200, 100]], atol=1e-4)


def test_letterboxer_reuses_its_buffer_and_repaints_on_geometry_change():
    boxer = Letterboxer((32, 32))
    a, _ = boxer(np.full((10, 20, 3), 7, np.uint8))
    b, _ = boxer(np.full((20, 10, 3), 9, np.uint8))
    assert a is b
    assert b[0, 0, 0] == 114 and b[16, 16, 0] == 9 and b[16, 0, 0] == 114


def test_stretch_mode():
    out, lb = Letterboxer((50, 40), keep_aspect=False)(np.zeros((20, 100, 3), np.uint8))
    assert out.shape == (40, 50, 3) and (lb.scale, lb.sy) == (0.5, 2.0)
    np.testing.assert_allclose(lb.unmap(np.array([[0, 0, 50, 40]])), [[0, 0, 100, 20]])


def test_normalize_channel_order_and_per_channel_stats():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    np.testing.assert_allclose(normalize(img)[0, 0], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)
    np.testing.assert_allclose(normalize(img, [30, 20, 10], [2, 4, 5])[0, 0], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(normalize(img, 10, [1, 2, 4], "bgr")[0, 0], [0, 5, 5], atol=1e-6)
    with pytest.raises(ConfigError, match="channel_order"):
        normalize(img, channel_order="rgba")
    with pytest.raises(ConfigError, match="std"):
        normalize(img, std=[1, 2])


@pytest.mark.parametrize("mean,std", [(0, 255), ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4])])
@pytest.mark.parametrize("dtype,zp", [(np.int8, -128), (np.uint8, 0), (np.int8, 3)])
def test_quantized_lookup_equals_quantizing_the_float_tensor(mean, std, dtype, zp, rng):
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    scale = 1 / 255 if mean == 0 else 0.0187
    spec = TensorSpec("x", 0, (1, 32, 32, 3), np.dtype(dtype), scale, zp)
    f, lb_f = Preprocessor((32, 32), mean=mean, std=std)(img)
    q, lb_q = Preprocessor((32, 32), mean=mean, std=std, quant=(scale, zp, dtype))(img)
    assert q.dtype == dtype and lb_f == lb_q
    np.testing.assert_array_equal(q, spec.quantize(f))


def test_from_card_input_rejects_unknown_keys():
    p = Preprocessor.from_card_input({"size": [48, 32], "letterbox": False}, None)
    assert p.size == (48, 32)
    assert Preprocessor.from_card_input({}, (16, 16)).size == (16, 16)
    with pytest.raises(ConfigError, match="unknown keys"):
        Preprocessor.from_card_input({"sizes": [1, 2]}, (16, 16))


@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("keep_aspect", [True, False])
def test_quantized_tensor_in_place_across_geometries(order, keep_aspect, rng):
    """Letterboxed straight into the tensor, only the image region converted: still exact, for
    wide, tall (a non-contiguous column) and exact-size images in turn, on one Preprocessor."""
    for mean, std, scale, zp in ((0, 255, 1 / 255, -128), ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4], 0.0187, 3)):
        spec = TensorSpec("x", 0, (1, 32, 32, 3), np.dtype(np.int8), scale, zp)
        pf = Preprocessor((32, 32), keep_aspect, mean, std, order)
        pq = Preprocessor((32, 32), keep_aspect, mean, std, order, quant=(scale, zp, np.int8))
        for shape in ((37, 53, 3), (61, 20, 3), (32, 32, 3), (37, 53, 3), (61, 20, 3)):
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            f, lb_f = pf(img)
            q, lb_q = pq(img)
            assert lb_f == lb_q
            np.testing.assert_array_equal(q, spec.quantize(f))


@settings(max_examples=50, deadline=None)
@given(sw=st.integers(8, 400), sh=st.integers(8, 400), stretch=st.booleans())
def test_unmap_rows_equals_unmap(sw, sh, stretch):
    boxer = Letterboxer((64, 48), keep_aspect=not stretch)
    _, lb = boxer(np.zeros((sh, sw, 3), np.uint8))
    boxes = np.random.default_rng(sw * 1000 + sh).uniform(-10, 80, (7, 4)).astype(np.float32)
    for clip in (True, False):
        np.testing.assert_allclose(lb.unmap_rows(boxes.tolist(), clip), lb.unmap(boxes, clip), rtol=1e-5, atol=1e-3)


def test_input_range_implied_by_quantization():
    from sdk.image import range_from_quant

    assert range_from_quant(1 / 255, -128, np.int8) == (0.0, 255.0, "[0, 1]")  # Ultralytics int8
    assert range_from_quant(1.0, 0, np.uint8) == (0.0, 1.0, "0-255")  # a uint8 input taking pixels as they are
    assert range_from_quant(1 / 128, 128, np.uint8) == (128.0, 128.0, "[-1, 1]")  # Coral SSD MobileNet
    assert range_from_quant(1 / 127.5, 127, np.uint8)[2] == "[-1, 1]"
    assert range_from_quant(0.0187, 3, np.int8) is None  # ImageNet-normalised: not a plain range
    assert range_from_quant(1 / 255, 0, np.int16) is None and range_from_quant(0.0, 0, np.uint8) is None


@pytest.mark.parametrize("scale,zp,dtype", [(1.0, 0, np.uint8), (1 / 128, 128, np.uint8), (1 / 255, -128, np.int8)])
def test_pixels_taken_as_they_are_need_no_table(scale, zp, dtype, rng):
    from sdk.image import range_from_quant

    mean, std, _ = range_from_quant(scale, zp, dtype)
    spec = TensorSpec("x", 0, (1, 32, 32, 3), np.dtype(dtype), scale, zp)
    p = Preprocessor((32, 32), mean=mean, std=std, quant=(scale, zp, dtype))
    assert p._identity or p._xor
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    f, _ = Preprocessor((32, 32), mean=mean, std=std)(img)
    np.testing.assert_array_equal(p(img)[0], spec.quantize(f))


def test_large_frames_shrink_by_exact_halvings_close_to_area_averaging(rng):
    import cv2

    img = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), (9, 9), 3)
    out, lb = Letterboxer((640, 640))(img)
    band = out[140:500]
    assert lb.scale == pytest.approx(1 / 3) and (out[:140] == 114).all() and (out[500:] == 114).all()
    ref = cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(band.astype(int) - ref).mean() < 1.0
    half = Letterboxer((960, 960))(img)[0][210:750]  # exactly 2x: OpenCV's own area averaging
    np.testing.assert_array_equal(half, cv2.resize(img, (960, 540), interpolation=cv2.INTER_AREA))


def test_no_allocation_per_frame_once_the_geometry_is_known(rng):
    import tracemalloc

    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), rng.integers(0, 256, (480, 200, 3), dtype=np.uint8)]
    for frame in frames:  # a wide frame (full-width band) and a tall one (a strided column)
        p = Preprocessor((640, 640), quant=(1 / 255, -128, np.int8))
        p(frame)
        tracemalloc.start()
        for _ in range(5):
            p(frame)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 * 1024, peak  # a 640x640 frame is 1.2 MB: nothing that size is made per frame
