"""Detection data: a generated shapes-on-photographs set, and COCO-json / YOLO-txt readers.

The default model is trained on scenes generated here: filled shapes and simple drawn objects
(:data:`CLASSES`) composited onto crops of the photographs bundled in scikit-image's wheel,
with varied scale, rotation, colour, lighting, blur, noise and occlusion. Everything is
deterministic from a seed. Only the bundled images whose licence is CC0 or public domain are
used (:data:`BACKGROUNDS`); scikit-image itself is BSD-3-Clause.

A user's own data goes through the same recipe: :func:`read_coco` and :func:`read_yolo` return
:class:`Sample` lists that :func:`load_samples` letterboxes (with :mod:`sdk.image`, the same
preprocessing the device uses) into training arrays.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.errors import ConfigError

CLASSES = ("circle", "square", "triangle", "star", "cross", "smiley")

# scikit-image data function -> licence, as stated in its docstring (skimage 0.26).
BACKGROUNDS = {
    "astronaut": "public domain (NASA)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "camera": "CC0 (Lav Varshney)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (DeviantArt linolafett)",
    "gravel": "CC0 (CC0Textures)",
    "retina": "CC0 (Mikael Häggström, Wikimedia)",
}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Sample:
    """One labelled image: a file (or an in-memory BGR array) with boxes in its own pixels."""

    path: str
    boxes: np.ndarray  # [K, 4] float32 x1, y1, x2, y2 pixels
    classes: np.ndarray  # [K] int64 class ids (0-based, indexing the label list)
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass
class DetectionSet:
    """Images already at the model size (BGR uint8 ``[N, h, w, 3]``) with their boxes."""

    images: np.ndarray
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def load_backgrounds(max_side: int = 512) -> list[np.ndarray]:
    """The CC0 / public-domain photographs bundled with scikit-image, as BGR uint8.

    Raises:
        ConfigError: When scikit-image is not installed.
    """
    import cv2

    try:
        import skimage.data as skd
    except ImportError as e:
        raise ConfigError("generating the detect data set needs scikit-image: pip install 'edgesdk[host]'") from e
    out = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skd, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = np.ascontiguousarray(img[..., 2::-1])  # RGB(A) -> BGR
        scale = max_side / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out.append(img)
    return out


def _shape_points(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Outline of a unit-radius shape centred at 0, as ``[P, 2]`` float."""
    if cls in (0, 5):  # circle / smiley face: a circle, slightly elliptic
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t) * rng.uniform(0.85, 1.0)], 1)
    if cls == 1:
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8
    if cls == 2:
        t = np.array([-90, 30, 150]) * np.pi / 180 + rng.uniform(-0.15, 0.15, 3)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == 3:
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    a = rng.uniform(0.25, 0.38)  # cross: half arm width
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]], float)


def draw_object(img: np.ndarray, cls: int, cx: float, cy: float, radius: float, rng: np.random.Generator, angle: float | None = None) -> np.ndarray:
    """Draw one object of class ``cls`` (its look drawn from ``rng``) onto ``img`` in place.

    Args:
        angle: Rotation in radians; ``None`` draws one from ``rng``.

    Returns:
        The object's tight box ``[4]`` (x1, y1, x2, y2 pixels, not clipped).
    """
    import cv2

    pts = _shape_points(cls, rng)
    ang = rng.uniform(0, 2 * np.pi) if angle is None else angle
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    pts = pts @ rot.T * radius + (cx, cy)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    poly = np.round(pts * 16).astype(np.int32)  # 4 fractional bits for sub-pixel anti-aliasing
    cv2.fillPoly(img, [poly], colour, cv2.LINE_AA, shift=4)
    if rng.random() < 0.4:  # an outline in a contrasting colour
        edge = tuple(255 - c for c in colour)
        cv2.polylines(img, [poly], True, edge, max(1, int(radius / 12)), cv2.LINE_AA, shift=4)
    if cls == 5:  # eyes and a smile, in a dark colour, rotated with the face
        dark = tuple(int(c) for c in rng.integers(0, 70, 3))
        for ex in (-0.35, 0.35):
            e = rot @ np.array([ex, -0.3]) * radius + (cx, cy)
            cv2.circle(img, (int(e[0]), int(e[1])), max(1, int(radius * 0.14)), dark, -1, cv2.LINE_AA)
        t = np.linspace(0.2 * np.pi, 0.8 * np.pi, 12)
        mouth = np.stack([np.cos(t) * 0.55, np.sin(t) * 0.55 + 0.05], 1) @ rot.T * radius + (cx, cy)
        cv2.polylines(img, [np.round(mouth).astype(np.int32)], False, dark, max(1, int(radius * 0.1)), cv2.LINE_AA)
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], np.float32)


def background(bgs: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random photograph, resized to ``size`` (w, h), maybe mirrored."""
    import cv2

    w, h = size
    src = bgs[int(rng.integers(len(bgs)))]
    sh, sw = src.shape[:2]
    frac = rng.uniform(0.35, 1.0)
    cw, ch = int(min(sw, sh * w / h) * frac), int(min(sh, sw * h / w) * frac)
    x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    img = cv2.resize(src[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting (gain, offset, colour cast, a gradient), blur and sensor noise."""
    import cv2

    h, w = img.shape[:2]
    f = img.astype(np.float32)
    gain = rng.uniform(0.55, 1.35) * rng.uniform(0.85, 1.15, 3)
    ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-0.3, 0.3)
    f = f * gain * (1 + ramp) + rng.uniform(-30, 30)
    k = rng.random()
    if k < 0.25:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.5, 1.6))
    elif k < 0.4:  # horizontal/vertical motion blur, as from a moving camera
        n = int(rng.integers(3, 8))
        kern = np.zeros((n, n), np.float32)
        kern[n // 2, :] = 1.0 / n
        f = cv2.filter2D(f, -1, kern if rng.random() < 0.5 else kern.T)
    if rng.random() < 0.5:
        f += rng.normal(0, rng.uniform(2, 10), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)


def _covered(boxes: np.ndarray, new: np.ndarray) -> float:
    """Largest fraction of any box in ``boxes`` [K, 4] that ``new`` [4] covers."""
    iw = np.clip(np.minimum(boxes[:, 2], new[2]) - np.maximum(boxes[:, 0], new[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], new[3]) - np.maximum(boxes[:, 1], new[1]), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float((iw * ih / np.maximum(area, 1e-6)).max())


def render_scene(
    bgs: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator, max_objects: int = 6, min_px: float = 10, max_px: float = 90
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One generated scene of ``size`` ``(w, h)``.

    Returns:
        ``(image BGR uint8 [h, w, 3], boxes [K, 4] float32 pixels, classes [K] int64)``.
    """
    w, h = size
    img = background(bgs, size, rng)
    k = int(rng.integers(0, max_objects + 1))
    boxes, classes = [], []
    for _ in range(k):
        d = float(np.exp(rng.uniform(np.log(min_px), np.log(min(max_px, 0.7 * min(w, h))))))
        cx, cy = rng.uniform(d * 0.3, w - d * 0.3), rng.uniform(d * 0.3, h - d * 0.3)
        cls = int(rng.integers(len(CLASSES)))
        if boxes and _covered(np.array(boxes), np.array([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2])) > 0.5:
            continue  # would hide most of an earlier object, leaving a label on nothing visible
        box = draw_object(img, cls, cx, cy, d / 2, rng)
        box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
        if min(box[2] - box[0], box[3] - box[1]) < 4:
            continue  # almost entirely outside the frame; no label. (It stays drawn: clutter.)
        boxes.append(box)
        classes.append(cls)
    if boxes and rng.random() < 0.3:  # occlude a part of one object with a background patch
        b = boxes[int(rng.integers(len(boxes)))]
        bw, bh = b[2] - b[0], b[3] - b[1]
        pw, ph = int(bw * rng.uniform(0.2, 0.45)) + 1, int(bh * rng.uniform(0.2, 0.45)) + 1
        px, py = int(b[0] + rng.uniform(0, bw - pw + 1)), int(b[1] + rng.uniform(0, bh - ph + 1))
        patch = background(bgs, (pw, ph), rng)
        img[py : py + ph, px : px + pw] = patch[: max(0, min(ph, h - py)), : max(0, min(pw, w - px))]
    img = _photometric(img, rng)
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def generate(n: int, seed: int, size: tuple[int, int] = (160, 160), progress: bool = False) -> DetectionSet:
    """``n`` generated scenes, identical for the same ``seed`` and ``size``."""
    rng = np.random.default_rng(seed)
    bgs = load_backgrounds()
    w, h = size
    images = np.empty((n, h, w, 3), np.uint8)
    boxes, classes = [], []
    for i in range(n):
        images[i], b, c = render_scene(bgs, size, rng)
        boxes.append(b)
        classes.append(c)
        if progress and (i + 1) % 500 == 0:
            print(f"detect data: generated {i + 1}/{n} scenes", file=sys.stderr, flush=True)
    return DetectionSet(images, boxes, classes, CLASSES)


# ---------------------------------------------------------------------------- COCO and YOLO-txt


def write_coco(ds: DetectionSet, out_dir: str | Path, name: str = "annotations.json") -> Path:
    """Write ``ds`` as PNG images plus a COCO instances json in ``out_dir``; returns the json path."""
    import cv2

    from sdk.card import atomic_write

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, img in enumerate(ds.images):
        fname = f"{i:06d}.png"
        ok, buf = cv2.imencode(".png", img)
        atomic_write(out / "images" / fname, buf.tobytes())
        images.append({"id": i + 1, "file_name": fname, "width": int(img.shape[1]), "height": int(img.shape[0])})
        for b, c in zip(ds.boxes[i], ds.classes[i]):
            x, y, bw, bh = float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(ds.labels)]
    path = out / name
    atomic_write(path, json.dumps({"images": images, "annotations": anns, "categories": cats}).encode())
    return path


def read_coco(json_path: str | Path, images_dir: str | Path | None = None) -> tuple[list[Sample], list[str]]:
    """Read a COCO instances json. Category ids may be sparse; they map to 0-based label indices
    in ascending id order. Images are looked up in ``images_dir`` (default: the json's folder,
    then its ``images/`` sub-folder).

    Raises:
        ConfigError: On a missing or malformed file.
    """
    p = Path(json_path)
    try:
        data = json.loads(p.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        imgs = data["images"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--data {p}: expected a COCO instances json with 'images' and 'categories', got: {e}") from e
    idx = {c["id"]: i for i, c in enumerate(cats)}
    base = Path(images_dir) if images_dir else (p.parent / "images" if (p.parent / "images").is_dir() else p.parent)
    per_image: dict[int, list] = {im["id"]: [] for im in imgs}
    for a in data.get("annotations", []):
        if a.get("iscrowd", 0) or a["image_id"] not in per_image or a["category_id"] not in idx:
            continue
        per_image[a["image_id"]].append(a)
    samples = []
    for im in imgs:
        anns = per_image[im["id"]]
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        cls = np.array([idx[a["category_id"]] for a in anns], np.int64)
        samples.append(Sample(str(base / im["file_name"]), boxes, cls))
    return samples, [c["name"] for c in cats]


def write_yolo(ds: DetectionSet, out_dir: str | Path) -> Path:
    """Write ``ds`` in the YOLO-txt layout (``images/``, ``labels/``, ``classes.txt``)."""
    import cv2

    from sdk.card import atomic_write

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(ds.images):
        h, w = img.shape[:2]
        atomic_write(out / "images" / f"{i:06d}.png", cv2.imencode(".png", img)[1].tobytes())
        b = ds.boxes[i]
        cxcywh = np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
        lines = [f"{int(c)} " + " ".join(f"{v:.6f}" for v in row) for c, row in zip(ds.classes[i], cxcywh)]
        atomic_write(out / "labels" / f"{i:06d}.txt", ("\n".join(lines) + "\n" if lines else "").encode())
    atomic_write(out / "classes.txt", ("\n".join(ds.labels) + "\n").encode())
    return out


def read_yolo(root: str | Path) -> tuple[list[Sample], list[str]]:
    """Read the YOLO-txt layout: ``images/*.jpg|png`` with ``labels/<stem>.txt`` lines of
    ``class cx cy w h`` (normalised), and class names in ``classes.txt`` (one per line).

    Raises:
        ConfigError: On a missing folder, names file, or a malformed label line.
    """
    import cv2

    r = Path(root)
    img_dir, lbl_dir, names = r / "images", r / "labels", r / "classes.txt"
    if not img_dir.is_dir() or not names.is_file():
        raise ConfigError(f"--data {r}: expected a YOLO-txt folder with images/, labels/ and classes.txt (one class name per line)")
    labels = [s.strip() for s in names.read_text().splitlines() if s.strip()]
    samples = []
    for ip in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
        lp = lbl_dir / f"{ip.stem}.txt"
        rows = np.zeros((0, 5), np.float32)
        if lp.is_file():
            try:
                rows = np.array([[float(v) for v in ln.split()[:5]] for ln in lp.read_text().splitlines() if ln.strip()], np.float32).reshape(-1, 5)
            except ValueError as e:
                raise ConfigError(f"{lp}: expected lines of 'class cx cy w h', got: {e}") from e
        if len(rows) and (rows[:, 0].max() >= len(labels) or rows[:, 0].min() < 0):
            raise ConfigError(f"{lp}: class id {int(rows[:, 0].max())} out of range for {len(labels)} names in {names}")
        im = cv2.imread(str(ip), cv2.IMREAD_UNCHANGED) if len(rows) else None
        h, w = (im.shape[:2] if im is not None else (1, 1))
        c = rows[:, 1:]
        boxes = np.stack([(c[:, 0] - c[:, 2] / 2) * w, (c[:, 1] - c[:, 3] / 2) * h, (c[:, 0] + c[:, 2] / 2) * w, (c[:, 1] + c[:, 3] / 2) * h], 1)
        samples.append(Sample(str(ip), boxes.astype(np.float32), rows[:, 0].astype(np.int64)))
    return samples, labels


def read_dataset(path: str | Path) -> tuple[list[Sample], list[str]]:
    """``--data``: a COCO json file, a folder holding one, or a YOLO-txt folder."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return read_coco(p)
    if p.is_dir() and (p / "classes.txt").is_file():
        return read_yolo(p)
    if p.is_dir():
        js = sorted(p.glob("*.json"))
        if len(js) == 1:
            return read_coco(js[0])
    raise ConfigError(f"--data {p}: expected a COCO json, a folder with one COCO json, or a YOLO-txt folder with classes.txt")


def load_samples(samples: Sequence[Sample], labels: Sequence[str], size: tuple[int, int]) -> DetectionSet:
    """Read and letterbox samples to ``size`` (w, h) with :mod:`sdk.image`; unreadable files are skipped with a warning."""
    import cv2

    from sdk.image import Letterboxer

    boxer = Letterboxer(size)
    w, h = size
    images = np.empty((len(samples), h, w, 3), np.uint8)
    boxes, classes, n = [], [], 0
    for s in samples:
        img = s.image if s.image is not None else cv2.imread(s.path, cv2.IMREAD_COLOR)
        if img is None:
            print(f"detect data: warning: cannot read {s.path}; skipped", file=sys.stderr)
            continue
        images[n], lb = boxer(img)
        boxes.append(lb.map(s.boxes) if len(s.boxes) else s.boxes.reshape(-1, 4).astype(np.float32))
        classes.append(s.classes)
        n += 1
    return DetectionSet(images[:n], boxes, classes, tuple(labels))
