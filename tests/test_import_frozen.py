"""TF1 frozen-graph import: cut at inner tensors (an Object Detection API style graph), errors, convert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from converters import graphdef  # noqa: E402
from converters.frozen_graph import read_frozen  # noqa: E402
from sdk.errors import ModelFormatError  # noqa: E402

N_CELLS = 4 * 4


def od_api_like(path: Path, *, variables: bool = False) -> Path:
    """A frozen graph shaped like an SSD export: uint8 ``image_tensor`` → resize/normalise loop-free
    preprocessing → ``FeatureExtractor/input`` (shape left open) → conv head → ``concat``
    ``[1, 16, 1, 4]``, its ``Squeeze`` ``[1, 16, 4]`` and ``concat_1`` ``[1, 16, 2]``."""
    rng = np.random.default_rng(0)
    g = tf.Graph()
    with g.as_default():
        img = tf.compat.v1.placeholder(tf.uint8, [None, None, None, 3], name="image_tensor")
        x = tf.image.resize(tf.cast(img, tf.float32), [16, 16]) / 127.5 - 1.0
        x = tf.compat.v1.placeholder_with_default(x, [None, None, None, 3])  # the size is lost here, as after a map_fn loop
        x = tf.identity(x, name="FeatureExtractor/input")
        w = (tf.Variable if variables else tf.constant)(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
        h = tf.nn.relu6(tf.nn.conv2d(x, w, 4, "SAME"))  # [1, 4, 4, 8]
        head = tf.nn.conv2d(h, tf.constant(rng.normal(0, 0.3, (1, 1, 8, 6)).astype(np.float32)), 1, "SAME")
        enc = tf.reshape(head[..., :4], [-1, N_CELLS, 1, 4])
        tf.concat([enc[:, :8], enc[:, 8:]], axis=1, name="concat")
        tf.squeeze(tf.identity(g.get_tensor_by_name("concat:0")), axis=2, name="Squeeze")
        cls = tf.reshape(head[..., 4:], [-1, N_CELLS, 2])
        tf.concat([cls[:, :8], cls[:, 8:]], axis=1, name="concat_1")
        gd = g.as_graph_def()
    path.write_bytes(gd.SerializeToString())
    return path


INPUT, OUTPUTS = "FeatureExtractor/input", ("Squeeze", "concat_1")


def test_cut_at_inner_tensors_with_a_given_shape(tmp_path):
    pb = od_api_like(tmp_path / "frozen_inference_graph.pb")
    with pytest.raises(ModelFormatError, match="input_shapes") as e:
        read_frozen(pb, [INPUT], OUTPUTS)
    assert e.value.param == "input_shapes"
    g = read_frozen(pb, [INPUT], OUTPUTS, [(1, 16, 16, 3)])
    assert g.inputs == [f"{INPUT}:0"] and g.outputs == ["Squeeze:0", "concat_1:0"]
    ops = {n.op for n in g.graph_def.node}
    assert "ResizeBilinear" not in ops and "Cast" not in ops  # the preprocessing is gone
    x = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    enc, cls = graphdef.run_graph(g.graph_def, g.inputs, g.outputs, [x])
    assert enc.shape == (1, N_CELLS, 4) and cls.shape == (1, N_CELLS, 2)


def test_bad_files_and_names_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pb").write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ModelFormatError, match="junk.pb: not a TensorFlow GraphDef"):
        read_frozen(tmp_path / "junk.pb")
    pb = od_api_like(tmp_path / "vars.pb", variables=True)
    with pytest.raises(ModelFormatError, match="still has variables"):
        read_frozen(pb)
    pb = od_api_like(tmp_path / "g.pb")
    with pytest.raises(ModelFormatError, match="no tensor 'concat_9:0'") as e:
        read_frozen(pb, [INPUT], ["concat_9"], [(1, 16, 16, 3)])
    assert e.value.param == "outputs" and "\n" not in str(e.value)
    with pytest.raises(ModelFormatError, match="does not fit"):
        read_frozen(pb, [INPUT], OUTPUTS, [(1, 16, 16, 3, 1)])


def test_cli_converts_a_cut_frozen_graph_and_the_outputs_match(tmp_path, capsys):
    from cli import main
    from sdk.card import read_card
    from sdk.runner import Runner

    pb = od_api_like(tmp_path / "frozen_inference_graph.pb")
    out = tmp_path / "ssd_fp32.tflite"
    code = main(["convert", str(pb), "--inputs", INPUT, "--outputs", ",".join(OUTPUTS), "--input-shapes", "1,16,16,3",
                 "--mode", "fp32", "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    card = read_card(out)
    assert card is not None and card.source["format"] == "tf-frozen-graph" and card.source["inputs"] == [f"{INPUT}:0"]
    r = Runner(out)
    assert list(r.inputs[0].shape) == [1, 16, 16, 3]
    x = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    g = read_frozen(pb, [INPUT], OUTPUTS, [(1, 16, 16, 3)])
    want = graphdef.run_graph(g.graph_def, g.inputs, g.outputs, [x])
    got = {tuple(o.shape): o for o in r.run(x)}
    for w in want:
        np.testing.assert_allclose(got[w.shape], w, rtol=1e-5, atol=1e-5)
    code = main(["convert", str(pb), "--outputs", "nope", "--mode", "fp32", "-o", str(tmp_path / "x.tflite"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope" in err[0], err
    code = main(["convert", str(tmp_path / "x.keras"), "--inputs", "a", "--mode", "fp32"])
    assert code == 2
