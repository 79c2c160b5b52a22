"""``edgesdk deploy push`` / ``status``: one engine — the shipped Ansible role — for one device or a fleet.

``USER@HOST`` arguments and ``--hosts`` files become a one-off inventory; ``--inventory`` files
are read and checked by :mod:`deploy.inventory`. Either way every host is validated before
Ansible starts, and each device's agent (``deploy/agent.py``) does the installing.

Bundles: ``push BUNDLE`` sends that bundle to every targeted host; without it, each host's
``edgesdk_bundle`` from the inventory (per group or host, relative to the inventory file) is
used. Fleet-wide settings (``remote_dir``, ``python``, ...) given here apply to every host
unless its group or host sets its own.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.bundle import MANIFEST, bundle_id
from deploy.fleet import Connection, Outcome, Rollout, Row, parse_batch, run_playbook
from deploy.hosts import parse_hosts
from deploy.inventory import Inventory, from_hosts, load_inventory
from sdk.errors import ConfigError


@dataclass(frozen=True)
class DeviceSettings:
    """Fleet-wide device settings; None leaves the inventory's value (or the role's default).

    Args:
        remote_dir: Where bundles live on the device (default ``~/.edgesdk``).
        python: The device interpreter that runs the agent and makes the venv (default ``python3``).
        site_packages: A folder of packages on the device to reuse in the venv.
        health_timeout: Seconds to wait for ``/healthz`` before rolling back (default 60).
    """

    remote_dir: str | None = None
    python: str | None = None
    site_packages: str | None = None
    health_timeout: float | None = None

    def fleet_vars(self) -> dict[str, Any]:
        names = {"remote_dir": "edgesdk_dir", "python": "edgesdk_python", "site_packages": "edgesdk_site_packages",
                 "health_timeout": "edgesdk_health_timeout"}
        return {var: getattr(self, attr) for attr, var in names.items() if getattr(self, attr) is not None}


@dataclass
class Targets:
    """The checked inventory and how to show its hosts (a one-off inventory's names are ``device1``...)."""

    inventory: Inventory
    labels: dict[str, str]
    base: Path

    def label(self, row: Row) -> Row:
        return {**row, "host": self.labels.get(row["host"], row["host"])}


def targets(hosts: list[str], hosts_file: str | None = None, inventory: str | None = None, port: int | None = None) -> Targets:
    """Hosts from ``USER@HOST`` arguments, a ``--hosts`` file, or an inventory (not both kinds).

    Raises:
        ConfigError: Both kinds, none, or a refused host (the message names where it came from).
    """
    if inventory and (hosts or hosts_file):
        raise ConfigError("give hosts (USER@HOST, hosts_file) or an inventory, not both", param="inventory")
    if inventory:
        return Targets(load_inventory(inventory), {}, Path(inventory).resolve().parent)
    inv, labels = from_hosts(parse_hosts(hosts, hosts_file, port))
    return Targets(inv, labels, Path.cwd())


def bundle_facts(path: str | Path) -> dict[str, str]:
    """``edgesdk_bundle`` (absolute), ``edgesdk_bundle_sha256`` (archive) and ``edgesdk_bundle_id`` (manifest) of a bundle.

    Raises:
        ConfigError: No such file, or no readable ``manifest.json`` in it.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such bundle; build one with `edgesdk deploy bundle CONFIG.yaml`")
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    try:
        with tarfile.open(p, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            raw = member.read() if member else b""
    except (tarfile.TarError, KeyError, OSError, EOFError) as e:
        raise ConfigError(f"{p}: not an edgesdk bundle (no readable {MANIFEST}: {e}); build one with `edgesdk deploy bundle`") from e
    return {"edgesdk_bundle": str(p.resolve()), "edgesdk_bundle_sha256": digest.hexdigest(), "edgesdk_bundle_id": bundle_id(raw)}


def attach_bundles(inv: Inventory, base: Path) -> int:
    """Beside every ``edgesdk_bundle`` in the inventory put its checksum and id (same scope, so the
    same one wins); paths are relative to ``base``. Returns how many scopes name a bundle.

    Raises:
        ConfigError: A named bundle is missing or not a bundle.
    """
    count = 0
    for scope, variables in inv.var_scopes():
        value = variables.get("edgesdk_bundle")
        if not value:
            continue
        if not isinstance(value, str) or "{{" in value:
            raise ConfigError(f"{inv.source}: {scope}: edgesdk_bundle must be a file path, got {value!r}")
        path = Path(value).expanduser()
        try:
            variables.update(bundle_facts(path if path.is_absolute() else base / path))
        except ConfigError as e:
            raise ConfigError(f"{inv.source}: {scope}: {e}") from e
        count += 1
    return count


def push(bundle: str | Path | None, where: Targets, settings: DeviceSettings = DeviceSettings(), conn: Connection = Connection(),
         rollout: Rollout = Rollout(), on_row: Callable[[Row], None] | None = None, audit_log: str | None = None) -> Outcome:
    """Roll ``bundle`` (or each host's inventory bundle) out to ``where``; one row per targeted host.

    Raises:
        ConfigError: No bundle anywhere, a missing bundle, bad batch/limit, a refused host.
        EdgeSDKError: ansible-playbook missing or failing before any host.
    """
    parse_batch(rollout.batch)  # bad values are refused before anything runs
    extra: dict[str, Any] = {}
    if bundle is not None:
        extra.update(bundle_facts(bundle))
    elif not attach_bundles(where.inventory, where.base):
        raise ConfigError("no bundle: pass BUNDLE, or set edgesdk_bundle for the groups or hosts in the inventory", param="bundle")
    if rollout.batch:
        extra["edgesdk_serial"] = parse_batch(rollout.batch)
    if rollout.max_fail is not None:
        extra["edgesdk_max_fail"] = rollout.max_fail
    audit = _Audit(audit_log, {"command": "push", "bundle": extra.get("edgesdk_bundle"), "bundle_id": extra.get("edgesdk_bundle_id"),
                               "inventory": where.inventory.source, "limit": rollout.limit, "batch": rollout.batch,
                               "max_fail": rollout.max_fail, "check": rollout.check})
    out = run_playbook("push.yml", where.inventory.to_ansible(settings.fleet_vars()), extra, conn, rollout,
                       on_row=audit.wrap(where, on_row))
    return audit.close(out, where)


def status(where: Targets, settings: DeviceSettings = DeviceSettings(), conn: Connection = Connection(), rollout: Rollout = Rollout(),
           on_row: Callable[[Row], None] | None = None) -> Outcome:
    """Every targeted host's installed bundle, version, health and last install result."""
    dry = Rollout(forks=rollout.forks, limit=rollout.limit)
    out = run_playbook("status.yml", where.inventory.to_ansible(settings.fleet_vars()), {}, conn, dry,
                       on_row=lambda r: on_row(_explain(where.label(r))) if on_row else None)
    out.rows = [_explain(where.label(r)) for r in out.rows]
    return out


def _explain(row: Row) -> Row:
    """An unreachable host's ssh error as one line saying what to do."""
    if row.get("action") != "unreachable":
        return row
    msg = str(row.get("message") or "")
    low = msg.lower()
    if "permission denied" in low:
        msg = f"{row['host']}: SSH login refused (wrong key or user); pass --identity KEY, or ssh-copy-id to it"
    elif any(s in low for s in ("connection refused", "timed out", "no route", "could not resolve", "network is unreachable")):
        msg = f"{row['host']}: unreachable ({msg.split('ssh: ')[-1]}); check the address, --port and that sshd runs"
    elif "host key verification failed" in low or "remote host identification has changed" in low:
        msg = f"{row['host']}: host key mismatch ({msg})"
    return {**row, "message": msg}


class _Audit:
    """Appends a record of the run, each host's row and the outcome to a JSON-lines file (if one is given).

    Raises:
        ConfigError: The file cannot be appended to (checked before anything runs).
    """

    def __init__(self, path: str | None, head: dict[str, Any]) -> None:
        self.path = Path(path).expanduser() if path else None
        if self.path and (self.path.is_dir() or not self.path.parent.is_dir()):
            raise ConfigError(f"audit_log {self.path}: {'a folder' if self.path.is_dir() else 'its folder does not exist'}; "
                              "give a file in an existing folder", param="audit_log")
        try:
            self._write({"event": "start", "time": _now(), "user": getpass.getuser(), **head})
        except OSError as e:
            raise ConfigError(f"audit_log {self.path}: cannot append ({e.strerror or e})", param="audit_log") from e

    def _write(self, record: dict[str, Any]) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")

    def wrap(self, where: Targets, on_row: Callable[[Row], None] | None) -> Callable[[Row], None]:
        def emit(row: Row) -> None:
            row = _explain(where.label(row))
            self._write({"event": "host", "time": _now(), **row})
            if on_row:
                on_row(row)
        return emit

    def close(self, out: Outcome, where: Targets) -> Outcome:
        out.rows = [_explain(where.label(r)) for r in out.rows]
        self._write({"event": "end", "time": _now(), "elapsed_s": out.elapsed_s, "stopped": out.stopped,
                     "ok": [r["host"] for r in out.rows if r["ok"]],
                     "failed": [r["host"] for r in out.rows if not r["ok"] and r["action"] != "not run"],
                     "rolled_back": [r["host"] for r in out.rows if r["action"] == "rolled back"],
                     "not_run": [r["host"] for r in out.rows if r["action"] == "not run"]})
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
