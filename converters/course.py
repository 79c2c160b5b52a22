"""The Deep Learning Specialization's trigger-word model: recognised by its shapes, given its card.

The course's network reads 10 s of 44.1 kHz audio as a ``[5511, 101]`` power spectrogram
(matplotlib ``specgram(data, 200, 8000, noverlap=120)``, :class:`sdk.audio.CourseSpectrogram`)
and outputs one sigmoid per 1,375 steps. A converted file needs that recipe in its card to run
under ``edgesdk trigger-word``; when no card is given and the input is exactly ``[5511, 101]``
the converter uses :func:`course_card` and says so in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sdk.audio import CourseParams
from sdk.card import ModelCard

log = logging.getLogger("edgesdk")

COURSE_INPUT = (5511, 101)


def course_card(word: str = "activate", threshold: float = 0.5) -> ModelCard:
    """The card of a course-style trigger-word model (features, 10 s window, per-step sigmoid)."""
    p = CourseParams()
    window_s = (p.nfft + (COURSE_INPUT[0] - 1) * p.hop_length) / p.sample_rate
    return ModelCard(
        task="trigger-word",
        input={"features": p.to_dict(), "window_s": window_s, "hop_s": 0.5},
        output={"word": word, "threshold": threshold, "smoothing": 1, "refractory_s": 1.0, "score": "probability"},
        notes="Deep Learning Specialization trigger-word architecture: course spectrogram features, one sigmoid per step",
    )


def guess_card(inputs: Sequence[Sequence[Any]]) -> ModelCard | None:
    """:func:`course_card` for a model whose only input is ``[batch, 5511, 101]``, else ``None`` (said on stderr)."""
    if len(inputs) != 1 or tuple(inputs[0][1:]) != COURSE_INPUT:
        return None
    log.warning("card: input [%d, %d] is the course trigger-word model's: embedding its card (course spectrogram at 44.1 kHz, "
                "word 'activate', threshold 0.5); give another with card= (CLI --card CARD.yaml)", *COURSE_INPUT)
    return course_card()
