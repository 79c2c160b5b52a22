"""COCO-style box AP, written here (pycocotools is only the test reference).

:func:`coco_ap` follows the COCO evaluation protocol for area "all" and 100 detections per
image: per category, detections sorted by score are greedily matched to the unmatched ground
truth of highest IoU (crowd boxes, ``iscrowd``/``ignore``, can absorb detections without
counting), precision is made monotone and sampled at 101 recall points; AP is averaged over
IoU thresholds 0.50:0.05:0.95 (mAP) or taken at 0.50 (mAP@0.5), then over categories that
have ground truth. :func:`evaluate` runs a detector over an image folder and scores it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError
from sdk.yamlio import clip

log = logging.getLogger("edgesdk")

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    b = np.asarray(xywh, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _ious(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``[D, G]`` IoU of xywh boxes; against a crowd box the union is the detection's own area."""
    a, b = _xyxy(d), _xyxy(g)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_d = (d[:, 2] * d[:, 3])[:, None]
    union = np.where(crowd[None, :], area_d, area_d + (g[:, 2] * g[:, 3])[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(d_boxes: np.ndarray, g_boxes: np.ndarray, g_ignore: np.ndarray, g_crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per IoU threshold: which detections matched (``[T, D]``) and which are ignored (matched to a crowd/ignored box)."""
    t_n, d_n = len(IOU_THRS), len(d_boxes)
    matched = np.zeros((t_n, d_n), bool)
    ignored = np.zeros((t_n, d_n), bool)
    if d_n == 0 or len(g_boxes) == 0:
        return matched, ignored
    ious = _ious(d_boxes, g_boxes, g_crowd)
    taken = np.zeros((t_n, len(g_boxes)), bool)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)[:, None]
    for i in range(d_n):  # greedy in score order, all thresholds at once
        ok = (~taken | g_crowd) & (ious[i] >= thr)
        for pool in (ok & ~g_ignore, ok & g_ignore):  # real objects first, crowd/ignored last
            cand = np.where(pool, ious[i], -1.0)
            rev = cand[:, ::-1]  # COCO keeps the last of equal IoUs
            best = len(g_boxes) - 1 - rev.argmax(axis=1)
            hit = (rev.max(axis=1) >= 0) & ~matched[:, i]
            t_idx = np.flatnonzero(hit)
            matched[t_idx, i] = True
            ignored[t_idx, i] = g_ignore[best[t_idx]]
            taken[t_idx, best[t_idx]] = True
    return matched, ignored


def _ap(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, n_gt: int) -> np.ndarray:
    """AP per IoU threshold from pooled detections of one category (``-1`` when no ground truth)."""
    if n_gt == 0:
        return np.full(len(IOU_THRS), -1.0)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order] & ~ignored[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order] & ~ignored[:, order], axis=1, dtype=np.float64)
    out = np.zeros(len(IOU_THRS))
    for t in range(len(IOU_THRS)):
        if tp.shape[1] == 0:
            continue
        rc = tp[t] / n_gt
        pr = tp[t] / np.maximum(tp[t] + fp[t], np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
        idx = np.searchsorted(rc, REC_THRS, side="left")
        q = np.where(idx < len(pr), pr[np.minimum(idx, len(pr) - 1)], 0.0)
        out[t] = q.mean()
    return out


def coco_ap(gt: Mapping[str, Any], detections: Iterable[Mapping[str, Any]], max_dets: int = 100) -> dict[str, Any]:
    """COCO box AP of ``detections`` (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) against ``gt``.

    Returns:
        ``map`` (0.5:0.95), ``map50``, ``per_class`` {category id: {``ap``, ``ap50``, ``instances``}}.
    """
    image_ids = {im["id"] for im in gt.get("images", [])}
    gts: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for a in gt.get("annotations", []):
        if a["image_id"] in image_ids:
            gts[(a["image_id"], a["category_id"])].append(a)
    dts: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for d in detections:
        if d["image_id"] in image_ids:
            dts[(d["image_id"], d["category_id"])].append(d)
    per_class = {}
    for cat in sorted(c["id"] for c in gt.get("categories", [])):
        scores, matched, ignored, n_gt = [], [], [], 0
        for img in sorted(image_ids):
            g = gts.get((img, cat), [])
            # like pycocotools, only iscrowd marks ground truth as ignored (it overwrites "ignore")
            ign = np.array([bool(a.get("iscrowd", 0)) for a in g], bool)
            order = np.argsort(ign, kind="mergesort")  # COCO puts ignored ground truth last
            gb = np.array([a["bbox"] for a in g], np.float64).reshape(-1, 4)[order]
            d = sorted(dts.get((img, cat), []), key=lambda x: -x["score"])[:max_dets]
            db = np.array([x["bbox"] for x in d], np.float64).reshape(-1, 4)
            m, i = _match(db, gb, ign[order], ign[order])
            scores.append(np.array([x["score"] for x in d], np.float64))
            matched.append(m)
            ignored.append(i)
            n_gt += int((~ign).sum())
        ap = _ap(np.concatenate(scores), np.concatenate(matched, axis=1), np.concatenate(ignored, axis=1), n_gt)
        per_class[cat] = {"ap": float(ap.mean()) if n_gt else -1.0, "ap50": float(ap[0]) if n_gt else -1.0, "instances": n_gt}
    valid = [v for v in per_class.values() if v["instances"] > 0]
    return {
        "map": float(np.mean([v["ap"] for v in valid])) if valid else -1.0,
        "map50": float(np.mean([v["ap50"] for v in valid])) if valid else -1.0,
        "per_class": per_class,
    }


def load_coco(path: str | Path) -> dict[str, Any]:
    """A COCO ground-truth file (``images``, ``annotations``, ``categories``).

    Raises:
        ConfigError: (``param="coco_json"``) unreadable, not JSON, or not a COCO file.
    """
    try:
        gt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"coco_json {path}: cannot read it as COCO JSON ({clip(str(e))})", param="coco_json") from e
    if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= set(gt):
        raise ConfigError(f"coco_json {path}: a COCO file needs 'images', 'annotations' and 'categories'", param="coco_json")
    return gt


def _category_map(labels: list[str], categories: list[Mapping[str, Any]]) -> tuple[dict[int, int], str]:
    """Model class index → COCO category id: by name when every category name is a label, else by id order."""
    by_name = {c["name"]: c["id"] for c in categories}
    if set(by_name) <= set(labels):
        return {i: by_name[n] for i, n in enumerate(labels) if n in by_name}, "by name"
    ids = sorted(c["id"] for c in categories)
    if len(ids) != len(labels):
        raise ConfigError(
            f"the annotations have {len(ids)} categories but the model has {len(labels)} classes, and the names differ; "
            "give --labels FILE with the category names"
        )
    return dict(enumerate(ids)), "by category id order"


def evaluate(model: Any, images_dir: str | Path, coco_json: str | Path | dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Run a detector over the images of a COCO file and compute its AP.

    Args:
        model: An :class:`apps.detect.app.Detector`, or a :class:`sdk.runner.Runner` (wrapped with
            score threshold 0.001 and 100 detections per image, as COCO evaluation does).
        images_dir: Folder holding the ``file_name`` of each image.
        coco_json: COCO ground truth.
        progress: Show progress on stderr.

    Returns:
        ``map``, ``map50``, ``per_class`` {label: {ap, ap50, instances}}, ``images``, ``instances``,
        ``skipped`` (unreadable images, left out), ``category_mapping`` and ``latency_ms``.
    """
    import cv2

    from apps.detect.app import Detector, Settings

    det = model if isinstance(model, Detector) else Detector(model, Settings(conf=0.001, max_det=100))
    gt = load_coco(coco_json) if not isinstance(coco_json, dict) else coco_json
    cat_of, how = _category_map(det.labels, gt["categories"])
    dets, used, skipped = [], [], 0
    t0 = time.monotonic()
    tty = sys.stderr.isatty()
    cr, end = ("\r", "") if tty else ("", "\n")
    for k, im in enumerate(gt["images"]):
        img = cv2.imread(str(Path(images_dir) / im["file_name"]), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("edgesdk: warning: %s: cannot read image %s, left out of the evaluation", images_dir, im["file_name"])
            skipped += 1
            continue
        used.append(im)
        for d in det(img):
            if d.class_id in cat_of:
                b = d.box
                dets.append({"image_id": im["id"], "category_id": cat_of[d.class_id], "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], "score": d.score})
        if progress and (k % (20 if tty else 100) == (19 if tty else 99) or k + 1 == len(gt["images"])):
            # one updating line on a terminal, a line every 100 images in a log file
            print(f"{cr}eval: {k + 1}/{len(gt['images'])} images ({time.monotonic() - t0:.0f} s)", end=end, file=sys.stderr, flush=True)
    if progress and tty:
        print(file=sys.stderr)
    res = coco_ap({**gt, "images": used}, dets)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    res["per_class"] = {names[c]: v for c, v in res["per_class"].items()}
    res.update(
        images=len(used),
        instances=sum(v["instances"] for v in res["per_class"].values()),
        skipped=skipped,
        category_mapping=how,
        latency_ms={k: round(s.get("p50_ms", 0.0), 3) for k, s in det.stats.summaries().items()},
    )
    return res
