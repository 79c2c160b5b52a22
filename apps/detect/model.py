"""The default detector: a small anchor-free YOLO in Keras with an int8-safe head.

Layout (host side: imports Keras; the CLI imports this module only when training):

* backbone: plain 3×3 conv + BN + ReLU blocks (int8 kernels run them well on XNNPACK and the
  Edge TPU), feature maps at ``strides`` (default 8 and 16), the coarser map upsampled and
  added into the finer one (a one-step FPN);
* head per level: one 3×3 conv, then a 1×1 conv to 4 box numbers and a 1×1 conv to ``C``
  class logits;
* boxes are decoded **inside the model** (cell centre ± a bounded offset, a sigmoid-bounded
  size) to ``x1, y1, x2, y2`` normalised to the input size, so the ``boxes`` output lives in
  ``[0, 1]`` and the ``scores`` output (sigmoid) too: each gets its own int8 scale and neither
  swamps the other (FINDINGS: one concatenated tensor wipes the scores).

Outputs: ``boxes [1, N, 4]`` and ``scores [1, N, C]`` with ``N = Σ (h/s)·(w/s)`` cells, level by
level in ``strides`` order, row-major inside a level.

Training targets (:func:`make_targets`) use centre-based assignment: an object goes to the level
whose size range holds its longer side; the cells whose centre lies within one stride of the
object centre (at least the nearest one) are positives. Loss: focal BCE on the scores over all
cells, GIoU + L1 on the boxes of positive cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

MAX_OFFSET = 1.5  # a cell predicts a centre up to 1.5 strides away (positives are within 1)
SIZE_UNITS = 8  # a level predicts sizes up to 8 strides (the last level: up to the image size)


def level_sizes(imgsz: tuple[int, int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Grid ``(h, w)`` per level for an input ``(w, h)``."""
    w, h = imgsz
    return [(h // s, w // s) for s in strides]


def max_sizes(imgsz: tuple[int, int], strides: Sequence[int]) -> list[float]:
    """Largest box side (pixels) each level can predict."""
    return [float(SIZE_UNITS * s) for s in strides[:-1]] + [float(max(SIZE_UNITS * strides[-1], *imgsz))]


def cell_centers(imgsz: tuple[int, int], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``[N, 2]`` (x, y pixels) and each cell's stride ``[N]``."""
    centers, cell_strides = [], []
    for s, (gh, gw) in zip(strides, level_sizes(imgsz, strides)):
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        centers.append(np.stack([xs.ravel(), ys.ravel()], 1) * s + s / 2)
        cell_strides.append(np.full(gh * gw, s))
    return np.concatenate(centers).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def build_model(num_classes: int, imgsz: tuple[int, int] = (160, 160), strides: Sequence[int] = (8, 16), width: int = 32, batch_size: int | None = None):
    """The detector as a functional Keras model with outputs ``boxes`` and ``scores``.

    Args:
        num_classes: Number of classes ``C``.
        imgsz: Input ``(w, h)``; both must be multiples of the largest stride.
        strides: Output strides, ascending powers of two ≥ 8.
        width: Base channel count (the backbone uses 0.5×, 1×, 2×, 3× of it).
        batch_size: ``None`` for training; 1 for export, so reshapes and broadcasts are static
            (a dynamic batch adds SHAPE/PACK/TILE ops to the converted graph).
    """
    w, h = imgsz
    if w % max(strides) or h % max(strides):
        raise ValueError(f"image size {imgsz} must be a multiple of the largest stride {max(strides)}")

    def conv(x, ch, stride=1, k=3):
        x = layers.Conv2D(ch, k, stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.97)(x)
        return layers.ReLU()(x)

    inp = keras.Input((h, w, 3), batch_size=batch_size, name="image")
    x = conv(inp, width // 2, 2)  # /2
    feats, stride, ch = {}, 2, width
    while stride < max(strides):
        x = conv(x, ch, 2)
        x = conv(x, ch)
        stride *= 2
        if stride in strides:
            feats[stride] = x
        ch = min(ch * 2, width * 3) if stride >= 4 else ch
    # top-down: each coarser map, projected and upsampled, is added into the next finer one
    levels = sorted(strides)
    fused = {levels[-1]: feats[levels[-1]]}
    for fine, coarse in zip(levels[-2::-1], levels[:0:-1]):
        # bilinear becomes one RESIZE_BILINEAR op; Keras' "nearest" is built from TILE + RESHAPE
        top = layers.UpSampling2D(coarse // fine, interpolation="bilinear")(conv(fused[coarse], feats[fine].shape[-1], k=1))
        fused[fine] = layers.Add()([feats[fine], top])
    raw_box, raw_cls = [], []
    for s in levels:
        f = conv(fused[s], width * 2)
        raw_box.append(layers.Reshape((-1, 4))(layers.Conv2D(4, 1, name=f"box_s{s}")(f)))
        cls = layers.Conv2D(num_classes, 1, name=f"cls_s{s}", bias_initializer=keras.initializers.Constant(-4.6))(f)
        raw_cls.append(layers.Reshape((-1, num_classes))(cls))
    raw_box = layers.Concatenate(axis=1)(raw_box) if len(levels) > 1 else raw_box[0]
    raw_cls = layers.Concatenate(axis=1)(raw_cls) if len(levels) > 1 else raw_cls[0]
    scores = layers.Activation("sigmoid", name="scores")(raw_cls)
    boxes = DecodeBoxes((w, h), levels, name="boxes")(raw_box)
    return keras.Model(inp, [boxes, scores], name="edgesdk_yolo")


@keras.saving.register_keras_serializable(package="edgesdk_detect")
class DecodeBoxes(keras.layers.Layer):
    """Raw ``[B, N, 4]`` → normalised ``x1, y1, x2, y2``, from elementwise ops that int8 supports.

    The cell grid is rebuilt from ``imgsz`` and ``strides`` (the layer's config), so a saved
    model reloads without any array in its config.
    """

    def __init__(self, imgsz: Sequence[int], strides: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.imgsz = tuple(int(v) for v in imgsz)
        self.strides = tuple(int(s) for s in strides)
        centers, cell_strides = cell_centers(self.imgsz, self.strides)
        cells = [gh * gw for gh, gw in level_sizes(self.imgsz, self.strides)]
        sizes = np.repeat(max_sizes(self.imgsz, self.strides), cells).astype(np.float32)
        norm = np.array(self.imgsz, np.float32)
        off = MAX_OFFSET * cell_strides[:, None] / norm
        # xy = centre + (2t - 1) * off, folded into one multiply and one add
        self._xy0 = (centers / norm - off)[None].astype(np.float32)
        self._xy1 = (2 * off)[None].astype(np.float32)
        self._half = (sizes[:, None] / norm / 2)[None].astype(np.float32)

    def call(self, raw):
        t = ops.sigmoid(raw)
        xy = self._xy0 + t[..., :2] * self._xy1
        wh = t[..., 2:] * self._half
        return ops.concatenate([xy - wh, xy + wh], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "imgsz": list(self.imgsz), "strides": list(self.strides)}


def export_copy(net, num_classes: int, imgsz: tuple[int, int], strides: Sequence[int], width: int):
    """A batch-1 copy of a trained ``net`` with the same weights, for conversion."""
    fixed = build_model(num_classes, imgsz, strides, width, batch_size=1)
    fixed.set_weights(net.get_weights())
    return fixed


def make_targets(
    boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray], num_classes: int, imgsz: tuple[int, int], strides: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for a batch.

    Returns:
        ``box [B, N, 4]`` (normalised x1 y1 x2 y2 of the assigned object) with
        ``cls [B, N, C + 1]`` (one-hot classes, then 1 for positive cells).
    """
    levels = sorted(strides)
    centers, cell_strides = cell_centers(imgsz, levels)
    n = len(centers)
    bounds = [0.0] + [SIZE_UNITS * s * 0.625 for s in levels[:-1]] + [np.inf]  # longer side ranges per level
    norm = np.array([*imgsz, *imgsz], np.float32)
    box_t = np.zeros((len(boxes), n, 4), np.float32)
    cls_t = np.zeros((len(boxes), n, num_classes + 1), np.float32)
    for i, (b, k) in enumerate(zip(boxes, classes)):
        if len(b) == 0:
            continue
        b = np.asarray(b, np.float32)
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        lvl = np.searchsorted(bounds, side, side="right") - 1  # [K]
        obj_stride = np.array(levels, np.float32)[np.clip(lvl, 0, len(levels) - 1)]
        ctr = (b[:, :2] + b[:, 2:]) / 2
        d = np.abs(centers[None] - ctr[:, None])  # [K, N, 2]
        pos = (cell_strides[None] == obj_stride[:, None]) & (d.max(-1) < obj_stride[:, None])
        # the nearest cell of the object's level is always positive (tiny objects between cells)
        same = cell_strides[None] == obj_stride[:, None]
        nearest = np.where(same, d.max(-1), np.inf).argmin(1)
        pos[np.arange(len(b)), nearest] = True
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        # a cell claimed by several objects takes the smallest (the large one has other cells)
        owner = np.where(pos, area[:, None], np.inf).argmin(0)
        cell_pos = pos.any(0)
        box_t[i, cell_pos] = b[owner[cell_pos]] / norm
        cls_t[i, cell_pos, k[owner[cell_pos]]] = 1.0
        cls_t[i, cell_pos, -1] = 1.0
    return box_t, cls_t


def detection_loss(box_t, cls_t, boxes, scores, box_weight: float = 5.0):
    """Focal BCE on all scores + GIoU and L1 on positive boxes, normalised by the positive count."""
    pos = cls_t[..., -1]
    target = cls_t[..., :-1]
    npos = ops.maximum(ops.sum(pos), 1.0)
    p = ops.clip(scores, 1e-6, 1 - 1e-6)
    bce = -(target * ops.log(p) + (1 - target) * ops.log(1 - p))
    p_t = target * p + (1 - target) * (1 - p)
    alpha = target * 0.25 + (1 - target) * 0.75
    cls_loss = ops.sum(alpha * (1 - p_t) ** 2 * bce) / npos
    giou = _giou(boxes, box_t)
    l1 = ops.sum(ops.abs(boxes - box_t), axis=-1)
    box_loss = ops.sum(pos * ((1 - giou) + 4.0 * l1)) / npos
    return cls_loss + box_weight * box_loss


def _giou(a, b):
    iw = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    area_a = ops.maximum(a[..., 2] - a[..., 0], 0.0) * ops.maximum(a[..., 3] - a[..., 1], 0.0)
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter + 1e-9
    cw = ops.maximum(a[..., 2], b[..., 2]) - ops.minimum(a[..., 0], b[..., 0])
    ch = ops.maximum(a[..., 3], b[..., 3]) - ops.minimum(a[..., 1], b[..., 1])
    hull = cw * ch + 1e-9
    return inter / union - (hull - union) / hull


def make_trainer(net, box_weight: float = 5.0):
    """Wrap ``net`` in a Keras model whose loss is :func:`detection_loss`; ``y`` is ``(box_t, cls_t)``."""
    class DetectTrainer(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, x, training=False):
            return self.inner(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            box_t, cls_t = y
            boxes, scores = y_pred
            return detection_loss(box_t, cls_t, boxes, scores, box_weight)

    return DetectTrainer(net)
