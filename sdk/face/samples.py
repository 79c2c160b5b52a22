"""Photo variants of a face image, for calibration, tests and benchmarks.

The project can only ship a few real face photos (the face app bundles them with their
licences), so calibration sets and test sets are made from them with fixed-seed geometric
and photometric changes: rotation (±20°), scale (0.45–1.3), shift, mirror,
brightness/contrast/gamma, per-channel gains, grey, blur, sensor noise and JPEG re-encoding.
Where the photos live is the app's business: callers pass the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_sample(path: str | Path) -> np.ndarray:
    """A sample face photo as BGR ``uint8``.

    Args:
        path: The photo file (JPEG, PNG...).

    Returns:
        The image, ``[H, W, 3]`` BGR ``uint8``.

    Raises:
        FileNotFoundError: The file is missing or not a readable image.
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: sample face photo missing")
    return img


def variant(image_bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random geometric + photometric variant of ``image_bgr`` (same size)."""
    import cv2

    h, w = image_bgr.shape[:2]
    angle, scale = rng.uniform(-20, 20), rng.uniform(0.45, 1.3)
    m = cv2.getRotationMatrix2D((w / 2 + rng.uniform(-30, 30), h / 2 + rng.uniform(-30, 30)), angle, scale)
    img = cv2.warpAffine(image_bgr, m, (w, h), borderMode=cv2.BORDER_REFLECT101)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    x = img.astype(np.float32)
    x = (x - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-40, 40)
    x *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.15:
        x[:] = x.mean(axis=2, keepdims=True)
    if rng.random() < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    x += rng.normal(0, rng.uniform(0, 6), x.shape).astype(np.float32)
    img = np.clip(x, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else img


def variants(image_bgr: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` variants with a fixed seed (the first one is the unchanged image)."""
    rng = np.random.default_rng(seed)
    return [image_bgr.copy()] + [variant(image_bgr, rng) for _ in range(max(0, n - 1))]
