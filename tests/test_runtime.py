"""Runner, model card and flatbuffer reader on real models converted in the test."""

from __future__ import annotations

import io
import sys
import zipfile
from unittest.mock import patch

import numpy as np
import pytest

from sdk.card import ModelCard, embed_card, read_card, ultralytics_metadata, write_card
from sdk.errors import BackendUnavailableError, ModelFormatError
from sdk.runner import InputError, Runner
from sdk.tflite_file import TFLiteFile

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.models import dynamic_batch_tflite, tiny_cnn_tflite

    d = tmp_path_factory.mktemp("tiny")
    paths = tiny_cnn_tflite(d)
    paths["dynamic"] = dynamic_batch_tflite(d)
    paths["calib"] = np.load(d / "calib.npy")
    paths["keras"] = np.load(d / "keras_out.npy")
    return paths


def _cos(a, b):
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_fp32_matches_keras(tiny):
    r = Runner(tiny["fp32"])
    outs = np.concatenate([r.run(x)[0] for x in tiny["calib"]])
    np.testing.assert_allclose(outs, tiny["keras"], atol=1e-5)
    assert r.inputs[0].name == "image" and not r.inputs[0].quantized
    assert r.stats.summary("infer")["count"] == len(tiny["calib"])


def test_int8_quantizes_io_and_matches_keras(tiny):
    r = Runner(tiny["int8"])
    spec = r.inputs[0]
    assert spec.dtype == np.int8 and spec.quantized and r.outputs[0].quantized
    outs = np.concatenate([r.run(x[None])[0] for x in tiny["calib"]])
    assert outs.dtype == np.float32
    assert np.abs(outs - tiny["keras"]).max() < 0.03
    assert _cos(outs, tiny["keras"]) > 0.99
    raw = r.run(tiny["calib"][0], raw=True)[0]
    assert raw.dtype == np.int8
    np.testing.assert_allclose(r.outputs[0].dequantize(raw), r.run(tiny["calib"][0])[0])


def test_quantize_rounds_and_saturates(tiny):
    spec = Runner(tiny["int8"]).inputs[0]
    q = spec.quantize(np.array([-10.0, 0.0, 0.5, 10.0], dtype=np.float32))
    assert q.tolist()[0] == -128 and q.tolist()[-1] == 127
    assert abs(spec.dequantize(q)[2] - 0.5) <= spec.scale / 2 + 1e-7


def test_inputs_by_name_list_and_errors(tiny):
    r = Runner(tiny["fp32"])
    x = tiny["calib"][0]
    np.testing.assert_allclose(r.run({"image": x})[0], r.run([x])[0])
    with pytest.raises(InputError, match=r"expects shape \[1, 8, 8, 3\], got \[1, 4, 4, 3\]"):
        r.run(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(InputError, match="missing"):
        r.run({"img": x})
    with pytest.raises(InputError, match="expects float32"):
        r.run(np.zeros((1, 8, 8, 3), np.int32))
    with pytest.raises(InputError, match="1 inputs"):
        r.run([x, x])


def test_dynamic_batch_is_resized(tiny):
    r = Runner(tiny["dynamic"])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = r.run(x)[0]
    np.testing.assert_allclose(out, np.stack([x.sum(1), x.max(1)], axis=1))


def test_backend_fallback_order_and_none(tiny):
    with patch.dict(sys.modules, {"ai_edge_litert": None, "ai_edge_litert.interpreter": None, "tflite_runtime": None}):
        r = Runner(tiny["fp32"])
        assert r.backend.name == "tensorflow"
        np.testing.assert_allclose(r.run(tiny["calib"][0])[0][0], tiny["keras"][0], atol=1e-5)
    with patch.dict(sys.modules, {"ai_edge_litert": None, "ai_edge_litert.interpreter": None, "tflite_runtime": None, "tensorflow": None}):
        with pytest.raises(BackendUnavailableError, match="pip install ai-edge-litert"):
            Runner(tiny["fp32"])
    with pytest.raises(BackendUnavailableError, match="Did you mean 'tensorflow'"):
        Runner(tiny["fp32"], backend="tensorflw")


def test_card_round_trip_and_model_still_runs(tiny, tmp_path):
    data = tiny["int8"].read_bytes()
    assert read_card(data) is None
    card = ModelCard(task="classify", output={"labels": ["a", "b", "c"]}, metrics={"top1": 0.9})
    out = tmp_path / "carded.tflite"
    write_card(tiny["int8"], card, out)
    back = read_card(out)
    assert back == card
    x = tiny["calib"][3]
    np.testing.assert_array_equal(Runner(out).run(x)[0], Runner(tiny["int8"]).run(x)[0])
    assert Runner(out).card.output["labels"] == ["a", "b", "c"]
    replaced = embed_card(out.read_bytes(), card.replace(notes="second"))
    assert read_card(replaced).notes == "second"
    assert list(TFLiteFile(replaced).metadata).count("edgesdk") == 1


def test_card_rejects_unknown_keys(tiny):
    bad = ModelCard(task="classify")
    data = embed_card(tiny["fp32"].read_bytes(), bad)
    data = data.replace(b"task: classify", b"tsak: classify")
    with pytest.raises(ModelFormatError, match="Did you mean 'task'"):
        read_card(data)


def test_ultralytics_metadata_is_read(tiny):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("temp_meta.txt", "{'names': {0: 'person', 1: 'bicycle'}, 'imgsz': [640, 640], 'stride': 32, 'task': 'detect'}")
    data = tiny["fp32"].read_bytes() + buf.getvalue()
    meta = ultralytics_metadata(data)
    assert meta["names"] == ["person", "bicycle"] and meta["imgsz"] == [640, 640]
    assert ultralytics_metadata(tiny["fp32"]) is None
    assert Runner(data).run(tiny["calib"][0])[0].shape == (1, 3)


def test_flatbuffer_reader(tiny):
    f = TFLiteFile.from_path(tiny["int8"])
    assert f.op_histogram() == {"CONV_2D": 1, "MEAN": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    assert f.inputs[0].dtype == "int8" and f.inputs[0].is_quantized
    assert len(f.subgraphs) == 1 and f.signatures == ("serving_default",)
    assert TFLiteFile.from_path(tiny["dynamic"]).inputs[0].shape_signature == (-1, 4)


@pytest.mark.parametrize("case", ["missing", "directory", "text", "truncated", "empty"])
def test_bad_model_files(tiny, tmp_path, case):
    path = {"missing": tmp_path / "nope.tflite", "directory": tmp_path}.get(case, tmp_path / f"{case}.tflite")
    if case == "text":
        path.write_text("hello, not a model\n")
    elif case == "truncated":
        path.write_bytes(tiny["int8"].read_bytes()[:300])
    elif case == "empty":
        path.write_bytes(b"")
    with pytest.raises(ModelFormatError, match=str(path.name)):
        Runner(path)


def test_atomic_write_respects_umask_and_explicit_mode(tmp_path):
    import os

    from sdk.card import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        atomic_write(tmp_path / "b.bin", b"y", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.part"))
