"""``edgesdk deploy bundle``: reproducible archives, manifest, rewritten config, unit, install script."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cli import main
from deploy.bundle import bundle_id, make_bundle
from deploy.wheel import build_wheel
from sdk.errors import ConfigError


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """16-bit mono WAV from float samples in [-1, 1] (``sdk.sources.audio.write_wav``), returning ``path``."""
    from sdk.sources.audio import write_wav as write

    write(path, np.clip(samples, -1, 1), rate)
    return path


@pytest.fixture()
def project(tmp_path) -> Path:
    """A config with a model (any bytes: bundling does not run it) and a file source."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "kws.tflite").write_bytes(b"TFL3 model bytes" * 100)
    write_wav(tmp_path / "clip.wav", np.zeros(1600, np.float32))
    (tmp_path / "app.yaml").write_text("app: trigger-word\nmodel: models/kws.tflite\nsource: clip.wav\nprofile: rpi5\n"
                                       "options: {threshold: 0.6}\noutputs: {metrics_port: 9100}\n")
    return tmp_path


def members(path: str | Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_reproducible_and_manifest(project):
    a = make_bundle(project / "app.yaml", project / "a.tar.gz")
    (project / "models" / "kws.tflite").touch()  # a new mtime changes nothing
    b = make_bundle(project / "app.yaml", project / "b.tar.gz")
    assert (project / "a.tar.gz").read_bytes() == (project / "b.tar.gz").read_bytes()
    assert a["sha256"] == b["sha256"] and a["id"] == b["id"]

    files = members(project / "a.tar.gz")
    assert list(files) == sorted(files)
    with tarfile.open(project / "a.tar.gz") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname) for m in tar.getmembers()} == {(0, 0, 0, "root")}
        assert tar.getmember("install.sh").mode == 0o755 and tar.getmember("config.yaml").mode == 0o644
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest() and entry["size"] == len(files[name])
    assert bundle_id(files["manifest.json"]) == a["id"]
    assert manifest["app"] == "trigger-word" and manifest["arch"] == "aarch64" and manifest["metrics_port"] == 9100

    # a changed input changes the bundle
    (project / "models" / "kws.tflite").write_bytes(b"other model")
    assert make_bundle(project / "app.yaml", project / "c.tar.gz")["sha256"] != a["sha256"]


def test_config_rewritten_and_runnable_paths(project):
    import yaml

    make_bundle(project / "app.yaml", project / "a.tar.gz")
    files = members(project / "a.tar.gz")
    cfg = yaml.safe_load(files["config.yaml"])
    assert cfg["model"] == "models/kws.tflite" and cfg["source"] == "data/clip.wav" and cfg["profile"] == "rpi5"
    assert files["models/kws.tflite"] == (project / "models" / "kws.tflite").read_bytes()
    assert cfg["options"] == {"threshold": 0.6}


def test_unit_and_install_script(project):
    make_bundle(project / "app.yaml", project / "a.tar.gz")
    files = members(project / "a.tar.gz")
    unit = files["edgesdk-trigger-word.service"].decode()
    for line in ("Restart=on-failure", "User=edgesdk", "NoNewPrivileges=yes", "ProtectSystem=strict", "DevicePolicy=closed",
                 "DeviceAllow=char-alsa rw", "SupplementaryGroups=audio"):
        assert line in unit.splitlines(), line
    assert "video4linux" not in unit  # an audio app gets no camera
    install = files["install.sh"].decode()
    assert not [ln for ln in install.lower().splitlines() if "pip" in ln and "tensorflow" in ln] and "-m venv" in install
    subprocess.run(["sh", "-n"], input=files["install.sh"], check=True)  # valid shell
    subprocess.run(["sh", "-n"], input=files["run.sh"], check=True)


def test_camera_app_gets_video_devices(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "d.yaml").write_text("app: detect\nmodel: m.tflite\nsource: '0'\nprofile: rpi-coral-usb\n")
    try:
        make_bundle(tmp_path / "d.yaml", tmp_path / "d.tar.gz")
    except ConfigError as e:
        pytest.skip(f"detect app not installed yet: {e}")
    unit = members(tmp_path / "d.tar.gz")["edgesdk-detect.service"].decode()
    assert "DeviceAllow=char-video4linux rw" in unit and "DeviceAllow=char-usb_device rw" in unit and "char-alsa" not in unit


def test_wheel_is_device_side_only_and_reproducible():
    name, data = build_wheel()
    assert build_wheel()[1] == data and name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "sdk/runner.py" in names and "devices/profiles/rpi5.yaml" in names
    assert "cli/__init__.py" in names  # the console script is cli:main
    assert not any(n.startswith(("converters/", "tests/", "deploy/")) or "__pycache__" in n for n in names)
    assert "Requires-Dist: numpy" in meta and "tensorflow" not in meta.lower()
    with zipfile.ZipFile(io.BytesIO(build_wheel("trigger_word")[1])) as zf:
        names = zf.namelist()
    assert "apps/face/app.py" in names and not any(n.startswith(("apps/face/models/", "apps/detect/samples/")) for n in names)
    assert "apps/trigger_word/samples/activate.wav" in names


def test_bad_inputs(project, capsys):
    (project / "missing.yaml").write_text("app: trigger-word\nmodel: nope.tflite\nsource: clip.wav\nprofile: rpi5\n")
    assert main(["deploy", "bundle", str(project / "missing.yaml"), "-o", str(project / "x.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert "nope.tflite not found" in err and len(err.strip().splitlines()) == 1
    assert not (project / "x.tar.gz").exists()
    (project / "noprof.yaml").write_text("app: trigger-word\nsource: clip.wav\n")
    assert main(["deploy", "bundle", str(project / "noprof.yaml"), "-o", str(project / "x.tar.gz")]) == 2
    assert "--profile" in capsys.readouterr().err
    assert main(["deploy", "bundle", str(project / "app.yaml"), "--profile", "rpi6", "-o", str(project / "x.tar.gz")]) == 2
    assert "rpi5" in capsys.readouterr().err  # the suggestion


def test_cli_bundle(project, capsys):
    assert main(["deploy", "bundle", "--json", str(project / "app.yaml"), "-o", str(project / "cli.tar.gz")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["files"] == len(members(project / "cli.tar.gz")) and res["profile"] == "rpi5"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EDGESDK_NETWORK_TESTS"), reason="needs PyPI; set EDGESDK_NETWORK_TESTS=1 (make pi-check covers it)")
def test_offline_wheels_for_aarch64(project):
    """``--offline`` fetches aarch64/cp311 wheels with ``pip download --platform``."""
    res = make_bundle(project / "app.yaml", project / "off.tar.gz", offline=True)
    files = members(project / "off.tar.gz")
    wheels = [n for n in files if n.startswith("wheels/")]
    assert any("numpy" in w and "aarch64" in w for w in wheels) and any("ai_edge_litert" in w for w in wheels)
    assert not any("tensorflow" in w.lower() or "x86_64" in w for w in wheels)
    assert res["offline"] and json.loads(files["manifest.json"])["python"] == "3.11"


@pytest.mark.parametrize("manifest, why", [
    (None, "not a regular file"),  # a symlink named manifest.json
    (b"\x00\xff not json", "not JSON"),
    (b"[1, 2]", "not an object with a 'files' mapping"),
    (b'{"app": "detect"}', "not an object with a 'files' mapping"),
    (b'{"files": {"a.txt": {"sha256": 1}}}', "without its sha256 and size"),
])
def test_agent_refuses_a_bad_manifest_in_one_line(tmp_path, capsys, manifest, why):
    from deploy import agent

    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        if manifest is None:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
    code = agent.main(["install", str(archive), str(tmp_path / "dev")])
    out = capsys.readouterr()
    assert code == agent.EXIT_TAMPERED and why in out.out + out.err and "Traceback" not in out.err
    assert not (tmp_path / "dev" / "bundles").exists() or not any((tmp_path / "dev" / "bundles").iterdir())
