"""Build a YOLOv8n-shaped full-int8 TFLite model: ``python benchmarks/yolov8n_shaped.py OUT.tflite``.

The YOLOv8n graph written in Keras from its published structure (width 0.25, depth 0.33:
Conv-BN-SiLU, C2f blocks, SPPF, the PAN neck, the decoupled head with a 16-bin DFL box branch),
random weights, input 640x640 int8, output int8 ``[1, 84, 8400]`` (normalised xywh rows, then 80
class rows), as an Ultralytics full-int8 export has. Untrained, its scores would be ~0.5
everywhere; the class biases are shifted so that ~40 cells score above 0.25 on the benchmark's
frames, the load a trained model's few objects put on post-processing. Used by
``benchmarks/detect_decode.py`` for the pipeline-vs-invoke ratio (not a detector).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers as L  # noqa: E402

SIZE, NC, TARGET_CELLS = 640, 80, 40


def conv(x, c, k=1, s=1):
    x = L.Conv2D(c, k, s, padding="same", use_bias=False)(x)
    return L.Activation("swish")(L.BatchNormalization()(x))


def c2f(x, c, n, shortcut=True):
    y = conv(x, c, 1)
    outs = [y[..., : c // 2], y[..., c // 2 :]]
    for _ in range(n):
        h = conv(conv(outs[-1], c // 2, 3), c // 2, 3)
        outs.append(L.Add()([outs[-1], h]) if shortcut else h)
    return conv(L.Concatenate()(outs), c, 1)


def sppf(x, c):
    x = conv(x, c // 2, 1)
    pools = [x]
    for _ in range(3):
        pools.append(L.MaxPooling2D(5, 1, padding="same")(pools[-1]))
    return conv(L.Concatenate()(pools), c, 1)


def model() -> tuple[keras.Model, list[L.Layer]]:
    inp = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = c2f(conv(conv(inp, 16, 3, 2), 32, 3, 2), 32, 1)
    p3 = c2f(conv(x, 64, 3, 2), 64, 2)
    p4 = c2f(conv(p3, 128, 3, 2), 128, 2)
    p5 = sppf(c2f(conv(p4, 256, 3, 2), 256, 1), 256)
    h4 = c2f(L.Concatenate()([L.UpSampling2D()(p5), p4]), 128, 1, False)
    o3 = c2f(L.Concatenate()([L.UpSampling2D()(h4), p3]), 64, 1, False)
    o4 = c2f(L.Concatenate()([conv(o3, 64, 3, 2), h4]), 128, 1, False)
    o5 = c2f(L.Concatenate()([conv(o4, 128, 3, 2), p5]), 256, 1, False)
    boxes, logits, heads = [], [], []
    for o, s in ((o3, 8), (o4, 16), (o5, 32)):
        g = SIZE // s
        head = L.Conv2D(NC, 1)
        heads.append(head)
        boxes.append(L.Reshape((g * g, 4, 16))(L.Conv2D(64, 1)(conv(conv(o, 64, 3), 64, 3))))
        logits.append(L.Reshape((g * g, NC))(head(conv(conv(o, 80, 3), 80, 3))))
    dist = L.Dense(1, use_bias=False, name="dfl")(L.Softmax(axis=-1)(L.Concatenate(axis=1)(boxes)))
    dist = L.Reshape((8400, 4))(dist)
    pts, strides = [], []
    for s in (8, 16, 32):
        g = SIZE // s
        ys, xs = np.meshgrid(np.arange(g) + 0.5, np.arange(g) + 0.5, indexing="ij")
        pts.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((g * g, 1), s))
    anchor, stride = np.concatenate(pts).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def to_xywh(d):  # DFL distances (left, top, right, bottom) around the anchor point, normalised
        x1y1, x2y2 = anchor - d[..., :2], anchor + d[..., 2:]
        return tf.concat([(x1y1 + x2y2) / 2, x2y2 - x1y1], -1) * stride / SIZE

    cls = L.Concatenate(axis=1)(logits)
    out = L.Permute((2, 1))(L.Concatenate()([L.Lambda(to_xywh)(dist), L.Activation("sigmoid")(cls)]))
    m = keras.Model(inp, [out, cls])
    m.get_layer("dfl").set_weights([np.arange(16, dtype=np.float32)[:, None]])
    return m, heads


def frames() -> np.ndarray:
    """Inputs like the benchmark's: the demo video's frames letterboxed to 640, RGB in [0, 1]."""
    import cv2

    from sdk.image import Preprocessor

    cap = cv2.VideoCapture(str(Path(__file__).resolve().parents[1] / "apps" / "detect" / "samples" / "demo.mp4"))
    pre, out = Preprocessor((SIZE, SIZE)), []
    while len(out) < 8 and (f := cap.read()[1]) is not None:
        out.append(pre(cv2.resize(f, (1280, 720)))[0][0].copy())
    return np.stack(out)


def main(path: Path) -> None:
    keras.utils.set_random_seed(0)
    m, heads = model()
    x = frames()
    logits = np.concatenate([m.predict(x[i : i + 1], verbose=0)[1] for i in range(len(x))])
    # random features barely vary: spread the class logits to a std of 2 around 0 (int8 keeps them apart)
    gain = 2.0 / max(float(logits.std()), 1e-6)
    for head in heads:
        k, b = head.get_weights()
        head.set_weights([k * gain, (b - float(logits.mean())) * gain])
    best = np.concatenate([m.predict(x[i : i + 1], verbose=0)[1].max(axis=2).ravel() for i in range(len(x))])
    # then shift every class bias so ~TARGET_CELLS cells a frame score above 0.25 (logit -1.0986)
    shift = math.log(0.25 / 0.75) - np.sort(best)[-TARGET_CELLS * len(x)]
    for head in heads:
        k, b = head.get_weights()
        head.set_weights([k, b + shift])
    export = keras.Model(m.input, m.outputs[0])
    conv_ = tf.lite.TFLiteConverter.from_keras_model(export)
    conv_.optimizations = [tf.lite.Optimize.DEFAULT]
    conv_.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    conv_.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv_.inference_input_type = tf.int8
    conv_.inference_output_type = tf.int8
    data = conv_.convert()
    path.write_bytes(data)
    print(f"yolov8n-shaped int8: {export.count_params():,} parameters, {len(data) / 1e6:.1f} MB -> {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
