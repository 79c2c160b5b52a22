"""SSD decoders (raw head + anchors, TFLite_Detection_PostProcess outputs) and label files, against hand-computed boxes."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest

from sdk.decoders import choose_decoder
from sdk.decoders.labels import associated_labels, fit_labels, parse_labels
from sdk.decoders.ssd import ssd_anchors
from sdk.errors import ConfigError, ModelFormatError
from sdk.quant import dequantize

W = H = 100


def test_default_anchors_match_the_api_recipe():
    a = ssd_anchors((300, 300))
    assert a.shape == (1917, 4)  # the count every SSD MobileNet 300x300 export has
    c = 0.5 / 19
    np.testing.assert_allclose(a[0], [c, c, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(a[1], [c, c, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(a[2], [c, c, 0.2 / math.sqrt(0.5), 0.2 * math.sqrt(0.5)], rtol=1e-6)
    first_l1 = 19 * 19 * 3  # layer 1: a 10x10 map, 6 boxes per cell, scale 0.35 then sqrt(0.35 * 0.5)
    np.testing.assert_allclose(a[first_l1], [0.05, 0.05, 0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(a[first_l1 + 5], [0.05, 0.05, math.sqrt(0.35 * 0.5), math.sqrt(0.35 * 0.5)], rtol=1e-6)
    np.testing.assert_allclose(a[-1][:2], [0.5, 0.5])  # the last layer is one cell


ANCHORS = [[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.1, 0.3]]


def _raw(logit: bool = True) -> tuple[np.ndarray, np.ndarray]:
    enc = np.zeros((1, 3, 4), np.float32)
    enc[0, 0] = [1.0, -1.0, 5 * math.log(2), 0.0]  # yc 0.52, xc 0.48, h 0.4, w 0.2
    enc[0, 1] = [0.0, 0.0, 0.0, 5 * math.log(0.5)]  # centred on its anchor, w halved: 0.25
    scores = np.full((1, 3, 4), -8.0, np.float32)  # column 0: background
    scores[0, 0, 3] = 2.0  # class 2, sigmoid(2) = 0.8808
    scores[0, 1, 1] = 0.5  # class 0, sigmoid(0.5) = 0.6225
    scores[0, 2, 0] = 9.0  # only background: never a detection
    if not logit:
        scores = 1 / (1 + np.exp(-scores))
    return enc, scores


@pytest.mark.parametrize("logit", [True, False])
def test_raw_head_decodes_with_anchors_and_box_coder(logit):
    enc, scores = _raw(logit)
    card = {"decoder": "ssd", "anchors": ANCHORS, "score": "logit" if logit else "probability", "background": True, "boxes": "a"}
    dec, why = choose_decoder([enc.shape, scores.shape], (W, H), card, names=["a", "b"])
    assert dec.name == "ssd" and "3 classes" in why and not dec.guesses
    boxes, sc, cls = dec([enc, scores], 0.25)
    order = np.argsort(-sc)
    np.testing.assert_allclose(boxes[order], [[38, 32, 58, 72], [12.5, 0, 37.5, 50]], atol=1e-4)
    np.testing.assert_allclose(sc[order], [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-0.5))], rtol=1e-5)
    assert cls[order].tolist() == [2, 0]
    # the card's box coder scales and a threshold between the two
    dec, _ = choose_decoder([enc.shape, scores.shape], (W, H), {**card, "scales": [5, 5, 2.5, 2.5]}, names=["a", "b"])
    boxes, sc, _ = dec([enc, scores], 0.7)
    np.testing.assert_allclose(boxes, [[36, 14, 56, 94]], atol=1e-3)  # yc 0.54, xc 0.46, h 0.8, w 0.2


def test_anchor_generator_settings_in_the_card_and_missing_anchors():
    enc, scores = np.zeros((1, 204, 4), np.float32), np.zeros((1, 204, 6), np.float32)
    dec, _ = choose_decoder([enc.shape, scores.shape], (96, 96), {"decoder": "ssd", "anchors": {"num_layers": 6, "min_scale": 0.2}})
    np.testing.assert_allclose(dec._anchors, ssd_anchors((96, 96)))
    with pytest.raises(ModelFormatError, match=r"needs its 50 anchors.*output\.anchors"):
        choose_decoder([(1, 50, 4), (1, 50, 6)], (96, 96), {"decoder": "ssd"})
    with pytest.raises(ModelFormatError, match="3 anchors for N = 204"):
        choose_decoder([enc.shape, scores.shape], (96, 96), {"decoder": "ssd", "anchors": ANCHORS})


def test_raw_head_recognised_by_names_or_default_anchor_count_with_every_guess_said():
    dec, why = choose_decoder([(1, 204, 4), (1, 204, 91)], (96, 96))
    assert dec.name == "ssd" and "SSD anchors on maps [6, 3, 2, 1, 1, 1]" in why and "90 classes" in why
    said = " | ".join(g.what for g in dec.guesses)
    for fact in ("decoder: ssd", "TF Object Detection API defaults", "background", "logits"):
        assert fact in said
    assert {g.card_key for g in dec.guesses} >= {"output.decoder", "output.anchors", "output.background", "output.score"}
    dec, why = choose_decoder([(1, 50, 4), (1, 50, 3)], (64, 64), {"anchors": [[0.5, 0.5, 0.1, 0.1]] * 50},
                              names=["raw_outputs/box_encodings", "raw_outputs/class_predictions"])
    assert dec.name == "ssd" and "box encodings + class predictions" in why


def test_probability_scores_inferred_from_the_int8_range():
    shapes = [(1, 3, 4), (1, 3, 4)]
    quant = [(0.05, 0, "int8"), (1 / 256, -128, "int8")]
    dec, _ = choose_decoder(shapes, (W, H), {"decoder": "ssd", "anchors": ANCHORS, "boxes": 0}, quant=quant)
    assert dec.logits is False and any("probabilities" in g.what for g in dec.guesses)
    dec, _ = choose_decoder(shapes, (W, H), {"decoder": "ssd", "anchors": ANCHORS, "boxes": 0}, quant=[(0.05, 0, "int8"), (0.1, 0, "int8")])
    assert dec.logits is True


def _q(x: np.ndarray, rng) -> tuple[np.ndarray, tuple[float, int]]:
    lo, hi = float(min(x.min(), 0)), float(max(x.max(), 0))
    scale = (hi - lo) / 255 or 1.0
    zp = int(np.clip(round(-128 - lo / scale) + int(rng.integers(-2, 3)), -128, 127))
    return np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int8), (scale, zp)


@pytest.mark.parametrize("seed", range(4))
def test_quantized_scores_thresholded_before_dequantizing_give_exactly_the_float_path(seed):
    rng = np.random.default_rng(seed)
    n, c = 400, int(rng.integers(2, 12))
    anchors = np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.5, (n, 2))], 1).tolist()
    enc = rng.normal(0, 1.5, (1, n, 4)).astype(np.float32)
    for logit in (True, False):
        raw = rng.normal(-4, 3, (1, n, c)).astype(np.float32) if logit else rng.beta(0.5, 3, (1, n, c)).astype(np.float32)
        qe, pe = _q(enc, rng)
        qs, ps = _q(raw, rng)
        dec, _ = choose_decoder([qe.shape, qs.shape], (W, 2 * H), {"decoder": "ssd", "anchors": anchors, "score": "logit" if logit else "probability"})
        floats = [dequantize(qe, *pe), dequantize(qs, *ps)]
        for conf in (0.0, 0.001, 0.25, float(rng.uniform(0, 1)), 0.999, 1.0):
            want, got = dec(floats, conf), dec.decode_raw([qe, qs], [pe, ps], conf)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)


def _post(order=("boxes", "classes", "scores", "count")):
    k = 5
    out = {
        "boxes": np.zeros((1, k, 4), np.float32),
        "classes": np.array([[3, 0, 17, 2, 0]], np.float32),
        "scores": np.array([[0.9, 0.6, 0.3, 0.2, 0.8]], np.float32),  # the last is beyond count
        "count": np.array([4], np.float32),
    }
    out["boxes"][0, 0] = [0.1, 0.2, 0.5, 0.6]  # ymin, xmin, ymax, xmax
    out["boxes"][0, 1] = [0.0, 0.0, 1.0, 0.5]
    out["boxes"][0, 2] = [0.5, 0.5, 0.7, 0.9]
    return [out[r] for r in order]


def test_postprocessed_outputs_in_any_order_with_roles_from_graph_card_names_or_order():
    for order in (("boxes", "classes", "scores", "count"), ("classes", "count", "boxes", "scores"), ("scores", "boxes", "count", "classes")):
        outs = _post(order)
        shapes = [o.shape for o in outs]
        graph = {r: order.index(r) for r in ("boxes", "classes", "scores", "count")} | {"num_classes": 90}
        dec, why = choose_decoder(shapes, (W, 2 * H), graph=graph)
        assert dec.name == "ssd-postprocessed" and dec.applies_nms and "TFLite_Detection_PostProcess op" in why and "90 classes" in why
        boxes, scores, cls = dec(outs, 0.25)
        np.testing.assert_allclose(boxes, [[20, 20, 60, 100], [0, 0, 50, 200], [50, 100, 90, 140]], atol=1e-4)
        np.testing.assert_allclose(scores, [0.9, 0.6, 0.3])
        assert cls.tolist() == [3, 0, 17] and not dec.guesses
        names = [f"TFLite_Detection_PostProcess:{('boxes', 'classes', 'scores', 'count').index(r)}" for r in order]
        card = {"decoder": "ssd", **{r: names[order.index(r)] for r in ("classes", "scores")}}
        dec, _ = choose_decoder(shapes, (W, 2 * H), card, names=names)
        assert dec.roles == {r: order.index(r) for r in ("boxes", "classes", "scores", "count")}
        named = [{"boxes": "detection_boxes", "classes": "detection_classes", "scores": "detection_scores", "count": "num"}[r] for r in order]
        dec, why = choose_decoder(shapes, (W, 2 * H), names=named)
        assert dec.roles["classes"] == order.index("classes") and not [g for g in dec.guesses if g.card_key == "output.classes"]
    dec, _ = choose_decoder([o.shape for o in _post()], (W, H), names=["StatefulPartitionedCall:0", "a", "b", "c"])
    assert dec.roles == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}
    assert any("the op's usual order" in g.what and g.card_key == "output.classes" for g in dec.guesses)
    assert dec.num_classes([o.shape for o in _post()]) == 0  # unknown: ids shown as numbers


def test_override_ssd_picks_the_variant_and_wrong_layouts_are_one_clear_error():
    dec, why = choose_decoder([o.shape for o in _post()], (W, H), override="ssd")
    assert dec.name == "ssd-postprocessed" and "decoder=ssd" in why
    with pytest.raises(ModelFormatError, match=r"do not fit the ssd layout.*set decoder") as e:
        choose_decoder([(1, 84, 8400)], (640, 640), override="ssd")
    assert e.value.param == "decoder"
    with pytest.raises(ModelFormatError, match="ssd-postprocessed layout"):
        choose_decoder([(1, 10, 4), (1, 10), (1, 10), (1, 10)], (W, H), override="ssd-postprocessed")


def test_label_files_plain_keyed_placeholders_and_the_91_line_coco_map():
    assert parse_labels("cat\n\ndog\n") == (["cat", "dog"], False)
    labels, keyed = parse_labels("0  person\n1  bicycle\n3  motorcycle\n")
    assert keyed and labels == ["person", "bicycle", None, "motorcycle"]
    assert fit_labels(labels, keyed, 90, "coco_labels.txt")[0][:4] == ["person", "bicycle", "2", "motorcycle"]
    coco = "???\nperson\nbicycle\ncar\n" + "\n".join(["x"] * 8) + "\n???\nstop sign\n" + "\n".join(["y"] * 77)
    labels, keyed = parse_labels(coco)
    assert len(labels) == 91 and labels[0] is None and labels[12] is None
    fitted, note = fit_labels(labels, keyed, 90, "labelmap.txt")
    assert len(fitted) == 90 and fitted[0] == "person" and fitted[11] == "11" and fitted[12] == "stop sign" and "background" in note
    fitted, note = fit_labels(labels, keyed, 0, "labelmap.txt")  # class count unknown: the placeholder still goes
    assert fitted[0] == "person" and note
    with pytest.raises(ConfigError, match="3 labels, but the model has 2 classes") as e:
        fit_labels(["a", "b", "c"], False, 2, "l.txt")
    assert e.value.param == "labels_file"


def test_labels_packed_in_the_model_as_an_associated_file():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("temp_meta.txt", "{'names': {}}")
        z.writestr("labelmap.txt", "???\nperson\n")
    text, name = associated_labels(b"TFL3" * 10 + buf.getvalue())
    assert name == "labelmap.txt" and text.startswith("???")
    assert associated_labels(b"no zip here") is None
