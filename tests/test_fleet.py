"""A rollout through a real ``ansible-playbook`` to four devices, each a real ``sshd`` with its own
user and home (see ``tests/fleet_devices.py``).

One scenario, in order: v1 to all (batches of 2); the same again changes nothing; a dry run of
v2 changes nothing; v2 where one device's bundle fails its health check (that device rolls
back, the others keep v2); v3 with ``--max-fail 0%`` stops after the first batch; a rollout
killed mid-way leaves every device on exactly its old or its new bundle. Pull mode is tested in ``tests/test_push_ssh.py`` (it shares that device's venv).
Set ``EDGESDK_FLEET_REPORT=FILE`` to get the timed runs and their JSON lines.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cli import main
from deploy.bundle import make_bundle
from tests.fleet_devices import (
    HAVE_SSH,
    SITE,
    app_config,
    device_python,
    fleet_root,
    make_keys,
    own_users_possible,
    remove_later,
    start_device,
    stop_device,
    tone_files,
)

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow, pytest.mark.skipif(not HAVE_SSH, reason="needs openssh-server and openssh-client")]
ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"kitchen": ["d0", "d1"], "garage": ["d2", "d3"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    own = own_users_possible()
    root = fleet_root()
    keys = make_keys(root)
    devices = []
    try:
        for name in ("d0", "d1", "d2", "d3"):
            devices.append(start_device(root, name, keys, own))
        b = root / "bundles"
        shutil.copytree(tone_files(), b)
        bundles = {}
        for d in devices:
            for version, threshold in (("v1", 0.5), ("v2", 0.6), ("v3", 0.7)):
                res = make_bundle(app_config(b, f"{d.name}-{version}", "tone.tflite", d.metrics_port, threshold), b / f"{d.name}-{version}.tar.gz")
                bundles[d.name, version] = (res["bundle"], res["id"])
            res = make_bundle(app_config(b, f"{d.name}-broken", "junk.tflite", d.metrics_port, 0.5), b / f"{d.name}-broken.tar.gz")
            bundles[d.name, "broken"] = (res["bundle"], res["id"])
        yield {"root": root, "devices": {d.name: d for d in devices}, "bundles": bundles, "key": keys["client"],
               "python": device_python(own), "own_users": own}
    finally:
        for d in devices:
            stop_device(d)
        remove_later(root)


def write_inventory(fleet, plan: dict[str, str], name: str) -> Path:
    """A YAML inventory: groups kitchen and garage, per-group settings, each host's bundle from ``plan``."""
    doc: dict = {"all": {"vars": {"edgesdk_python": fleet["python"], "edgesdk_site_packages": SITE, "ansible_python_interpreter": fleet["python"]},
                         "children": {}}}
    for group, members in GROUPS.items():
        hosts = {}
        for h in members:
            d = fleet["devices"][h]
            hosts[h] = {"ansible_host": "127.0.0.1", "ansible_port": d.port, "ansible_user": d.user, "edgesdk_dir": str(d.dir),
                        "edgesdk_bundle": str(Path(fleet["bundles"][h, plan[h]][0]).relative_to(fleet["root"]))}
        doc["all"]["children"][group] = {"hosts": hosts, "vars": {"edgesdk_health_timeout": 30}}
    path = fleet["root"] / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def push(fleet, inventory: Path, *extra: str, capsys) -> tuple[int, list[dict], str, float]:
    start = time.monotonic()
    rc = main(["deploy", "push", "--json", "--inventory", str(inventory), "-i", fleet["key"],
               "--known-hosts", str(fleet["root"] / "known_hosts"), *extra])
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    rows = [json.loads(x) for x in out.out.splitlines() if x.startswith("{")]
    _report(f"push {inventory.name} {' '.join(extra)}: exit {rc}, {elapsed:.1f} s", rows)
    return rc, rows, out.err, elapsed


def _report(title: str, rows: list[dict]) -> None:
    path = os.environ.get("EDGESDK_FLEET_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(f"## {title}\n" + "".join(json.dumps(r) + "\n" for r in rows) + "\n")


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return json.loads(r.read())


def state(fleet) -> dict[str, str | None]:
    return {n: d.current() for n, d in fleet["devices"].items()}


def ids(fleet, plan: dict[str, str]) -> dict[str, str]:
    return {h: fleet["bundles"][h, v][1] for h, v in plan.items()}


def by_host(rows: list[dict]) -> dict[str, dict]:
    return {r["host"]: r for r in rows}


def test_rollout_rollback_idempotence_dry_run_max_fail(fleet, capsys):
    v1 = ids(fleet, dict.fromkeys(fleet["devices"], "v1"))
    v2 = ids(fleet, dict.fromkeys(fleet["devices"], "v2"))

    # 1. v1 to all four, two at a time: every device installs and answers /healthz with it
    rc, rows, err, _ = push(fleet, write_inventory(fleet, dict.fromkeys(fleet["devices"], "v1"), "v1.yml"), "--batch", "2", capsys=capsys)
    assert rc == 0, err
    assert sorted((r["batch"], r["host"]) for r in rows) == [(1, "d0"), (1, "d1"), (2, "d2"), (2, "d3")], rows  # kitchen, then garage
    assert {r["action"] for r in rows} == {"installed"}, rows
    assert state(fleet) == v1 and all(healthz(d.metrics_port)["bundle"] == v1[n] for n, d in fleet["devices"].items())
    if fleet["own_users"]:
        assert all((d.dir / "app.pid").stat().st_uid != 0 for d in fleet["devices"].values())  # each device's own user

    # 2. the same again: nothing changes (no copy, no restart)
    pids = {n: (d.dir / "app.pid").read_text() for n, d in fleet["devices"].items()}
    marks = {n: (d.dir / "last_install.json").stat().st_mtime_ns for n, d in fleet["devices"].items()}
    rc, rows, err, _ = push(fleet, fleet["root"] / "v1.yml", capsys=capsys)
    assert rc == 0 and {r["action"] for r in rows} == {"unchanged"}, rows
    assert pids == {n: (d.dir / "app.pid").read_text() for n, d in fleet["devices"].items()}
    assert marks == {n: (d.dir / "last_install.json").stat().st_mtime_ns for n, d in fleet["devices"].items()}

    # 3. dry run of v2 for the garage group only: says what would happen, changes nothing
    inv2 = write_inventory(fleet, {"d0": "v2", "d1": "broken", "d2": "v2", "d3": "v2"}, "v2.yml")
    rc, rows, err, _ = push(fleet, inv2, "--check", "--limit", "garage", capsys=capsys)
    assert rc == 0 and sorted(r["host"] for r in rows) == ["d2", "d3"] and {r["action"] for r in rows} == {"would install"}, rows
    assert state(fleet) == v1 and not any(list((d.dir / "incoming").iterdir()) for d in fleet["devices"].values())

    # 4. v2, d1's bundle fails its health check: d1 rolls back to v1, the others run v2
    audit = fleet["root"] / "audit.jsonl"
    rc, rows, err, _ = push(fleet, inv2, "--batch", "2", "--audit-log", str(audit), capsys=capsys)
    r = by_host(rows)
    assert rc == 1 and r["d1"]["action"] == "rolled back" and r["d1"]["previous"] == v1["d1"], rows
    assert "health check failed" in r["d1"]["message"] and "rolled back to" in r["d1"]["message"]
    assert all(r[h]["ok"] and r[h]["action"] == "installed" and r[h]["previous"] == v1[h] for h in ("d0", "d2", "d3")), rows
    assert "failed: d1 (rolled back)" in err
    assert state(fleet) == {**v2, "d1": v1["d1"]}
    assert healthz(fleet["devices"]["d1"].metrics_port)["bundle"] == v1["d1"]
    assert not (fleet["devices"]["d1"].dir / "bundles" / fleet["bundles"]["d1", "broken"][1]).exists()
    records = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["event"] for x in records] == ["start", "host", "host", "host", "host", "end"] and records[0]["batch"] == "2"
    assert records[-1]["rolled_back"] == ["d1"] and records[-1]["ok"] == ["d0", "d2", "d3"] and records[-1]["not_run"] == []

    # 5. v3 with --max-fail 0%: batch 1 (kitchen) has a failure, so garage is never touched
    inv3 = write_inventory(fleet, {"d0": "v3", "d1": "broken", "d2": "v3", "d3": "v3"}, "v3.yml")
    rc, rows, err, _ = push(fleet, inv3, "--batch", "2", "--max-fail", "0%", capsys=capsys)
    r = by_host(rows)
    assert rc == 1 and r["d0"]["action"] == "installed" and r["d1"]["action"] == "rolled back", rows
    assert r["d2"]["action"] == r["d3"]["action"] == "not run" and "stopped after batch 1" in r["d2"]["message"], rows
    assert "rollout stopped after batch 1 (more than 0% of its hosts failed: d1)" in err
    assert state(fleet) == {"d0": fleet["bundles"]["d0", "v3"][1], "d1": v1["d1"], "d2": v2["d2"], "d3": v2["d3"]}

    # status: one row per device with installed bundle, version, health and last install
    rc = main(["deploy", "status", "--json", "--inventory", str(inv3), "-i", fleet["key"], "--known-hosts", str(fleet["root"] / "known_hosts")])
    rows = by_host([json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")])
    assert rc == 0 and all(rows[h]["healthy"] and rows[h]["bundle"] == b for h, b in state(fleet).items()), rows
    assert rows["d1"]["last_install"]["action"] == "rolled back" and rows["d0"]["last_install"]["action"] == "installed"
    assert rows["d0"]["version"] and rows["d0"]["app"] == "trigger-word"


def test_killed_rollout_leaves_old_or_new(fleet):
    before = state(fleet)
    new = ids(fleet, dict.fromkeys(fleet["devices"], "v3"))
    inv = write_inventory(fleet, dict.fromkeys(fleet["devices"], "v3"), "v3-all.yml")
    argv = [sys.executable, "-m", "cli", "deploy", "push", "--json", "--inventory", str(inv), "--batch", "1",
            "-i", fleet["key"], "--known-hosts", str(fleet["root"] / "known_hosts")]
    tmp = fleet["root"] / "tmp"  # a killed run cannot remove its temporary folder: keep it where the fixture cleans up
    tmp.mkdir(exist_ok=True)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp)})
    first = proc.stdout.readline()  # batch 1 (d0) is done; batch 2 (d1) starts
    held = _wait_locked(fleet["devices"]["d1"].dir / ".lock")  # d1's agent is inside its install transaction
    os.killpg(proc.pid, signal.SIGKILL)  # the controller, ansible-playbook and its ssh clients, at once
    proc.wait(30)
    assert json.loads(first)["host"] == "d0" and held
    for d in fleet["devices"].values():
        _wait_unlocked(d.dir / ".lock")  # an install the controller began finishes on the device
        cur = d.current()
        assert cur in (before[d.name], new[d.name]), (d.name, cur)
        assert healthz(d.metrics_port)["bundle"] == cur
        assert all((p / ".installed").exists() for p in (d.dir / "bundles").iterdir()), d.name  # nothing half-installed
        assert not (d.dir / "current.new").exists()


def _wait_locked(lock: Path, timeout: float = 120) -> bool:
    """True once someone holds ``lock`` (within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock.exists():
            with open(lock) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                except BlockingIOError:
                    return True
        time.sleep(0.05)
    return False


def _wait_unlocked(lock: Path, timeout: float = 120) -> None:
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout
    with open(lock) as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{lock} still held"
                time.sleep(0.2)
