"""The detector zoo: one tiny model per output layout, a scene for each, and reference decodes.

The models (built by ``tests/zoo_build.py`` in a TensorFlow child process) are not trained:
each average-pools its input into the cells of one "active" stride and scores a cell by its
mean colour (``sigmoid(20 * mean - 10)``: a cell filled with pure red, green or blue scores
~1 for that colour's class), with the box of the cell itself, written in the layout's own
encoding (normalised rows, anchor offsets, raw grid, SSD box coder...). The model reads its
input through the normalisation and channel order it declares, so a wrong guess there gives
wrong or no detections, as with real models.

:func:`reference` decodes a model's outputs a second time, written independently of
``sdk/decoders`` (plain loops, its own preprocessing with one ``cv2.resize``, its own NMS),
for the zoo benchmark and the tests to compare with ``edgesdk detect``. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME = (200, 150)  # w, h of the scene frames (4:3: letterboxed models get padding)
COLOURS = {0: (0, 0, 255), 1: (0, 255, 0), 2: (255, 0, 0)}  # BGR of red, green, blue
PLACES = [((1, 1), 0), ((2, 2), 1), ((0, 2), 2)]  # (cell col, row) in the active grid, colour
V3_CUSTOM = [[[12, 12], [20, 30], [30, 20]], [[40, 40], [60, 50], [50, 60]]]
COCO91 = (
    "??? person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant ??? stop_sign parking_meter bench bird cat "
    "dog horse sheep cow elephant bear zebra giraffe ??? backpack umbrella ??? ??? handbag tie suitcase frisbee skis snowboard sports_ball "
    "kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle ??? wine_glass cup fork knife spoon bowl banana apple "
    "sandwich orange broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed ??? dining_table ??? ??? toilet ??? tv laptop "
    "mouse remote keyboard cell_phone microwave oven toaster sink refrigerator ??? book clock vase scissors teddy_bear hair_drier toothbrush"
).split()

V2_GRID_ANCHORS = [[0.57273, 0.677385], [1.87446, 2.06253], [3.33843, 5.47434], [7.88282, 3.52778], [9.77052, 9.16828]]  # darknet yolo-voc.cfg


def default_ssd_anchors(size: int) -> list[list[float]]:
    """The TF Object Detection API's default SSD anchors for a square ``size`` input, ``[yc, xc, h, w]``
    (ssd_anchor_generator: 6 layers, scales 0.2-0.95, aspect ratios 1, 2, 1/2, 3, 1/3, an extra
    interpolated scale, 3 boxes in the lowest layer; MobileNet feature maps ceil(size/16), halved)."""
    maps = [math.ceil(size / 16)]
    for _ in range(5):
        maps.append(math.ceil(maps[-1] / 2))
    scales = [0.2 + 0.75 * i / 5 for i in range(6)] + [1.0]
    anchors = []
    for layer, g in enumerate(maps):
        if layer == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[layer], a) for a in (1.0, 2.0, 0.5, 3.0, 1 / 3)] + [(math.sqrt(scales[layer] * scales[layer + 1]), 1.0)]
        for row in range(g):
            for col in range(g):
                for sc, ar in specs:
                    anchors.append([(row + 0.5) / g, (col + 0.5) / g, sc / math.sqrt(ar), sc * math.sqrt(ar)])
    return anchors


# name -> what the builder makes and how the scene and the reference read it
SPECS: dict[str, dict[str, Any]] = {
    "yolov8_int8": {"layout": "YOLOv8 [1, 4+C, N], normalised xywh", "size": 64, "io": "int8", "norm": (0.0, 255.0, "rgb"), "classes": 3, "stride": 16, "flags": []},
    "yolov5_int8": {"layout": "YOLOv5 [1, 3N, 5+C] with objectness", "size": 64, "io": "int8", "norm": (0.0, 255.0, "rgb"), "classes": 3, "stride": 16, "flags": []},
    "yolov2_grid": {"layout": "YOLOv2 one anchor grid, softmax", "size": 64, "io": "float", "norm": (0.0, 255.0, "rgb"), "classes": 3, "stride": 16, "flags": []},
    "yolov3_tiny_custom": {"layout": "2 anchor grids, own anchors (Yolo-Fastest style)", "size": 64, "io": "int8", "norm": (0.0, 255.0, "rgb"),
                           "classes": 3, "stride": 16, "flags": ["--anchors", "12,12 20,30 30,20; 40,40 60,50 50,60"]},
    "yolox_decoded": {"layout": "YOLOX [1, N, 85] decoded in the graph, BGR 0-255", "size": 64, "io": "float", "norm": (0.0, 1.0, "bgr"), "classes": 80, "stride": 16, "flags": []},
    "yolox_raw": {"layout": "YOLOX [1, N, 85] raw grid, BGR 0-255", "size": 64, "io": "float", "norm": (0.0, 1.0, "bgr"), "classes": 80, "stride": 16, "flags": []},
    "ssd_postprocessed": {"layout": "SSD + TFLite_Detection_PostProcess (4 outputs), uint8, labelmap.txt", "size": 96, "io": "uint8",
                          "norm": (127.5, 127.5, "rgb"), "classes": 90, "stride": 16, "flags": [], "letterbox": False, "colour_classes": [0, 2, 15]},
    "ssd_raw": {"layout": "SSD raw head (encodings + logits), default anchors", "size": 96, "io": "float", "norm": (127.5, 127.5, "rgb"),
                "classes": 3, "stride": 16, "flags": [], "letterbox": False},
    "nanodet": {"layout": "NanoDet GFL levels (scores + 4x8 bins per stride), BGR ImageNet mean/std", "size": 64, "io": "float",
                "norm": (np.array([103.53, 116.28, 123.675], np.float32), np.array([57.375, 57.12, 58.395], np.float32), "bgr"),
                "classes": 3, "stride": 16, "flags": [], "bins": 8, "strides": [8, 16, 32]},
}


def build_zoo(out: Path, names: list[str] | None = None) -> Path:
    """Build the zoo models into ``out`` (once: a ``done`` marker) in a TensorFlow child process."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "done").exists():
        res = subprocess.run([sys.executable, str(ROOT / "tests" / "zoo_build.py"), str(out), *(names or [])],
                             capture_output=True, text=True, timeout=1500, cwd=ROOT)
        if res.returncode:
            raise RuntimeError(f"zoo build failed:\n{res.stderr[-3000:]}")
        (out / "done").touch()
    return out


def colour_class(spec: dict[str, Any], colour: int) -> int:
    return spec.get("colour_classes", [0, 1, 2])[colour]


def _geometry(spec: dict[str, Any]) -> tuple[float, float, float, float]:
    """``(sx, sy, pad_x, pad_y)``: model = frame * s + pad, as the model's preprocessing places the frame."""
    s, (w, h) = spec["size"], FRAME
    if not spec.get("letterbox", True):
        return s / w, s / h, 0.0, 0.0
    r = min(s / w, s / h)
    nw, nh = round(w * r), round(h * r)
    return nw / w, nh / h, float((s - nw) // 2), float((s - nh) // 2)


def scene(spec: dict[str, Any]) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """A BGR frame with pure-colour squares over active cells, and ``(class, frame box)`` per square."""
    img = np.full((FRAME[1], FRAME[0], 3), 40, np.uint8)
    sx, sy, px, py = _geometry(spec)
    st = spec["stride"]
    truth = []
    for (i, j), colour in PLACES:
        x1, y1 = (i * st - px) / sx, (j * st - py) / sy
        x2, y2 = ((i + 1) * st - px) / sx, ((j + 1) * st - py) / sy
        # one pixel beyond the cell on every side: the resize blurs edges inwards
        img[max(0, math.floor(y1) - 1) : math.ceil(y2) + 1, max(0, math.floor(x1) - 1) : math.ceil(x2) + 1] = COLOURS[colour]
        truth.append((colour_class(spec, colour), [x1, y1, x2, y2]))
    return img, truth


# --- the reference: preprocessing, decoding and NMS written from the layouts' descriptions ---------


def _input(spec: dict[str, Any], frame: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    s = spec["size"]
    sx, sy, px, py = _geometry(spec)
    canvas = np.full((s, s, 3), 114, np.uint8)
    nw, nh = round(FRAME[0] * sx), round(FRAME[1] * sy)
    canvas[int(py) : int(py) + nh, int(px) : int(px) + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    mean, std, order = spec["norm"]
    pixels = canvas[..., ::-1] if order == "rgb" else canvas
    x = (pixels.astype(np.float32) - mean) / std
    if detail["dtype"] != np.float32:
        scale, zp = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(detail["dtype"])
    return x[None]


def _run(path: Path, spec: dict[str, Any], frame: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], _input(spec, frame, inp))
    it.invoke()
    outs = {}
    for d in it.get_output_details():
        y = it.get_tensor(d["index"])
        scale, zp = d["quantization"]
        outs[d["name"]] = (y.astype(np.float32) - zp) * scale if scale else y.astype(np.float32)
    return outs


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v > -60 else 0.0


def _by_rank(outs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [outs[k] for k in sorted(outs, key=lambda k: (-outs[k].size, k))]


def _box(k: int, score: float, cx: float, cy: float, w: float, h: float) -> tuple:
    return (k, score, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _v8(spec, outs):
    s, y = spec["size"], _by_rank(outs)[0][0]
    rows = []
    for n in range(y.shape[1]):
        k = int(np.argmax(y[4:, n]))
        rows.append(_box(k, float(y[4 + k, n]), *(y[:4, n] * s).tolist()))
    return rows


def _objectness_rows(spec, outs):
    """YOLOv5 (normalised boxes), YOLOX decoded (pixels) and YOLOX raw (grid offsets)."""
    s, y, name = spec["size"], _by_rank(outs)[0][0], spec["name"]
    cells = [(gx, gy, st) for st in (8, 16, 32) for gy in range(s // st) for gx in range(s // st)]
    rows = []
    for n in range(y.shape[0]):
        k = int(np.argmax(y[n, 5:]))
        cx, cy, w, h = y[n, :4].tolist()
        if name == "yolov5_int8":
            cx, cy, w, h = cx * s, cy * s, w * s, h * s
        elif name == "yolox_raw":
            gx, gy, st = cells[n]
            cx, cy, w, h = (cx + gx) * st, (cy + gy) * st, math.exp(w) * st, math.exp(h) * st
        rows.append(_box(k, float(y[n, 4]) * float(y[n, 5 + k]), cx, cy, w, h))
    return rows


def _grids(spec, outs):
    s, grids = spec["size"], sorted(_by_rank(outs), key=lambda g: -g.shape[1])
    v2 = spec["name"] == "yolov2_grid"
    scales = [[[a * (s / g.shape[1]) for a in pair] for pair in V2_GRID_ANCHORS] for g in grids] if v2 else V3_CUSTOM
    rows = []
    for g, anchors in zip(grids, scales):
        gs = g.shape[1]
        g = g[0].reshape(gs, gs, len(anchors), -1)
        for gy, gx, a in np.ndindex(gs, gs, len(anchors)):
            t = g[gy, gx, a]
            if v2:
                e = np.exp(t[5:] - t[5:].max())
                probs = e / e.sum()
            else:
                probs = np.array([_sig(v) for v in t[5:]])
            k, st = int(np.argmax(probs)), s / gs
            rows.append(_box(k, _sig(t[4]) * float(probs[k]), (_sig(t[0]) + gx) * st, (_sig(t[1]) + gy) * st,
                             math.exp(t[2]) * anchors[a][0], math.exp(t[3]) * anchors[a][1]))
    return rows


def _ssd_post(spec, outs):
    s = spec["size"]
    by = {k.rsplit(":", 1)[-1]: v for k, v in outs.items()}  # PartitionedCall:0..3 = boxes, classes, scores, count
    rows = []
    for n in range(int(by["3"].reshape(-1)[0])):
        y1, x1, y2, x2 = (by["0"][0, n] * s).tolist()
        rows.append((int(by["1"][0, n]), float(by["2"][0, n]), x1, y1, x2, y2))
    return rows


def _ssd_raw(spec, outs):
    s = spec["size"]
    enc, logits = sorted(_by_rank(outs), key=lambda o: o.shape[-1] != 4)
    rows = []
    for n, (ya, xa, ha, wa) in enumerate(default_ssd_anchors(s)):
        probs = [_sig(v) for v in logits[0, n, 1:]]
        k = int(np.argmax(probs))
        ty, tx, th, tw = enc[0, n].tolist()
        rows.append(_box(k, probs[k], (tx / 10 * wa + xa) * s, (ty / 10 * ha + ya) * s, math.exp(tw / 5) * wa * s, math.exp(th / 5) * ha * s))
    return rows


def _nanodet(spec, outs):
    s, c, b = spec["size"], spec["classes"], spec["bins"]
    rows = []
    for st in spec["strides"]:
        g = s // st
        sc = next(v for v in outs.values() if v.shape[-2] == g * g and v.shape[-1] == c)[0]
        dist = next(v for v in outs.values() if v.shape[-2] == g * g and v.shape[-1] == 4 * b)[0]
        for n in range(g * g):
            k = int(np.argmax(sc[n]))
            cx, cy = (n % g + 0.5) * st, (n // g + 0.5) * st
            d = []
            for side in range(4):
                e = np.exp(dist[n, side * b : (side + 1) * b] - dist[n, side * b : (side + 1) * b].max())
                d.append(float((e / e.sum()) @ np.arange(b)) * st)
            rows.append((k, float(sc[n, k]), cx - d[0], cy - d[1], cx + d[2], cy + d[3]))
    return rows


# layout -> candidates (class, score, x1, y1, x2, y2) in model pixels
LAYOUTS = {
    "yolov8_int8": _v8, "yolov5_int8": _objectness_rows, "yolox_decoded": _objectness_rows, "yolox_raw": _objectness_rows,
    "yolov2_grid": _grids, "yolov3_tiny_custom": _grids, "ssd_postprocessed": _ssd_post, "ssd_raw": _ssd_raw, "nanodet": _nanodet,
}


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference(path: Path, spec: dict[str, Any], frame: np.ndarray, conf: float = 0.25, iou: float = 0.45) -> list[tuple[int, float, list[float]]]:
    """``(class, score, frame box)`` per detection, best first: the model run and decoded independently."""
    spec = {**spec, "name": spec.get("name") or path.stem}
    sx, sy, px, py = _geometry(spec)
    dets = []
    for k, score, x1, y1, x2, y2 in sorted(LAYOUTS[spec["name"]](spec, _run(path, spec, frame)), key=lambda d: -d[1]):
        if score < conf:
            continue
        box = [min(max((x1 - px) / sx, 0), FRAME[0]), min(max((y1 - py) / sy, 0), FRAME[1]),
               min(max((x2 - px) / sx, 0), FRAME[0]), min(max((y2 - py) / sy, 0), FRAME[1])]
        if spec["name"] == "ssd_postprocessed" or all(d[0] != k or _iou(d[2], box) <= iou for d in dets):
            dets.append((k, score, box))
    return dets


def agreement(got: list[dict[str, Any]], want: list[tuple[int, float, list[float]]]) -> tuple[int, int, float]:
    """``(matched, total, largest score difference)``: a detection matches one of the same class
    with IoU ≥ 0.9; ``total`` counts both sides' detections, so extra or missing ones lower it."""
    used: set[int] = set()
    matched, diff = 0, 0.0
    for d in got:
        for i, (k, score, box) in enumerate(want):
            if i not in used and k == d["class_id"] and _iou(d["box"], box) >= 0.9:
                used.add(i)
                matched += 1
                diff = max(diff, abs(score - d["score"]))
                break
    return matched, max(len(got), len(want)), diff
