"""``edgesdk deploy push`` / ``status`` over OpenSSH (``ssh``/``scp`` subprocesses).

Each host: ``agent check`` (Python version, folders), ``scp`` the bundle, ``agent install``
(verify the manifest, install, switch, start, health check, roll back). The agent is sent on
``ssh``'s stdin from this machine, never taken from the bundle it is about to verify. SSH
runs with ``BatchMode=yes`` (no prompts) and ``StrictHostKeyChecking=accept-new`` against a
known_hosts file private to the run.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.deploy")

AGENT = Path(__file__).resolve().parent / "agent.py"


@dataclass(frozen=True)
class Host:
    host: str
    user: str | None = None
    port: int = 22

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return self.target + (f":{self.port}" if self.port != 22 else "")


def parse_host(text: str, default_port: int = 22) -> Host:
    """``[USER@]HOST[:PORT]``."""
    user, _, rest = text.rpartition("@")
    host, sep, port = rest.partition(":")
    if not host or (sep and not port.isdigit()):
        raise ConfigError(f"host {text!r}: expected USER@HOST or USER@HOST:PORT")
    return Host(host, user or None, int(port) if sep else default_port)


def parse_hosts(hosts: list[str], hosts_file: str | None, default_port: int = 22) -> list[Host]:
    """Hosts from the command line and a ``--hosts`` file (one per line, ``#`` comments)."""
    texts = list(hosts)
    if hosts_file:
        try:
            lines = Path(hosts_file).read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"--hosts {hosts_file}: cannot read ({e.strerror})") from e
        texts += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    if not texts:
        raise ConfigError("no host given; pass USER@HOST or --hosts FILE")
    return [parse_host(t, default_port) for t in texts]


class Remote:
    """How to reach devices: key, remote folder, timeouts; one private known_hosts per instance."""

    def __init__(self, identity: str | None = None, remote_dir: str = "~/.edgesdk", connect_timeout: int = 10) -> None:
        if identity and not Path(identity).expanduser().is_file():
            raise ConfigError(f"--identity {identity}: no such key file")
        self.identity = str(Path(identity).expanduser()) if identity else None
        self.remote_dir = remote_dir
        self.connect_timeout = connect_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="edgesdk-ssh-")
        self.known_hosts = str(Path(self._tmp.name) / "known_hosts")

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR"]
        if self.identity:
            opts += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh(self, host: Host, command: list[str], stdin: bytes | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = ["ssh", *self.options(), "-p", str(host.port), host.target, shlex.join(command)]
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)

    def agent(self, host: Host, python: str, args: list[str], timeout: float = 900) -> dict[str, Any]:
        """Run the agent on ``host``; its JSON result, or ``{"ok": False, "message": ...}``."""
        res = self.ssh(host, [python, "-", *args], stdin=AGENT.read_bytes(), timeout=timeout)
        if res.returncode == 255:
            return {"ok": False, "message": ssh_error(host, res.stderr.decode(errors="replace"))}
        lines = [ln for ln in res.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
        if not lines:
            err = (res.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            if res.returncode == 127:
                err = f"{python} not found on the device; install Python 3.10+ (python3, python3-venv)"
            return {"ok": False, "message": f"agent failed (exit {res.returncode}): {err}"}
        return json.loads(lines[-1])

    def copy(self, host: Host, local: str | Path, remote: str) -> str | None:
        """``scp`` a file; an error message or None."""
        cmd = ["scp", "-q", *self.options(), "-P", str(host.port), str(local), f"{host.target}:{remote}"]
        res = subprocess.run(cmd, capture_output=True, timeout=1800)
        return None if res.returncode == 0 else ssh_error(host, res.stderr.decode(errors="replace"))


def ssh_error(host: Host, stderr: str) -> str:
    """One line saying why ssh failed, and what to do."""
    text = stderr.strip().splitlines()[-1] if stderr.strip() else "ssh failed"
    low = stderr.lower()
    if "permission denied" in low:
        return f"{host.label}: SSH login refused (wrong key or user); pass --identity KEY, or ssh-copy-id {host.target}"
    if any(s in low for s in ("connection refused", "timed out", "no route", "could not resolve", "network is unreachable")):
        return f"{host.label}: unreachable ({text}); check the address, --port and that sshd runs"
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return f"{host.label}: host key mismatch ({text})"
    return f"{host.label}: {text}"


def push_one(bundle: Path, host: Host, remote: Remote, health_timeout: float, python: str, site_packages: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"host": host.label, "ok": False, "bundle": None, "previous": None, "action": "", "message": ""}
    checked = remote.agent(host, python, ["check", remote.remote_dir], timeout=120)
    if not checked.get("ok"):
        return {**row, "action": "refused", "message": checked.get("message", "check failed")}
    incoming = f"{checked['dir']}/incoming/{bundle.name}.part"
    log.info("%s: Python %s, copying %s (%.1f MB)", host.label, checked["python"], bundle.name, bundle.stat().st_size / 1e6)
    err = remote.copy(host, bundle, incoming)
    if err:
        return {**row, "action": "copy failed", "message": err}
    args = ["install", incoming, remote.remote_dir, "--health-timeout", str(health_timeout), "--python", python]
    if site_packages:
        args += ["--site-packages", site_packages]
    log.info("%s: verifying, installing and starting", host.label)
    res = remote.agent(host, python, args, timeout=900 + health_timeout * 2)
    return {**row, **{k: res.get(k, row.get(k)) for k in ("ok", "bundle", "previous", "action", "message")}}


def push_many(bundle: str | Path, hosts: list[Host], remote: Remote, jobs: int = 8, health_timeout: float = 60.0,
              python: str = "python3", site_packages: str | None = None) -> list[dict[str, Any]]:
    """Push ``bundle`` to every host in parallel; one result row per host, in the given order.

    Raises:
        ConfigError: The bundle file is missing.
    """
    path = Path(bundle)
    if not path.is_file():
        raise ConfigError(f"{path}: no such bundle; build one with `edgesdk deploy bundle CONFIG.yaml`")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda h: _guard(h, push_one, path, h, remote, health_timeout, python, site_packages), hosts))


def status_one(host: Host, remote: Remote) -> dict[str, Any]:
    res = remote.agent(host, "python3", ["status", remote.remote_dir], timeout=60)
    return {"host": host.label, **res}


def status_many(hosts: list[Host], remote: Remote, jobs: int = 8) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda h: _guard(h, status_one, h, remote), hosts))


def _guard(host: Host, fn: Any, *args: Any) -> dict[str, Any]:
    """One host's failure (a timeout, a missing ssh binary) must not hide the others' results."""
    try:
        return fn(*args)
    except subprocess.TimeoutExpired as e:
        return {"host": host.label, "ok": False, "message": f"timed out after {e.timeout:.0f} s"}
    except FileNotFoundError as e:
        return {"host": host.label, "ok": False, "message": f"{e.filename} not found; install openssh-client"}
