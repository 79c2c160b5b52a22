"""Measurements of an imported detector: import exactness, int8 against fp32, Edge TPU readiness.

Used by ``scripts/build_detect_default.py`` (numbers written into the cards) and the tests
(on tiny graphs). Imports TensorFlow only for :func:`reference_outputs`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Boxes = tuple[np.ndarray, np.ndarray, np.ndarray]  # xyxy [K, 4], scores [K], class ids [K]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    iou = inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)
    # boxes clipped flat at the image edge have no area: the same corners count as a match
    same = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2) < 1e-3
    return np.where(same, 1.0, iou)


def box_agreement(ref: Sequence[Boxes], got: Sequence[Boxes], conf: float, margin: float = 1e-3) -> dict[str, Any]:
    """For every reference box, the best IoU with a box of the same class in ``got`` (same image).

    Float reassociation alone can move a box across the threshold (scores within ``margin`` of
    ``conf``) or flip the best of two near-equal classes; both are counted apart, not as
    failures.

    Returns:
        ``boxes`` (reference boxes), ``min_iou``, ``mean_iou``, ``below_0.99`` (count),
        ``unmatched`` (reference boxes with no partner), ``extra`` (boxes only in ``got``),
        ``near_threshold``, ``class_flips`` (same box, IoU >= 0.99, another class).
    """
    ious, counts = [], {"unmatched": 0, "extra": 0, "near_threshold": 0, "class_flips": 0}

    def lone(score: float, any_iou: float, missing: str) -> None:
        key = "near_threshold" if abs(score - conf) < margin else "class_flips" if any_iou >= 0.99 else missing
        if not (key == "class_flips" and missing == "extra"):  # a flip is counted once, on the reference side
            counts[key] += 1

    for (rb, rs, rc), (gb, gs, gc) in zip(ref, got):
        any_m = iou_matrix(rb, gb) if len(rb) and len(gb) else np.zeros((len(rb), len(gb)))
        m = any_m * (rc[:, None] == gc[None, :])
        for i in range(len(rb)):
            best = float(m[i].max()) if m.shape[1] else 0.0
            if best > 0:
                ious.append(best)
            else:
                lone(float(rs[i]), float(any_m[i].max()) if m.shape[1] else 0.0, "unmatched")
        for j in range(len(gb)):
            if not m.shape[0] or float(m[:, j].max()) <= 0:
                lone(float(gs[j]), float(any_m[:, j].max()) if m.shape[0] else 0.0, "extra")
    arr = np.array(ious) if ious else np.ones(0)
    return {"boxes": int(arr.size + counts["unmatched"]), "min_iou": round(float(arr.min()), 5) if arr.size else None,
            "mean_iou": round(float(arr.mean()), 5) if arr.size else None, "below_0.99": int((arr < 0.99).sum()), **counts}


def decode(decoder: Any, outputs: Sequence[np.ndarray], conf: float, iou: float | None, max_det: int = 100) -> Boxes:
    """Decoded boxes after NMS, in model-input pixels (what the app keeps, before unmapping);
    ``iou`` None: every candidate scoring ``>= conf``, before NMS."""
    from sdk.nms import nms

    b, s, c = decoder(outputs, conf)
    if not len(s) or iou is None:
        return b, s, c
    keep = np.asarray(nms(b, s, c, iou, max_det, False), np.int64)
    return b[keep], s[keep], c[keep]


def reference_outputs(model_path: Path, inputs: np.ndarray) -> list[np.ndarray]:
    """The original graph (TF.js ``model.json`` or frozen ``.pb``) run in TensorFlow on NHWC ``inputs``.

    Inputs are transposed to NCHW when the graph's input is NCHW (what the importer rewrote).
    """
    from converters import graphdef, nhwc

    if model_path.suffix == ".json":
        from converters.tfjs import read_tfjs

        g = read_tfjs(model_path)
    else:
        from converters.frozen_graph import read_frozen

        g = read_frozen(model_path)
    shapes = graphdef.static_shapes(g.graph_def)
    nchw = bool(nhwc.nchw_inputs(g.graph_def, g.inputs, shapes))
    fn = graphdef.graph_function(g.graph_def, g.inputs, g.outputs)
    outs: list[list[np.ndarray]] = []
    for k in range(len(inputs)):
        x = inputs[k : k + 1].transpose(0, 3, 1, 2) if nchw else inputs[k : k + 1]
        outs.append([np.asarray(o) for o in fn(x)])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def exactness(model_path: Path, fp32_tflite: Path, inputs: np.ndarray, output_card: dict[str, Any]) -> dict[str, Any]:
    """Boxes of the converted fp32 model against the original graph run in TensorFlow (IoU per kept box)."""
    from sdk.decoders import choose_decoder
    from sdk.runner import Runner

    runner = Runner(fp32_tflite, threads=2)
    size = (runner.inputs[0].shape[2], runner.inputs[0].shape[1])
    tfl_dec, _ = choose_decoder([s.shape for s in runner.outputs], size, output_card)
    ref = reference_outputs(model_path, inputs)
    ref_dec, _ = choose_decoder([(1, *o.shape[1:]) for o in ref], size, output_card)
    conf, iou = float(output_card.get("conf", 0.25)), float(output_card.get("iou", 0.45))
    tfl = [runner.run(inputs[k : k + 1]) for k in range(len(inputs))]
    out: dict[str, Any] = {"images": len(inputs), "conf": conf}
    # kept boxes (after NMS, what the app shows) and every candidate before NMS: with many
    # near-equal overlapping boxes, float reassociation alone can flip which one NMS keeps
    for key, nms_iou in (("kept", iou), ("candidates", None)):
        got = [decode(tfl_dec, o, conf, nms_iou) for o in tfl]
        want = [decode(ref_dec, [o[k : k + 1] for o in ref], conf, nms_iou) for k in range(len(inputs))]
        out[key] = box_agreement(want, got, conf)
    return {**out, **out["kept"]}


def detections(det: Any, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
    """Per image, the detector's detections as COCO ``bbox`` (xywh) dicts."""
    out = []
    for img in images:
        out.append([{"bbox": [d.box.x1, d.box.y1, d.box.x2 - d.box.x1, d.box.y2 - d.box.y1], "score": d.score, "category_id": d.class_id}
                    for d in det(img)])
    return out


def map_against(reference: list[list[dict[str, Any]]], candidate: list[list[dict[str, Any]]], classes: int, ref_conf: float) -> dict[str, Any]:
    """COCO mAP of ``candidate`` with ``reference`` detections scoring ``>= ref_conf`` as ground truth."""
    from apps.detect.eval import coco_ap

    gt: dict[str, Any] = {"images": [{"id": i} for i in range(len(reference))], "categories": [{"id": c} for c in range(classes)],
                          "annotations": []}
    for i, dets in enumerate(reference):
        for d in dets:
            if d["score"] >= ref_conf:
                gt["annotations"].append({"image_id": i, "category_id": d["category_id"], "bbox": d["bbox"], "area": d["bbox"][2] * d["bbox"][3],
                                          "iscrowd": 0, "id": len(gt["annotations"]) + 1})
    dts = [{**d, "image_id": i} for i, ds in enumerate(candidate) for d in ds]
    r = coco_ap(gt, dts)
    return {"map50": round(r["map50"], 4), "map": round(r["map"], 4), "reference_boxes": len(gt["annotations"]),
            "reference_conf": ref_conf, "classes_present": sum(v["instances"] > 0 for v in r["per_class"].values())}


def p50_ms(path: Path, threads: int = 2, runs: int = 30) -> float:
    """``invoke()`` p50 in ms (warm-up excluded) through the device runtime."""
    from sdk.runner import Runner

    r = Runner(path, threads=threads)
    x = [np.zeros(s.shape, s.dtype) for s in r.inputs]
    for _ in range(3):
        r.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.median(times)), 2)


def measure(model_path: Path, fp32: Path, int8: Path, images: Sequence[np.ndarray], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything the build script records: exactness, int8 vs fp32, readiness, size, p50."""
    from apps.detect.app import Detector, Settings
    from sdk.card import read_card
    from sdk.edgetpu_readiness import readiness
    from sdk.image import Preprocessor
    from sdk.runner import Runner

    card = read_card(fp32)
    assert card is not None
    pre = Preprocessor.from_card_input(card.input)
    inputs = np.concatenate([pre(im)[0].copy() for im in images])
    log("measuring: exactness of the import (fp32 TFLite vs the original graph in TensorFlow)")
    exact = exactness(model_path, fp32, inputs, dict(card.output))
    log("measuring: int8 against fp32")
    low = Settings(conf=0.001, max_det=100)
    ref = detections(Detector(Runner(fp32, threads=2), Settings(max_det=100)), images)
    cand = detections(Detector(Runner(int8, threads=2), low), images)
    own = detections(Detector(Runner(fp32, threads=2), low), images)
    n = len(card.output.get("labels") or []) or 80
    conf = float(card.output.get("conf", 0.25))
    vs = {"int8": map_against(ref, cand, n, conf), "fp32_itself": map_against(ref, own, n, conf), "images": len(images)}
    ready = readiness(int8).to_json()
    speed = {m: {"size_bytes": p.stat().st_size, "p50_ms_2_threads": p50_ms(p)} for m, p in (("fp32", fp32), ("int8", int8))}
    speed["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return {"exactness": exact, "int8_vs_fp32": vs, "edgetpu": _readiness_summary(ready), "speed": speed}


def _readiness_summary(ready: dict[str, Any]) -> dict[str, Any]:
    """The readiness report without the per-op list (the card keeps the verdict and the problems)."""
    cpu = [o for o in ready.get("ops", []) if o.get("device") == "CPU"]
    return {**{k: ready[k] for k in ("ready", "tpu_ops", "cpu_ops", "first_cpu_op", "problems") if k in ready},
            "cpu_op_kinds": sorted({str(o.get("op")) for o in cpu})}
