"""App configs: strict schema, options checked against the app's own parser, init round trip,
and the same events from flags and from ``edgesdk run`` (with MQTT and /metrics wired)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from apps.config import load_config, option_actions, to_argv
from apps.registry import CONFIG_APPS as APPS
from cli import main
from sdk.errors import ConfigError


def installed_apps() -> list[str]:
    out = []
    for app in APPS:
        try:
            option_actions(app)
            out.append(app)
        except ConfigError:
            pass
    return out


@pytest.mark.parametrize("app", installed_apps())
def test_init_round_trip(app, tmp_path, capsys):
    path = tmp_path / f"{app}.yaml"
    assert main(["config", "init", app, "-o", str(path)]) == 0
    cfg = load_config(path)
    assert cfg.app == app and cfg.options == {} and cfg.outputs.metrics_port == 9100
    text = path.read_text()
    assert "# " in text and "threads" in text  # every option listed, commented
    # refuses to overwrite, unless --force
    path.write_text(text + "# mine\n")
    assert main(["config", "init", app, "-o", str(path)]) == 2
    assert "--force" in capsys.readouterr().err and path.read_text().endswith("# mine\n")
    assert main(["config", "init", app, "-o", str(path), "--force"]) == 0
    assert path.read_text() == text


def test_uncommented_options_load(tmp_path):
    path = tmp_path / "tw.yaml"
    main(["config", "init", "trigger-word", "-o", str(path)])
    text = path.read_text().replace("  # threshold: null", "  threshold: 0.7").replace("  # chime: false", "  chime: true")
    path.write_text(text.replace("source: 'mic'", "source: x.wav"))
    (tmp_path / "x.wav").write_bytes(b"")
    argv = to_argv(load_config(path), tmp_path)
    assert argv == ["trigger-word", "--json", "--input", str(tmp_path / "x.wav"), "--threshold", "0.7", "--chime"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "message"), [
    ("app: trigger-word\nsorce: mic\n", "Invalid field 'sorce'. Did you mean 'source'?"),
    ("app: trigger-word\nsource: mic\noptions: {treshold: 0.5}\n", "Invalid field 'options.treshold' (not an option of `edgesdk trigger-word`). Did you mean 'threshold'?"),
    ("app: trigger-word\nsource: mic\noptions: {threshold: high}\n", "options.threshold: expected a number in [0, 1], got 'high'"),
    ("app: trigger-word\nsource: mic\noptions: {threshold: .nan}\n", "options.threshold: expected a number in [0, 1], got nan"),
    ("app: detect\nsource: '0'\noptions: {max_det: 0}\n", "options.max_det: expected an integer in [1, inf), got 0"),
    ("app: trigger-word\nsource: mic\noptions: {chime: 1}\n", "options.chime: expected true or false"),
    ("app: trigger-word\nsource: mic\noptions: {input: a.wav}\n", "set this with the top-level 'source' field"),
    ("app: trigger-word\nsource: mic\noutputs: {mqtt: {hots: x}}\n", "Invalid field 'outputs.mqtt.hots'. Did you mean 'host'?"),
    ("app: trigger-word\nsource: mic\noutputs: {metrics_port: 70000}\n", "outputs.metrics_port: expected a TCP port"),
    ("app: trigger-wrd\n", "Did you mean 'trigger-word'?"),
    ("app: trigger-word\nsource: mic\nprofile: rpi6\n", "unknown profile 'rpi6'"),
    ("app: face-verify\nsource: a.jpg\n", "name: face-verify needs"),
    ("app: [1\n", "not valid YAML"),
])
def test_bad_configs_one_line(tmp_path, capsys, text, message):
    p = write(tmp_path, text)
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(p) in err and len(err.splitlines()) == 1, err


def test_missing_model_and_source(tmp_path, capsys):
    p = write(tmp_path, "app: trigger-word\nmodel: gone.tflite\nsource: mic\n")
    assert main(["run", str(p)]) == 2
    assert "model: " in (err := capsys.readouterr().err) and "gone.tflite not found" in err
    p = write(tmp_path, "app: trigger-word\n")
    assert main(["run", str(p)]) == 2
    assert "source: trigger-word needs a .wav path" in capsys.readouterr().err


def test_profile_gives_threads_unless_set(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    p = write(tmp_path, "app: trigger-word\nsource: a.wav\nprofile: rpi5\n")
    assert to_argv(load_config(p), tmp_path)[-2:] == ["--threads", "4"]
    p = write(tmp_path, "app: trigger-word\nsource: a.wav\nprofile: rpi5\noptions: {threads: 2}\n")
    argv = to_argv(load_config(p), tmp_path)
    assert argv.count("--threads") == 1 and argv[argv.index("--threads") + 1] == "2"


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """A real trigger-word model (fires on a 1 kHz tone) and a WAV with two bursts."""
    pytest.importorskip("tensorflow")
    from tests.test_audio_tone_model import tone_model, tone_stream
    from tests.test_bundle import write_wav

    d = tmp_path_factory.mktemp("tone")
    tone_model(d / "tone.tflite")
    write_wav(d / "tone.wav", tone_stream([(1.0, 0.6), (3.0, 0.6), (5.5, 0.6)], 7.0))
    return d


def json_lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


@pytest.mark.tensorflow
def test_flags_and_config_give_same_events(tone, tmp_path, capsys):
    assert main(["trigger-word", "--json", "--model", str(tone / "tone.tflite"), "--input", str(tone / "tone.wav"),
                 "--threshold", "0.6", "--refractory", "1.5"]) == 0
    from_flags = json_lines(capsys.readouterr().out)
    shutil.copy(tone / "tone.tflite", tmp_path)
    shutil.copy(tone / "tone.wav", tmp_path)
    cfg = write(tmp_path, "app: trigger-word\nmodel: tone.tflite\nsource: tone.wav\n"
                          "options: {threshold: 0.6, refractory: 1.5}\noutputs: {json: true, metrics_port: 0}\n")
    assert main(["run", str(cfg)]) == 0
    from_config = json_lines(capsys.readouterr().out)
    assert len(from_flags) == 3 and from_config == from_flags


@pytest.mark.tensorflow
def test_run_publishes_mqtt_and_serves_metrics(tone, tmp_path):
    """`edgesdk run` as a service would run it (a looping process), observed from outside."""
    from tests.test_telemetry import MOSQUITTO, Broker, Subscriber, free_port

    if not Path(MOSQUITTO).exists():
        pytest.skip("needs mosquitto")
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, "home/#")
    port = free_port()
    cfg = write(tmp_path, f"app: trigger-word\nmodel: {tone / 'tone.tflite'}\nsource: {tone / 'tone.wav'}\nloop: true\n"
                          f"outputs: {{metrics_port: {port}, mqtt: {{port: {broker.port}, topic_prefix: home, device: pi}}}}\n")
    log = open(tmp_path / "out.jsonl", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run", str(cfg)], stdout=log, stderr=subprocess.DEVNULL)
    try:
        msgs = sub.wait_for(lambda ms: sum(m[0] == "home/pi/trigger-word/events" for m in ms) >= 3, timeout=90)
        ev = [json.loads(p) for topic, p, _ in msgs if topic.endswith("/events")]
        printed = json_lines((tmp_path / "out.jsonl").read_text())
        assert [e["time"] for e in ev[:3]] == [e["time"] for e in printed[:3]] == [1.1, 3.1, 5.6]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            text = r.read().decode()
        assert re.search(r'edgesdk_events_total\{app="trigger-word",event="trigger"\} [1-9]', text), text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as r:
            assert json.loads(r.read())["status"] == "ok"
        # SIGTERM (systemd stop): a clean exit that flushes MQTT: final stats, then "offline"
        proc.terminate()
        assert proc.wait(20) == 0
        msgs = sub.wait_for(lambda ms: ms[-1][0].endswith("/status") and ms[-1][1] == b"offline")
        assert any(t.endswith("/stats") and json.loads(p)["events"] >= 3 for t, p, _ in msgs)
    finally:
        proc.terminate()
        proc.wait(10)
        sub.close()
        broker.stop()


@pytest.mark.tensorflow
def test_bundle_straight_from_a_converted_model(tone, tmp_path, capsys):
    """convert -> deploy bundle MODEL.tflite -> deploy push: the card's task picks the app."""
    import tarfile

    import yaml

    out = tmp_path / "b.tar.gz"
    assert main(["deploy", "bundle", "--json", str(tone / "tone.tflite"), "--profile", "rpi5", "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["app"] == "trigger-word"
    with tarfile.open(out) as tar:
        cfg = yaml.safe_load(tar.extractfile("config.yaml").read())
        assert "models/tone.tflite" in tar.getnames()
    assert cfg["app"] == "trigger-word" and cfg["model"] == "models/tone.tflite" and cfg["source"] == "mic"
    assert main(["deploy", "bundle", str(tmp_path / "nothing.tflite"), "--profile", "rpi5", "-o", str(out)]) == 2
