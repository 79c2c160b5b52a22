"""The pretrained speech front end: NumPy spectrogram, batched embeddings, heads that carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.trigger_word.app import TriggerWordDetector, card_fields
from apps.trigger_word.train import FRONTEND
from sdk import speech_embedding as E
from sdk.card import ModelCard, embed_card, embed_metadata
from sdk.errors import ModelFormatError
from sdk.runner import Runner
from sdk.tflite_file import TFLiteFile

SR = 16000


def test_mel_filters_cover_60_to_3800_hz_with_unit_area():
    m = E.mel_matrix()
    assert m.shape == (257, 32)
    hz = np.linspace(0, 8000, 257)
    used = hz[m.sum(axis=1) > 0]
    assert 60 <= used.min() < 100 and 3700 < used.max() <= 3800
    peaks = hz[m.argmax(axis=0)]
    assert np.all(np.diff(peaks) > 0)  # ordered bands
    area = m.sum(axis=0) * (hz[1] - hz[0])  # Slaney normalisation: each triangle has area ~1 (in Hz * 1/Hz-width)
    np.testing.assert_allclose(area[4:], area[4], rtol=0.2)


def test_mel_of_a_tone_peaks_in_its_band_and_slices_give_the_same_frames(rng):
    x = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32) + 0.001 * rng.standard_normal(SR).astype(np.float32)
    mel = E.SpeechMel()(x)
    assert mel.shape == (1 + (SR - 512) // 160, 32)
    band = E.mel_matrix()[int(1000 / 8000 * 256)].argmax()
    assert np.all(mel.argmax(axis=1) == band)
    np.testing.assert_array_equal(E.SpeechMel()(x[1600:9000]), mel[10 : 10 + E.SpeechMel.frames_for(7400)])
    assert E.SpeechMel()(x[:500]).shape == (0, 32)
    silent = E.SpeechMel()(np.zeros(2000, np.float32))
    np.testing.assert_allclose(silent, -8.0)  # the 1e-10 floor: 10*log10(1e-10) / 10 + 2


@pytest.fixture(scope="module")
def front() -> E.SpeechEmbedding:
    return E.SpeechEmbedding(Runner(FRONTEND, threads=1))


def test_batched_embeddings_equal_one_window_at_a_time(front, rng):
    x = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    emb = front(x)
    p = front.params
    assert emb.shape == (1 + (3 * SR - p.win_length) // p.hop_length, 96) and p.win_length == 12512 and p.hop_length == 1280
    for k in (0, 7, emb.shape[0] - 1):
        one = front(x[k * p.hop_length : k * p.hop_length + p.win_length])
        np.testing.assert_array_equal(one[0], emb[k])
    assert front(x[: p.win_length - 1]).shape == (0, 96)


def _counting(front: E.SpeechEmbedding) -> list[int]:
    """Makes ``front`` record how many mel frames each of its spectrogram calls computes."""
    computed: list[int] = []
    mel = front.mel
    front.mel = lambda s: computed.append(mel.frames_for(len(s))) or mel(s)
    return computed


def test_stream_positions_compute_each_mel_frame_once(rng):
    x = (0.1 * rng.standard_normal(4 * SR)).astype(np.float32)
    front = E.SpeechEmbedding(Runner(FRONTEND, threads=1))
    whole = front(x)
    computed = _counting(front)
    p = front.params
    win, hop = p.win_length, p.hop_length
    # a detector's calls: the whole first window, then the newest window after k new hops
    end = win + 15 * hop
    front(x[:end], start=0)
    assert computed == [76 + 8 * 15]
    got = []
    for k in (1, 1, 3, 1, 2, 5, 1):
        end += k * hop
        computed.clear()
        got.append(front(x[end - win - (k - 1) * hop : end], start=end - win - (k - 1) * hop))
        assert computed == [8 * k]  # not 76 + 8 (k - 1): the other 68 frames were computed before
    np.testing.assert_array_equal(np.concatenate(got), whole[16 : 16 + 14])
    # a window that lies inside the frames kept computes nothing
    computed.clear()
    np.testing.assert_array_equal(front(x[end - win - hop : end - hop], start=end - win - hop)[0], whole[28])
    assert computed == []


def test_stream_positions_off_the_grid_jumps_and_resets_recompute(rng):
    x = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)
    front = E.SpeechEmbedding(Runner(FRONTEND, threads=1))
    whole = front(x)
    computed = _counting(front)
    win, hop = front.params.win_length, front.params.hop_length
    front(x[:win], start=0)
    for start in (hop + 80, 20 * hop, 5 * hop):  # another frame phase, a gap ahead, a jump back
        computed.clear()
        out = front(x[start : start + win], start=start)
        assert computed == [76]
        if start % hop == 0:
            np.testing.assert_array_equal(out[0], whole[start // hop])
    # the same positions after a reset are another stream: nothing is read back
    other = (0.1 * rng.standard_normal(win)).astype(np.float32)
    front.reset()
    computed.clear()
    np.testing.assert_array_equal(front(other, start=5 * hop), front(other))
    assert computed == [76, 76]


def test_input_lengths_keep_their_interpreters(rng, monkeypatch):
    """A stream alternating between lengths never re-allocates; past MAX_SHAPES the oldest interpreter is resized."""
    from sdk.engine import InterpreterEngine

    x = (0.1 * rng.standard_normal(4 * SR)).astype(np.float32)
    front = E.SpeechEmbedding(Runner(FRONTEND, threads=1))
    whole = front(x)
    assert front._pool == [front.runner]  # a call without a stream position keeps no extra interpreter
    win, hop = front.params.win_length, front.params.hop_length
    resizes = []
    resize = InterpreterEngine.resize
    monkeypatch.setattr(InterpreterEngine, "resize", lambda self, *a: resizes.append(a) or resize(self, *a))

    def newest(k: int) -> np.ndarray:  # the embeddings of the k hops up to the 30th, as a detector asks
        start = (30 - k) * hop
        return front(x[start : start + win + (k - 1) * hop], start=start)

    for k in (3, 4):
        newest(k)
    resizes.clear()
    for k in (3, 4, 3, 3, 4, 4, 3):  # 4000-sample chunks complete 3 or 4 hops
        np.testing.assert_array_equal(newest(k), whole[30 - k : 30])
    assert resizes == []
    for k in (1, 2, 5, 6, 3):
        np.testing.assert_array_equal(newest(k), whole[30 - k : 30])
        assert len(front._pool) <= front.MAX_SHAPES
    assert len(resizes) >= 3  # the lengths beyond MAX_SHAPES reuse the least recently used interpreters
    assert len({id(r.file) for r in front._pool}) == 1  # one parsed model for all


def test_raw_embeddings_are_the_stored_integers(front, rng):
    x = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    raw = front(x, raw=True)
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(front.runner.outputs[0].dequantize(raw), front(x))


def test_frontend_shape_is_checked(tmp_path):
    from tests.test_audio_tone_model import tone_model

    with pytest.raises(ModelFormatError, match=r"must be \[1, frames, 32, 1\]"):
        E.SpeechEmbedding(Runner(tone_model(tmp_path / "t.tflite")))


def _head(path: Path, embed_front: bool = True, logit: bool = False) -> Path:
    """A fixed-weight head: the score is a sigmoid of the newest embedding's mean (or that mean as a logit)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 96], tf.float32)])
    def model(x):
        m = tf.reduce_mean(x[:, -1:, :], axis=2)
        return m if logit else tf.sigmoid(m)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    p = E.EmbeddingParams()
    out = {"score": "logit"} if logit else {}
    card = ModelCard(**card_fields("thing", p, (p.win_length + 15 * p.hop_length) / SR, p.hop_length / SR, 0.5, **out))
    data = embed_card(conv.convert(), card)
    if embed_front:
        data = embed_metadata(data, E.FRONTEND_METADATA, FRONTEND.read_bytes())
    path.write_bytes(data)
    return path


@pytest.mark.tensorflow
def test_head_with_embedded_frontend_streams_chunk_invariantly(tmp_path, rng):
    model = _head(tmp_path / "head.tflite")
    assert TFLiteFile.from_path(model).metadata[E.FRONTEND_METADATA] == FRONTEND.read_bytes()
    x = (0.05 * rng.standard_normal(5 * SR)).astype(np.float32)
    x[2 * SR : 3 * SR] *= 10
    ref = TriggerWordDetector(model).scores(x)
    # a score at every 80 ms boundary from the first full window (31712 samples) on: 2.0 s, 2.08 s ... 4.96 s
    assert ref[0].shape[0] == 38 and ref[0][0] == pytest.approx(2.0) and ref[0][-1] == pytest.approx(4.96)
    for chunk in (1000, 1280, 7000, len(x)):
        det = TriggerWordDetector(model)
        parts = [det.scores(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        np.testing.assert_array_equal(np.concatenate([t for t, _ in parts]), ref[0])
        np.testing.assert_array_equal(np.concatenate([s for _, s in parts]), ref[1])


@pytest.mark.tensorflow
def test_logit_head_scores_are_the_sigmoid_of_its_output(tmp_path, rng):
    x = (0.05 * rng.standard_normal(3 * SR)).astype(np.float32)
    _, prob = TriggerWordDetector(_head(tmp_path / "p.tflite")).scores(x)
    _, from_logit = TriggerWordDetector(_head(tmp_path / "l.tflite", logit=True)).scores(x)
    np.testing.assert_allclose(from_logit, prob, rtol=1e-5)
    assert np.all((prob > 0) & (prob < 1))


@pytest.mark.tensorflow
def test_head_without_its_frontend_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFormatError, match="no 'edgesdk.frontend' metadata"):
        TriggerWordDetector(_head(tmp_path / "bare.tflite", embed_front=False))


def test_embed_metadata_replaces_and_keeps_card(tmp_path):
    from sdk.card import read_card
    from tests.test_audio_tone_model import tone_model

    data = tone_model(tmp_path / "t.tflite").read_bytes()
    once = embed_metadata(data, "x", b"one")
    twice = embed_metadata(once, "x", b"two")
    f = TFLiteFile(twice)
    assert f.metadata["x"] == b"two" and read_card(f).task == "trigger-word"
    assert len(twice) < len(once) + 64  # replaced, not appended


@pytest.mark.tensorflow
def test_converter_gives_a_dynamic_length_axis_the_calibration_length(tmp_path, rng):
    """Without the fix the default length is 1, too short for the valid convolution: the model cannot even load."""
    import keras

    from converters.convert import convert

    inp = keras.Input((None, 8))
    out = keras.layers.Conv1D(4, 5, activation="relu")(keras.layers.Conv1D(4, 5)(inp))
    calib = rng.standard_normal((50, 30, 8)).astype(np.float32)
    res = convert(keras.Model(inp, out), mode="int8", output=tmp_path / "m_int8.tflite", calibration=calib, progress=False)
    f = TFLiteFile.from_path(res.path)
    assert list(f.inputs[0].shape) == [1, 30, 8] and list(f.inputs[0].shape_signature) == [1, -1, 8]
    r = Runner(res.path)
    assert r.run(calib[0])[0].shape == (1, 22, 4)
    assert r.run(rng.standard_normal((1, 60, 8)).astype(np.float32))[0].shape == (1, 52, 4)  # resized on the fly
