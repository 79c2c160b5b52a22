"""``edgesdk deploy push/status`` against a real OpenSSH ``sshd`` on 127.0.0.1.

The test starts its own sshd (Debian ``openssh-server``) on a free port with throwaway host
and client keys and a test-only config, logs in as the current user, and installs real
bundles of the trigger-word app (a deterministic tone model on a generated WAV, replayed in a
loop) into a temporary folder. The "device" reuses this venv's packages through
``--site-packages``, so nothing is downloaded.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from cli import main
from deploy.bundle import make_bundle, pack_tar

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = [pytest.mark.tensorflow, pytest.mark.slow, pytest.mark.skipif(not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                 reason="needs openssh-server and openssh-client")]
DEVICE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")
SITE = sysconfig.get_paths()["purelib"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    cfg = d / "sshd_config"
    cfg.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=open(d / "sshd.log", "wb"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text()[-300:]}")
    yield {"port": port, "key": str(d / "client_key"), "other_key": str(d / "other_key"), "host": f"{getpass.getuser()}@127.0.0.1"}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A good bundle, a second good one, one whose model is junk, one tampered with."""
    from tests.test_audio_tone_model import tone_model, tone_stream
    from tests.test_bundle import write_wav

    d = tmp_path_factory.mktemp("bundles")
    tone_model(d / "tone.tflite")
    write_wav(d / "tone.wav", tone_stream([(1.0, 0.6), (3.0, 0.6)], 5.0))
    (d / "junk.tflite").write_bytes(b"not a model")
    port = free_port()
    out = {"port": port}
    for name, model, threshold in (("good", "tone.tflite", 0.5), ("good2", "tone.tflite", 0.6), ("broken", "junk.tflite", 0.5)):
        (d / f"{name}.yaml").write_text(f"""app: trigger-word
model: {model}
source: tone.wav
profile: generic-x86
loop: true
options: {{threshold: {threshold}}}
outputs: {{json: true, metrics_port: {port}}}
""")
        out[name] = make_bundle(d / f"{name}.yaml", d / f"{name}.tar.gz")["bundle"]
    import tarfile

    with tarfile.open(out["good2"]) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    files["config.yaml"] = files["config.yaml"].replace(b"threshold: 0.6", b"threshold: 0.1")
    (d / "tampered.tar.gz").write_bytes(pack_tar(files))
    out["tampered"] = str(d / "tampered.tar.gz")
    return out


def push(sshd, bundle, remote_dir, *extra, key=None, host=None, capsys=None):
    hosts = [] if host == "" else [host or sshd["host"]]  # "": hosts come from --hosts
    argv = ["deploy", "push", "--json", bundle, *hosts, "-p", str(sshd["port"]), "-i", key or sshd["key"],
            "--remote-dir", str(remote_dir), "--python", DEVICE_PYTHON, "--site-packages", SITE, "--health-timeout", "30", *extra]
    rc = main(argv)
    captured = capsys.readouterr()
    rows = [json.loads(x) for x in captured.out.splitlines() if x.startswith("{")]
    return rc, rows, captured.err


def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return json.loads(r.read())


def test_push_rollback_tamper_status(sshd, bundles, tmp_path, capsys):
    remote = tmp_path / "device"
    try:
        rc, rows, err = push(sshd, bundles["good"], remote, capsys=capsys)
        assert rc == 0, err
        good = rows[0]["bundle"]
        assert rows[0]["ok"] and rows[0]["action"] == "installed" and rows[0]["previous"] is None
        assert healthz(bundles["port"])["bundle"] == good
        assert os.readlink(remote / "current") == f"bundles/{good}"

        # a broken bundle (junk model) fails its health check and rolls back
        rc, rows, err = push(sshd, bundles["broken"], remote, capsys=capsys)
        assert rc == 1 and not rows[0]["ok"]
        assert rows[0]["action"] == "rolled back" and rows[0]["previous"] == good, rows
        assert "model" in rows[0]["message"].lower() or "tflite" in rows[0]["message"].lower(), rows[0]["message"]
        assert os.readlink(remote / "current") == f"bundles/{good}"
        assert not (remote / "bundles" / rows[0]["bundle"]).exists()  # nothing of the failed bundle left
        assert healthz(bundles["port"])["bundle"] == good

        # tampered: refused before anything changes
        rc, rows, err = push(sshd, bundles["tampered"], remote, capsys=capsys)
        assert rc == 2 and "manifest mismatch: config.yaml" in err, err
        assert sorted(p.name for p in (remote / "bundles").iterdir()) == [good]
        assert healthz(bundles["port"])["bundle"] == good

        # status: the running bundle, uptime and stats
        rc = main(["deploy", "status", "--json", sshd["host"], "-p", str(sshd["port"]), "-i", sshd["key"], "--remote-dir", str(remote)])
        row = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert rc == 0 and row["running"] and row["bundle"] == good and row["app"] == "trigger-word"
        assert row["uptime_s"] > 0 and row["stats"]["events"] >= 1

        # a second good bundle replaces the first; the first stays as the rollback target
        rc, rows, err = push(sshd, bundles["good2"], remote, capsys=capsys)
        assert rc == 0 and rows[0]["previous"] == good, err
        assert healthz(bundles["port"])["bundle"] == rows[0]["bundle"]
        assert sorted(p.name for p in (remote / "bundles").iterdir()) == sorted([good, rows[0]["bundle"]])

        # several hosts in parallel (--hosts file): one result row each, exit 1 when any failed
        hosts = tmp_path / "hosts.txt"
        hosts.write_text(f"# fleet\n{sshd['host']}:{sshd['port']}\n{sshd['host']}:{free_port()}  # switched off\n")
        rc, rows, err = push(sshd, bundles["good2"], remote, "--hosts", str(hosts), host="", capsys=capsys)
        assert rc == 1 and [r["ok"] for r in rows] == [True, False], rows
        assert rows[0]["action"] == "restarted" and "unreachable" in rows[1]["message"]
    finally:
        _stop(remote)


def _stop(remote: Path) -> None:
    """Stop the app the pushes started (by its pidfile)."""
    pidfile = remote / "app.pid"
    if pidfile.exists():
        try:
            os.killpg(int(pidfile.read_text().split()[0]), 15)
        except (OSError, ValueError):
            pass


def test_unreachable_and_wrong_key(sshd, bundles, tmp_path, capsys):
    rc, _, err = push(sshd, bundles["good"], tmp_path / "d", host=f"{getpass.getuser()}@127.0.0.1:{free_port()}", capsys=capsys)
    assert rc == 2 and "unreachable" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = push(sshd, bundles["good"], tmp_path / "d", key=sshd["other_key"], capsys=capsys)
    assert rc == 2 and "wrong key or user" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()


def test_old_python_refused(sshd, bundles, tmp_path, capsys):
    """A device whose python3 is older than 3.10 (simulated by a wrapper reporting 3.9) gets one clear line."""
    fake = tmp_path / "python3.9"
    fake.write_text(f"#!/bin/sh\nexec {DEVICE_PYTHON} -c \"import sys; sys.version_info = (3, 9, 2); "
                    f"exec(compile(sys.stdin.read(), 'agent', 'exec'), {{'__name__': '__main__'}})\" \"$@\"\n")
    fake.chmod(0o755)
    rc, _, err = push(sshd, bundles["good"], tmp_path / "d", "--python", str(fake), capsys=capsys)
    assert rc == 2 and "Python 3.9" in err and "3.10+" in err, err
