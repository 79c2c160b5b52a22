"""A fleet of test devices on this machine: each a real OpenSSH ``sshd`` on its own loopback
port, logging in its own user (created here when the tests run as root) with its own home.

The "service" on each device is what the agent runs without systemd: the bundle's ``run.sh``
as a background process with a pidfile, which the agent stops, restarts and health-checks on
the app's ``/healthz``. Apps are the trigger-word app on a deterministic tone model, each
device serving ``/healthz`` on its own port (so each device has its own bundles, like
per-group app configs). The devices' venvs reuse this venv's packages (``--site-packages``),
so nothing is downloaded.
"""

from __future__ import annotations

import atexit
import functools
import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
HAVE_SSH = Path(SSHD).exists() and bool(shutil.which("ssh")) and bool(shutil.which("ssh-keygen"))
SITE = sysconfig.get_paths()["purelib"]
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world_readable(path: str) -> bool:
    p = Path(path).resolve()
    return all(os.stat(d).st_mode & 0o005 == 0o005 for d in [p, *p.parents])


def _same_minor(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False
    return out.strip() == str(tuple(sys.version_info[:2]))


def own_users_possible() -> bool:
    """Root, useradd, and a system Python of this minor version that other users can run, with this venv readable."""
    return (os.geteuid() == 0 and bool(shutil.which("useradd")) and Path(SYSTEM_PYTHON).exists()
            and _same_minor(SYSTEM_PYTHON) and _world_readable(SITE) and _world_readable(SYSTEM_PYTHON))


def device_python(own_users: bool) -> str:
    return SYSTEM_PYTHON if own_users else str(Path(sys.base_prefix) / "bin" / "python3")


@dataclass
class Device:
    name: str
    user: str
    home: Path
    port: int
    metrics_port: int
    proc: subprocess.Popen
    created_user: bool

    @property
    def dir(self) -> Path:
        return self.home / ".edgesdk"

    @property
    def address(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def current(self) -> str | None:
        link = self.dir / "current"
        return os.readlink(link).rpartition("/")[2] if link.is_symlink() else None


def make_keys(folder: Path) -> dict[str, str]:
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    return {"host": str(folder / "host_key"), "client": str(folder / "client_key"), "other": str(folder / "other_key")}


def start_device(root: Path, name: str, keys: dict[str, str], own_user: bool) -> Device:
    """One device: a user (own or the current one), a home under ``root``, an sshd admitting only that user."""
    home = root / name / "home"
    home.mkdir(parents=True)
    user = getpass.getuser()
    if own_user:
        user = f"ef{os.getpid() % 100000}{name}"[:31]
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", user], check=True, capture_output=True)
        subprocess.run(["usermod", "-p", "*", user], check=True, capture_output=True)  # no password, but not locked (sshd refuses locked)
        pw = pwd.getpwnam(user)
        os.chown(home, pw.pw_uid, pw.pw_gid)
    auth = root / name / "authorized_keys"
    auth.write_text(Path(keys["client"] + ".pub").read_text())
    auth.chmod(0o644)
    port = free_port()
    cfg = root / name / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys['host']}\nPidFile {root / name}/sshd.pid\n"
                   f"AuthorizedKeysFile {auth}\nAllowUsers {user}\nPermitRootLogin yes\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 50\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = open(root / name / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd for {name} did not start: {(root / name / 'sshd.log').read_text()[-300:]}")
    return Device(name, user, home, port, free_port(), proc, own_user)


def stop_app(dev_dir: Path) -> None:
    """Stop the app a push started (by its pidfile's process group)."""
    pidfile = dev_dir / "app.pid"
    if pidfile.exists():
        try:
            os.killpg(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def stop_device(dev: Device) -> None:
    stop_app(dev.dir)
    dev.proc.terminate()
    try:
        dev.proc.wait(10)
    except subprocess.TimeoutExpired:
        dev.proc.kill()
    if dev.created_user:
        subprocess.run(["userdel", "-f", dev.user], capture_output=True)


def remove_later(folder: Path) -> None:
    """Delete ``folder`` in the background: the devices' venvs are thousands of files, and the
    tests need not wait for them to go."""
    subprocess.Popen(["rm", "-rf", "--", str(folder)], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fleet_root() -> Path:
    """A folder other users can traverse (pytest's own temp folders are private to this user)."""
    root = Path(tempfile.mkdtemp(prefix="edgesdk-fleet-test-"))
    root.chmod(0o755)
    return root


def app_config(folder: Path, name: str, model: str, metrics_port: int, threshold: float) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"app: trigger-word\nmodel: {model}\nsource: tone.wav\nprofile: generic-x86\nloop: true\n"
                    f"options: {{threshold: {threshold}}}\noutputs: {{json: true, metrics_port: {metrics_port}}}\n")
    return path


@functools.cache
def tone_files() -> Path:
    """A folder with ``tone.tflite`` (a trigger-word model that fires on a 1 kHz tone), ``tone.wav``
    (bursts at 1 s and 3 s of 5 s) and ``junk.tflite``; built once per test session (TensorFlow)."""
    from tests.test_audio_tone_model import tone_model, tone_stream
    from tests.test_bundle import write_wav

    folder = Path(tempfile.mkdtemp(prefix="edgesdk-tone-"))
    atexit.register(shutil.rmtree, folder, True)
    tone_model(folder / "tone.tflite")
    write_wav(folder / "tone.wav", tone_stream([(1.0, 0.6), (3.0, 0.6)], 5.0))
    (folder / "junk.tflite").write_bytes(b"not a model")
    return folder
