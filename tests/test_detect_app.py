"""The detect app end to end, with real int8 TFLite models built (not trained) to find coloured squares.

The models average-pool the 128×128 input into 32-pixel cells; a cell's class score is
``sigmoid(20 * mean(channel) - 10)`` (red → class 0, green → class 1) and its box is the cell
itself. A square filling a cell is therefore detected exactly there, so every expected box is
known. Models are built once per session in a child process (the device side stays TF-free).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from apps.detect.app import Detector, Settings, run_stream
from cli import main
from sdk.errors import ConfigError, ModelFormatError
from sdk.runner import Runner
from sdk.sources.video import open_source

S, CELL = 128, 32
BUILD = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras
    from keras import layers
    out = sys.argv[1]
    S, CELL, C = 128, 32, 2
    g = S // CELL
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    x1, y1 = xs.ravel() / g, ys.ravel() / g
    xyxy = np.stack([x1, y1, x1 + 1 / g, y1 + 1 / g], 1).astype(np.float32)
    xywh = np.stack([x1 + 0.5 / g, y1 + 0.5 / g, np.full_like(x1, 1 / g), np.full_like(x1, 1 / g)], 1).astype(np.float32)

    class Const(layers.Layer):
        def __init__(self, value, **kw):
            super().__init__(**kw)
            self.value = value
        def call(self, x):
            return x[..., :1] * 0.0 + self.value

    def scores(inp, heavy):
        pool = layers.AveragePooling2D(CELL)(inp)
        if heavy:  # a deliberately slow branch that barely changes the result
            h = inp
            for _ in range(3):
                h = layers.Conv2D(48, 3, padding="same")(h)
            h = layers.AveragePooling2D(CELL)(h)
            pool = layers.Add()([pool, layers.Conv2D(3, 1, kernel_initializer="zeros", bias_initializer="zeros")(h)])
        conv = layers.Conv2D(C, 1, activation="sigmoid", name="cls")
        sc = conv(pool)
        w = np.zeros((1, 1, 3, C), np.float32); w[0, 0, 0, 0] = 20; w[0, 0, 1, 1] = 20
        conv.set_weights([w, np.full(C, -10, np.float32)])
        return layers.Reshape((g * g, C))(sc)

    def calib():
        rng = np.random.default_rng(0)
        for i in range(32):
            x = np.zeros((1, S, S, 3), np.float32)
            for _ in range(3):
                cy, cx, ch = rng.integers(0, g), rng.integers(0, g), rng.integers(0, 2)
                x[0, cy * CELL:(cy + 1) * CELL, cx * CELL:(cx + 1) * CELL, ch] = 1.0
            if i % 4 == 0:
                x = rng.uniform(0, 1, x.shape).astype(np.float32)
            yield [x]

    def convert(model, path, int8=True):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = calib
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        open(path, "wb").write(conv.convert())

    inp = keras.Input((S, S, 3), batch_size=1)
    sc = scores(inp, False)
    convert(keras.Model(inp, [Const(xyxy)(sc), sc]), f"{out}/split_int8.tflite")
    # Ultralytics-style: one [1, 4 + C, N] tensor, normalised xywh rows then class rows
    ultra = layers.Permute((2, 1))(layers.Concatenate(axis=2)([Const(xywh)(sc), sc]))
    convert(keras.Model(inp, ultra), f"{out}/ultra_int8.tflite")
    inp2 = keras.Input((S, S, 3), batch_size=1)
    sc2 = scores(inp2, True)
    convert(keras.Model(inp2, [Const(xyxy)(sc2), sc2]), f"{out}/slow_fp32.tflite", int8=False)
    """
)
CARD = {
    "task": "detect",
    "input": {"size": [S, S], "letterbox": True, "mean": 0, "std": 255, "channel_order": "rgb"},
    "output": {"decoder": "yolo-split", "box_format": "xyxy", "box_units": "normalized", "labels": ["red", "green"]},
}
ULTRA_META = "{'description': 'test', 'stride': 32, 'task': 'detect', 'imgsz': [128, 128], 'names': {0: 'red', 1: 'green'}}"


def build_models(base: Path) -> Path:
    """Build (once per session) split_int8 / ultra_int8 (Ultralytics metadata, no card) / slow_fp32."""
    from sdk.card import ModelCard, write_card

    out = base / "detect_models"
    if (out / "done").exists():
        return out
    out.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", BUILD, str(out)], check=True, capture_output=True, timeout=600)
    for name in ("split_int8", "slow_fp32"):
        write_card(out / f"{name}.tflite", ModelCard.from_dict(CARD))
    buf = (out / "ultra_int8.tflite").read_bytes()
    with zipfile.ZipFile(out / "meta.zip", "w") as z:
        z.writestr("temp_meta.txt", ULTRA_META)
    (out / "ultra_int8.tflite").write_bytes(buf + (out / "meta.zip").read_bytes())
    (out / "done").touch()
    return out


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    return build_models(tmp_path_factory.getbasetemp())


# frame 512×384 letterboxes to scale 1/4 with 16 px of padding top and bottom: model cell (i, j)
# is frame x 128i..128i+128, y 128j-64..128j+64 (rows j = 1, 2 lie inside the frame)
def cell_box(i: int, j: int) -> list[float]:
    return [128.0 * i, 128.0 * j - 64, 128.0 * i + 128, 128.0 * j + 64]


def scene(t: int) -> list[tuple[int, int, int]]:
    """Squares at frame ``t``: (cell i, cell j, class) — a red one moving right, a green one moving left."""
    return [(t % 4, 1, 0), (3 - t % 4, 2, 1)]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "squares.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 200, (512, 384))  # 5 ms a frame: --realtime outruns any model
    for t in range(12):
        f = np.zeros((384, 512, 3), np.uint8)
        for i, j, c in scene(t):
            x1, y1, x2, y2 = (int(v) for v in cell_box(i, j))
            f[y1:y2, x1:x2] = (0, 0, 255) if c == 0 else (0, 255, 0)
        w.write(f)
    w.release()
    return path


def expected(t: int) -> list[tuple[str, list[float]]]:
    return sorted((["red", "green"][c], cell_box(i, j)) for i, j, c in scene(t))


def run_cli(args: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, [json.loads(ln) for ln in cap.out.splitlines() if ln.startswith("{")], cap.err


def test_end_to_end_video_finds_the_moving_squares(models, video, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    code, lines, err = run_cli(["detect", "--model", str(models / "split_int8.tflite"), "--source", str(video), "--json", "--save", str(out)], capsys)
    assert code == 0, err
    assert [ln["frame"] for ln in lines] == list(range(12))
    for ln in lines:
        assert set(ln) == {"frame", "time", "detections", "latency_ms", "dropped"}
        assert set(ln["latency_ms"]) == {"pre", "infer", "post"} and ln["dropped"] == 0
        got = sorted((d["label"], d["box"]) for d in ln["detections"])
        want = expected(ln["frame"])
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1.0)
        assert all(d["score"] > 0.9 for d in ln["detections"])
    assert "yolo-split decoder (model card)" in err and "labels from model card" in err and "FPS" in err
    assert int(cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert not list(tmp_path.glob(".*part*"))


def test_images_folder_gives_paths_and_annotated_images(models, video, tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    cap = cv2.VideoCapture(str(video))
    for t in range(3):
        ok, f = cap.read()
        cv2.imwrite(str(src / f"{t:02d}.png"), f)
    (src / "99_broken.jpg").write_bytes(b"junk")
    code, lines, err = run_cli(["detect", "-m", str(models / "split_int8.tflite"), "-s", str(src), "--json", "--save", str(tmp_path / "ann")], capsys)
    assert code == 0
    assert [Path(ln["path"]).name for ln in lines] == ["00.png", "01.png", "02.png"]
    assert "99_broken.jpg: cannot read this image, skipped" in err
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["00.png", "01.png", "02.png"]
    assert [sorted(d["label"] for d in ln["detections"]) for ln in lines] == [["green", "red"]] * 3


def reference_ultralytics(model: Path, image: np.ndarray, conf: float, iou: float) -> list[tuple[int, float, list[float]]]:
    """A straightforward, loop-based reading of an Ultralytics int8 export (letterbox, dequantize, NMS)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    h, w = image.shape[:2]
    r = min(S / w, S / h)
    nw, nh = round(w * r), round(h * r)
    px, py = (S - nw) // 2, (S - nh) // 2
    canvas = np.full((S, S, 3), 114, np.uint8)
    canvas[py : py + nh, px : px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    x = canvas[..., ::-1].astype(np.float32) / 255.0
    s_in, z_in = inp["quantization"]
    it.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8)[None])
    it.invoke()
    s_out, z_out = outp["quantization"]
    y = (it.get_tensor(outp["index"])[0].astype(np.float32) - z_out) * s_out  # [4 + C, N]
    cands = []
    for n in range(y.shape[1]):
        c = int(np.argmax(y[4:, n]))
        score = float(y[4 + c, n])
        if score >= conf:
            cx, cy, bw, bh = (y[:4, n] * S).tolist()
            box = [(cx - bw / 2 - px) / r, (cy - bh / 2 - py) / r, (cx + bw / 2 - px) / r, (cy + bh / 2 - py) / r]
            cands.append((c, score, [min(max(v, 0), lim) for v, lim in zip(box, (w, h, w, h))]))
    cands.sort(key=lambda d: -d[1])
    kept: list[tuple[int, float, list[float]]] = []
    for d in cands:
        if all(k[0] != d[0] or _iou(k[2], d[2]) <= iou for k in kept):
            kept.append(d)
    return kept


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_ultralytics_style_int8_export_runs_with_no_flags(models, video, capsys):
    model = models / "ultra_int8.tflite"
    runner = Runner(model)
    assert runner.card is None and runner.outputs[0].shape == (1, 6, 16) and runner.outputs[0].dtype == np.int8
    det = Detector(runner)
    assert det.decoder.name == "yolov8" and "Ultralytics metadata" in det.reason and det.labels == ["red", "green"]
    cap = cv2.VideoCapture(str(video))
    for _ in range(4):
        ok, frame = cap.read()
        got = [(d.class_id, d.score, d.box.as_list(3)) for d in det(frame)]
        want = reference_ultralytics(model, frame, det.conf, det.iou)
        assert [g[0] for g in got] == [w[0] for w in want] and len(got) == 2
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-6)
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=1e-2)
    code, lines, err = run_cli(["detect", "-m", str(model), "-s", str(video), "--json", "--max-frames", "2"], capsys)
    assert code == 0 and len(lines) == 2 and "yolov8 decoder (Ultralytics metadata" in err


def test_latest_frame_policy_with_a_slow_model(models, video):
    det = Detector(Runner(models / "slow_fp32.tflite", threads=1))
    events = []
    with open_source(video, realtime=True) as src:  # 200 fps, the model is much slower
        qmax = []

        def emit(ev, dets, frame):
            qmax.append(len(src.queue))
            events.append(ev)

        totals = run_stream(det, src, emit, stats_every=0)
    assert totals["dropped"] > 0 and totals["frames"] + totals["dropped"] == 12
    assert max(qmax) <= 1
    idx = [e["frame"] for e in events]
    assert sum(b - a - 1 for a, b in zip(idx, idx[1:])) + idx[0] == events[-1]["dropped"] <= totals["dropped"]
    for e in events:  # the slow model still finds the squares of the frame it was given
        assert sorted((d["label"], d["box"]) for d in e["detections"]) == [(lab, [float(v) for v in b]) for lab, b in expected(e["frame"])]


def test_live_mjpeg_camera_through_the_cli(models, video, capsys):
    from tests.test_video_sources import MJPEGServer

    srv = MJPEGServer(fps=50)
    try:
        code, lines, err = run_cli(["detect", "-m", str(models / "split_int8.tflite"), "-s", srv.url, "--json", "--max-frames", "3", "--stats-every", "0"], capsys)
    finally:
        srv.close()
    assert code == 0 and len(lines) == 3
    assert all("dropped" in ln and ln["detections"] == [] for ln in lines)  # solid grey frames: nothing to find


def test_bad_inputs(models, video, tmp_path, capsys):
    split = str(models / "split_int8.tflite")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    code, _, err = run_cli(["detect", "-m", split, "-s", str(video), "--labels", str(labels)], capsys)
    assert code == 2 and "3 labels, but the model has 2 classes" in err
    labels.write_text("left\nright\n")
    det = Detector(Runner(split), Settings(labels_file=str(labels)))
    assert det.labels == ["left", "right"] and det.labels_from.startswith("the labels file")
    code, _, err = run_cli(["detect", "-m", split, "-s", "/dev/video93"], capsys)
    assert code == 2 and "video devices on this machine" in err
    code, _, err = run_cli(["detect", "-m", split, "-s", str(video), "--yolo", "v2"], capsys)
    assert code == 2 and "[1, 16, 2]" in err and "set --decoder to the family" in err and "Traceback" not in err
    code, _, err = run_cli(["detect", "-m", split, "-s", str(video), "--conf", "1.5"], capsys)
    assert code == 2 and "--conf: expected a number in [0, 1], got '1.5'" in err
    with pytest.raises(ConfigError, match="^labels_file .*missing.txt: cannot read it") as e:  # the library names its parameter
        Detector(Runner(split), Settings(labels_file=str(tmp_path / "missing.txt")))
    assert e.value.param == "labels_file"
    code, _, err = run_cli(["detect", "-m", split, "-s", str(video), "--labels", str(tmp_path / "missing.txt")], capsys)
    assert code == 2 and "error: --labels " in err and "cannot read it" in err
    if "NONE" in cv2.getBuildInformation().split("GUI:")[1].splitlines()[0]:  # headless OpenCV
        code, _, err = run_cli(["detect", "-m", split, "-s", str(video), "--show"], capsys)
        assert code == 2 and "--show needs a GUI build of OpenCV" in err


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path, video, capsys):
    import apps.detect.app as app
    from apps.registry import APPS

    monkeypatch.setattr(app, "DEFAULT_MODEL", tmp_path / "nope.tflite")
    with pytest.raises(ModelFormatError, match=re.escape(APPS["detect"].rebuild)):
        app.default_model()
    code, _, err = run_cli(["detect", "-s", str(video)], capsys)
    assert code == 2 and "default detection model" in err


def test_capture_runs_in_its_own_thread(models, video):
    det = Detector(Runner(models / "split_int8.tflite"))
    names = []
    with open_source(video) as src:
        run_stream(det, src, lambda ev, d, f: names.append(threading.current_thread().name), stats_every=0, max_frames=2)
        assert src._thread is not None and src._thread.name.startswith("capture")
    assert set(names) == {threading.current_thread().name}
    assert not src._thread.is_alive()  # closing the source ends its capture thread


def test_demo_runs_the_default_model_on_the_bundled_video(models, video, monkeypatch, capsys):
    import apps.detect.app as app
    import apps.detect.demo as demo
    from sdk.console import Output

    monkeypatch.setattr(app, "DEFAULT_MODEL", models / "split_int8.tflite")
    monkeypatch.setattr(demo, "SAMPLE", video)
    demo.demo(Output(json_mode=True))
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["frames"] == 12 and ev["detections"] == {"red": 12, "green": 12}
    monkeypatch.setattr(demo, "SAMPLE", video.with_name("none.mp4"))
    demo.demo(Output(json_mode=True))
    assert json.loads(capsys.readouterr().out)["status"] == "demo samples missing"


def test_device_side_runs_with_tensorflow_blocked(models, video):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        import cv2
        from apps.detect.app import Detector
        from apps.detect import cli, demo, eval  # noqa: F401
        from sdk.runner import Runner
        ok, frame = cv2.VideoCapture({str(video)!r}).read()
        print(sorted(d.label for d in Detector(Runner({str(models / "split_int8.tflite")!r}))(frame)))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['green', 'red']"


def _frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    return frames


@pytest.mark.parametrize("conf", [0.001, 0.25])
def test_int8_outputs_decoded_in_the_quantized_domain_match_the_float_path(models, video, conf):
    """The Detector's fast path (decode stored int8, dequantize only what passes) changes nothing:
    on the test models and on the shipped default model over the bundled photos."""
    from apps.detect.app import DEFAULT_MODEL

    cases = [(models / "split_int8.tflite", _frames(video, 60)), (models / "ultra_int8.tflite", _frames(video, 60))]
    photos = sorted((DEFAULT_MODEL.parent.parent / "samples" / "photos").glob("*.jpg"))
    if DEFAULT_MODEL.is_file() and photos:  # the shipped COCO model on the bundled photos
        cases.append((DEFAULT_MODEL, [cv2.imread(str(p)) for p in photos]))
    for model, frames in cases:
        fast = Detector(Runner(model), Settings(conf=conf))
        slow = Detector(Runner(model), Settings(conf=conf))
        slow._raw = False  # what the Detector did before: the Runner dequantizes every output
        assert fast._raw, model
        found = 0
        for frame in frames:
            got = fast(frame)
            assert got == slow(frame), model
            found += len(got)
        assert found, model
