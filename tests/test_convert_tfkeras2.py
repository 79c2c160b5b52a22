"""tf.keras 2.x ``.h5`` files: config translation, and the course's trigger-word network converted like a Keras 3 file.

The acceptance model is written with h5py exactly as tf.keras 2.13 lays it out (``tests.models``):
small filter/unit counts and 400 frames keep it to seconds, and 97 GRU steps (> 64) take the
streaming route. Its fp32 and int8 outputs are compared with the same weights in a Keras 3
model built here natively.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters import tfkeras2
from sdk.errors import ModelFormatError
from tests.models import course_trigger_word_config, course_trigger_word_weights, write_tfkeras2_h5

FRAMES, BINS, FILTERS, UNITS = 400, 101, 16, 8


def _layer_cfg(config: dict, name: str) -> dict:
    return next(ly for ly in config["config"]["layers"] if ly["config"]["name"] == name)["config"]


def test_translation_of_the_course_config():
    cfg, notes = tfkeras2.translate(course_trigger_word_config(), "course.h5")
    gru = _layer_cfg(cfg, "gru")
    assert "time_major" not in gru and "implementation" not in gru and gru["reset_after"] is True
    assert not any(k.endswith(("_initializer", "_regularizer", "_constraint")) for k in gru)
    assert _layer_cfg(cfg, "batch_normalization")["axis"] == 2
    assert _layer_cfg(cfg, "input_1")["batch_shape"] == [None, 5511, 101]
    assert _layer_cfg(cfg, "time_distributed")["layer"]["module"] == "keras.layers"
    assert json.dumps(course_trigger_word_config()).count("time_major") == 2  # the input is not modified


def test_legacy_gru_without_reset_after_and_hard_sigmoid():
    cfg = course_trigger_word_config()
    gru = _layer_cfg(cfg, "gru")
    del gru["reset_after"]
    gru["recurrent_activation"] = "hard_sigmoid"
    out, notes = tfkeras2.translate(cfg, "old.h5", {"gru": (3 * 128,)})
    assert _layer_cfg(out, "gru")["reset_after"] is False
    assert _layer_cfg(out, "gru")["recurrent_activation"] == tfkeras2.HARD_SIGMOID
    assert any("hard_sigmoid" in n for n in notes) and any("reset_after" in n for n in notes)


@pytest.mark.parametrize(("layer", "key", "value", "expect"), [
    ("gru", "time_major", True, r"course.h5: layer 'gru': argument time_major=True .* re-save"),
    ("batch_normalization", "axis", [1, 2], r"layer 'batch_normalization': BatchNormalization over several axes"),
    ("batch_normalization", "renorm", True, r"layer 'batch_normalization': BatchNormalization argument renorm=True"),
])
def test_untranslatable_arguments_name_layer_and_fix(layer, key, value, expect):
    cfg = course_trigger_word_config()
    _layer_cfg(cfg, layer)[key] = value
    with pytest.raises(ModelFormatError, match=expect):
        tfkeras2.translate(cfg, "course.h5")


def _native_keras3(keras, weights):
    """The same network written in Keras 3, weights set from the tf.keras 2 arrays."""
    inp = keras.Input((FRAMES, BINS))
    x = keras.layers.Conv1D(FILTERS, 15, strides=4, name="conv1d")(inp)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GRU(UNITS, return_sequences=True, name="gru")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.GRU(UNITS, return_sequences=True, name="gru_1")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    out = keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid"), name="td")(x)
    model = keras.Model(inp, out)
    for (_, arrays), name in zip(weights, ["conv1d", "bn0", "gru", "bn1", "gru_1", "bn2", "td"]):
        model.get_layer(name).set_weights([a for _, a in arrays])
    return model


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from converters.convert import convert_modes

    work = tmp_path_factory.mktemp("tfkeras2")
    weights = course_trigger_word_weights(FRAMES, BINS, FILTERS, UNITS)
    h5 = write_tfkeras2_h5(work / "course.h5", course_trigger_word_config(FRAMES, BINS, FILTERS, UNITS), weights)
    rng = np.random.default_rng(0)
    calib = rng.gamma(1.0, 1.0, (30, FRAMES, BINS)).astype(np.float32)
    evals = rng.gamma(1.0, 1.0, (6, FRAMES, BINS)).astype(np.float32)
    res = convert_modes(str(h5), ["fp32", "int8"], output=work, calibration=calib, eval_data=evals, progress=False)
    return h5, evals, res, _native_keras3(keras, weights)


@pytest.mark.tensorflow
def test_course_h5_converts_and_matches_keras3(course):
    from sdk.runner import Runner, StreamState

    _, evals, res, native = course
    want = np.asarray(native(evals, training=False))
    for mode in ("fp32", "int8"):
        r = res[mode]
        assert not isinstance(r, str), r
        assert r.report["route"]["route"] == "stream" and "WHILE" not in r.report["ops"]
        assert any("tf.keras 2.13.1" in n for n in r.notes)
        state = StreamState(Runner(r.path))
        got = np.stack([state.run_sequence(x)[0][0] for x in evals])
        cos = np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want))
        assert got.shape == want.shape == (6, 97, 1)
        assert cos >= 0.99, (mode, cos)
        assert r.report["accuracy"]["outputs"][0]["cosine"] >= 0.99
    np.testing.assert_allclose(got, want, atol=0.05)  # int8


@pytest.mark.tensorflow
def test_time_distributed_dense_is_one_op_and_the_card_declares_the_state(course):
    from sdk.card import read_card

    r = course[2]["int8"]
    steps = read_card(r.path).input["stream"]["steps"]
    # per step: one FULLY_CONNECTED for each GRU's input and recurrent kernels; plus one for the TimeDistributed Dense
    assert r.report["ops"]["FULLY_CONNECTED"] == 1 + 2 * 2 * steps
    stream = read_card(r.path).input["stream"]
    assert [s["input"] for s in stream["state"]] == ["state_gru", "state_gru_1"] and stream["hop_frames"] == 4 * steps
    assert read_card(r.path).quantization["route"] == "stream"


def test_weights_only_h5_is_named(tmp_path):
    import h5py

    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
    from converters.files import check_model_path

    with pytest.raises(ModelFormatError, match=r"w.h5: an .h5 file with weights only .*model.save"):
        check_model_path(p)


def test_h5_info_reads_version_and_bias_shapes(tmp_path):
    h5 = write_tfkeras2_h5(tmp_path / "c.h5", course_trigger_word_config(FRAMES, BINS, FILTERS, UNITS),
                           course_trigger_word_weights(FRAMES, BINS, FILTERS, UNITS))
    info = tfkeras2.h5_info(Path(h5))
    assert tfkeras2.is_tfkeras2(info) and info["gru_bias_shapes"]["gru"] == (2, 3 * UNITS)
