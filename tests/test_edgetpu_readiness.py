"""Edge TPU readiness from the flatbuffer, ``convert --target edgetpu``, and the compiler log parser.

The analysis is :mod:`sdk.edgetpu_readiness` (device side, no TensorFlow, no ``converters``);
:mod:`converters.edgetpu` runs the compiler.

The readiness of a clean int8 CNN and of a GRU WHILE-loop model is tested in test_convert.py
(on the models converted there); here: a detection head that concatenates boxes and scores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.edgetpu import COMPILER_HELP, compile_model, parse_compiler_log
from sdk.backends._probe import PROBE_MODEL
from sdk.edgetpu_readiness import format_readiness, readiness

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def concat_head(tmp_path_factory):
    """int8 for --target edgetpu of a head that concatenates pixel boxes (0-64) with 0-1 scores."""
    keras = pytest.importorskip("keras")
    from converters.convert import convert

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    boxes = keras.layers.Rescaling(64.0)(keras.layers.Conv2D(4, 1, activation="sigmoid")(x))
    scores = keras.layers.Conv2D(2, 1, activation="sigmoid")(x)
    out = keras.layers.Reshape((64, 6))(keras.layers.Concatenate()([boxes, scores]))
    folder = tmp_path_factory.mktemp("tpu")
    path = folder / "head.keras"
    keras.Model(inp, out).save(path)
    calib = np.random.default_rng(0).random((30, 16, 16, 3), dtype=np.float32)
    return convert(str(path), "int8", calibration=calib, target="edgetpu", progress=False)


@pytest.mark.tensorflow
def test_convert_target_edgetpu_writes_ready_int8_model(concat_head):
    res = concat_head
    assert res.path.name == "head_int8.tflite" and res.path.exists()
    tpu = res.report["edgetpu"]
    if shutil.which("edgetpu_compiler") is None:
        assert tpu["compiler"]["available"] is False and "x86-64 Debian/Ubuntu" in tpu["compiler"]["message"]
    assert tpu["tpu_ops"] > 0


@pytest.mark.tensorflow
def test_concat_of_boxes_and_scores_is_flagged(concat_head):
    info = readiness(concat_head.path).to_json()
    problem = next(p for p in info["problems"] if p["check"] == "concat ranges")
    assert "separate outputs" in problem["hint"]
    text = format_readiness(info)
    assert "concat ranges" in text and "fix:" in text


@pytest.mark.tensorflow
def test_readiness_without_tensorflow(concat_head):
    """The device side (``edgesdk inspect --edgetpu``) must work with TensorFlow and converters unavailable."""
    code = (
        "import sys, json; sys.modules['tensorflow'] = None; sys.modules['converters'] = None\n"
        "from sdk.edgetpu_readiness import readiness, format_readiness\n"
        f"info = readiness({str(concat_head.path)!r}).to_json(); format_readiness(info)\n"
        "print(json.dumps({'ops': len(info['ops']), 'tf': 'tensorflow' in sys.modules and sys.modules['tensorflow'] is not None}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["ops"] > 0 and res["tf"] is False


@pytest.mark.tensorflow
def test_inspect_edgetpu_cli(concat_head, capsys):
    from cli import main

    assert main(["inspect", "--edgetpu", "--json", str(concat_head.path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["edgetpu"]["problems"] and info["card"]["quantization"]["target"] == "edgetpu"


def test_inspect_edgetpu_on_a_device_install_without_converters(tmp_path):
    """A device wheel may lack ``converters`` (and has no TensorFlow): ``inspect --edgetpu`` still works."""
    model = tmp_path / "probe.tflite"
    model.write_bytes(PROBE_MODEL)
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['converters'] = None\n"
        "from cli import main\n"
        f"sys.exit(main(['inspect', '--edgetpu', '--json', {str(model)!r}]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    tpu = info["edgetpu"]
    assert not tpu["ready"] and tpu["ops"] == [
        {"index": 0, "op": "RELU", "device": "CPU", "reason": "works on float32 tensors; the Edge TPU needs int8/uint8", "constraint": ""}
    ]
    assert "--mode int8" in tpu["problems"][0]["hint"]


def test_float_model_is_not_ready_and_says_how_to_fix():
    info = readiness(PROBE_MODEL).to_json()
    assert (info["ready"], info["tpu_ops"], info["cpu_ops"], info["first_cpu_op"]) == (False, 0, 1, 0)
    text = format_readiness(info)
    assert text.startswith("Edge TPU: not ready: 0 ops on the TPU, 1 on the CPU") and "fix: convert with --mode int8" in text


def test_converters_edgetpu_reexports_the_sdk_analysis():
    """Host code importing the analysis from ``converters.edgetpu`` gets the one implementation in ``sdk``."""
    import converters.edgetpu as host
    import sdk.edgetpu_readiness as device

    assert host.readiness is device.readiness and host.format_readiness is device.format_readiness


def test_compile_without_compiler_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    compiled, info = compile_model(tmp_path / "m_int8.tflite")
    assert compiled is None and info == {"available": False, "message": COMPILER_HELP}
    assert "apt-get install edgetpu-compiler" in COMPILER_HELP


def test_parse_compiler_log():
    log = """Edge TPU Compiler version 16.0.384591198
Input: model_int8.tflite
Output: out/model_int8_edgetpu.tflite

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
UNPACK                         1          Operation not supported
FULLY_CONNECTED                2          More than one subgraph is not supported
Number of operations that will run on Edge TPU: 3
Number of operations that will run on CPU: 3
"""
    info = parse_compiler_log(log)
    assert info["tpu_ops"] == 3 and info["cpu_ops"] == 3
    assert info["ops"] == [
        {"op": "CONV_2D", "count": 3, "status": "Mapped to Edge TPU"},
        {"op": "UNPACK", "count": 1, "status": "Operation not supported"},
        {"op": "FULLY_CONNECTED", "count": 2, "status": "More than one subgraph is not supported"},
    ]
