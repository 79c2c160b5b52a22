"""Viola-Jones face detection with OpenCV's Haar cascades, evaluated in NumPy.

opencv-python 5 wheels ship neither the cascade files nor ``cv2.CascadeClassifier`` (it
moved out of the main modules), so this module reads the cascade XML itself and evaluates
it with integral images: every window of one pyramid level at once, stage by stage, keeping
only the windows that pass. The cascade files come from the Debian/Raspberry Pi OS package
``opencv-data`` (``/usr/share/opencv4/haarcascades``), found at run time.

Semantics follow OpenCV's ``detectMultiScale``: 24x24 window, variance-normalised
features (windows with a standard deviation <= 10 are skipped), stage threshold minus
1e-5, a step of 2 pixels at levels scaled by <= 2 and 1 above, and neighbour grouping
(``eps`` 0.2, a face needs more than ``min_neighbors`` raw hits).
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.errors import BackendUnavailableError, ModelFormatError
from sdk.lazy import require
from sdk.types import Box, Detection

SEARCH_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades", "/usr/local/share/opencv4/haarcascades",
               "/opt/homebrew/share/opencv4/haarcascades", "/usr/share/opencv4/lbpcascades")
INSTALL_HINT = "sudo apt-get install opencv-data   (Debian, Ubuntu, Raspberry Pi OS; or set EDGESDK_CASCADE_DIR)"
THRESHOLD_EPS = 1e-5


def find_cascade(name: str = "haarcascade_frontalface_default.xml") -> Path:
    """The path of cascade ``name`` (a file path or a file name searched in the usual folders).

    Raises:
        BackendUnavailableError: If it is nowhere, with the command that installs it.
    """
    p = Path(name)
    if p.is_file():
        return p
    fname = p.name if p.suffix else f"{p.name}.xml"
    dirs = [os.environ["EDGESDK_CASCADE_DIR"]] if os.environ.get("EDGESDK_CASCADE_DIR") else []
    for d in [*dirs, *SEARCH_DIRS]:
        if (Path(d) / fname).is_file():
            return Path(d) / fname
    raise BackendUnavailableError(f"OpenCV cascade {fname} not found in {', '.join([*dirs, *SEARCH_DIRS[:2]])}; install it: {INSTALL_HINT}")


@dataclass(frozen=True)
class Stage:
    """One boosted stage: weak trees flattened to node arrays, plus the stage threshold."""

    threshold: float
    feature: np.ndarray  # (T, K) feature index of each tree's nodes
    node_thr: np.ndarray  # (T, K)
    left: np.ndarray  # (T, K) child: > 0 node index, <= 0 leaf -value
    right: np.ndarray  # (T, K)
    leaves: np.ndarray  # (T, L)
    stump: bool


@dataclass(frozen=True)
class Cascade:
    """A parsed Haar cascade: window size, stages, and rectangles of every feature."""

    width: int
    height: int
    stages: tuple[Stage, ...]
    rects: np.ndarray  # (F, 3, 4) x, y, w, h (unused rects are zero)
    weights: np.ndarray  # (F, 3)


def _floats(text: str | None) -> list[float]:
    return [float(v) for v in (text or "").split()]


@functools.lru_cache(maxsize=8)
def load_cascade(path: str) -> Cascade:
    """Parse an OpenCV (2.4+ format) Haar cascade XML file.

    Raises:
        ModelFormatError: If the file is not such a cascade or uses tilted/LBP features.
    """
    try:
        root = ET.parse(path).getroot().find("cascade")
    except (ET.ParseError, OSError) as e:
        raise ModelFormatError(f"{path}: not a readable cascade XML ({e})") from e
    if root is None or (root.findtext("featureType") or "").strip() != "HAAR":
        raise ModelFormatError(f"{path}: expected an OpenCV Haar cascade (featureType HAAR); LBP and the old format are not supported")
    features = root.find("features")
    rects = np.zeros((len(features), 3, 4), np.int32)
    weights = np.zeros((len(features), 3), np.float32)
    for i, f in enumerate(features):
        if (f.findtext("tilted") or "0").strip() == "1":
            raise ModelFormatError(f"{path}: tilted (45 degree) Haar features are not supported; use haarcascade_frontalface_default")
        for j, r in enumerate(f.find("rects")):
            x, y, w, h, wt = _floats(r.text)
            rects[i, j] = (x, y, w, h)
            weights[i, j] = wt
    stages = tuple(_stage(s) for s in root.find("stages"))
    return Cascade(int(root.findtext("width")), int(root.findtext("height")), stages, rects, weights)


def _stage(el: ET.Element) -> Stage:
    trees = [(_floats(w.findtext("internalNodes")), _floats(w.findtext("leafValues"))) for w in el.find("weakClassifiers")]
    k = max(len(n) // 4 for n, _ in trees)
    n_leaves = max(len(v) for _, v in trees)
    shape = (len(trees), k)
    feat, thr = np.zeros(shape, np.int32), np.zeros(shape, np.float32)
    left, right = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    leaves = np.zeros((len(trees), n_leaves), np.float32)
    for t, (nodes, vals) in enumerate(trees):
        for n in range(len(nodes) // 4):
            left[t, n], right[t, n], feat[t, n], thr[t, n] = nodes[4 * n: 4 * n + 4]
        leaves[t, : len(vals)] = vals
    return Stage(float(el.findtext("stageThreshold")) - THRESHOLD_EPS, feat, thr, left, right, leaves, k == 1)


class HaarDetector:
    """Faces (or any object of the cascade) in BGR or grey images.

    Args:
        cascade: A cascade file name (searched in ``opencv-data``'s folders) or path.
        scale_factor: Pyramid step between window sizes.
        min_neighbors: Raw hits a face needs beyond the first (higher: fewer false faces).
        min_size: Smallest face side in pixels; larger is faster.
        max_size: Largest face side (0: the image).
    """

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 40, max_size: int = 0) -> None:
        self.path = find_cascade(cascade)
        self.cascade = load_cascade(str(self.path))
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.max_size = max(min_size, self.cascade.width), max_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` (H, W[, 3] uint8, BGR), largest first; ``score`` is the neighbour count."""
        cv2 = require("cv2", "Haar face detection")
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        c = self.cascade
        raw: list[np.ndarray] = []
        factor = self.min_size / c.width
        limit = min(h, w) if not self.max_size else min(self.max_size, h, w)
        while c.width * factor <= limit and c.height * factor <= limit:
            sw, sh = int(round(w / factor)), int(round(h / factor))
            level = cv2.resize(gray, (sw, sh), interpolation=cv2.INTER_LINEAR) if factor != 1 else gray
            xy = self._level(level, 1 if factor > 2 else 2)
            if len(xy):
                raw.append(np.column_stack([xy * factor, np.full((len(xy), 2), (c.width * factor, c.height * factor))]))
            factor *= self.scale_factor
        rects = np.rint(np.concatenate(raw)).astype(np.int64) if raw else np.zeros((0, 4), np.int64)
        boxes, counts = group_rectangles(rects, self.min_neighbors)
        order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")
        return [Detection(Box(float(x), float(y), float(x + bw), float(y + bh)), float(counts[i]), 0, "face")
                for i in order for x, y, bw, bh in [boxes[i]]]

    def _level(self, gray: np.ndarray, step: int) -> np.ndarray:
        """(x, y) of every window of this pyramid level that passes all stages."""
        cv2 = require("cv2", "Haar face detection")
        c = self.cascade
        s, sq = cv2.integral2(gray, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
        ny, nx = len(range(0, gray.shape[0] - c.height, step)), len(range(0, gray.shape[1] - c.width, step))
        if ny <= 0 or nx <= 0:
            return np.zeros((0, 2))
        plane = functools.partial(_rect_plane, ny=ny, nx=nx, step=step)
        # variance over the window shrunk by one pixel, as OpenCV does
        area = float((c.width - 2) * (c.height - 2))
        sf = s.astype(np.float32) if s.max() < 2**24 else s.astype(np.float64)  # exact while sums fit the mantissa
        total = plane(sf, 1, 1, c.width - 2, c.height - 2).astype(np.float64)
        nf = np.sqrt(np.maximum(area * plane(sq, 1, 1, c.width - 2, c.height - 2) - total * total, 0.0))
        keep = nf > 10.0 * area  # OpenCV skips windows with a standard deviation <= 10
        stages = list(c.stages)
        # the first stages see most windows: evaluate them densely on shifted views (no gathers)
        while stages and stages[0].stump and keep.mean() > 0.2:
            st = stages.pop(0)
            score = np.zeros((ny, nx))
            for t, f in enumerate(st.feature[:, 0]):
                val = sum(float(c.weights[f, r]) * plane(sf, *c.rects[f, r]) for r in range(3) if c.weights[f, r])
                score += np.where(val >= st.node_thr[t, 0] * nf, st.leaves[t, 1], st.leaves[t, 0])
            keep &= score >= st.threshold
        iy, ix = np.nonzero(keep)
        stride = s.shape[1]
        base = (iy * step) * stride + ix * step
        nf, flat = nf[iy, ix], sf.ravel()
        offsets = _corner_offsets(c.rects, stride)  # (F, 3, 4)
        for stage in stages:
            if not base.size:
                break
            score = self._stage_sum(stage, flat, base, offsets, nf)
            keep = score >= stage.threshold
            base, nf = base[keep], nf[keep]
        return np.column_stack([base % stride, base // stride]).astype(np.float64)

    def _stage_sum(self, stage: Stage, sf: np.ndarray, base: np.ndarray, offsets: np.ndarray, nf: np.ndarray) -> np.ndarray:
        c = self.cascade
        if stage.stump:
            f = stage.feature[:, 0]
            val = _feature_values(sf, base, offsets[f], c.weights[f]) / nf  # (T, N)
            right = val >= stage.node_thr[:, :1]
            return np.where(right, stage.leaves[:, 1:2], stage.leaves[:, :1]).sum(axis=0)
        total = np.zeros(base.size)
        for t in range(stage.feature.shape[0]):  # trees: walk the nodes per window
            node = np.zeros(base.size, np.int64)
            leaf = np.full(base.size, -1, np.int64)
            while (leaf < 0).any():
                active = leaf < 0
                f = stage.feature[t, node[active]]
                val = _feature_values_per(sf, base[active], offsets[f], c.weights[f]) / nf[active]
                nxt = np.where(val < stage.node_thr[t, node[active]], stage.left[t, node[active]], stage.right[t, node[active]])
                idx = np.flatnonzero(active)
                done = nxt <= 0
                leaf[idx[done]] = -nxt[done]
                node[idx[~done]] = nxt[~done]
            total += stage.leaves[t, leaf]
        return total


def _rect_plane(ii: np.ndarray, x: int, y: int, w: int, h: int, ny: int, nx: int, step: int) -> np.ndarray:
    """Sum of rect (x, y, w, h) at every window of a (ny, nx) grid with ``step``, from integral ``ii``."""
    ys, xs = slice(y, y + ny * step, step), slice(x, x + nx * step, step)
    ys2, xs2 = slice(y + h, y + h + ny * step, step), slice(x + w, x + w + nx * step, step)
    return ii[ys2, xs2] - ii[ys, xs2] - ii[ys2, xs] + ii[ys, xs]


def _corner_offsets(rects: np.ndarray, stride: int) -> np.ndarray:
    """Flat integral-image offsets (bottom-right, top-right, bottom-left, top-left) of rects (..., 4)."""
    x, y, w, h = (rects[..., i].astype(np.int64) for i in range(4))
    return np.stack([(y + h) * stride + x + w, y * stride + x + w, (y + h) * stride + x, y * stride + x], axis=-1)


def _feature_values(sf: np.ndarray, base: np.ndarray, offs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted rectangle sums (T, N) of T features at N windows."""
    out = np.zeros((offs.shape[0], base.size))
    for r in range(offs.shape[1]):
        o = offs[:, r]  # (T, 4)
        s = sf[base[None] + o[:, 0:1]] - sf[base[None] + o[:, 1:2]] - sf[base[None] + o[:, 2:3]] + sf[base[None] + o[:, 3:4]]
        out += weights[:, r: r + 1] * s
    return out


def _feature_values_per(sf: np.ndarray, base: np.ndarray, offs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One feature per window: ``offs`` (N, 3, 4), ``weights`` (N, 3) → (N,)."""
    out = np.zeros(base.size)
    for r in range(offs.shape[1]):
        o = offs[:, r]
        out += weights[:, r] * (sf[base + o[:, 0]] - sf[base + o[:, 1]] - sf[base + o[:, 2]] + sf[base + o[:, 3]])
    return out


def group_rectangles(rects: np.ndarray, min_neighbors: int, eps: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Cluster overlapping raw hits (x, y, w, h) into faces, as OpenCV's ``groupRectangles``.

    Returns:
        The averaged boxes (M, 4) with more than ``min_neighbors`` hits, and their hit counts.
    """
    n = len(rects)
    if n == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    r = rects.astype(np.float64)
    delta = eps * (np.minimum(r[:, None, 2], r[None, :, 2]) + np.minimum(r[:, None, 3], r[None, :, 3])) * 0.5
    x2, y2 = r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]
    similar = ((np.abs(r[:, None, 0] - r[None, :, 0]) <= delta) & (np.abs(r[:, None, 1] - r[None, :, 1]) <= delta)
               & (np.abs(x2[:, None] - x2[None, :]) <= delta) & (np.abs(y2[:, None] - y2[None, :]) <= delta))
    label = np.arange(n)
    while True:  # connected components by label propagation (min label over neighbours)
        new = np.where(similar, label[None, :], n).min(axis=1)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    _, inv, counts = np.unique(label, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), 4))
    np.add.at(sums, inv, r)
    boxes = np.rint(sums / counts[:, None]).astype(np.int64)
    keep = counts > min_neighbors
    boxes, counts = boxes[keep], counts[keep]
    drop = np.zeros(len(boxes), bool)
    for i, (bx, by, bw, bh) in enumerate(boxes):  # drop small boxes inside a stronger bigger one
        for j, (ox, oy, ow, oh) in enumerate(boxes):
            if i == j:
                continue
            dx, dy = int(ow * eps), int(oh * eps)
            inside = bx >= ox - dx and by >= oy - dy and bx + bw <= ox + ow + dx and by + bh <= oy + oh + dy
            if inside and (counts[j] > max(3, counts[i]) or counts[i] < 3):
                drop[i] = True
                break
    return boxes[~drop], counts[~drop]
