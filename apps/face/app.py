"""Face verification on the device: detect → crop/align → embed → compare with stored embeddings.

The embedding model is a ``.tflite`` with a ``face-embed`` card (input size, mean/std,
channel order; output embedding size, metric and threshold). Faces come from a detector:
the default pipeline's BlazeFace (with landmarks, so chips are aligned) or the Haar cascade
(no landmarks: a square crop with a margin). Every image must give exactly one usable face:
none, several (unless ``largest``), tiny or blurred faces are refused with the reason, and
nothing is written to the store unless every image of an enrolment is usable.

The app's shipped files are named here once: :data:`DEFAULT_MODEL` (the embedder, from
:mod:`apps.registry`), :data:`DEFAULT_DETECTOR` beside it and :data:`SAMPLE_PHOTO`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from apps.registry import APPS
from sdk.embeddings import EmbeddingStore, Match
from sdk.errors import EdgeSDKError, ModelFormatError
from sdk.lazy import require
from sdk.stats import StageStats
from sdk.types import Box, Detection

log = logging.getLogger("edgesdk.face")

DEFAULT_MODEL = APPS["face"].default_model_path  # dlib ResNet int8 embedder
DEFAULT_DETECTOR = DEFAULT_MODEL.with_name("face_detect_short_range.tflite")  # BlazeFace short-range
# in the package (not under tests/) so installs and deployment bundles carry it for `edgesdk demo`
SAMPLE_PHOTO = APPS["face"].folder / "samples" / "astronaut.jpg"


class FaceError(EdgeSDKError, ValueError):
    """An image cannot be read or holds no usable face (none, several, too small, blurred)."""


@dataclass
class Face:
    """One detected face: its box in the image, detector score, optional landmarks and model chip."""

    box: Box
    score: float
    chip: np.ndarray | None = None  # uint8 crop at the embedding model's input size, as the embedder wants it
    landmarks: np.ndarray | None = None  # (K, 2) pixels, when the detector gives them
    sharpness: float = 0.0
    rejected: str | None = None  # why it must not be enrolled or compared (too small, blurred)


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]: ...


def read_image(path: str | Path) -> np.ndarray:
    """A BGR uint8 image from ``path``.

    Raises:
        FaceError: If the file is missing or not a readable image.
    """
    cv2 = require("cv2", "reading images")
    p = Path(path)
    if not p.is_file():
        raise FaceError(f"{p}: no such image file")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise FaceError(f"{p}: not a readable image (expected JPEG, PNG, BMP...)")
    return img


def sharpness(image: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face region resized to 64x64 grey (scale independent)."""
    cv2 = require("cv2")
    x1, y1 = max(int(box.x1), 0), max(int(box.y1), 0)
    x2, y2 = min(int(box.x2), image.shape[1]), min(int(box.y2), image.shape[0])
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    roi = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY) if roi.ndim == 3 else roi
    small = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F).var())


def square_crop(image: np.ndarray, box: Box, size: tuple[int, int], margin: float) -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` (share of its side), resized to ``size``.

    One affine warp does crop and resize; pixels outside the image repeat the border.
    """
    cv2 = require("cv2")
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    side = max(box.x2 - box.x1, box.y2 - box.y1) * (1.0 + margin)
    w, h = size
    sx, sy = w / side, h / side
    m = np.array([[sx, 0, w / 2 - sx * cx], [0, sy, h / 2 - sy * cy]], np.float32)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class TFLiteEmbedder:
    """An embedding ``.tflite`` with a ``face-embed`` card, behind a detector.

    Args:
        model: Path of the embedding model.
        detector: Anything with ``detect(image) -> list[Detection]``.
        margin: Crop margin around a detector box (default from the card, else 0.2).
        min_face: Faces with a box side below this (pixels) are rejected.
        min_sharpness: Faces whose 64x64 grey crop has a lower Laplacian variance are rejected.
        runner_kwargs: Passed to :class:`sdk.runner.Runner` (delegate, threads...).

    Raises:
        ModelFormatError: If the model has no ``face-embed`` card or output is not a vector.
    """

    def __init__(self, model: str | Path, detector: Detector, margin: float | None = None, min_face: float = 40.0,
                 min_sharpness: float = 30.0, **runner_kwargs: Any) -> None:
        from sdk.runner import Runner

        self.runner = Runner(model, **runner_kwargs)
        card = self.runner.card
        if card is None or card.task != "face-embed":
            raise ModelFormatError(f"{model}: expected a face embedding model with a face-embed card, "
                                   f"got {'no card' if card is None else 'task ' + card.task}; convert it with `edgesdk convert` and a card")
        shape = self.runner.inputs[0].shape
        self.size = tuple(card.input.get("size") or (shape[2], shape[1]))
        self.mean, self.std = card.input.get("mean", 0.0), card.input.get("std", 1.0)  # absent: raw pixels
        self.channel_order = card.input.get("channel_order", "rgb")
        self.margin = float(card.input.get("crop_margin", 0.2) if margin is None else margin)
        self.dim = int(self.runner.outputs[0].shape[-1])
        self.metric = str(card.output.get("metric", "euclidean"))
        self.threshold = float(card.output.get("threshold", card.output.get("default_threshold", 0.6)))
        # the card says whether descriptors are compared as unit vectors (dlib's are not)
        self.normalize = bool(card.output.get("normalised", card.output.get("normalized", False)))
        self.model_hash = hashlib.sha256(self.runner.file.data).hexdigest()
        self.model_name = Path(str(model)).name
        self.detector = detector
        self.min_face, self.min_sharpness = float(min_face), float(min_sharpness)
        self.stats = StageStats()
        self._buf = np.empty((self.size[1], self.size[0], 3), np.float32)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (BGR), largest first, with their chips."""
        with self.stats.time("detect"):
            dets = self.detector.detect(image)
        with self.stats.time("align"):
            return [self._face(image, d) for d in dets]

    def _face(self, image: np.ndarray, d: Any) -> Face:
        side = min(d.box.x2 - d.box.x1, d.box.y2 - d.box.y1)
        sharp = sharpness(image, d.box)
        why = None
        if side < self.min_face:
            why = f"too small ({side:.0f} px < {self.min_face:.0f} px); use a closer photo or lower min_face"
        elif sharp < self.min_sharpness:
            why = f"too blurred (sharpness {sharp:.0f} < {self.min_sharpness:.0f}); use a sharper photo or lower min_sharpness"
        chip = square_crop(image, d.box, self.size, self.margin)
        return Face(d.box, d.score, chip, getattr(d, "keypoints", None), sharp, why)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D) float32 of model-sized BGR chips, L2-normalised when the card says so."""
        from sdk.image import normalize

        out = np.empty((len(chips), self.dim), np.float32)
        with self.stats.time("embed"):
            for i, chip in enumerate(chips):
                x = normalize(chip, self.mean, self.std, self.channel_order, out=self._buf)
                out[i] = self.runner.run(x[None])[0].reshape(-1)
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class FaceApp:
    """Enrol, verify, identify and compare faces against an :class:`EmbeddingStore`.

    Args:
        embedder: Detector + embedding model (``detect``, ``embed``, ``model_hash``...).
        store: The SQLite store (opened for the same model), or ``None`` for ``compare``.
    """

    def __init__(self, embedder: Any, store: EmbeddingStore | None = None) -> None:
        self.embedder, self.store = embedder, store

    def usable(self, faces: list[Face], where: str, largest: bool = False) -> Face:
        """The one usable face of an image, or a FaceError saying why there is none."""
        if not faces:
            raise FaceError(f"{where}: no face found (use a frontal, well-lit photo in which the face fills a good part; "
                            "or try the other detector)", param="detector")
        if len(faces) > 1 and not largest:
            raise FaceError(f"{where}: {len(faces)} faces found; crop the image to one face or set largest", param="largest")
        face = max(faces, key=lambda f: f.box.area)
        if face.rejected:
            param = next((p for p in ("min_face", "min_sharpness") if p in face.rejected), None)
            raise FaceError(f"{where}: face {face.rejected}", param=param)
        return face

    def embed_image(self, image: np.ndarray, where: str, largest: bool = False) -> np.ndarray:
        """The embedding (D,) of the one usable face in ``image``."""
        face = self.usable(self.embedder.detect(image), where, largest)
        return self.embedder.embed([face.chip])[0]

    def embed_file(self, path: str | Path, largest: bool = False) -> np.ndarray:
        return self.embed_image(read_image(path), str(path), largest)

    def require_store(self) -> EmbeddingStore:
        """The database, or a FaceError when the command was given none."""
        if self.store is None:
            raise FaceError("this command needs a face database (db)", param="db")
        return self.store

    def enroll(self, name: str, paths: Sequence[str | Path], largest: bool = False, skip_bad: bool = False) -> dict:
        """Embed every image, then add them all to ``name`` in one transaction.

        With ``skip_bad``, unusable images are skipped with a warning; otherwise the first one
        aborts the enrolment. Nothing is written unless at least one image is usable.
        """
        vecs, used = [], []
        for p in paths:
            try:
                vecs.append(self.embed_file(p, largest))
                used.append(str(p))
            except FaceError as e:
                if not skip_bad:
                    raise FaceError(f"{e}; nothing enrolled") from e
                log.warning("skipped %s", e)
        if not vecs:
            raise FaceError(f"enroll {name!r}: none of the {len(paths)} image(s) holds a usable face; nothing enrolled")
        return self.enroll_vectors(name, np.stack(vecs), used, len(paths) - len(used))

    def enroll_vectors(self, name: str, vecs: np.ndarray, sources: Sequence[str], skipped: int = 0) -> dict:
        total = self.require_store().enroll(name, vecs, sources)
        return {"name": name, "enrolled": len(vecs), "skipped": skipped, "embeddings": total}

    def verify(self, name: str, path: str | Path, threshold: float | None = None, largest: bool = False) -> Match:
        store = self.require_store()
        store.embeddings_of(name)  # unknown name fails before the (slow) embedding
        return store.verify(name, self.embed_file(path, largest), threshold)

    def identify(self, path: str | Path, threshold: float | None = None, largest: bool = False) -> Match:
        store = self.require_store()
        store.require_enrolled()  # before the (slow) embedding
        return store.identify(self.embed_file(path, largest), threshold)

    def compare(self, a: str | Path, b: str | Path, threshold: float | None = None, largest: bool = False) -> dict:
        from sdk.embeddings import distances

        ea, eb = self.embed_file(a, largest), self.embed_file(b, largest)
        thr = threshold if threshold is not None else (self.store.threshold if self.store else self.embedder.threshold)
        d = float(distances(ea[None], eb, self.embedder.metric)[0])
        return {"distance": round(d, 4), "match": d <= thr, "threshold": round(thr, 4)}
