"""A deterministic trigger-word model that fires on a loud ~1 kHz tone, and its own checks.

Other trigger-word tests import :func:`tone_model` (pytest puts ``tests/`` on ``sys.path``).
The model has fixed weights (no training): per frame, the mean log-mel energy of the bands
around 1 kHz minus the mean of the other bands; a tone burst makes that difference large,
noise and silence keep it near 0. Built with TensorFlow and converted to a real ``.tflite``
with an embedded trigger-word card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.trigger_word.app import TriggerWordDetector, card_fields
from sdk.audio import FeatureParams, mel_filterbank
from sdk.card import ModelCard, embed_card

SR = 16000
WINDOW_S = 0.5
HOP_S = 0.05


def tone_weights(params: FeatureParams, lo: float = 800.0, hi: float = 1250.0) -> np.ndarray:
    """Weights over mel bands: +mean of the bands peaking in [lo, hi] Hz, -mean of the rest."""
    fb = mel_filterbank(params)
    centres = np.linspace(0, params.sample_rate / 2, fb.shape[1])[fb.argmax(axis=1)]
    tone = (centres >= lo) & (centres <= hi)
    return np.where(tone, 1.0 / tone.sum(), -1.0 / (~tone).sum()).astype(np.float32)


def tone_model(out: Path, sequence: bool = False, word: str = "tone", threshold: float = 0.5, **output) -> Path:
    """Write a tone-detector ``.tflite`` with a trigger-word card to ``out``.

    Args:
        out: Destination file.
        sequence: Output ``[1, T, 1]`` (one score per frame, like the course model) instead of ``[1, 1]``.
        word, threshold, output: Card fields.
    """
    import tensorflow as tf

    params = FeatureParams()
    frames = 1 + (int(WINDOW_S * SR) - params.win_length) // params.hop_length
    w = tf.constant(tone_weights(params)[:, None])

    @tf.function(input_signature=[tf.TensorSpec([1, frames, params.n_mels], tf.float32)])
    def model(x):
        per_frame = tf.sigmoid(2.0 * (tf.matmul(x[0], w) - 6.0))  # [T, 1]
        if sequence:
            return per_frame[None]  # [1, T, 1]
        return tf.reduce_mean(per_frame[-10:], axis=0, keepdims=True)  # [1, 1]: the newest 0.1 s

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    card = ModelCard(**card_fields(word, params, WINDOW_S, HOP_S, threshold, **output), notes="test tone detector")
    out.write_bytes(embed_card(conv.convert(), card))
    return out


def tone_stream(bursts: list[tuple[float, float]], total_s: float, seed: int = 0, freq: float = 1000.0) -> np.ndarray:
    """Quiet noise of ``total_s`` seconds with loud tone bursts at ``(start_s, length_s)``."""
    rng = np.random.default_rng(seed)
    x = (0.01 * rng.standard_normal(int(total_s * SR))).astype(np.float32)
    for start, length in bursts:
        a, b = int(start * SR), int((start + length) * SR)
        x[a:b] += 0.5 * np.sin(2 * np.pi * freq * np.arange(b - a) / SR).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def tone_tflite(tmp_path_factory) -> Path:
    return tone_model(tmp_path_factory.mktemp("tone") / "tone.tflite")


@pytest.mark.tensorflow
def test_tone_model_fires_on_tone_only(tone_tflite):
    det = TriggerWordDetector(tone_tflite)
    assert det.word == "tone" and det.threshold == 0.5
    assert det.process(tone_stream([], 3.0)) == []
    det.reset()
    events = det.process(tone_stream([(1.0, 0.3)], 3.0))
    assert len(events) == 1
    assert 1.0 < events[0]["time"] <= 1.4 and events[0]["score"] >= 0.5
    det.reset()
    assert det.process(tone_stream([(1.0, 0.3)], 3.0, freq=3000.0)) == []  # the wrong pitch
