"""`edgesdk detect` on one tiny model per output layout (tests/zoo.py): each runs with at most its
documented flags, agrees with an independent reference decode, says every guess on one stderr
line naming the flag, and no --decoder on any model ends in a traceback."""

from __future__ import annotations

import json

import cv2
import pytest

from cli import main
from tests.zoo import SPECS, agreement, build_zoo, reference, scene

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    pytest.importorskip("tensorflow")
    out = build_zoo(tmp_path_factory.getbasetemp() / "zoo")
    for name, spec in SPECS.items():
        cv2.imwrite(str(out / f"{name}.png"), scene(spec)[0])
    return out


def _detect(zoo, name: str, flags: list[str], capsys) -> tuple[int, list[dict], str]:
    code = main(["detect", "-m", str(zoo / f"{name}.tflite"), "-s", str(zoo / f"{name}.png"), "--json", "--stats-every", "0", *flags])
    cap = capsys.readouterr()
    lines = [json.loads(ln) for ln in cap.out.splitlines() if ln.startswith("{")]
    return code, (lines[0]["detections"] if lines else []), cap.err


@pytest.mark.parametrize("name", list(SPECS))
def test_every_layout_runs_with_its_documented_flags_and_agrees_with_the_reference(zoo, name, capsys):
    spec = {**SPECS[name], "name": name}
    frame, truth = scene(spec)
    want = reference(zoo / f"{name}.tflite", spec, frame)
    assert sorted(k for k, _, _ in want) == sorted(k for k, _ in truth)  # the reference itself sees the squares
    code, got, err = _detect(zoo, name, spec["flags"], capsys)
    assert code == 0, err
    matched, total, diff = agreement(got, want)
    assert (matched, total) == (3, 3) and diff < 0.02, (got, want)
    guesses = [ln for ln in err.splitlines() if ln.startswith("detect: guessed")]
    assert guesses and "Traceback" not in err
    for ln in guesses:  # one line each, saying what overrides it
        assert "override with" in ln and "card's " in ln
    said = "\n".join(guesses)
    if "--anchors" not in spec["flags"]:
        assert "--mean" in said and "--channel-order" in said  # no model here states its normalisation
    if name.startswith("yolox"):
        assert "BGR" in said and "YOLOX convention" in said


def test_anchor_grids_without_anchors_are_wrong_and_say_so(zoo, capsys):
    name = "yolov3_tiny_custom"
    spec = {**SPECS[name], "name": name}
    code, got, err = _detect(zoo, name, [], capsys)
    assert code == 0 and "guessed anchors: the YOLOv3-tiny defaults" in err and "override with --anchors" in err
    assert agreement(got, reference(zoo / f"{name}.tflite", spec, scene(spec)[0]))[0] == 0  # the boxes are off
    code, got, err = _detect(zoo, name, ["--anchors", "12,12 20,30 30,20; 40,40 60,50 50,60"], capsys)
    assert code == 0 and "guessed anchors" not in err


def test_ssd_postprocessed_labels_from_the_packed_labelmap(zoo, capsys):
    code, got, err = _detect(zoo, "ssd_postprocessed", [], capsys)
    assert code == 0 and sorted(d["label"] for d in got) == ["bird", "car", "person"]
    assert "TFLite_Detection_PostProcess op" in err and "labels from the model's associated file labelmap.txt" in err
    assert "placeholder taken as the background class" in err and "input range [-1, 1], implied by the input's quantization" in err


def test_wrong_convention_flags_change_what_is_found(zoo, capsys):
    truth = scene(SPECS["yolox_decoded"])[1]
    code, got, err = _detect(zoo, "yolox_decoded", ["--channel-order", "rgb"], capsys)
    assert code == 0 and "guessed channel order" not in err
    red = [d for d in got if abs(d["box"][0] - truth[0][1][0]) < 1 and abs(d["box"][1] - truth[0][1][1]) < 1]
    assert [d["class_id"] for d in red] == [2]  # the red square read as blue: the flag is obeyed
    code, got, err = _detect(zoo, "yolox_decoded", ["--mean", "0", "--std", "255"], capsys)
    assert code == 0 and got == [] and "guessed input normalisation" not in err


def test_every_decoder_on_every_model_exits_cleanly(zoo, capsys):
    from apps.detect.cli import DECODER_CHOICES

    for name in SPECS:
        for d in DECODER_CHOICES:
            code, _, err = _detect(zoo, name, ["--decoder", d, "-q"], capsys)
            assert code in (0, 2), (name, d, err)
            assert "Traceback" not in err, (name, d, err)
            if code == 2:
                assert len(err.strip().splitlines()) == 1 and err.startswith("edgesdk: error: "), (name, d, err)


def test_app_config_takes_the_model_facts(tmp_path, zoo):
    from apps.config import load_config, to_argv
    from sdk.errors import ConfigError

    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    cfg = tmp_path / "detect.yaml"
    cfg.write_text(
        f"app: detect\nmodel: {zoo / 'yolov3_tiny_custom.tflite'}\nsource: {zoo / 'yolov3_tiny_custom.png'}\n"
        "options:\n  decoder: yolov3\n  anchors: '12,12 20,30 30,20; 40,40 60,50 50,60'\n  mean: '0'\n  std: 255\n"
        f"  channel_order: rgb\n  labels: {tmp_path / 'labels.txt'}\n  yolo: v3\n"
    )
    argv = to_argv(load_config(cfg), tmp_path)
    for flag in ("--decoder", "--anchors", "--mean", "--std", "--channel-order", "--labels"):
        assert flag in argv
    code = main([*argv, "--stats-every", "0"])
    assert code == 0
    cfg.write_text("app: detect\nsource: '0'\noptions:\n  channel_order: rgba\n")
    with pytest.raises(ConfigError, match="channel_order.*rgb"):
        load_config(cfg)
    cfg.write_text("app: detect\nsource: '0'\noptions:\n  mean: 1,2\n")
    with pytest.raises(ConfigError, match="options.mean"):
        load_config(cfg)


def test_models_that_say_everything_have_nothing_to_guess(tmp_path_factory):
    """An Ultralytics export (metadata) and an edgesdk model (card): no guess lines."""
    from apps.detect.app import Detector
    from sdk.runner import Runner
    from tests.test_detect_app import build_models

    models = build_models(tmp_path_factory.getbasetemp())
    for model in ("ultra_int8", "split_int8"):
        said = []
        det = Detector(Runner(models / f"{model}.tflite"), say=said.append)
        assert said == [] and det.guesses == [], model
