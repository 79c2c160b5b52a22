"""TF.js graph-model import: weights (float16/uint8 quantised, int64 as int32), NHWC rewrite, errors, convert.

The graphs are tiny ones made here in the layout ONNX exports have (NCHW activations, NHWC
convolutions wrapped in transposes, ``-FLT_MAX`` max-pool padding, int64 reshape shapes),
written as ``model.json`` + shards the way ``tensorflowjs_converter`` lays them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from converters import graph_fixes, graphdef, nhwc  # noqa: E402
from converters.tfjs import read_tfjs  # noqa: E402
from sdk.errors import ModelFormatError  # noqa: E402

SIZE, CLASSES, BINS = 32, 3, 4


def tiny_nanodet(seed: int = 0, size: int = SIZE) -> tuple[object, list[str], list[str]]:
    """A frozen GraphDef shaped like the NanoDet TF.js graph: NCHW input ``x``, levels at strides 8 and 16.

    Returns:
        ``(graph_def, inputs, outputs)``: per level ``scores [1, N, 3]`` (sigmoid) and
        ``distributions [1, N, 16]``, stride 8 first.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(seed)

    def w(*shape: int) -> object:
        return tf.constant(rng.normal(0, 0.4, shape).astype(np.float32))

    w1, w2, w3 = w(3, 3, 3, 8), w(3, 3, 8, 8), w(3, 3, 8, 8)
    heads = [w(1, 1, 8, CLASSES + 4 * BINS) for _ in range(2)]
    bias = tf.constant(rng.normal(0, 0.5, (8, 1, 1)).astype(np.float32))  # an NCHW broadcast constant

    def nhwc_conv(x: object, k: object, stride: int) -> object:  # ONNX style: transpose in, conv, transpose out
        y = tf.nn.conv2d(tf.transpose(x, [0, 2, 3, 1]), k, stride, "SAME")
        return tf.transpose(y, [0, 3, 1, 2])

    def head(x: object, k: object) -> list[object]:
        y = nhwc_conv(x, k, 1)
        s, d = tf.split(y, [CLASSES, 4 * BINS], axis=1)
        n = int(y.shape[2]) * int(y.shape[3])
        s = tf.transpose(tf.reshape(tf.sigmoid(s), tf.constant([1, CLASSES, n], tf.int64)), [0, 2, 1])
        d = tf.transpose(tf.reshape(d, tf.constant([1, 4 * BINS, n], tf.int64)), [0, 2, 1])
        return [s, d]

    @tf.function(input_signature=[tf.TensorSpec([1, 3, size, size], tf.float32, name="x")])
    def f(x: object) -> list[object]:
        h = tf.nn.leaky_relu(nhwc_conv(x, w1, 2) + bias, 0.1)  # stride 2
        h = tf.pad(h, [[0, 0], [0, 0], [1, 1], [1, 1]], constant_values=-3.4028234663852886e38)
        h = tf.transpose(tf.nn.max_pool2d(tf.transpose(h, [0, 2, 3, 1]), 3, 2, "VALID"), [0, 3, 1, 2])  # stride 4
        p8 = tf.nn.leaky_relu(nhwc_conv(h, w2, 2), 0.1)
        p16 = tf.nn.leaky_relu(nhwc_conv(p8, w3, 2), 0.1)
        s8, d8 = head(p8, heads[0])
        s16, d16 = head(p16, heads[1])
        return [s8, s16, d8, d16]

    frozen = convert_variables_to_constants_v2(f.get_concrete_function())
    gd = frozen.graph.as_graph_def()
    outs = [t.name for t in frozen.outputs]
    return gd, ["x:0"], outs


def write_tfjs(gd: object, folder: Path, quantize: str | None = None, shards: int = 2) -> Path:
    """``gd`` as a TF.js graph model: constants' values moved into ``shards`` binary files."""
    from google.protobuf import json_format

    folder.mkdir(parents=True, exist_ok=True)
    topo = json_format.MessageToDict(gd)
    weights, blobs = [], []
    for node in topo["node"]:
        if node["op"] != "Const":
            continue
        value = tf.make_ndarray(gd.node[[n.name for n in gd.node].index(node["name"])].attr["value"].tensor)
        node["attr"]["value"]["tensor"].pop("tensorContent", None)
        for k in [k for k in node["attr"]["value"]["tensor"] if k.endswith("Val")]:
            node["attr"]["value"]["tensor"].pop(k)
        spec, raw = _weight(node["name"], value, quantize)
        weights.append(spec)
        blobs.append(raw)
    data = b"".join(blobs)
    cut = [len(data) * i // shards for i in range(shards + 1)]
    paths = []
    for i in range(shards):
        name = f"group1-shard{i + 1}of{shards}.bin"
        (folder / name).write_bytes(data[cut[i] : cut[i + 1]])
        paths.append(name)
    doc = {"format": "graph-model", "generatedBy": "test", "modelTopology": topo, "weightsManifest": [{"paths": paths, "weights": weights}]}
    (folder / "model.json").write_text(json.dumps(doc))
    return folder / "model.json"


def _weight(name: str, value: np.ndarray, quantize: str | None) -> tuple[dict, bytes]:
    shape = list(value.shape)
    if value.dtype == np.float32 and quantize == "float16":
        with np.errstate(over="ignore"):  # -FLT_MAX pads become -inf, as in TF.js
            return {"name": name, "shape": shape, "dtype": "float32", "quantization": {"dtype": "float16"}}, value.astype(np.float16).tobytes()
    if value.dtype == np.float32 and quantize == "uint8" and value.size > 1:
        lo, hi = float(value.min()), float(value.max())
        scale = (hi - lo) / 255 or 1.0
        q = np.round((value - lo) / scale).astype(np.uint8)
        return {"name": name, "shape": shape, "dtype": "float32", "quantization": {"dtype": "uint8", "scale": scale, "min": lo}}, q.tobytes()
    if value.dtype in (np.int64, np.int32):  # TF.js keeps int64 as int32
        return {"name": name, "shape": shape, "dtype": "int32"}, value.astype(np.int32).tobytes()
    return {"name": name, "shape": shape, "dtype": "float32"}, value.astype(np.float32).tobytes()


@pytest.fixture(scope="module")
def tiny() -> tuple[object, list[str], list[str]]:
    return tiny_nanodet()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)


def test_float32_weights_import_exactly(tiny, image, tmp_path):
    gd, ins, outs = tiny
    g = read_tfjs(write_tfjs(gd, tmp_path))
    assert g.inputs == ["x:0"] and len(g.outputs) == 4
    ref = graphdef.run_graph(gd, ins, outs, [image])
    got = graphdef.run_graph(g.graph_def, ins, outs, [image])
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    # int64 reshape shapes came back as int64 (the manifest said int32)
    shapes = [n for n in g.graph_def.node if n.op == "Const" and n.attr["dtype"].type == tf.int64.as_datatype_enum]
    assert len(shapes) == 4


@pytest.mark.parametrize("quantize", ["float16", "uint8"])
def test_quantised_weights_are_dequantised(tiny, image, tmp_path, quantize):
    gd, ins, outs = tiny
    g = read_tfjs(write_tfjs(gd, tmp_path, quantize))
    ref = graphdef.run_graph(gd, ins, outs, [image])
    got = graphdef.run_graph(g.graph_def, ins, outs, [image])
    for a, b in zip(ref, got):
        assert np.abs(a - b).max() <= (0.02 if quantize == "float16" else 0.5) * max(1.0, float(np.ptp(a)))
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def test_nhwc_rewrite_removes_every_transpose_and_keeps_the_numbers(tiny, image):
    gd, ins, outs = tiny
    shapes = graphdef.static_shapes(gd)
    assert nhwc.nchw_inputs(gd, ins, shapes) == ["x:0"]
    rw = nhwc.to_nhwc(gd, ins, outs, ["x:0"])
    assert rw.transposes[0] >= 10 and rw.transposes[1] == 0
    pads = graph_fixes.edge_pad_maxpools(rw.graph_def)
    assert len(pads) == 1 and not any(n.op == "PadV2" for n in rw.graph_def.node)
    ref = graphdef.run_graph(gd, ins, outs, [image])
    got = graphdef.run_graph(rw.graph_def, ins, rw.outputs, [image.transpose(0, 2, 3, 1)])
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_reshape_plan_follows_the_stored_layout():
    from converters.nhwc import _reshape_plan

    # NCHW [1, 8, 4, 4] stored NHWC, merged to [1, 8, 16]: stored [1, 16, 8], no data moved
    assert _reshape_plan([1, 8, 4, 4], [1, 8, 16], (0, 2, 3, 1)) == ([1, 16, 8], (0, 2, 1))
    # merging C with H is not adjacent in NHWC storage: needs the original layout
    assert _reshape_plan([1, 8, 4, 4], [1, 32, 4], (0, 2, 3, 1)) is None


def _error(path: Path) -> str:
    with pytest.raises(ModelFormatError) as e:
        read_tfjs(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_shard_wrong_size_and_unknown_op_are_one_line_errors(tiny, tmp_path):
    gd, _, _ = tiny
    p = write_tfjs(gd, tmp_path / "a")
    (tmp_path / "a" / "group1-shard2of2.bin").unlink()
    msg = _error(p)
    assert "group1-shard2of2.bin" in msg and "missing" in msg and str(p) in msg
    p = write_tfjs(gd, tmp_path / "b")
    with open(tmp_path / "b" / "group1-shard1of2.bin", "ab") as fh:
        fh.write(b"\0\0\0\0")
    assert "bytes but the manifest describes" in _error(p)
    p = write_tfjs(gd, tmp_path / "u")
    doc = json.loads(p.read_text())
    doc["modelTopology"]["node"][-1]["op"] = "FancyCustomOp"
    p.write_text(json.dumps(doc))
    msg = _error(p)
    assert "'FancyCustomOp'" in msg and "not a TensorFlow" in msg
    (tmp_path / "c.json").write_text('{"format": "layers-model", "modelTopology": {"model_config": {}}, "weightsManifest": []}')
    assert "layers model" in _error(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{not json")
    assert "not valid JSON" in _error(tmp_path / "d.json")


def test_convert_imports_quantizes_and_cards(tiny, tmp_path):
    from converters.convert import convert_modes
    from sdk.card import read_card
    from sdk.runner import Runner

    gd, ins, outs = tiny
    p = write_tfjs(gd, tmp_path / "m", "float16")
    cal = np.random.default_rng(2).uniform(-2, 2, (24, SIZE, SIZE, 3)).astype(np.float32)
    res = convert_modes(p, ["fp32", "int8"], output=tmp_path, calibration=cal, progress=False)
    fp32, int8 = res["fp32"], res["int8"]
    assert not isinstance(fp32, str) and not isinstance(int8, str), res
    assert fp32.path.name == "model_fp32.tflite"
    card = read_card(fp32.path)
    assert card is not None and card.source["format"] == "tfjs-graph-model"
    assert set(card.source["sha256_files"]) == {"model.json", "group1-shard1of2.bin", "group1-shard2of2.bin"}
    assert any("Transpose ops" in c for c in card.source["import"]["changes"])
    r = Runner(fp32.path)
    assert list(r.inputs[0].shape) == [1, SIZE, SIZE, 3]  # NHWC now
    assert "TRANSPOSE" not in fp32.report["ops"] and "TRANSPOSE" not in int8.report["ops"]
    assert len(fp32.report["accuracy"]["outputs"]) == 4
    for o in fp32.report["accuracy"]["outputs"]:
        assert o["max_abs_err"] < 1e-4
    for o in int8.report["accuracy"]["outputs"]:
        assert o["cosine"] > 0.9
    ref = graphdef.run_graph(gd, ins, outs, [cal[:1].transpose(0, 3, 1, 2)])
    got = {tuple(o.shape): o for o in r.run(cal[:1])}
    for a in ref:
        np.testing.assert_allclose(got[a.shape], a, rtol=5e-3, atol=0.02)  # float16 weights in the file, float32 in the reference


def test_cli_convert_model_json_and_bad_file(tiny, tmp_path, capsys):
    from cli import main

    gd, _, _ = tiny
    p = write_tfjs(gd, tmp_path / "m")
    out = tmp_path / "tiny_fp32.tflite"
    assert main(["convert", str(p), "--mode", "fp32", "-o", str(out), "--quiet"]) == 0
    assert out.is_file()
    (tmp_path / "m" / "group1-shard1of2.bin").unlink()
    assert main(["convert", str(p), "--mode", "fp32", "-o", str(tmp_path / "x.tflite"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "group1-shard1of2.bin" in err[0]


def _attr_list(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _fused_model(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A TF.js topology with the fused nodes tensorflowjs_converter writes (and a bare ``Prelu``)."""
    rng = np.random.default_rng(5)
    w = {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in {
        "w1": (3, 3, 3, 4), "b1": (4,), "dw": (3, 3, 4, 1), "db": (4,), "w3": (1, 1, 4, 4), "scale": (4,), "offset": (4,),
        "mean": (4,), "var": (4,), "w4": (1, 1, 4, 4), "b4": (4,), "a4": (4,), "a5": (4,), "m": (256, 3), "mb": (3,)}.items()}
    w["var"] = np.abs(w["var"]) + 0.1
    conv = {"T": {"type": "DT_FLOAT"}, "strides": _attr_list([1, 1, 1, 1]), "padding": {"s": "U0FNRQ=="}, "data_format": {"s": "TkhXQw=="},
            "dilations": _attr_list([1, 1, 1, 1])}

    def fused(op: str, name: str, inputs: list[str], ops: list[str], extra: dict | None = None) -> dict:
        import base64

        attr = {**conv, "fused_ops": {"list": {"s": [base64.b64encode(o.encode()).decode() for o in ops]}}, "num_args": {"i": str(len(inputs) - 2)}}
        return {"name": name, "op": op, "input": inputs, "attr": {**attr, **(extra or {})}}

    nodes = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": "1"}, {"size": "8"}, {"size": "8"}, {"size": "3"}]}}}}]
    nodes += [{"name": k, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {"dtype": "DT_FLOAT"}}}} for k in w]
    nodes += [{"name": "shape", "op": "Const", "attr": {"dtype": {"type": "DT_INT32"}, "value": {"tensor": {"dtype": "DT_INT32"}}}}]
    nodes += [
        fused("_FusedConv2D", "c1", ["x", "w1", "b1"], ["BiasAdd", "Relu"]),
        fused("FusedDepthwiseConv2dNative", "c2", ["c1", "dw", "db"], ["BiasAdd", "Relu6"]),
        fused("_FusedConv2D", "c3", ["c2", "w3", "scale", "offset", "mean", "var"], ["FusedBatchNorm", "Relu"], {"epsilon": {"f": 0.001}}),
        fused("_FusedConv2D", "c4", ["c3", "w4", "b4", "a4"], ["BiasAdd", "Prelu"]),
        {"name": "p5", "op": "Prelu", "input": ["c4", "a5"]},
        {"name": "r", "op": "Reshape", "input": ["p5", "shape"], "attr": {"T": {"type": "DT_FLOAT"}, "Tshape": {"type": "DT_INT32"}}},
        {"name": "mm", "op": "_FusedMatMul", "input": ["r", "m", "mb"], "attr": {
            "T": {"type": "DT_FLOAT"}, "transpose_a": {"b": False}, "transpose_b": {"b": False}, "num_args": {"i": "1"},
            "fused_ops": {"list": {"s": ["Qmlhc0FkZA==", "TGVha3lSZWx1"]}}, "leakyrelu_alpha": {"f": 0.3}}},
        {"name": "Identity", "op": "Identity", "input": ["mm"], "attr": {"T": {"type": "DT_FLOAT"}}},
    ]
    values = {**w, "shape": np.array([1, -1], np.int32)}
    weights = [{"name": k, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"} for k, v in values.items()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(b"".join(v.tobytes() for v in values.values()))
    doc = {"format": "graph-model", "modelTopology": {"node": nodes, "versions": {"producer": 1}},
           "weightsManifest": [{"paths": ["w.bin"], "weights": weights}]}
    (folder / "model.json").write_text(json.dumps(doc))
    return folder / "model.json", w


def test_tfjs_fused_ops_and_prelu_are_split_into_plain_ops(tmp_path):
    p, w = _fused_model(tmp_path)
    g = read_tfjs(p)
    ops = {n.op for n in g.graph_def.node}
    assert not ops & {"_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul", "Prelu"}
    assert g.info["changes"] == ["6 TF.js fused/Prelu node(s) split into plain TensorFlow ops"]
    x = np.random.default_rng(6).normal(0, 1, (1, 8, 8, 3)).astype(np.float32)
    (got,) = graphdef.run_graph(g.graph_def, g.inputs, g.outputs, [x])

    def prelu(v: np.ndarray, a: np.ndarray) -> np.ndarray:  # TF.js: x < 0 ? alpha * x : x
        return np.where(v < 0, a * v, v)

    h = tf.nn.relu(tf.nn.conv2d(x, w["w1"], 1, "SAME") + w["b1"])
    h = tf.nn.relu6(tf.nn.depthwise_conv2d(h, w["dw"], [1, 1, 1, 1], "SAME") + w["db"])
    h = tf.nn.conv2d(h, w["w3"], 1, "SAME")
    h = tf.nn.relu((h - w["mean"]) * w["scale"] / np.sqrt(w["var"] + 0.001) + w["offset"])
    h = prelu(np.asarray(tf.nn.conv2d(h, w["w4"], 1, "SAME") + w["b4"]), w["a4"])
    h = prelu(h, w["a5"]).reshape(1, -1)
    want = np.asarray(tf.nn.leaky_relu(h @ w["m"] + w["mb"], 0.3))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
