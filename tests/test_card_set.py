"""`edgesdk card set/unset/show`: fix a third-party model once, without Python, checked before writing."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest

from cli import main
from sdk.card import read_card
from tests.zoo import SPECS, agreement, build_zoo, reference, scene

pytestmark = pytest.mark.tensorflow
ANCHORS = "12,12 20,30 30,20; 40,40 60,50 50,60"


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    pytest.importorskip("tensorflow")
    return build_zoo(tmp_path_factory.getbasetemp() / "zoo")


@pytest.fixture
def model(zoo, tmp_path):
    path = tmp_path / "fastest.tflite"
    shutil.copy(zoo / "yolov3_tiny_custom.tflite", path)
    return path


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_set_once_then_run_with_no_flags_and_nothing_guessed(model, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    code, out, err = run(["card", "set", str(model), "output.decoder=yolov3", f"output.anchors={ANCHORS}", "input.mean=0", "input.std=255",
                          "input.channel_order=rgb", f"output.labels=@{tmp_path / 'labels.txt'}"], capsys)
    assert code == 0, err
    assert "checked against the outputs: yolov3 decoder (model card), 3 classes" in out and f"card written to {model}" in out
    card = read_card(model)
    assert card.task == "detect" and card.output["anchors"] == [[[12, 12], [20, 30], [30, 20]], [[40, 40], [60, 50], [50, 60]]]
    assert card.input == {"mean": 0, "std": 255, "channel_order": "rgb"} and card.output["labels"] == ["red", "green", "blue"]
    spec = {**SPECS["yolov3_tiny_custom"], "name": "yolov3_tiny_custom"}
    frame = scene(spec)[0]
    cv2.imwrite(str(tmp_path / "scene.png"), frame)
    code, out, err = run(["detect", "-m", str(model), "-s", str(tmp_path / "scene.png"), "--json", "--stats-every", "0"], capsys)
    assert code == 0 and "guessed" not in err and "labels from model card" in err
    got = json.loads(out.splitlines()[0])["detections"]
    assert agreement(got, reference(model, spec, frame))[:2] == (3, 3)
    assert sorted(d["label"] for d in got) == ["blue", "green", "red"]


def test_show_unset_copy_and_dry_run(model, tmp_path, capsys):
    code, out, _ = run(["card", "show", str(model)], capsys)
    assert code == 0 and "no model card" in out
    copy = tmp_path / "copy.tflite"
    before = model.read_bytes()
    code, out, _ = run(["card", "set", str(model), "output.decoder=yolov3", "output.conf=0.4", "-o", str(copy)], capsys)
    assert code == 0 and model.read_bytes() == before and read_card(copy).output == {"decoder": "yolov3", "conf": 0.4}
    code, out, _ = run(["card", "set", str(copy), "notes=fixed by hand", "--dry-run"], capsys)
    assert code == 0 and "dry run, nothing written" in out and read_card(copy).notes == ""
    code, out, _ = run(["card", "unset", str(copy), "output.conf", "--json"], capsys)
    assert code == 0 and json.loads(out)["card"]["output"] == {"decoder": "yolov3"}
    code, out, _ = run(["card", "show", str(copy), "--json"], capsys)
    assert json.loads(out)["card"]["output"]["decoder"] == "yolov3"


def test_bad_edits_are_one_line_and_leave_the_file_alone(model, capsys):
    before = model.read_bytes()
    cases = [
        (["output.decoder=retinanet"], "unknown decoder 'retinanet'"),
        (["output.decoder=yolov8"], "do not fit the yolo-split layout"),
        (["outputs.decoder=yolox"], "unknown card key 'outputs.decoder'"),
        (["input.channel_order=rgba"], "channel_order"),
        (["output.decoder=yolov3", "output.anchors=1,2 3"], "anchors must be positive w,h pairs"),
        (["output.decoder"], "expected KEY=VALUE"),
        (["task=segment"], "unknown task 'segment'"),
    ]
    for pairs, message in cases:
        code, _, err = run(["card", "set", str(model), *pairs], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (pairs, err)
    assert model.read_bytes() == before
