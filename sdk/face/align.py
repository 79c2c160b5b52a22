"""Similarity alignment of face keypoints to dlib's 150x150 face chip.

dlib's face-recognition ResNet was trained on chips made by ``get_face_chip_details(shape,
150, 0.25)``: a least-squares similarity transform (rotation, uniform scale, translation)
from the detected landmarks to a mean face, padded by 25% of the face size on each side.
The mean-face coordinates (in a unit square) are numbers from dlib's
``dlib/image_transforms/interpolation.h`` (https://github.com/davisking/dlib):

* the 5-point model's template (eye corners and the bottom of the nose), and
* the 68-point mean face, from which the BlazeFace keypoints' template is derived here:
  each eye centre is the mean of its six eye landmarks (36–41, 42–47), the nose tip is
  landmark 30, the mouth centre the mean of the 20 mouth landmarks (48–67).

BlazeFace's ear keypoints are not used (they are unreliable once the head turns).
Large downscales are anti-aliased (pyramid halving of the face region before the warp),
as dlib's ``extract_image_chip`` does, so chips from high-resolution frames match.
"""

from __future__ import annotations

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib 5-point template: image-right eye outer/inner corner, image-left eye outer/inner, nose bottom
DLIB_5PT_TEMPLATE = np.array(
    [[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677], [0.1205750620789, 0.2137274526848],
     [0.3340850613712, 0.2290642403242], [0.4901123135679, 0.6277975316475]], np.float64)

# Derived from dlib's 68-point mean face (see the module docstring), in BlazeFace's keypoint order:
# right eye (image left), left eye (image right), nose tip, mouth centre.
BLAZEFACE_TEMPLATE = np.array(
    [[0.225492, 0.215990], [0.754761, 0.215990], [0.490127, 0.515625], [0.490127, 0.804225]], np.float64)
BLAZEFACE_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0])


def template_pixels(template: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Unit-square template points to chip pixels, as ``get_face_chip_details`` pads them."""
    return (padding + np.asarray(template, np.float64)) / (2 * padding + 1) * size


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (no reflection).

    Args:
        src, dst: ``[N, 2]`` point sets, N >= 2.
        weights: Optional ``[N]`` non-negative weights.

    Returns:
        The ``2x3`` affine matrix ``[[a, -b, tx], [b, a, ty]]``.
    """
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    ms, md = w @ s, w @ d
    s0, d0 = s - ms, d - md
    var = float(w @ (s0**2).sum(1))
    if var <= 0:
        raise ValueError("alignment needs at least two distinct source points")
    # complex least squares: (d0) ≈ z * (s0) with z = a + ib
    a = float(w @ (s0[:, 0] * d0[:, 0] + s0[:, 1] * d0[:, 1])) / var
    b = float(w @ (s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0])) / var
    t = md - np.array([a * ms[0] - b * ms[1], b * ms[0] + a * ms[1]])
    return np.array([[a, -b, t[0]], [b, a, t[1]]], np.float64)


def warp_chip(image: np.ndarray, to_chip: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """Sample the ``size x size`` chip defined by ``to_chip`` (image → chip, 2x3) from ``image``.

    Bilinear, with the face region pyramid-halved first while the chip is less than half its
    resolution (no aliasing from large frames).
    """
    import cv2

    m = np.asarray(to_chip, np.float64)
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if scale < 0.5:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        h, w = image.shape[:2]
        x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(0))
        x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 2), min(h, int(np.ceil(corners[:, 1].max())) + 2)
        if x1 > x0 and y1 > y0:
            image = image[y0:y1, x0:x1]
            m = m.copy()
            m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
        while scale < 0.5 and min(image.shape[:2]) >= 4:
            image = cv2.pyrDown(image)
            m = m.copy()
            m[:, :2] *= 2.0  # the same chip from an image of half the size
            scale *= 2.0
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _invert(m: np.ndarray) -> np.ndarray:
    a, b = m[0, 0], m[1, 0]
    det = a * a + b * b
    r = np.array([[a, b], [-b, a]]) / det
    return np.hstack([r, -(r @ m[:, 2])[:, None]])


def chip_transform(points: np.ndarray, template_px: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Image → chip transform: like dlib, fit chip → image by least squares, then invert.

    dlib's ``extract_image_chip`` samples half a pixel up and left of the fitted similarity
    (measured: shifting by -0.5 px brings our chips from 4.6 to 0.8 grey levels mean absolute
    difference from ``dlib.get_face_chip``), so the same offset is applied here.
    """
    m = _invert(similarity(template_px, np.asarray(points, np.float64), weights))
    m[:, 2] -= 0.5
    return m


def blazeface_transform(keypoints: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Image → chip transform from BlazeFace keypoints ``[6, 2]`` (eyes, nose tip, mouth used)."""
    return chip_transform(np.asarray(keypoints, np.float64)[:4], template_pixels(BLAZEFACE_TEMPLATE, size, padding), BLAZEFACE_WEIGHTS)


def dlib5_transform(points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Image → chip transform from dlib's 5-point landmarks ``[5, 2]`` (reference alignment)."""
    return chip_transform(points, template_pixels(DLIB_5PT_TEMPLATE, size, padding))


def align_blazeface(image: np.ndarray, keypoints: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """The aligned ``size x size`` chip (same channel order as ``image``) from BlazeFace keypoints."""
    return warp_chip(image, blazeface_transform(keypoints, size, padding), size)


def eye_angle_degrees(keypoints: np.ndarray) -> float:
    """Roll of the eye line in degrees (0: level), from BlazeFace keypoints."""
    kp = np.asarray(keypoints, np.float64)
    dx, dy = kp[1] - kp[0]
    return float(np.degrees(np.arctan2(dy, dx)))
