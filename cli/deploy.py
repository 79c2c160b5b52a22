"""``edgesdk deploy bundle|push|status``: ship an app to one or many devices over OpenSSH."""

from __future__ import annotations

import argparse

from sdk.console import Output, table


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    dep = sub.add_parser("deploy", help="bundle an app, push it to devices, check them")
    ds = dep.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    p = ds.add_parser("bundle", parents=[common], formatter_class=fmt,
                      help="a reproducible .tar.gz: models, config, device-side edgesdk, install script, systemd unit, manifest")
    p.add_argument("config", metavar="CONFIG.yaml|MODEL.tflite",
                   help="the app config (`edgesdk config init APP`), or a converted model: its card's task picks the app")
    p.add_argument("--source", default=None, help="with MODEL.tflite: the app's source (default: mic / camera 0)")
    p.add_argument("-o", "--output", default=None, help="archive to write (default: APP-PROFILE.tar.gz)")
    p.add_argument("--profile", default=None, help="device profile (default: the config's)")
    p.add_argument("--offline", action="store_true", help="add the target's wheels so the device needs no internet")
    p.add_argument("--python-version", default=None, help="the device's Python for --offline wheels (default: 3.11, Bookworm)")
    p.set_defaults(func=_bundle)

    hosts_help = "USER@HOST[:PORT]; more in --hosts"
    p = ds.add_parser("push", parents=[common], formatter_class=fmt,
                      help="copy, verify, install, (re)start and health-check a bundle; roll back on failure")
    p.add_argument("bundle", metavar="BUNDLE.tar.gz")
    p.add_argument("hosts", nargs="*", metavar="USER@HOST", help=hosts_help)
    _ssh_args(p)
    p.add_argument("--health-timeout", type=float, default=60.0, help="seconds to wait for /healthz before rolling back")
    p.add_argument("--python", default="python3", help="interpreter on the device that makes the venv (3.10+)")
    p.add_argument("--site-packages", default=None, metavar="DIR",
                   help="a folder on the device with packages to reuse (pip installs only what is missing)")
    p.set_defaults(func=_push)

    p = ds.add_parser("status", parents=[common], formatter_class=fmt, help="running bundle, uptime and last stats per host")
    p.add_argument("hosts", nargs="*", metavar="USER@HOST", help=hosts_help)
    _ssh_args(p)
    p.set_defaults(func=_status)


def _ssh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", dest="hosts_file", metavar="FILE", help="file with one USER@HOST[:PORT] per line (# comments)")
    p.add_argument("-p", "--port", type=int, default=22, help="SSH port (a host's :PORT wins)")
    p.add_argument("-i", "--identity", default=None, metavar="KEY", help="SSH private key")
    p.add_argument("--remote-dir", default="~/.edgesdk", help="where bundles live on the device")
    p.add_argument("--connect-timeout", type=int, default=10, help="seconds to wait for SSH to connect")
    p.add_argument("-j", "--jobs", type=int, default=8, help="hosts in parallel")


def _bundle(args: argparse.Namespace, out: Output) -> int:
    import tempfile
    from pathlib import Path

    from apps.config import load_config
    from deploy.bundle import config_for_model, make_bundle
    from sdk.errors import ConfigError

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


def _push(args: argparse.Namespace, out: Output) -> int:
    from deploy.push import Remote, parse_hosts, push_many

    hosts = parse_hosts(args.hosts, args.hosts_file, args.port)
    remote = Remote(identity=args.identity, remote_dir=args.remote_dir, connect_timeout=args.connect_timeout)
    results = push_many(args.bundle, hosts, remote, jobs=args.jobs, health_timeout=args.health_timeout,
                        python=args.python, site_packages=args.site_packages)
    return _report(results, out, ["host", "ok", "bundle", "previous", "action", "message"])


def _status(args: argparse.Namespace, out: Output) -> int:
    from deploy.push import Remote, parse_hosts, status_many

    hosts = parse_hosts(args.hosts, args.hosts_file, args.port)
    remote = Remote(identity=args.identity, remote_dir=args.remote_dir, connect_timeout=args.connect_timeout)
    results = status_many(hosts, remote, jobs=args.jobs)
    return _report(results, out, ["host", "ok", "app", "bundle", "running", "uptime_s", "events", "fps", "message"])


def _report(results: list[dict], out: Output, columns: list[str]) -> int:
    from sdk.errors import EdgeSDKError

    if len(results) == 1 and not results[0]["ok"] and results[0].get("bundle") is None:
        raise EdgeSDKError(results[0]["message"])  # one host that could not be reached or used: one line, exit 2
    if out.json_mode:
        for r in results:
            out.emit(r)
    else:
        out.text(table(results, columns))
    return 0 if all(r["ok"] for r in results) else 1
