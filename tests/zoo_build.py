"""Build the detector zoo of ``tests/zoo.py`` with TensorFlow: ``python tests/zoo_build.py OUT [NAME ...]``.

Run in a child process (the device side under test never imports TensorFlow). Each model scores
the cells of one stride by their mean colour and writes the cell boxes in its layout's encoding;
see ``tests/zoo.py``. The post-processed SSD uses TFLite's real ``TFLite_Detection_PostProcess``
custom op (a ``tf.function`` with ``experimental_implements``, the way the TF Object Detection
API's TF2 exporter makes it) and carries its labels as a ``labelmap.txt`` packed in a zip
appended to the model, as TFLite metadata's associated files are.
"""

from __future__ import annotations

import io
import math
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.zoo import COCO91, SPECS, V2_GRID_ANCHORS, V3_CUSTOM, default_ssd_anchors  # noqa: E402

NEG = -20.0  # a logit that never passes


def rgb01(x, norm):
    """The model's input back to RGB in [0, 1], through the normalisation it declares."""
    mean, std, order = norm
    p = (x * std + mean) / 255.0
    return tf.reverse(p, axis=[-1]) if order == "bgr" else p


def logits(m, classes, colour_classes=(0, 1, 2)):
    """Class logits from cell mean colours ``[..., 3]``: 20 * mean - 10 for the colour's class."""
    w = np.zeros((3, classes), np.float32)
    b = np.full(classes, NEG, np.float32)
    for colour, k in enumerate(colour_classes):
        w[colour, k] = 20.0
        b[k] = -10.0
    return tf.tensordot(m, tf.constant(w), axes=1) + b


def obj_logit(m):
    return tf.reduce_max(m, axis=-1, keepdims=True) * 20.0 - 10.0


def cells(size, st):
    g = size // st
    gy, gx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    return g, gx.ravel().astype(np.float32), gy.ravel().astype(np.float32)


def const(a, n_batch=1):
    return tf.constant(np.asarray(a, np.float32)[None])


def yolo_rows(x, spec, kind):
    """v8 / v5 / YOLOX row tables over strides 8/16/32 (only the spec's stride scores)."""
    s, c = spec["size"], spec["classes"]
    p = rgb01(x, spec["norm"])
    parts = []
    for st in (8, 16, 32):
        g, gx, gy = cells(s, st)
        n = g * g
        active = st == spec["stride"]
        m = tf.reshape(tf.nn.avg_pool2d(p, st, st, "VALID"), [1, n, 3])
        sc = tf.sigmoid(logits(m, c)) if active else tf.zeros([1, n, c])
        ob = tf.sigmoid(obj_logit(m)) if active else tf.zeros([1, n, 1])
        if kind == "v8":
            box = np.stack([(gx + 0.5) * st / s, (gy + 0.5) * st / s, np.full(n, st / s), np.full(n, st / s)], 1)
            parts.append(tf.concat([const(box), sc], axis=2))
        elif kind == "v5":
            box = const(np.stack([(gx + 0.5) * st / s, (gy + 0.5) * st / s, np.full(n, st / s), np.full(n, st / s)], 1))
            parts += [tf.concat([box, ob, sc], axis=2), tf.concat([box, tf.zeros([1, n, 1 + c])], axis=2), tf.concat([box, tf.zeros([1, n, 1 + c])], axis=2)]
        else:
            box = np.stack([(gx + 0.5) * st, (gy + 0.5) * st, np.full(n, st), np.full(n, st)], 1) if kind == "yolox" else \
                np.stack([np.full(n, 0.5), np.full(n, 0.5), np.zeros(n), np.zeros(n)], 1)
            parts.append(tf.concat([const(box), ob, sc], axis=2))
    out = tf.concat(parts, axis=1)
    return tf.transpose(out, [0, 2, 1]) if kind == "v8" else out


def grid(x, spec, st, anchors, active, softmax):
    """One anchor grid ``[1, g, g, A*(5+C)]`` whose anchor 0 boxes each cell exactly."""
    s, c = spec["size"], spec["classes"]
    g = s // st
    m = tf.nn.avg_pool2d(rgb01(x, spec["norm"]), st, st, "VALID")
    per = []
    for a, (aw, ah) in enumerate(anchors):
        if softmax:  # grid-cell anchors
            tw, th = math.log(1.0 / aw), math.log(1.0 / ah)
        else:
            tw, th = math.log(st / aw), math.log(st / ah)
        box = tf.constant(np.array([0, 0, tw, th], np.float32)) + tf.zeros([1, g, g, 4])
        if a == 0 and active:
            cls = 20.0 * m if softmax else logits(m, c)
            per.append(tf.concat([box, obj_logit(m), cls], axis=3))
        else:
            per.append(tf.concat([box, tf.fill([1, g, g, 1], NEG), tf.fill([1, g, g, c], NEG)], axis=3))
    return tf.concat(per, axis=3)


def ssd_head(x, spec):
    """Box encodings ``[1, N, 4]`` and class logits ``[1, N, C+1]`` over the default anchors; the
    lowest layer's first box per cell scores, every box encodes its layer's cell square."""
    s, c = spec["size"], spec["classes"]
    anchors = np.array(default_ssd_anchors(s), np.float32)
    maps = [math.ceil(s / 16)]
    for _ in range(5):
        maps.append(math.ceil(maps[-1] / 2))
    per_layer = [3] + [6] * 5
    cell = np.concatenate([np.full(g * g * k, 1.0 / g, np.float32) for g, k in zip(maps, per_layer)])
    enc = np.stack([np.zeros(len(anchors)), np.zeros(len(anchors)), 5 * np.log(cell / anchors[:, 2]), 5 * np.log(cell / anchors[:, 3])], 1)
    g0 = maps[0]
    m = tf.reshape(tf.nn.avg_pool2d(rgb01(x, spec["norm"]), s // g0, s // g0, "VALID"), [1, g0 * g0, 3])
    first = tf.concat([tf.zeros([1, g0 * g0, 1]), logits(m, c, spec.get("colour_classes", (0, 1, 2)))], axis=2)
    off = tf.concat([tf.zeros([1, g0 * g0, 1]), tf.fill([1, g0 * g0, c], NEG)], axis=2)
    layer0 = tf.reshape(tf.stack([first, off, off], axis=2), [1, g0 * g0 * 3, c + 1])
    rest = np.concatenate([np.zeros((len(anchors) - g0 * g0 * 3, 1)), np.full((len(anchors) - g0 * g0 * 3, c), NEG)], 1)
    return const(enc), tf.concat([layer0, const(rest)], axis=1), anchors


def postprocess(spec):
    attrs = {"max_detections": ("i", 10), "max_classes_per_detection": ("i", 1), "use_regular_nms": ("b", "false"),
             "nms_score_threshold": ("f", 1e-8), "nms_iou_threshold": ("f", 0.6), "y_scale": ("f", 10.0), "x_scale": ("f", 10.0),
             "h_scale": ("f", 5.0), "w_scale": ("f", 5.0), "num_classes": ("i", spec["classes"])}
    sig = " ".join(['name: "TFLite_Detection_PostProcess"'] + [f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, (t, v) in attrs.items()])

    @tf.function(experimental_implements=sig)
    def op(boxes, scores, anchors):
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"), tf.constant(0.0, name="scores"),
                tf.constant(0.0, name="num_detections"))

    return op


def nanodet(x, spec):
    s, c, b = spec["size"], spec["classes"], spec["bins"]
    p = rgb01(x, spec["norm"])
    dist = np.full(4 * b, -10.0, np.float32)
    for side in range(4):
        dist[side * b : side * b + 2] = 10.0  # expectation 0.5 bin: half a cell each side
    outs = []
    for st in spec["strides"]:
        g = s // st
        m = tf.reshape(tf.nn.avg_pool2d(p, st, st, "VALID"), [1, g * g, 3])
        sc = tf.sigmoid(logits(m, c)) if st == spec["stride"] else tf.zeros([1, g * g, c])
        outs += [sc, const(np.tile(dist, (g * g, 1)))]
    return tuple(outs)


def graph(name, spec):
    """The model's tf.function: image in, outputs of the layout out."""
    op = postprocess(spec) if name == "ssd_postprocessed" else None  # made outside the trace, or it is inlined away

    def f(x):
        if name in ("yolov8_int8", "yolov5_int8", "yolox_decoded", "yolox_raw"):
            return yolo_rows(x, spec, {"yolov8_int8": "v8", "yolov5_int8": "v5", "yolox_decoded": "yolox", "yolox_raw": "raw"}[name])
        if name == "yolov2_grid":
            return grid(x, spec, 16, V2_GRID_ANCHORS, True, True)
        if name == "yolov3_tiny_custom":
            return grid(x, spec, 32, V3_CUSTOM[1], False, False), grid(x, spec, 16, V3_CUSTOM[0], True, False)
        if name == "nanodet":
            return nanodet(x, spec)
        enc, cls, anchors = ssd_head(x, spec)
        if name == "ssd_raw":
            return enc, cls
        return op(enc, tf.sigmoid(cls), tf.constant(anchors))

    s = spec["size"]
    return tf.function(f, input_signature=[tf.TensorSpec([1, s, s, 3], tf.float32)])


def calibration(spec):
    rng = np.random.default_rng(0)
    s, (mean, std, order) = spec["size"], spec["norm"]
    for i in range(24):
        img = np.full((s, s, 3), rng.integers(0, 256), np.float32)
        st = spec["stride"]
        for _ in range(3):
            gx, gy, ch = rng.integers(0, s // st), rng.integers(0, s // st), rng.integers(0, 3)
            img[gy * st : (gy + 1) * st, gx * st : (gx + 1) * st] = 0
            img[gy * st : (gy + 1) * st, gx * st : (gx + 1) * st, ch] = 255
        if i % 6 == 0:
            img = rng.uniform(0, 255, img.shape).astype(np.float32)
        if order == "bgr":
            img = img[..., ::-1]
        yield [((img - mean) / std)[None].astype(np.float32)]


def convert(name, spec):
    holder = tf.Module()  # the converter finds the post-processing function through a trackable owner
    holder.fn = graph(name, spec)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([holder.fn.get_concrete_function()], holder)
    if name == "ssd_postprocessed":
        conv.allow_custom_ops = True
    if spec["io"] != "float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: calibration(spec)
        if name != "ssd_postprocessed":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_output_type = tf.int8
        conv.inference_input_type = tf.uint8 if spec["io"] == "uint8" else tf.int8
    return conv.convert()


def main(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in names or list(SPECS):
        data = convert(name, SPECS[name])
        if name == "ssd_postprocessed":  # labels as TFLite metadata packs them: a zip appended to the model
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("labelmap.txt", "\n".join(w.replace("_", " ") for w in COCO91) + "\n")
            data += buf.getvalue()
        (out / f"{name}.tflite").write_bytes(data)
        print(f"built {name}: {len(data)} bytes", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
