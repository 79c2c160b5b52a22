"""Find and load the face pipeline: detector (BlazeFace or Haar) + embedding model.

The default is :class:`sdk.face.pipeline.FacePipeline` (BlazeFace → aligned 150x150 chip →
dlib ResNet int8), used whenever BlazeFace is the detector and the embedding model is the
shipped one or another aligned-chip model (card ``input.align``). Any other combination
(``--detector haar``, or a model trained with square crops) runs through
:class:`apps.face.app.TFLiteEmbedder`, which crops the detector's box with a margin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, Face, TFLiteEmbedder
from apps.registry import APPS
from sdk.errors import ModelFormatError


class PipelineEmbedder:
    """:class:`sdk.face.pipeline.FacePipeline` behind the interface :class:`FaceApp` uses."""

    def __init__(self, pipeline: Any, model_name: str) -> None:
        self.pipeline = pipeline
        self.model_hash, self.model_name = pipeline.model_id, model_name
        self.dim, self.metric, self.threshold = pipeline.embedding_size, pipeline.metric, pipeline.threshold
        self.stats = pipeline.stats

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face(f.box, f.score, f.chip, f.keypoints, f.sharpness, f.rejected) for f in self.pipeline.faces(image)]

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.pipeline.embed(c) for c in chips]).astype(np.float32)


def make_detector(kind: str, min_face: float = 40, **runner_kwargs: Any) -> Any:
    """A detector with ``detect(image) -> [obj with .box, .score(, .keypoints)]``."""
    if kind == "haar":
        from sdk.face.haar import HaarDetector

        return HaarDetector(min_size=int(min_face))
    from sdk.face.blazeface import BlazeFace

    if not DEFAULT_DETECTOR.is_file():
        raise ModelFormatError(f"{DEFAULT_DETECTOR}: BlazeFace model missing; use the haar detector", param="detector")
    return BlazeFace(DEFAULT_DETECTOR, **runner_kwargs)


def load_embedder(model: str | Path | None, detector: str = "blazeface", min_face: float | None = None,
                  min_sharpness: float | None = None, **runner_kwargs: Any) -> Any:
    """The embedder the face commands use: ``model`` (default: the shipped one) behind ``detector``.

    Raises:
        ModelFormatError: If no model is given and none is shipped, or a model does not fit.
    """
    from sdk.card import read_card
    from sdk.face import pipeline as fp

    path = Path(model) if model is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = ("the shipped default is missing; give a model: EMBED.tflite (a face-embed model, e.g. from "
                "`edgesdk train face` or `edgesdk models pull`)") if model is None else "no such file"
        raise ModelFormatError(f"{path}: {hint}", param="model")
    card = read_card(path)
    aligned = path == DEFAULT_MODEL or bool(card and "align" in card.input)
    quality = {k: v for k, v in (("min_face", min_face), ("min_sharpness", min_sharpness)) if v is not None}
    if detector == "blazeface" and aligned:
        if not DEFAULT_DETECTOR.is_file():
            raise ModelFormatError(f"{DEFAULT_DETECTOR}: face detector model not found (rebuild with: python {APPS['face'].rebuild})")
        pipe = fp.FacePipeline(DEFAULT_DETECTOR, path, min_face_px=quality.get("min_face", fp.MIN_FACE_PX),
                               min_sharpness=quality.get("min_sharpness", fp.MIN_SHARPNESS), **runner_kwargs)
        return PipelineEmbedder(pipe, path.name)
    return TFLiteEmbedder(path, make_detector(detector, quality.get("min_face", 40), **runner_kwargs), **quality, **runner_kwargs)
