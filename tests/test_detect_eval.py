"""The project's COCO AP against pycocotools, and ``edgesdk eval detect`` end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from apps.detect.eval import coco_ap, evaluate
from cli import main
from sdk.errors import ConfigError
from sdk.runner import Runner
from tests.test_detect_app import build_models, cell_box

pycocotools = pytest.importorskip("pycocotools")


def random_set(seed: int, n_images: int = 12, n_cats: int = 3):
    """Ground truth with crowd boxes and empty images, and detections: jittered hits, misses, junk."""
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 3, 7)[:n_cats]]
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(n_images)]
    anns, dets = [], []
    for im in images:
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(5, 50, 2)
            cat = int(rng.choice([c["id"] for c in cats]))
            crowd = int(rng.random() < 0.1)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat, "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            for _ in range(rng.integers(0, 3)):  # 0-2 detections near each object
                j = rng.normal(0, rng.choice([1.0, 4.0, 10.0]), 4)
                dets.append({"image_id": im["id"], "category_id": cat, "bbox": [x + j[0], y + j[1], max(1, w + j[2]), max(1, h + j[3])], "score": float(rng.random())})
        for _ in range(rng.integers(0, 4)):  # false positives
            x, y = rng.uniform(0, 150, 2)
            cat = int(rng.choice([c["id"] for c in cats]))
            dets.append({"image_id": im["id"], "category_id": cat, "bbox": [x, y, 20.0, 20.0], "score": float(rng.random())})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def pycoco(gt, dets) -> tuple[float, float, dict[int, float]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = json.loads(json.dumps(gt))
        c.createIndex()
        d = c.loadRes(json.loads(json.dumps(dets))) if dets else COCO()
        e = COCOeval(c, d, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    prec = e.eval["precision"][:, :, :, 0, 2]  # [T, R, K] for area all, maxDets 100
    per = {}
    for k, cat in enumerate(e.params.catIds):
        p = prec[:, :, k]
        per[cat] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return float(e.stats[0]), float(e.stats[1]), per


@pytest.mark.parametrize("seed", range(6))
def test_ap_matches_pycocotools(seed):
    gt, dets = random_set(seed)
    ours = coco_ap(gt, dets)
    ref_map, ref_map50, ref_per = pycoco(gt, dets)
    assert ours["map"] == pytest.approx(ref_map, abs=1e-9)
    assert ours["map50"] == pytest.approx(ref_map50, abs=1e-9)
    for cat, v in ours["per_class"].items():
        assert v["ap"] == pytest.approx(ref_per[cat], abs=1e-9)


def test_ap_perfect_and_empty():
    gt, _ = random_set(1)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9} for a in gt["annotations"] if not a["iscrowd"]]
    r = coco_ap(gt, perfect)
    assert r["map"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    assert coco_ap(gt, [])["map"] == 0.0


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory) -> tuple[Path, Path]:
    """Three 512×384 images with squares at known cells, annotated; one listed image is unreadable."""
    root = tmp_path_factory.mktemp("coco")
    images, anns = [], []
    layouts = [[(0, 1, 0), (3, 2, 1)], [(1, 1, 1)], [(2, 2, 0), (1, 1, 0)]]
    for k, layout in enumerate(layouts):
        f = np.zeros((384, 512, 3), np.uint8)
        for i, j, c in layout:
            x1, y1, x2, y2 = (int(v) for v in cell_box(i, j))
            f[y1:y2, x1:x2] = (0, 0, 255) if c == 0 else (0, 255, 0)
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": 128 * 128, "iscrowd": 0})
        cv2.imwrite(str(root / f"{k}.png"), f)
        images.append({"id": k + 1, "file_name": f"{k}.png", "width": 512, "height": 384})
    images.append({"id": 9, "file_name": "missing.png", "width": 512, "height": 384})
    (root / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return root, root / "gt.json"


def test_evaluate_model_on_a_folder(tmp_path_factory, coco_folder, caplog):
    models = build_models(tmp_path_factory.getbasetemp())
    root, gt = coco_folder
    with caplog.at_level("WARNING", logger="edgesdk"):  # an earlier `main(... -q)` in this process may have raised the level
        r = evaluate(Runner(models / "split_int8.tflite"), root, gt, progress=False)
    assert r["map50"] == pytest.approx(1.0) and r["map"] > 0.9
    assert r["images"] == 3 and r["skipped"] == 1 and r["instances"] == 5
    assert r["category_mapping"] == "by name" and set(r["per_class"]) == {"red", "green"}
    assert "missing.png" in caplog.text


def test_eval_cli_compare_float_vs_int8(tmp_path_factory, coco_folder, capsys):
    models = build_models(tmp_path_factory.getbasetemp())
    root, gt = coco_folder
    args = ["eval", "detect", "-m", str(models / "split_int8.tflite"), "--compare", str(models / "slow_fp32.tflite")]
    code = main([*args, "--images", str(root), "--annotations", str(gt), "--json", "-q"])
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(lines) == 3
    assert lines[0]["map50"] == pytest.approx(1.0) and "per_class" in lines[0]
    assert lines[2]["map50_diff_points"] == pytest.approx(100 * (lines[0]["map50"] - lines[1]["map50"]), abs=0.01)
    code = main(["eval", "detect", "-m", str(models / "split_int8.tflite"), "--images", str(root), "--annotations", str(root / "0.png")])
    assert code == 2 and "cannot read it as COCO JSON" in capsys.readouterr().err


def test_category_mismatch_is_explained(tmp_path_factory, coco_folder, tmp_path):
    models = build_models(tmp_path_factory.getbasetemp())
    root, gt = coco_folder
    data = json.loads(gt.read_text())
    data["categories"] = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cow"}]
    bad = tmp_path / "gt3.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="3 categories but the model has 2 classes"):
        evaluate(Runner(models / "split_int8.tflite"), root, bad, progress=False)


def test_more_than_100_detections_per_image_matches_pycocotools():
    gt, dets = random_set(7, n_images=2, n_cats=1)
    rng = np.random.default_rng(8)
    for _ in range(150):  # past COCO's 100 detections per image and category
        x, y = rng.uniform(0, 150, 2)
        dets.append({"image_id": 1, "category_id": 1, "bbox": [x, y, 30.0, 30.0], "score": float(rng.random())})
    ours = coco_ap(gt, dets)
    ref_map, ref_map50, _ = pycoco(gt, dets)
    assert (ours["map"], ours["map50"]) == (pytest.approx(ref_map, abs=1e-9), pytest.approx(ref_map50, abs=1e-9))
