"""Recurrent routes: the streaming step model equals the full model, the route is chosen per model and said,
and a converted course-style model runs in the trigger-word app (file input, any chunk size)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from converters.recurrent import UNROLL_MAX_STEPS, StreamPlan, choose_route

pytestmark = pytest.mark.tensorflow


def test_route_rules():
    plan = StreamPlan(43, 32, 8, 15, 4, 101, 5511, 1375)
    assert choose_route("auto", "int8", "cpu", 1375, plan)[0] == "stream"
    assert choose_route("auto", "fp32", "cpu", 1375, plan)[0] == "stream"
    assert choose_route("auto", "int8", "cpu", UNROLL_MAX_STEPS, plan)[0] == "unroll"
    assert choose_route("auto", "fp32", "cpu", 18, plan)[0] == "loop"
    assert choose_route("auto", "int8", "cpu", 1375, None)[0] == "loop"
    assert choose_route("loop", "int8", "cpu", 1375, plan)[0] == "loop"
    assert choose_route("stream", "fp32", "cpu", 10, None)[0] == "loop"  # cannot stream: the automatic choice


def test_lstm_step_model_streams_like_the_full_model():
    keras = pytest.importorskip("keras")
    from converters.recurrent import plan, step_model, stream_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((90, 6))
    x = keras.layers.Conv1D(8, 5, strides=2)(inp)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.LSTM(5, return_sequences=True)(x)
    x = keras.layers.LayerNormalization()(x)
    out = keras.layers.TimeDistributed(keras.layers.Dense(2))(x)
    model = keras.Model(inp, out)
    p, why = plan(model, steps=3)
    assert why == "" and (p.receptive, p.stride, p.frames, p.hop_frames) == (7, 4, 15, 12)
    assert [s["input"] for s in p.states] == ["state_lstm_h", "state_lstm_c"]
    x = np.random.default_rng(0).standard_normal((3, 90, 6)).astype(np.float32)
    streamed, kept = stream_keras(step_model(model, p, None), p, x, keep_inputs=10)
    np.testing.assert_allclose(streamed, np.asarray(model(x)), atol=1e-5)
    assert set(kept) == {"frames", "state_lstm_h", "state_lstm_c"} and 5 <= len(kept["frames"]) <= 30


def test_models_that_cannot_stream_say_why():
    keras = pytest.importorskip("keras")
    from converters.recurrent import plan

    inp = keras.Input((100, 4))
    x = keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True))(inp)
    assert "mixes time steps" in plan(keras.Model(inp, x))[1]
    y = keras.layers.Conv1D(3, 3, padding="same")(inp)
    y = keras.layers.GRU(3, return_sequences=True)(y)
    assert "padding='valid'" in plan(keras.Model(inp, y))[1]
    assert "return sequences" in plan(keras.Model(inp, keras.layers.GRU(3)(inp)))[1]


# --- a course-style model, end to end through the trigger-word app ------------------------------

RATE, FRAMES = 44100, 600


def _write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())


@pytest.fixture(scope="module")
def course_app(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from converters.convert import convert
    from converters.course import course_card
    from sdk.audio import CourseSpectrogram

    work = tmp_path_factory.mktemp("course_app")
    keras.utils.set_random_seed(3)
    inp = keras.Input((FRAMES, 101))
    x = keras.layers.Conv1D(12, 15, strides=4)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GRU(8, return_sequences=True)(x)
    out = keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid"))(x)
    model = keras.Model(inp, out)
    bn = model.layers[2]
    bn.set_weights([np.ones(12), np.zeros(12), np.full(12, 50.0), np.full(12, 1e4)])  # course spectrogram values are large
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(RATE * 3) * 0.05).astype(np.float32)
    audio[RATE : RATE + 8000] += 0.5 * np.sin(2 * np.pi * 1000 * np.arange(8000) / RATE)
    feats = CourseSpectrogram()
    calib = np.stack([feats(np.roll(audio, k * 3000))[:FRAMES] for k in range(20)])
    path = work / "course.keras"
    model.save(path)
    # fp32 makes the app's streaming exactly comparable with Keras; int8 accuracy is tested in test_convert_tfkeras2
    res = convert(str(path), "fp32", output=work / "course_fp32.tflite", eval_data=calib[:4], card=course_card(), progress=False)
    wav = work / "x.wav"
    _write_wav(wav, audio)
    return res, model, audio, wav


def test_streaming_app_scores_follow_keras(course_app):
    from apps.trigger_word.app import TriggerWordDetector
    from sdk.audio import CourseSpectrogram
    from sdk.sources.audio import read_wav

    res, model, _, wav = course_app
    assert res.report["route"]["route"] == "stream"
    audio = read_wav(wav, RATE)[0]
    det = TriggerWordDetector(res.path)
    times, scores = det.scores(audio)
    want = np.asarray(model(CourseSpectrogram()(audio)[None, :FRAMES]))[0, :, 0]
    n = min(len(want), len(scores))
    assert n > 100 and np.max(np.abs(scores[:n] - want[:n])) < 1e-4
    assert np.all(np.diff(times) > 0) and abs(times[1] - times[0] - 320 / RATE) < 1e-9  # one score per step of 4 frames


def test_chunk_sizes_give_the_same_events_and_the_cli_runs(course_app, capsys):
    from apps.trigger_word.app import TriggerWordDetector
    from cli import main
    from sdk.sources.audio import read_wav

    res, _, _, wav = course_app
    audio = read_wav(wav, RATE)[0]

    def events(chunk: int) -> list:
        det = TriggerWordDetector(res.path, threshold=0.0)
        return [e for i in range(0, len(audio), chunk) for e in det.process(audio[i : i + chunk])]

    ref = events(1280)
    assert ref and events(4000) == ref and events(len(audio)) == ref
    assert main(["trigger-word", "--model", str(res.path), "--input", str(wav), "--threshold", "0", "--json"]) == 0
    assert '"event": "trigger"' in capsys.readouterr().out
