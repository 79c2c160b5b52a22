"""FaceNet-style embedding network and the triplet loss with semi-hard negative mining (host side).

The network is MobileNet-like (depthwise-separable blocks, ReLU6), small enough for a
Raspberry Pi, and ends in a 128-d L2-normalised embedding. Training uses the course's
triplet loss ``max(|a - p|^2 - |a - n|^2 + margin, 0)`` with margin 0.2, over every
anchor-positive pair of a batch, each with a semi-hard negative (FaceNet, Schroff et al.
2015, section 3.2): the closest negative that is still farther than the positive; when no
negative is farther, the farthest one.

Inputs are RGB face crops normalised as ``(pixel - 127.5) / 127.5`` (the card's mean/std).
TensorFlow/Keras is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MARGIN = 0.2
CROP_MARGIN = 0.2  # square crop around the detector's box, share of its side (the card's input.crop_margin)
# (filters, stride) of the depthwise-separable blocks after the stem
BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (192, 2), (192, 1), (256, 2))


def normalise(chips: np.ndarray) -> np.ndarray:
    """uint8 RGB → the network's input, ``(pixel - 127.5) / 127.5`` (the card's mean/std)."""
    return (chips.astype(np.float32) - 127.5) / 127.5


def build_embedding_model(input_size: int = 96, embedding_size: int = 128, width: float = 1.0, dropout: float = 0.2) -> Any:
    """The Keras embedding model: ``[B, size, size, 3]`` normalised RGB → ``[B, embedding_size]`` unit vectors."""
    import keras
    from keras import layers

    def bn_relu(x: Any) -> Any:
        return layers.ReLU(6.0)(layers.BatchNormalization()(x))

    inp = keras.Input((input_size, input_size, 3), name="face")
    x = bn_relu(layers.Conv2D(int(24 * width), 3, strides=2, padding="same", use_bias=False)(inp))
    for filters, stride in BLOCKS:
        x = bn_relu(layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x))
        x = bn_relu(layers.Conv2D(int(filters * width), 1, use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(embedding_size, name="embedding_dense")(x)
    out = layers.UnitNormalization(name="embedding")(x)
    return keras.Model(inp, out, name="face_embed")


def pairwise_sq_distances(emb: Any) -> Any:
    """``[B, B]`` squared Euclidean distances (Keras ops, differentiable, clipped at 0)."""
    from keras import ops

    sq = ops.sum(ops.square(emb), axis=1)
    d = ops.expand_dims(sq, 1) - 2.0 * ops.matmul(emb, ops.transpose(emb)) + ops.expand_dims(sq, 0)
    return ops.maximum(d, 0.0)


def semi_hard_triplet_loss(labels: Any, embeddings: Any, margin: float = MARGIN) -> Any:
    """Mean triplet loss over every (anchor, positive) pair of the batch with a semi-hard negative.

    Args:
        labels: ``[B]`` (or ``[B, 1]``) integer identity of each embedding.
        embeddings: ``[B, D]`` embeddings.
        margin: The triplet margin (0.2 as in the course and FaceNet).
    """
    from keras import ops

    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    d = pairwise_sq_distances(embeddings)  # [B, B]
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    eye = ops.eye(ops.shape(labels)[0], dtype="bool")
    pos = ops.logical_and(same, ops.logical_not(eye))  # [a, p]
    neg = ops.logical_not(same)  # [a, n]
    d_ap = ops.expand_dims(d, 2)  # [a, p, 1]
    d_an = ops.expand_dims(d, 1)  # [a, 1, n]
    neg3 = ops.expand_dims(neg, 1)
    big = ops.max(d) + 1.0
    # semi-hard: the smallest d_an that is still > d_ap
    farther = ops.logical_and(neg3, ops.greater(d_an, d_ap))  # [a, p, n]
    semi = ops.min(ops.where(farther, d_an, big), axis=2)  # [a, p]
    has_semi = ops.any(farther, axis=2)
    # otherwise the farthest negative of the anchor (the least hard: keeps training stable)
    farthest = ops.max(ops.where(neg, d, -1.0), axis=1, keepdims=True)  # [a, 1]
    d_neg = ops.where(has_semi, semi, farthest)
    loss = ops.maximum(d - d_neg + margin, 0.0)
    valid = ops.logical_and(pos, ops.any(neg, axis=1, keepdims=True))
    validf = ops.cast(valid, loss.dtype)
    return ops.sum(loss * validf) / ops.maximum(ops.sum(validf), 1.0)


def semi_hard_triplet_loss_np(labels: np.ndarray, emb: np.ndarray, margin: float = MARGIN) -> float:
    """The same loss with explicit loops (reference for tests)."""
    labels = np.asarray(labels).ravel()
    d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    losses = []
    for a in range(len(labels)):
        negs = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not negs:
            continue
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, n] for n in negs if d[a, n] > d[a, p]]
            dn = min(farther) if farther else max(d[a, n] for n in negs)
            losses.append(max(d[a, p] - dn + margin, 0.0))
    return float(np.mean(losses)) if losses else 0.0


def triplet_loss(anchor: np.ndarray, positive: np.ndarray, negative: np.ndarray, margin: float = MARGIN) -> float:
    """The course's triplet loss for explicit triplets: ``sum max(|a-p|^2 - |a-n|^2 + margin, 0)``."""
    pos = np.sum((anchor - positive) ** 2, axis=-1)
    neg = np.sum((anchor - negative) ** 2, axis=-1)
    return float(np.sum(np.maximum(pos - neg + margin, 0.0)))
