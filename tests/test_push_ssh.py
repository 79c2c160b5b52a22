"""``edgesdk deploy push/status USER@HOST`` (a one-off inventory run through the same Ansible
role as fleets) against a real OpenSSH ``sshd`` on 127.0.0.1.

The test starts its own sshd (Debian ``openssh-server``) on a free port with throwaway host
and client keys and a test-only config, logs in as the current user, and installs real
bundles of the trigger-word app (a deterministic tone model on a generated WAV, replayed in a
loop) into a temporary folder. The "device" reuses this venv's packages through
``--site-packages``, so nothing is downloaded. Pull mode (``ansible-pull`` from a git repository,
a bundle from an HTTP server on 127.0.0.1) runs on the same device folder. Fleets: ``tests/test_fleet.py``.
"""

from __future__ import annotations

import getpass
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cli import main
from deploy.bundle import make_bundle, pack_tar
from tests.fleet_devices import tone_files

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = [pytest.mark.tensorflow, pytest.mark.slow, pytest.mark.skipif(not (Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                 reason="needs openssh-server and openssh-client")]
DEVICE_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")
SITE = sysconfig.get_paths()["purelib"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def device_interpreter(monkeypatch):
    """Ansible's own modules on the "device" run with a Python known to work here (discovery may find
    broken pyenv shims on this machine's PATH); inventories set ansible_python_interpreter the same way."""
    monkeypatch.setenv("ANSIBLE_PYTHON_INTERPRETER", DEVICE_PYTHON)


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
    d = tmp_path_factory.mktemp("bundles")
    for f in tone_files().iterdir():
        shutil.copy(f, d / f.name)
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
            "--known-hosts", str(Path(sshd["key"]).parent / "known_hosts"), "--remote-dir", str(remote_dir), "--python", DEVICE_PYTHON, "--site-packages", SITE, "--health-timeout", "30", *extra]
    start = time.monotonic()
    rc = main(argv)
    captured = capsys.readouterr()
    rows = [json.loads(x) for x in captured.out.splitlines() if x.startswith("{")]
    if os.environ.get("EDGESDK_FLEET_REPORT"):  # the timed runs, for the record
        with open(os.environ["EDGESDK_FLEET_REPORT"], "a") as fh:
            fh.write(f"## push {Path(bundle).name} ({time.monotonic() - start:.1f} s, exit {rc})\n" + "".join(json.dumps(r) + "\n" for r in rows))
    return rc, rows, captured.err


def healthz(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """The device's folder, shared by this module's tests (one venv: the runtime of every bundle here is the same)."""
    remote = tmp_path_factory.mktemp("device") / "edgesdk"
    yield remote
    _stop(remote)


def test_push_rollback_tamper_status(sshd, bundles, device, tmp_path, capsys):
    remote = device  # a fresh device folder: nothing installed yet
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
    rc = main(["deploy", "status", "--json", sshd["host"], "-p", str(sshd["port"]), "-i", sshd["key"], "--remote-dir", str(remote),
               "--known-hosts", str(Path(sshd["key"]).parent / "known_hosts")])
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rc == 0 and row["running"] and row["bundle"] == good and row["app"] == "trigger-word"
    assert row["uptime_s"] > 0 and row["stats"]["events"] >= 1 and row["healthy"]
    assert row["last_install"]["action"] == "refused" and "manifest mismatch" in row["last_install"]["message"]

    # several hosts (--hosts file): one result row each, exit 1 when any failed;
    # the running device already has this bundle and is healthy: nothing is copied or restarted
    hosts = tmp_path / "hosts.txt"
    closed = free_port()
    hosts.write_text(f"# fleet\n{sshd['host']}:{sshd['port']}\n{sshd['host']}:{closed}  # switched off\n")
    rc, rows, err = push(sshd, bundles["good"], remote, "--hosts", str(hosts), host="", capsys=capsys)
    rows = {r["host"]: r for r in rows}  # streamed as each host finishes
    up, down = rows[f"{sshd['host']}:{sshd['port']}"], rows[f"{sshd['host']}:{closed}"]
    assert rc == 1 and len(rows) == 2 and up["ok"] and not down["ok"], rows
    assert up["action"] == "unchanged" and down["action"] == "unreachable" and "unreachable" in down["message"]


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


@pytest.mark.skipif(not (shutil.which("git") and shutil.which("flock")), reason="needs git and flock (util-linux)")
def test_pull_mode(bundles, device, tmp_path, capsys):
    """pull-config -> a git repo -> the device's own pull script (what its timer runs) -> installed, then
    idempotent, then a bundle from a URL the user hosts (here on 127.0.0.1), checked against its SHA-256."""
    dev_dir, port = device, bundles["port"]
    one, two = _facts(bundles["good2"]), _facts(bundles["good"])
    repo = tmp_path / "repo"
    common = ["--remote-dir", str(dev_dir), "--python", DEVICE_PYTHON, "--site-packages", SITE, "--health-timeout", "30",
              "--ansible-pull", str(Path(sys.executable).parent / "ansible-pull"), "--repo", f"file://{repo}", "--every", "15"]
    try:
        assert main(["deploy", "pull-config", one["bundle"], "-o", str(repo), *common]) == 0, capsys.readouterr().err
        capsys.readouterr()
        for f in ("local.yml", "roles/edgesdk/files/agent.py", "bundles/good2.tar.gz", "device/edgesdk-pull.timer", "device/setup.sh"):
            assert (repo / f).is_file(), f
        assert "OnUnitActiveSec=15min" in (repo / "device" / "edgesdk-pull.timer").read_text()
        assert (repo / "device" / "edgesdk-pull.cron").read_text().startswith("*/15 * * * * ")
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
        script = repo / "device" / "edgesdk-pull.sh"
        env = {**os.environ, "EDGESDK_PULL_DIR": str(tmp_path / "checkout")}

        res = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert os.readlink(dev_dir / "current") == f"bundles/{one['id']}" and healthz(port)["bundle"] == one["id"]

        res = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)  # the timer's next run
        assert res.returncode == 0 and "changed=0" in res.stdout and "failed=0" in res.stdout, res.stdout[-2000:]

        # the next bundle from a URL, checked against its SHA-256
        with _serve(Path(two["bundle"]).parent) as url:
            out2 = tmp_path / "v2"
            assert main(["deploy", "pull-config", two["bundle"], "-o", str(out2), "--bundle-url", f"{url}/good.tar.gz", *common]) == 0
            (repo / "local.yml").write_text((out2 / "local.yml").read_text())
            subprocess.run([*git, "rm", "-q", "bundles/good2.tar.gz"], check=True)
            subprocess.run([*git, "commit", "-q", "-am", "next by URL"], check=True)
            res = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert os.readlink(dev_dir / "current") == f"bundles/{two['id']}" and healthz(port)["bundle"] == two["id"]
    finally:
        _stop(dev_dir)


def _facts(bundle: str) -> dict:
    from deploy.push import bundle_facts

    f = bundle_facts(bundle)
    return {"bundle": f["edgesdk_bundle"], "id": f["edgesdk_bundle_id"]}


class _serve:
    """A static file server on 127.0.0.1 for the duration of a ``with``."""

    def __init__(self, folder: Path) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
