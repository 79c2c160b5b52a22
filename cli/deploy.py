"""``edgesdk deploy bundle|push|status|pull-config``: ship an app to one device or a fleet (through Ansible)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk.console import Output, add_command, number, table
from sdk.errors import ConfigError, EdgeSDKError

log = logging.getLogger("edgesdk.deploy")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    dep = sub.add_parser("deploy", help="bundle an app, push it to devices, check them")
    ds = dep.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    p = add_command(ds, "bundle", common, help="a reproducible .tar.gz: models, config, device-side edgesdk, install script, systemd unit, manifest")
    p.add_argument("config", metavar="CONFIG.yaml|MODEL.tflite",
                   help="the app config (`edgesdk config init APP`), or a converted model: its card's task picks the app")
    p.add_argument("--source", default=None, help="with MODEL.tflite: the app's source (default: mic / camera 0)")
    p.add_argument("-o", "--output", default=None, help="archive to write (default: APP-PROFILE.tar.gz)")
    p.add_argument("--profile", default=None, help="device profile (default: the config's)")
    p.add_argument("--offline", action="store_true", help="add the target's wheels so the device needs no internet")
    p.add_argument("--python-version", default=None, help="the device's Python for --offline wheels (default: 3.11, Bookworm)")
    p.set_defaults(func=_bundle)

    _register_push(ds, common)
    p = add_command(ds, "status", common, help="installed bundle, version, health and last install per host (through Ansible)")
    p.add_argument("hosts", nargs="*", metavar="USER@HOST", help="[USER@]HOST[:PORT]; or --hosts / --inventory")
    _target_args(p)
    _device_args(p, push=False)
    p.set_defaults(func=_status)
    _register_pull(ds, common)


def _register_push(ds: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(ds, "push", common, help="roll a bundle out through Ansible: copy, verify, install, restart, health-check, roll back")
    p.add_argument("bundle", nargs="?", metavar="BUNDLE.tar.gz",
                   help="the bundle for every host (with --inventory it may be left out: each group's edgesdk_bundle)")
    p.add_argument("hosts", nargs="*", metavar="USER@HOST", help="[USER@]HOST[:PORT] (IPv6 as [ADDR]:PORT); or --hosts / --inventory")
    _target_args(p)
    p.add_argument("--batch", default=None, metavar="N|N%[,..]", help="hosts per batch (Ansible serial), e.g. 1,25%%: a canary, then quarters")
    p.add_argument("--max-fail", default=None, metavar="N%", help="stop after a batch in which more than N%% of hosts failed")
    p.add_argument("--check", action="store_true", help="dry run: say what would be installed, change nothing")
    p.add_argument("--audit-log", default=None, metavar="FILE", help="append the run, every host's result and the outcome (JSON lines)")
    _device_args(p, push=True)
    p.set_defaults(func=_push)


def _register_pull(ds: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(ds, "pull-config", common, help="pull mode: write the repo content and timer with which devices fetch and apply a bundle (ansible-pull)")
    p.add_argument("bundle", metavar="BUNDLE.tar.gz")
    p.add_argument("--repo", required=True, metavar="GIT_URL", help="the git repository the devices fetch (you commit the output to it)")
    p.add_argument("--branch", default="main", help="the branch devices follow")
    p.add_argument("--bundle-url", default=None, metavar="URL", help="devices download the bundle here instead of from the repo")
    p.add_argument("--every", type=int, default=15, metavar="MIN", help="minutes between fetches")
    p.add_argument("--ansible-pull", default="ansible-pull", metavar="CMD", help="ansible-pull on the device")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (new or empty)")
    _device_args(p, push=True)
    p.set_defaults(func=_pull_config)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", dest="hosts_file", metavar="FILE", help="file with one [USER@]HOST[:PORT] per line (# comments)")
    p.add_argument("--inventory", default=None, metavar="FILE", help="Ansible inventory, INI or YAML (groups, per-group variables)")
    p.add_argument("--limit", default=None, metavar="PATTERN", help="Ansible host pattern: groups or hosts (kitchen, 'garage:!pi3')")
    p.add_argument("-f", "--forks", "-j", "--jobs", dest="forks", type=number(int, 1, 1000), default=10, help="hosts worked on at once")
    p.add_argument("-p", "--port", type=number(int, 1, 65535), default=None, help="SSH port of hosts (and inventory entries) that name none")
    p.add_argument("-u", "--user", default=None, help="SSH user of hosts that name none")
    p.add_argument("-i", "--identity", default=None, metavar="KEY", help="SSH private key")
    p.add_argument("--known-hosts", default=None, metavar="FILE", help="known_hosts file (default: ssh's); new keys are accepted once")
    p.add_argument("--connect-timeout", type=number(int, 1), default=10, help="seconds to wait for SSH to connect")
    p.add_argument("--retries", type=number(int, 0, 10), default=0, help="extra SSH connection attempts per host")


def _device_args(p: argparse.ArgumentParser, push: bool) -> None:
    p.add_argument("--remote-dir", default=None, help="where bundles live on the device (default ~/.edgesdk; the inventory's edgesdk_dir)")
    p.add_argument("--python", default=None, help="device interpreter for the agent and venv, 3.10+ (default python3; edgesdk_python)")
    if push:
        p.add_argument("--health-timeout", type=number(float, 0, low_open=True), default=None,
                       help="seconds to wait for /healthz before rolling back (default 60; edgesdk_health_timeout)")
        p.add_argument("--site-packages", default=None, metavar="DIR",
                       help="a folder on the device with packages to reuse (pip installs only what is missing)")


def _bundle(args: argparse.Namespace, out: Output) -> int:
    import tempfile

    from apps.config import load_config
    from deploy.bundle import config_for_model, make_bundle

    with tempfile.TemporaryDirectory(prefix="edgesdk-bundle-") as tmp:
        config = args.config
        if config.endswith(".tflite"):
            config = config_for_model(config, tmp, args.source, args.profile)
        elif args.source:
            raise ConfigError("--source: only with MODEL.tflite; a config sets `source:` itself")
        output = args.output
        if output is None:
            cfg = load_config(config)
            output = f"{cfg.app}-{args.profile or cfg.profile or 'device'}{'-offline' if args.offline else ''}.tar.gz"
        res = make_bundle(config, output, profile=args.profile, offline=args.offline, python=args.python_version)
    size = res["size_bytes"] / 1e6
    out.emit(res, f"{res['bundle']}: {res['app']} for {res['profile']} ({res['arch']}), {res['files']} files, "
                  f"{size:.1f} MB, id {res['id']}{', offline wheels' if res['offline'] else ''}\n"
                  f"next: edgesdk deploy push {Path(res['bundle']).name} USER@HOST")
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from deploy.push import DeviceSettings

    return DeviceSettings(remote_dir=args.remote_dir, python=args.python, site_packages=getattr(args, "site_packages", None),
                          health_timeout=getattr(args, "health_timeout", None))


def _where(args: argparse.Namespace) -> tuple[Any, Any]:
    from deploy.fleet import Connection
    from deploy.hosts import check_user
    from deploy.push import targets

    if args.identity and not Path(args.identity).expanduser().is_file():
        raise ConfigError(f"--identity {args.identity}: no such key file")
    if args.user:
        check_user(args.user, "--user")
    conn = Connection(identity=str(Path(args.identity).expanduser()) if args.identity else None, user=args.user, port=args.port,
                      known_hosts=args.known_hosts, connect_timeout=args.connect_timeout, retries=args.retries)
    return targets(args.hosts, args.hosts_file, args.inventory, args.port), conn


def _push(args: argparse.Namespace, out: Output) -> int:
    from deploy.fleet import Rollout, parse_max_fail
    from deploy.push import push

    bundle = args.bundle
    if bundle and not (bundle.endswith((".tar.gz", ".tgz")) or Path(bundle).is_file()):
        args.hosts, bundle = [bundle, *args.hosts], None  # `push --inventory F` / hosts only: no BUNDLE given
    if bundle is None and not args.inventory:
        raise ConfigError("no bundle: pass BUNDLE.tar.gz before the hosts (or use --inventory with edgesdk_bundle per group)")
    if args.limit and not args.inventory:
        raise ConfigError("--limit: only with --inventory (without one, name just the hosts you mean)")
    where, conn = _where(args)
    rollout = Rollout(batch=args.batch, max_fail=parse_max_fail(args.max_fail), forks=args.forks, check=args.check, limit=args.limit)
    fleet = len(where.inventory.hosts) > 1
    res = push(bundle, where, _settings(args), conn, rollout, on_row=_streamer(out, fleet), audit_log=args.audit_log)
    if fleet:  # one host's outcome is its row (or its one-line error)
        if res.stopped:
            log.warning("%s", res.stopped)
        failed = [r for r in res.rows if not r["ok"] and r["action"] != "not run"]
        if failed:
            log.warning("failed: %s", ", ".join(f"{r['host']} ({r['action']})" for r in failed))
        log.info("%d of %d hosts ok in %.1f s", sum(r["ok"] for r in res.rows), len(res.rows), res.elapsed_s)
    return _report(res.rows, out, ["host", "ok", "action", "bundle", "previous", "elapsed_s", "message"])


def _status(args: argparse.Namespace, out: Output) -> int:
    from deploy.fleet import Rollout
    from deploy.push import status

    if args.limit and not args.inventory:
        raise ConfigError("--limit: only with --inventory (without one, name just the hosts you mean)")
    where, conn = _where(args)
    res = status(where, _settings(args), conn, Rollout(forks=args.forks, limit=args.limit))
    rows = res.rows if out.json_mode else [{**r, "last_install": _last_install(r.get("last_install"))} for r in res.rows]
    return _report(rows, out, ["host", "ok", "app", "bundle", "version", "running", "healthy", "uptime_s", "last_install", "message"],
                   streamed=False)


def _last_install(last: dict | None) -> str | None:
    """``rolled back 1f2e... 2026-12-04T15:29:19Z`` for the table."""
    return " ".join(str(last[k]) for k in ("action", "bundle", "time") if last.get(k)) if last else None


def _pull_config(args: argparse.Namespace, out: Output) -> int:
    from deploy.pull import write_pull_config

    res = write_pull_config(args.bundle, args.output, args.repo, branch=args.branch, bundle_url=args.bundle_url, every_min=args.every,
                            settings=_settings(args), ansible_pull=args.ansible_pull)
    out.emit(res, f"{res['output']}: pull mode for bundle {res['bundle_id']} ({len(res['files'])} files)\n"
                  f"next: commit it to {res['repo']} ({res['branch']}); on each device once: see {res['output']}/README.md")
    return 0


def _streamer(out: Output, progress: bool) -> Callable[[dict], None]:
    """With --json, each host's line as soon as it is known; for people (and ``progress``), a line on stderr."""
    def on_row(row: dict) -> None:
        if out.json_mode:
            out.emit(row)
        elif progress:
            log.info("%s: %s%s", row["host"], row["action"], f" ({row['message']})" if row.get("message") else "")
    return on_row


def _report(results: list[dict], out: Output, columns: list[str], streamed: bool = True) -> int:
    if len(results) == 1 and not results[0]["ok"] and results[0].get("bundle") is None and results[0].get("action") != "unchanged":
        raise EdgeSDKError(results[0]["message"])  # one host that could not be reached or used: one line, exit 2
    if out.json_mode:
        if not streamed:
            for r in results:
                out.emit(r)
    else:
        out.text(table(results, columns))
    return 0 if all(r["ok"] for r in results) else 1
