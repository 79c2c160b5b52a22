"""The default detector's host side: generated data, readers, targets, model, int8 conversion."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("skimage")

from apps.detect import data  # noqa: E402
from sdk.errors import ConfigError  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def small_set() -> data.DetectionSet:
    return data.generate(12, seed=5, size=SIZE)


def test_generation_is_deterministic_and_labels_are_sane(small_set):
    again = data.generate(12, seed=5, size=SIZE)
    other = data.generate(12, seed=6, size=SIZE)
    assert np.array_equal(small_set.images, again.images)
    assert all(np.array_equal(a, b) for a, b in zip(small_set.boxes, again.boxes))
    assert not np.array_equal(small_set.images, other.images)
    allb = np.concatenate(small_set.boxes)
    assert len(allb) > 5
    assert (allb[:, 2] > allb[:, 0]).all() and (allb[:, 3] > allb[:, 1]).all()
    assert allb.min() >= 0 and allb[:, [0, 2]].max() <= SIZE[0] and allb[:, [1, 3]].max() <= SIZE[1]
    assert set(np.concatenate(small_set.classes).tolist()) <= set(range(len(data.CLASSES)))


def test_drawn_object_box_is_tight():
    img = np.zeros((80, 80, 3), np.uint8)
    box = data.draw_object(img, 1, 40.0, 40.0, 20.0, np.random.default_rng(0), angle=0.0)
    ys, xs = np.nonzero(img.any(axis=2))
    # anti-aliasing and an outline may light two pixels beyond the polygon, never more
    assert abs(xs.min() - box[0]) <= 2.5 and abs(xs.max() + 1 - box[2]) <= 2.5
    assert abs(ys.min() - box[1]) <= 2.5 and abs(ys.max() + 1 - box[3]) <= 2.5
    assert box[2] - box[0] == pytest.approx(32, abs=0.01)  # 0.8 × radius 20 × 2, unrotated


def test_coco_round_trip(small_set, tmp_path):
    path = data.write_coco(small_set, tmp_path / "coco")
    samples, labels = data.read_dataset(path)
    assert labels == list(data.CLASSES)
    back = data.load_samples(samples, labels, SIZE)
    assert np.array_equal(back.images, small_set.images)  # PNG is lossless, letterbox is identity here
    for a, b, ca, cb in zip(back.boxes, small_set.boxes, back.classes, small_set.classes):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert np.array_equal(ca, cb)


def test_yolo_round_trip_and_letterbox_mapping(small_set, tmp_path):
    root = data.write_yolo(small_set, tmp_path / "yolo")
    samples, labels = data.read_dataset(root)
    assert labels == list(data.CLASSES) and len(samples) == len(small_set)
    for s, b in zip(samples, small_set.boxes):
        np.testing.assert_allclose(s.boxes, b, atol=1e-3)
    # into a model twice the size: letterboxing doubles every box
    big = data.load_samples(samples[:3], labels, (128, 128))
    for got, b in zip(big.boxes, small_set.boxes[:3]):
        np.testing.assert_allclose(got, b * 2, atol=2e-3)


def test_reader_errors(tmp_path):
    with pytest.raises(ConfigError, match="--data"):
        data.read_dataset(tmp_path)
    bad = tmp_path / "y"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").mkdir()
    (bad / "classes.txt").write_text("a\nb\n")
    import cv2

    cv2.imwrite(str(bad / "images" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    (bad / "labels" / "x.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ConfigError, match="out of range"):
        data.read_dataset(bad)
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ConfigError, match="COCO"):
        data.read_dataset(tmp_path / "c.json")


def test_targets_are_reachable_by_the_head():
    model = pytest.importorskip("apps.detect.model")
    rng = np.random.default_rng(0)
    imgsz, strides = (160, 128), (8, 16)
    boxes = []
    for _ in range(20):
        wh = rng.uniform(4, 120, 2)
        c = rng.uniform(wh / 2, np.array(imgsz) - wh / 2)
        boxes.append(np.concatenate([c - wh / 2, c + wh / 2])[None].astype(np.float32))
    classes = [np.array([i % 6]) for i in range(20)]
    box_t, cls_t = model.make_targets(boxes, classes, 6, imgsz, strides)
    centers, cell_strides = model.cell_centers(imgsz, strides)
    limit = np.repeat(model.max_sizes(imgsz, strides), [gh * gw for gh, gw in model.level_sizes(imgsz, strides)])
    norm = np.array([*imgsz, *imgsz], np.float32)
    for i, b in enumerate(boxes):
        pos = cls_t[i, :, -1] > 0
        assert pos.any(), "every object gets at least one positive cell"
        assert np.allclose(box_t[i, pos], b / norm)
        assert (cls_t[i, pos, classes[i][0]] == 1).all()
        ctr = (b[0, :2] + b[0, 2:]) / 2
        # the decoded centre can move MAX_OFFSET strides from the cell, the size reach max_sizes
        assert (np.abs(centers[pos] - ctr).max(1) <= model.MAX_OFFSET * cell_strides[pos]).all()
        assert ((b[0, 2:] - b[0, :2]).max() <= limit[pos]).all()


@pytest.mark.tensorflow
def test_model_trains_and_converts_to_int8_with_split_outputs(small_set, tmp_path):
    import keras

    from apps.detect import model as M
    from apps.detect import train as T
    from converters.convert import convert
    from sdk.decoders import choose_decoder
    from sdk.decoders.split import SplitDecoder
    from sdk.runner import Runner

    args = argparse.Namespace(imgsz=SIZE[0], seed=0, width=8, epochs=1)
    net = M.build_model(len(small_set.labels), SIZE, T.STRIDES, args.width)
    trainer = M.make_trainer(net)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = T.to_inputs(small_set.images)
    y = M.make_targets(small_set.boxes, small_set.classes, len(small_set.labels), SIZE, T.STRIDES)
    before = net.get_weights()[0].copy()
    losses = [float(trainer.train_on_batch(x, y)) for _ in range(2)]
    assert np.isfinite(losses).all() and not np.array_equal(before, net.get_weights()[0])
    fixed = M.export_copy(net, len(small_set.labels), SIZE, T.STRIDES, args.width)
    k_boxes, k_scores = fixed.predict(x[:1], verbose=0)
    assert k_boxes.shape == (1, 80, 4) and k_scores.shape == (1, 80, 6)
    res = convert(fixed, mode="int8", output=str(tmp_path / "d_int8.tflite"), calibration=x, card=T.card_for(small_set.labels, args, "test"), custom_objects=T._custom_objects(), progress=False)
    r = Runner(res.path)
    assert all(o.quantized and o.dtype == np.int8 for o in r.outputs)
    assert len({o.scale for o in r.outputs}) == 2, "boxes and scores keep their own int8 scales"
    assert r.card.output["decoder"] == "yolo-split" and r.card.output["labels"] == list(data.CLASSES)
    outs = r.run(x[:1])
    dec, _ = choose_decoder([o.shape for o in r.outputs], SIZE, r.card.output, names=[o.name for o in r.outputs])
    assert isinstance(dec, SplitDecoder)
    q_boxes, q_scores = outs[dec.box_index], outs[1 - dec.box_index]
    assert np.abs(q_boxes - k_boxes).max() < 0.03
    assert np.abs(q_scores - k_scores).max() < 0.03


def test_train_rejects_bad_options():
    from apps.detect import train as T

    args = argparse.Namespace(imgsz=100, epochs=1, batch=1, width=8, train_size=1, val_size=1, test_size=1, data=None)
    with pytest.raises(ConfigError, match="--imgsz"):
        T._check_args(args)
    args.imgsz, args.data = 160, "/nonexistent/coco.json"
    with pytest.raises(ConfigError, match="--data"):
        T._check_args(args)


@pytest.mark.tensorflow
def test_four_class_split_model_decodes_by_the_card_roles(small_set, tmp_path):
    """4 classes: boxes and scores are both [1, N, 4]; the card written by the recipe says which is which."""
    import dataclasses

    import keras

    from apps.detect import model as M
    from apps.detect import train as T
    from apps.detect.app import Detector
    from converters.convert import convert
    from sdk.card import write_card
    from sdk.errors import ModelFormatError
    from sdk.runner import Runner

    labels = list(small_set.labels[:4])
    args = argparse.Namespace(imgsz=SIZE[0], seed=0, width=8, epochs=1)
    keras.utils.set_random_seed(1)
    net = M.build_model(len(labels), SIZE, T.STRIDES, args.width, batch_size=1)
    x = T.to_inputs(small_set.images)
    res = convert(net, mode="int8", output=str(tmp_path / "d4_int8.tflite"), calibration=x, card=T.card_for(labels, args, "test"), custom_objects=T._custom_objects(), progress=False)
    T.check_output_roles(res.path, len(labels))
    r = Runner(res.path)
    assert [o.shape for o in r.outputs] == [(1, 80, 4), (1, 80, 4)]
    assert (r.card.output["boxes"], r.card.output["scores"]) == ("output_0", "output_1")
    det = Detector(r)
    k_boxes, k_scores = net.predict(x[:1], verbose=0)
    outs = r.run(x[:1])
    assert r.outputs[det.decoder.box_index].name == "output_0"
    np.testing.assert_allclose(outs[det.decoder.box_index], k_boxes, atol=0.03)
    np.testing.assert_allclose(outs[1 - det.decoder.box_index], k_scores, atol=0.03)
    # the same model without the roles: shapes and names cannot tell, so it is a clear error
    bare = dataclasses.replace(r.card, output={k: v for k, v in r.card.output.items() if k not in ("boxes", "scores")})
    write_card(res.path, bare, tmp_path / "bare.tflite")
    with pytest.raises(ModelFormatError, match=r"\[\[1, 80, 4\], \[1, 80, 4\]\].*ambiguous.*set decoder"):
        Detector(Runner(tmp_path / "bare.tflite"))
