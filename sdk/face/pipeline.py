"""The default face pipeline: BlazeFace → aligned 150x150 chip → dlib ResNet (int8) → 128-d descriptor.

The caller names both models: the face app ships the defaults (with a README on sources,
licenses and numbers) and passes their paths; other models with ``face-detect`` /
``face-embed`` cards can be given. Both carry model cards.

API (what the face app calls)::

    from sdk.face.pipeline import FacePipeline
    fp = FacePipeline(detector_path, embed_path)  # FacePipeline(det, emb, threads=1, delegate=...) passes Runner kwargs
    faces = fp.faces(frame_bgr)                # list[Face], best score first
    face = faces[0]
    face.box, face.score, face.keypoints       # Box in pixels, float, [6, 2] (see sdk.face.blazeface.KEYPOINTS)
    face.chip                                  # [150, 150, 3] uint8 RGB aligned chip
    face.rejected                              # None, or why it should not be enrolled/compared ("too small: ...", "blurred: ...")
    vec = fp.embed(face.chip)                  # (128,) float32, dlib semantics: NOT normalised
    fp.distance(vec_a, vec_b)                  # Euclidean; same person when < fp.threshold
    fp.threshold, fp.metric, fp.embedding_size, fp.model_id   # from the embed model's card / file hash
    fp.stats.summaries()                       # per-stage latency: detect, refine, align, embed (ms p50/p90/p99)

Descriptors follow dlib: Euclidean distance, same person below ``threshold`` (dlib's 0.6,
re-checked for the int8 model; the card says which). ``model_id`` (SHA-256 of the embed
model file) lets a store refuse embeddings that came from another model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError
from sdk.face import align
from sdk.stats import StageStats
from sdk.types import Box

MIN_FACE_PX = 40.0  # eye-to-mouth-scaled face size below which dlib descriptors degrade
MIN_SHARPNESS = 15.0  # variance of the Laplacian of the grey chip (Gaussian blur sigma 1: ~26, sigma 2: ~8)


@dataclass(frozen=True)
class Face:
    """A detected face, its aligned chip (RGB) and the quality verdict."""

    box: Box
    score: float
    keypoints: np.ndarray
    chip: np.ndarray
    size_px: float
    sharpness: float
    rejected: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"box": self.box.as_list(), "score": round(self.score, 4), "size_px": round(self.size_px, 1),
                "sharpness": round(self.sharpness, 1), "rejected": self.rejected}


def sharpness(chip_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the chip's grey levels (low: blurred)."""
    import cv2

    grey = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def _file_id(path_or_bytes: str | Path | bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


class FacePipeline:
    """Detect → align → embed, with per-stage latency in :attr:`stats`.

    Args:
        detector_model: BlazeFace ``.tflite`` (path or bytes), e.g. the face app's shipped short-range model.
        embed_model: Face embedding ``.tflite`` (path or bytes) with a ``face-embed`` card, e.g. the
            face app's dlib ResNet int8.
        min_face_px: Faces smaller than this (pixels, from the keypoints' spread) are rejected.
        min_sharpness: Chips with a Laplacian variance below this are rejected as blurred.
        score_threshold: Detector score threshold (default: the card's, 0.5).
        refine: Re-run the detector on a crop around each face for precise keypoints
            (:meth:`~sdk.face.blazeface.BlazeFace.refine`; ~2.5 ms per face, stage ``refine``).
        **runner_kwargs: :class:`~sdk.runner.Runner` options for both models (``threads``, ``delegate``...).

    Raises:
        ModelFormatError: A model file is missing or does not fit its role.
    """

    def __init__(self, detector_model: str | Path | bytes, embed_model: str | Path | bytes, *,
                 min_face_px: float = MIN_FACE_PX, min_sharpness: float = MIN_SHARPNESS, score_threshold: float | None = None,
                 refine: bool = True, **runner_kwargs: Any) -> None:
        from sdk.face.blazeface import BlazeFace
        from sdk.runner import Runner

        det = _existing(detector_model, "detector")
        emb = _existing(embed_model, "embedding")
        self.detector = BlazeFace(det, score_threshold=score_threshold, **runner_kwargs)
        self.embedder = Runner(emb, **runner_kwargs)
        card = self.embedder.card
        out = dict(card.output) if card else {}
        if card is not None and card.task != "face-embed":
            raise ModelFormatError(f"{self.embedder.name}: card task is {card.task!r}, expected 'face-embed'")
        shape = self.embedder.inputs[0].shape
        self.chip_size = int(shape[1]) if len(shape) == 4 else align.CHIP_SIZE
        inp = dict(card.input) if card else {}
        self.chip_padding = float(inp.get("align", {}).get("padding", align.CHIP_PADDING))
        self.embedding_size = int(out.get("embedding_size", self.embedder.outputs[0].shape[-1]))
        self.metric = str(out.get("metric", "euclidean"))
        self.threshold = float(out.get("threshold", 0.6))
        self.model_id = _file_id(emb)
        self.min_face_px, self.min_sharpness = float(min_face_px), float(min_sharpness)
        self.refine = bool(refine)
        self.stats = StageStats()

    def faces(self, image_bgr: np.ndarray, max_faces: int | None = None) -> list[Face]:
        """Faces in a BGR ``uint8`` image, best first, each with its aligned RGB chip and verdict."""
        import cv2

        with self.stats.time("detect"):
            dets = self.detector.detect(image_bgr)[:max_faces]
        if self.refine:
            with self.stats.time("refine"):
                dets = [self.detector.refine(image_bgr, d) for d in dets]
        out = []
        with self.stats.time("align"):
            for d in dets:
                m = align.blazeface_transform(d.keypoints, self.chip_size, self.chip_padding)
                chip = cv2.cvtColor(align.warp_chip(image_bgr, m, self.chip_size), cv2.COLOR_BGR2RGB)
                # face size: the chip's scale says how many image pixels the chip's face spans
                size_px = self.chip_size / (1 + 2 * self.chip_padding) / float(np.hypot(m[0, 0], m[1, 0]))
                sharp = sharpness(chip)
                out.append(Face(d.box, d.score, d.keypoints, chip, size_px, sharp, self._verdict(size_px, sharp)))
        return out

    def _verdict(self, size_px: float, sharp: float) -> str | None:
        if size_px < self.min_face_px:
            return f"too small: face {size_px:.0f} px < {self.min_face_px:.0f} px (move closer or use a larger image)"
        if sharp < self.min_sharpness:
            return f"blurred: sharpness {sharp:.0f} < {self.min_sharpness:.0f} (hold still, improve the light)"
        return None

    def embed(self, chip_rgb: np.ndarray) -> np.ndarray:
        """The ``(embedding_size,)`` float32 descriptor of one aligned RGB chip (not normalised)."""
        chip = np.asarray(chip_rgb)
        if chip.shape[:2] != (self.chip_size, self.chip_size) or chip.ndim != 3:
            raise ValueError(f"embed expects a {self.chip_size}x{self.chip_size}x3 RGB chip, got shape {chip.shape}")
        with self.stats.time("embed"):
            out = self.embedder.run(chip[None].astype(np.float32))[0]
        return out.reshape(-1).astype(np.float32)

    def embed_faces(self, image_bgr: np.ndarray, max_faces: int | None = None) -> list[tuple[Face, np.ndarray]]:
        """:meth:`faces` then :meth:`embed` for every face (rejected ones included; check ``face.rejected``)."""
        return [(f, self.embed(f.chip)) for f in self.faces(image_bgr, max_faces)]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance between two descriptors in the card's metric (Euclidean or cosine)."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if self.metric == "cosine":
            return float(1.0 - a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
        return float(np.linalg.norm(a - b))


def _existing(model: str | Path | bytes, role: str) -> Path | bytes:
    if isinstance(model, (bytes, bytearray)):
        return model
    p = Path(model)
    if not p.is_file():
        raise ModelFormatError(f"{p}: face {role} model not found")
    return p
