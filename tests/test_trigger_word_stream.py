"""The default trigger-word model streamed in any chunks gives the scores and events of a plain recomputation.

The reference recomputes every hop from scratch, as if nothing were kept between hops: the
mel spectrogram of the whole 1.98 s window, one front-end call for its 16 embeddings, the head,
the detector's threshold logic. The detector keeps mel frames by stream position, interpreters
by input length and the front end's int8 embeddings as the head's input; none of that may change
a bit of any score. (Before those changes, this reference equalled the detector's scores bit for
bit on 262 s of speech in chunks of 1280 and 4000, a ragged pattern and the whole file.)
"""

from __future__ import annotations

import numpy as np
import pytest

from apps.trigger_word.app import DEFAULT_MODEL, TriggerLogic, TriggerWordDetector
from sdk.runner import Runner
from sdk.sources.audio import read_wav
from sdk.speech_embedding import SpeechMel, frontend_bytes

SAMPLES = DEFAULT_MODEL.parents[1] / "samples"
RAGGED = (1, 333, 1279, 1280, 1281, 2560, 4000, 12000, 40000, 7)

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the default trigger-word model is not installed")


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """~26 s: the bundled samples (the word, then another), the word again quieter, between stretches of noise."""
    rng = np.random.default_rng(7)
    word, _ = read_wav(SAMPLES / "activate.wav", 16000)
    other, _ = read_wav(SAMPLES / "other.wav", 16000)

    def pause(s: float) -> np.ndarray:
        return np.zeros(int(s * 16000), np.float32)

    x = np.concatenate([pause(3.0), word, pause(2.0), other, pause(1.3), 0.5 * word, pause(2.5), other[: 16000 * 3], pause(2.0)])
    return x + (0.003 * rng.standard_normal(x.shape[0])).astype(np.float32)


def _chunks(n: int, sizes: tuple[int, ...]) -> list[slice]:
    out, i = [], 0
    while i < n:
        c = sizes[len(out) % len(sizes)]
        out.append(slice(i, i + c))
        i += c
    return out


@pytest.fixture(scope="module")
def reference(audio) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Times, raw scores and events, every hop recomputed from its whole window."""
    head = Runner(DEFAULT_MODEL, threads=1)
    front = Runner(frontend_bytes(head.file, head.name), threads=1)
    det = TriggerWordDetector(head)
    window, hop, mel = det.window_samples, det.hop_samples, SpeechMel()
    logic = TriggerLogic(det.logic.threshold, det.logic.smoothing, det.logic.refractory_s)
    times, scores, events = [], [], []
    for end in range(-(-window // hop) * hop, audio.shape[0] + 1, hop):  # hop boundaries from the first full window on
        frames = mel(audio[end - window : end])
        emb = front.run(frames[None, :, :, None])[0].reshape(det.n_frames, -1)
        logit = np.asarray(head.run(emb[None])[0], np.float32).reshape(-1)
        score = float((0.5 * (1.0 + np.tanh(0.5 * logit)))[0])
        times.append(end / det.sample_rate)
        scores.append(score)
        fired = logic.update(times[-1], score)
        if fired is not None:
            events.append({"event": "trigger", "word": det.word, "time": round(times[-1], 3), "score": round(fired, 4)})
    return np.array(times), np.array(scores), events


def test_reference_has_events(reference):
    times, _, events = reference
    assert times.shape[0] > 250
    assert 1 <= len(events) <= 2  # the word at full level, maybe the quieter one; never the other word


@pytest.mark.parametrize("sizes", [(1280,), (4000,), RAGGED, (10**9,)], ids=["1280", "4000", "ragged", "whole"])
def test_chunked_stream_equals_recomputation(audio, reference, sizes):
    times, scores, events = reference
    det = TriggerWordDetector(Runner(DEFAULT_MODEL, threads=1))
    assert det._raw and det._table is not None  # int8 embeddings straight to the head, scores looked up
    parts = [det.scores(audio[s]) for s in _chunks(audio.shape[0], sizes)]
    np.testing.assert_array_equal(np.concatenate([t for t, _ in parts]), times)
    np.testing.assert_array_equal(np.concatenate([s for _, s in parts]), scores)
    det = TriggerWordDetector(Runner(DEFAULT_MODEL, threads=1))
    assert [e for s in _chunks(audio.shape[0], sizes) for e in det.process(audio[s])] == events


def test_reset_starts_a_new_stream(audio, reference):
    """Stream positions restart at 0 after a reset: nothing kept from the last stream may be read back."""
    _, _, events = reference
    det = TriggerWordDetector(Runner(DEFAULT_MODEL, threads=1))
    noise = (0.1 * np.random.default_rng(3).standard_normal(5 * 16000)).astype(np.float32)  # its frames all still kept
    for s in _chunks(noise.shape[0], (4000,)):
        det.process(noise[s])
    det.reset()
    assert [e for s in _chunks(audio.shape[0], (1280,)) for e in det.process(audio[s])] == events
