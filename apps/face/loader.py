"""Find and load the face pipeline: detector (BlazeFace or Haar) + embedding model.

The shipped default models live in ``apps/face/models/`` and are recognised by their model
cards (``face-detect`` and ``face-embed``), not by file name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdk.errors import ModelFormatError

log = logging.getLogger("edgesdk.face")
MODELS_DIR = Path(__file__).resolve().parent / "models"


def shipped_models(task: str, folder: Path = MODELS_DIR) -> list[Path]:
    """``.tflite`` files in ``folder`` whose card has ``task``; full-int8 ones first."""
    from sdk.card import read_card

    found = []
    for p in sorted(folder.glob("*.tflite")) if folder.is_dir() else []:
        try:
            card = read_card(p)
        except ModelFormatError:
            continue
        if card is not None and card.task == task:
            found.append((str(card.quantization.get("mode", "")) != "int8", p.name, p))
    return [p for *_, p in sorted(found)]


def make_detector(kind: str, min_face: int = 40, **runner_kwargs: Any) -> Any:
    """A detector with ``detect(image) -> [obj with .box, .score(, .keypoints)]``.

    Raises:
        ModelFormatError: If BlazeFace is asked for and no face-detect model is shipped.
    """
    if kind == "haar":
        from sdk.face.haar import HaarDetector

        return HaarDetector(min_size=min_face)
    models = shipped_models("face-detect")
    if not models:
        raise ModelFormatError(f"no BlazeFace model (face-detect card) in {MODELS_DIR}; use --detector haar")
    from sdk.face.blazeface import BlazeFace

    return BlazeFace(models[0], **runner_kwargs)


def load_embedder(model: str | Path | None, detector: str = "blazeface", min_face: int = 40, **runner_kwargs: Any) -> Any:
    """The embedder the face commands use: ``model`` behind ``detector``, or the shipped default.

    Raises:
        ModelFormatError: If no model is given and none is shipped.
    """
    from apps.face.app import TFLiteEmbedder

    if model is None:
        models = shipped_models("face-embed")
        if not models:
            raise ModelFormatError(f"no face embedding model shipped in {MODELS_DIR}; pass --model EMBED.tflite "
                                   "(a face-embed model, e.g. from `edgesdk train face` or `edgesdk models pull`)")
        model = models[0]
    return TFLiteEmbedder(model, make_detector(detector, min_face, **runner_kwargs), **runner_kwargs)
