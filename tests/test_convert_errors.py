"""Bad input and converter crashes: one-line errors, exit code 2, nothing half-written."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np
import pytest

from cli import main
from converters.data import load_samples
from sdk.errors import ConfigError, ConversionError, ModelFormatError


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory) -> Path:
    keras = pytest.importorskip("keras")
    path = tmp_path_factory.mktemp("errors") / "dense.keras"
    inp = keras.Input((8,))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(inp)).save(path)
    return path


def _no_partial(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if p.suffix in (".part", ".tflite")]


# --- the converter child process ---------------------------------------------------------

@pytest.mark.tensorflow
def test_child_crash_becomes_one_line_error(dense_model, tmp_path, monkeypatch, caplog):
    from converters.convert import convert_modes

    monkeypatch.setenv("EDGESDK_TEST_CHILD_CRASH", "int8")
    calib = np.random.default_rng(0).random((20, 8), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        res = convert_modes(str(dense_model), ["fp32", "int8"], output=tmp_path, calibration=calib, progress=False)
    assert res["fp32"].path.exists()  # the mode before the crash survives
    msg = res["int8"]
    assert isinstance(msg, str) and "\n" not in msg
    assert msg.startswith("int8: the converter process crashed (killed by SIGSEGV)") and "try mode dynamic" in msg
    assert not (tmp_path / "dense_int8.tflite").exists()
    assert "only 20 samples" in caplog.text


@pytest.mark.tensorflow
def test_single_mode_crash_raises(dense_model, tmp_path, monkeypatch):
    from converters.convert import convert

    monkeypatch.setenv("EDGESDK_TEST_CHILD_CRASH", "fp16")
    with pytest.raises(ConversionError, match=r"fp16: the converter process crashed"):
        convert(str(dense_model), "fp16", output=tmp_path / "m.tflite", progress=False)
    _no_partial(tmp_path)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_real_gru_while_loop_int8_crash_names_unroll(tmp_path):
    """FINDINGS.md: full-int8 of a GRU WHILE loop segfaults the TF converter; the user gets the fix."""
    keras = pytest.importorskip("keras")
    from converters.convert import convert

    inp = keras.Input((12, 6))
    model = keras.Model(inp, keras.layers.GRU(4)(inp))
    calib = np.random.default_rng(0).standard_normal((10, 12, 6)).astype(np.float32)
    with pytest.raises(ConversionError, match=r"int8: .*crashed.*WHILE loop.*use route stream or unroll"):
        convert(model, "int8", output=tmp_path / "gru.tflite", calibration=calib, unroll=False, progress=False)
    _no_partial(tmp_path)


@pytest.mark.tensorflow
def test_custom_layer_error_names_layer(tmp_path):
    keras = pytest.importorskip("keras")
    from converters.convert import convert

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((4,))
    path = tmp_path / "custom.keras"
    keras.Model(inp, Doubler()(inp)).save(path)
    with pytest.raises(ModelFormatError, match=r"layer 'doubler' has class 'Doubler', which is not a Keras layer.*custom_objects=FILE.py"):
        convert(str(path), "fp32", progress=False)
    assert not (tmp_path / "custom_fp32.tflite").exists()


# --- the CLI: checked before any work --------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--mode", "fp16", "--target", "edgetpu"], "--mode fp16 cannot run on --target edgetpu"),
        (["--mode", "dynamic", "--target", "edgetpu"], "cannot run on --target edgetpu"),
        (["--mode", "int16x8", "--target", "edgetpu", "--calibration", "X"], "cannot run on --target edgetpu"),
        (["--mode", "int8"], "--mode int8 needs --calibration"),
        (["--mode", "fp32", "--io", "int8"], "--io int8 does not apply to --mode fp32"),
        (["--mode", "fp32", "-o", "/nonexistent/dir/m.tflite"], "does not exist"),
        (["--mode", "fp32", "-o", "out.txt"], "ending in .tflite"),
        (["--mode", "int8", "--calibration", "EMPTY"], "holds no images or .wav files"),
        (["--mode", "int8", "--calibration", "missing.npy"], "no such file"),
    ],
)
def test_cli_bad_options_exit_2(argv, expect, dense_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    argv = [a if a != "X" else str(tmp_path / "EMPTY") for a in argv]
    assert main(["convert", str(dense_model), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgesdk: error:") and expect in err and "\n" not in err
    _no_partial(dense_model.parent)


def test_cli_not_a_keras_model(tmp_path, capsys):
    junk = tmp_path / "m.keras"
    junk.write_bytes(b"not a zip")
    assert main(["convert", str(junk), "--mode", "fp32"]) == 2
    assert "not a Keras model" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.h5"), "--mode", "fp32"]) == 2


# --- calibration / eval data -----------------------------------------------------------------

def test_wrong_calibration_shape_says_expected_and_got():
    with pytest.raises(ConfigError, match=r"expected \[N, 16, 16, 3\], got \[10, 3, 16, 16\]"):
        load_samples(np.zeros((10, 3, 16, 16)), [(16, 16, 3)])
    with pytest.raises(ConfigError, match=r"expected \[N, \?, 20\]"):
        load_samples(np.zeros((40, 20)), [(None, 20)])


def test_npy_npz_and_images(tmp_path):
    cv2 = pytest.importorskip("cv2")
    np.save(tmp_path / "a.npy", np.ones((5, 4, 2)))
    arrays, desc = load_samples(tmp_path / "a.npy", [(4, 2)])
    assert arrays[0].shape == (5, 4, 2) and arrays[0].dtype == np.float32 and desc == "a.npy"
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.zeros((3, 5)))
    arrays, _ = load_samples(tmp_path / "b.npz", [(2,), (5,)])
    assert [a.shape for a in arrays] == [(3, 2), (3, 5)]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        img = np.zeros((30, 40, 3), np.uint8)
        img[..., 2] = 255  # pure red in BGR
        cv2.imwrite(str(imgs / f"{i}.png"), img)
    arrays, desc = load_samples(imgs, [(8, 8, 3)], card_input={"letterbox": False}, show_progress=False)
    assert arrays[0].shape == (3, 8, 8, 3) and "3 images" in desc
    assert np.allclose(arrays[0][..., 0], 1.0) and np.allclose(arrays[0][..., 2], 0.0)  # RGB, [0, 1]
    arrays, _ = load_samples(imgs, [(8, 8, 3)], card_input={"mean": [127.5] * 3, "std": [127.5] * 3, "letterbox": False}, show_progress=False)
    assert np.allclose(arrays[0][..., 0], 1.0) and np.allclose(arrays[0][..., 1], -1.0)


@pytest.mark.parametrize("card_input", [{}, {"letterbox": False}, {"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]},
                                        {"channel_order": "bgr", "mean": 127.5, "std": 127.5}, {"size": [24, 16], "sample_rate": 1}])
def test_calibration_images_equal_the_device_preprocessing_bit_for_bit(tmp_path, card_input):
    cv2 = pytest.importorskip("cv2")
    from sdk.image import Preprocessor

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(30, 40), (50, 20), (16, 24), (77, 91)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    arrays, _ = load_samples(tmp_path, [(16, 24, 3)], card_input=card_input, show_progress=False)
    device = Preprocessor.from_card_input({k: v for k, v in card_input.items() if k != "sample_rate"}, (24, 16))
    for i, f in enumerate(sorted(tmp_path.glob("*.png"))):
        np.testing.assert_array_equal(arrays[0][i], device(cv2.imread(str(f)))[0][0])


def _write_wav(path: Path, seconds: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 16000).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_wav_folder_waveform_windows_or_clear_error(tmp_path):
    _write_wav(tmp_path / "a.wav", 1.0)
    _write_wav(tmp_path / "b.wav", 0.5)
    arrays, desc = load_samples(tmp_path, [(4000, 1)], show_progress=False)
    assert arrays[0].shape == (6, 4000, 1) and "2 wav files" in desc  # 4 + 2 windows
    assert 0.4 < float(np.abs(arrays[0]).max()) < 0.5
    with pytest.raises(ConfigError, match=r"\.wav files can calibrate only models that take raw waveforms.*\.npy"):
        load_samples(tmp_path, [(98, 40)], show_progress=False)


def test_nearly_constant_outputs_say_agreement_is_not_meaningful():
    from converters.report import NOT_MEANINGFUL, compare, format_report

    k = np.tile(np.array([[0.2501, 0.2500, 0.2499, 0.2500]], np.float32), (10, 1))
    t = k[:, ::-1].copy()  # argmax flips on noise-sized differences
    rows = compare([k], [t], ["probs"])
    assert rows[0].get("nearly_constant") and "top1_agreement" not in rows[0]
    assert NOT_MEANINGFUL in format_report({"accuracy": {"count": 10, "source": "x", "outputs": rows}})
    varied = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    assert compare([varied], [varied], ["p"])[0]["top1_agreement"] == 1.0


def test_int8_note_for_an_input_spanning_orders_of_magnitude():
    from converters.data import coarse_inputs
    from converters.report import coarse_input_notes

    rng = np.random.default_rng(0)
    power = (10 ** rng.uniform(-2, 6, (20, 50, 8))).astype(np.float32)  # a linear power spectrogram's spread
    coarse = coarse_inputs([power], ["frames"])
    assert len(coarse) == 1 and coarse[0].startswith("frames: ")
    assert coarse_inputs([rng.random((20, 8, 8, 3), dtype=np.float32)]) == []  # images in [0, 1] are fine
    note = coarse_input_notes(coarse, [{"cosine": 0.97}])
    assert len(note) == 1 and "frames: " in note[0] and "mode dynamic or int16x8" in note[0]
    assert coarse_input_notes(coarse, [{"cosine": 0.999}]) == []  # said only where it explains a drift


@pytest.mark.tensorflow
def test_a_converted_model_the_interpreter_refuses_fails_that_mode_only(dense_model, tmp_path, monkeypatch):
    from converters import report
    from converters.convert import convert_modes
    from sdk.tflite_file import TFLiteFile

    real = report.run_tflite

    def refuse_fp16(data, *args, **kw):  # fp16 models hold float16 weights
        if any(t.dtype == "float16" for t in TFLiteFile(data).main.tensors):
            raise ModelFormatError("<bytes>: the interpreter cannot load this model: Node number 25 (CONV_2D) failed to prepare.")
        return real(data, *args, **kw)

    monkeypatch.setattr(report, "run_tflite", refuse_fp16)
    res = convert_modes(str(dense_model), ["fp32", "fp16"], output=tmp_path, progress=False)
    assert not isinstance(res["fp32"], str)
    assert res["fp16"].startswith("fp16: the converter wrote a model the TFLite interpreter refuses (Node number 25 (CONV_2D)")
    assert not list(tmp_path.glob("*fp16*"))
