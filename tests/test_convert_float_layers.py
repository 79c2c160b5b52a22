"""--debug-quant names the worst layers; --float-layers keeps exactly those in float."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli import main
from sdk.runner import Runner
from sdk.tflite_file import TFLiteFile

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("fl")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    keras.Model(inp, out).save(d / "m.keras")
    np.save(d / "calib.npy", np.random.default_rng(0).random((100, 16, 16, 3), dtype=np.float32))
    return d


def _convert(cnn, *extra) -> tuple[int, dict]:
    out = cnn / "out.tflite"
    out.unlink(missing_ok=True)
    code = main(["convert", str(cnn / "m.keras"), "--mode", "int8", "--calibration", str(cnn / "calib.npy"), "-o", str(out), "--json", *extra])
    return code, out


def test_debug_quant_names_are_accepted_by_float_layers(cnn, capsys):
    code, out = _convert(cnn, "--debug-quant")
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["report"]
    names = [r["tensor"] for r in report["debug_quant"]]
    tensors = {t.name: t for t in TFLiteFile.from_path(out).main.tensors}
    assert names and all(n in tensors for n in names)
    dense = next(n for n in names if "dense" in n)
    code, out = _convert(cnn, "--float-layers", dense)
    assert code == 0
    f = TFLiteFile.from_path(out)
    by_name = {t.name: t for t in f.main.tensors}
    assert by_name[dense].dtype == "float32"
    assert f.inputs[0].dtype == "int8" and f.outputs[0].dtype == "int8"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(f.op_histogram())
    r = Runner(out)
    assert r.card.quantization["float_layers"] == [dense]
    x = np.load(cnn / "calib.npy")[:4]
    assert np.allclose([r.run(s)[0].sum() for s in x], 1.0, atol=0.05)  # softmax rows still sum to one


def test_unknown_float_layer_and_conflicts_exit_2(cnn, capsys):
    code, _ = _convert(cnn, "--float-layers", "no/such/tensor")
    assert code == 2 and "no tensor named 'no/such/tensor'" in capsys.readouterr().err
    assert main(["convert", str(cnn / "m.keras"), "--mode", "fp16", "--float-layers", "x"]) == 2
    assert "does not apply to --mode fp16" in capsys.readouterr().err
    code, _ = _convert(cnn, "--float-layers", "x", "--target", "edgetpu")
    assert code == 2 and "split the Edge TPU graph" in capsys.readouterr().err


def test_debug_quant_and_float_layers_on_a_streaming_step_model(tmp_path, capsys):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((300, 6))  # 296 recurrent steps: the stream route
    x = keras.layers.Conv1D(4, 5)(inp)
    x = keras.layers.GRU(4, return_sequences=True)(x)
    out = keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid"))(x)
    keras.Model(inp, out).save(tmp_path / "s.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((4, 300, 6)).astype(np.float32))
    out_path = tmp_path / "s.tflite"

    def convert(*extra: str) -> dict:
        args = ["convert", str(tmp_path / "s.keras"), "--mode", "int8", "--calibration", str(tmp_path / "calib.npy"), "-o", str(out_path)]
        assert main([*args, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["report"]

    report = convert("--debug-quant")
    assert report["route"]["route"] == "stream" and report["debug_quant"]
    name = report["debug_quant"][0]["tensor"]
    assert name in {t.name for t in TFLiteFile.from_path(out_path).main.tensors}
    report = convert("--float-layers", name)
    assert report["route"]["route"] == "stream"
    assert {t.name: t.dtype for t in TFLiteFile.from_path(out_path).main.tensors}[name] == "float32"
