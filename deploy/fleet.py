"""Run the shipped Ansible playbooks (``deploy/ansible/``) and stream one result per host.

``ansible-playbook`` is taken from beside the running interpreter (the venv's ``bin/``, where
the ``[host]`` extra installs ``ansible-core``), else from ``PATH``. It gets an inventory this
package wrote (:mod:`deploy.inventory`), the ``edgesdk_json`` stdout callback, and settings
through the environment: ``BatchMode`` ssh (no prompts), new host keys accepted once and then
checked, pipelining and connection sharing, a private control-socket and temp folder per run.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError, EdgeSDKError

log = logging.getLogger("edgesdk.deploy")

ANSIBLE_DIR = Path(__file__).resolve().parent / "ansible"
Row = dict[str, Any]


@dataclass(frozen=True)
class Connection:
    """How to reach devices (each may be overridden per group or host in the inventory).

    Args:
        identity: SSH private key (None: ssh's default keys and agent).
        user: Login user for hosts that name none (None: ssh's default).
        port: SSH port of hosts whose inventory entry names none (None: ssh's default).
        known_hosts: A known_hosts file to use instead of ``~/.ssh/known_hosts``.
        connect_timeout: Seconds to wait for ssh to connect.
        retries: Extra ssh connection attempts on a failed connection.
    """

    identity: str | None = None
    user: str | None = None
    port: int | None = None
    known_hosts: str | None = None
    connect_timeout: int = 10
    retries: int = 0


@dataclass(frozen=True)
class Rollout:
    """How a run proceeds.

    Args:
        batch: Hosts per batch: ``N``, ``N%`` or a comma list (``1,25%``: a canary, then quarters); None: one batch.
        max_fail: Stop after a batch in which more than this percentage of hosts failed (None: go on).
        forks: Hosts worked on at once.
        check: Dry run: report what would change, change nothing.
        limit: An Ansible host pattern (groups, names, ``kitchen:&cam*``, ``!garage``).
    """

    batch: str | None = None
    max_fail: int | None = None
    forks: int = 10
    check: bool = False
    limit: str | None = None


@dataclass
class Outcome:
    """Rows in plan order (one per targeted host), batches run, and why the rollout stopped (or "")."""

    rows: list[Row] = field(default_factory=list)
    batches: int = 0
    stopped: str = ""
    elapsed_s: float = 0.0


def parse_batch(text: str | None) -> list[int | str] | None:
    """``"2"`` -> ``[2]``, ``"1,25%"`` -> ``[1, "25%"]``; errors name the parameter ``batch``."""
    if text is None:
        return None
    out: list[int | str] = []
    for part in str(text).split(","):
        part = part.strip()
        num = part[:-1] if part.endswith("%") else part
        if not num.isdigit() or int(num) < 1 or (part.endswith("%") and int(num) > 100):
            raise ConfigError(f"batch must be N, N% or a list like 1,25% (N >= 1, N% up to 100%), got {text!r}", param="batch")
        out.append(part if part.endswith("%") else int(num))
    return out


def parse_max_fail(text: str | None) -> int | None:
    """``"0%"`` -> 0; a percentage from 0% to 100%; errors name the parameter ``max_fail``."""
    if text is None:
        return None
    t = str(text).strip()
    if not t.endswith("%") or not t[:-1].isdigit() or int(t[:-1]) > 100:
        raise ConfigError(f"max_fail must be a percentage like 0% or 25%, got {text!r}", param="max_fail")
    return int(t[:-1])


def ansible_playbook(name: str = "ansible-playbook") -> str:
    """The ``ansible-*`` program of this interpreter's environment, else the one on ``PATH``.

    Raises:
        EdgeSDKError: Not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise EdgeSDKError(f"{name} not found; install the host side: pip install 'edgesdk[host]' (or pip install ansible-core)")
    return found


def environment(conn: Connection, tmp: Path) -> dict[str, str]:
    """Ansible settings for a run (environment variables win over any ansible.cfg)."""
    ssh = ["-o", "ControlMaster=auto", "-o", "ControlPersist=30s", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    if conn.known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={conn.known_hosts}"]
    env = dict(os.environ)
    env.update({
        "ANSIBLE_STDOUT_CALLBACK": "edgesdk_json",
        "ANSIBLE_CALLBACK_PLUGINS": str(ANSIBLE_DIR / "plugins" / "callback"),
        "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
        "ANSIBLE_INVENTORY_ENABLED": "yaml",  # only the inventory written here, read one way
        "ANSIBLE_SSH_ARGS": shlex.join(ssh),
        "ANSIBLE_HOME": str(tmp / "home"),  # nothing of a run is left in ~/.ansible
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_TIMEOUT": str(conn.connect_timeout),
        "ANSIBLE_SSH_RETRIES": str(conn.retries),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_PYTHON_INTERPRETER": env.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
    })
    if conn.port:
        env["ANSIBLE_REMOTE_PORT"] = str(conn.port)
    return env


def run_playbook(playbook: str, inventory: dict[str, Any], extra_vars: dict[str, Any], conn: Connection, rollout: Rollout,
                 on_row: Callable[[Row], None] | None = None) -> Outcome:
    """Run ``deploy/ansible/<playbook>`` and return one row per targeted host.

    Args:
        playbook: ``push.yml`` or ``status.yml``.
        inventory: The YAML-inventory structure to run against (already checked).
        extra_vars: Variables for every host (they win over the inventory's).
        conn: How to reach the devices.
        rollout: Batches, failure threshold, forks, dry run, limit.
        on_row: Called with each host's row as soon as it is known (hosts never reached come last).

    Raises:
        ConfigError: ``limit`` matches no host.
        EdgeSDKError: ansible-playbook is missing or failed before reaching any host.
    """
    program = ansible_playbook()
    with tempfile.TemporaryDirectory(prefix="edgesdk-fleet-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "inventory.json").write_text(json.dumps(inventory))
        (tmp / "vars.json").write_text(json.dumps(extra_vars))
        argv = [program, "-i", str(tmp / "inventory.json"), str(ANSIBLE_DIR / playbook), "-e", f"@{tmp / 'vars.json'}",
                "--forks", str(max(1, rollout.forks))]
        # OPTION=VALUE: a value is never taken for an option of its own
        argv += [f"--limit={rollout.limit}"] if rollout.limit else []
        argv += ["--check"] if rollout.check else []
        argv += [f"--private-key={conn.identity}"] if conn.identity else []
        argv += [f"--user={conn.user}"] if conn.user else []
        log.debug("running %s", shlex.join(argv))
        return _stream(argv, environment(conn, tmp), rollout, on_row)


def _stream(argv: list[str], env: dict[str, str], rollout: Rollout, on_row: Callable[[Row], None] | None) -> Outcome:
    start = time.monotonic()
    out, plan, rows = Outcome(), [], {}
    errors: deque[str] = deque(maxlen=20)
    no_hosts = False
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, bufsize=1)
    drain = threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)
    drain.start()
    try:
        for line in proc.stdout or []:
            event = _event(line)
            if event is None:
                if line.strip():
                    log.info("ansible: %s", line.rstrip())
                continue
            kind = event.pop("edgesdk")
            if kind == "plan":
                plan = list(event["hosts"])
            elif kind == "batch":
                out.batches = event["number"]
                log.debug("batch %d: %s", event["number"], ", ".join(event["hosts"]))
            elif kind == "no_hosts":
                no_hosts = True
            elif kind == "host":
                rows[event["host"]] = event
                if on_row:
                    on_row(event)
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave ansible-playbook running without us
            proc.terminate()
            proc.wait(30)
    drain.join(5)
    if no_hosts or (not rows and any("leaves us with no hosts" in e for e in errors)):
        raise ConfigError(f"limit {rollout.limit!r} matches no host of the inventory; name groups or hosts in it", param="limit")
    if not rows and rc != 0:
        last = next((e for e in reversed(errors) if "ERROR" in e or "error" in e), errors[-1] if errors else "no output")
        raise EdgeSDKError(f"ansible-playbook failed (exit {rc}) before reaching any host: {last}")
    out.rows, out.stopped = _finish(plan, rows, rollout, out.batches, rc, on_row)
    out.elapsed_s = round(time.monotonic() - start, 2)
    return out


def _event(line: str) -> Row | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "edgesdk" in data else None


def _drain(stream: Any, keep: deque[str]) -> None:
    for line in stream:
        text = line.rstrip()
        if text:
            keep.append(text)
            # warnings matter to people; "no hosts" is said once, by our own error
            if ("WARNING" in text or "ERROR" in text) and "host pattern" not in text and "no hosts" not in text:
                log.warning("ansible: %s", text)
            else:
                log.debug("ansible: %s", text)


def _finish(plan: list[str], rows: dict[str, Row], rollout: Rollout, batches: int, rc: int,
            on_row: Callable[[Row], None] | None) -> tuple[list[Row], str]:
    """Rows in plan order; hosts the rollout never reached get a ``not run`` row saying why."""
    missing = [h for h in plan if h not in rows]
    stopped = ""
    if missing:
        failed = [r["host"] for r in rows.values() if not r["ok"] and r.get("batch") == batches]
        why = f"more than {rollout.max_fail}% of its hosts failed" if rollout.max_fail is not None else "every host in it failed"
        stopped = (f"rollout stopped after batch {batches} ({why}: {', '.join(failed)})" if failed
                   else f"rollout stopped after batch {batches}: ansible-playbook ended early (exit {rc})")
        for h in missing:
            rows[h] = {"host": h, "ok": False, "action": "not run", "bundle": None, "previous": None, "message": stopped}
            if on_row:
                on_row(rows[h])
    order = plan + [h for h in rows if h not in plan]
    return [rows[h] for h in order], stopped
