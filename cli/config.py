"""``edgesdk config init APP`` (a commented default config) and ``edgesdk run CONFIG.yaml``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from apps.config import load_config, to_argv
from apps.registry import CONFIG_APPS
from sdk.console import Output, add_command
from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.run")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cfg = sub.add_parser("config", help="app config files (YAML)")
    cs = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = add_command(cs, "init", common, help="write a commented default config for APP")
    p.add_argument("app", choices=sorted(CONFIG_APPS), metavar="APP", help=f"one of: {', '.join(sorted(CONFIG_APPS))}")
    p.add_argument("-o", "--output", default=None, help="file to write (default: APP.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_init)

    p = add_command(sub, "run", common, help="run an app from one YAML config (flags and config behave the same)")
    p.add_argument("config", metavar="CONFIG.yaml", help="written by `edgesdk config init APP`")
    p.add_argument("--print-argv", action="store_true", help="print the equivalent `edgesdk` command line and exit")
    p.set_defaults(func=_run)


def default_config_text(app: str) -> str:
    """A commented default config for ``app``; every option of the app command listed, commented out."""
    from apps.config import RESERVED, option_actions

    spec = CONFIG_APPS[app][1]

    lines = [
        f"# edgesdk app config: run with `edgesdk run {app}.yaml`, ship with `edgesdk deploy bundle {app}.yaml`.",
        "# Relative paths start at this file's folder. Unknown keys are rejected.",
        f"app: {app}",
        "model: null            # .tflite with a model card; null: the app's shipped default",
        f"source: {spec.default_source!r}{' ' * max(1, 15 - len(repr(spec.default_source)))}# {spec.source_help}",
    ]
    if app == "face-verify":
        lines.append("name: alice            # the enrolled person to verify")
    lines += [
        "profile: null          # device profile (rpi4, rpi5, rpi-coral-usb, coral-devboard, generic-x86): threads, delegate, bundle target",
        "loop: false            # replay a file source forever (demos, soak tests)",
        f"# The app's own options, by long-flag name (`edgesdk {app.replace('face-', 'face ')} --help`):",
        "options:               # uncomment and edit; null or absent: the app's default",
    ]
    seen = set()
    for name, action in option_actions(app).items():
        if name in RESERVED or id(action) in seen or name in ("verbose", "quiet"):
            continue
        seen.add(id(action))
        default = "false" if action.nargs == 0 else ("null" if action.default is None or action.default == [] else repr(action.default))
        lines.append(f"  # {name}: {default}{' ' * max(1, 22 - len(name) - len(default))}# {action.help or ''}".rstrip())
    lines += [
        "outputs:",
        "  json: true           # one JSON object per line on stdout (the journal, with systemd)",
        "  metrics_port: 9100   # /healthz and Prometheus /metrics; 0: off",
        "  metrics_host: 127.0.0.1",
        "  mqtt: null           # or: {host: 127.0.0.1, port: 1883, topic_prefix: edgesdk, device: '', username: '',",
        "                       #      password_env: '', qos: 0, stats_interval_s: 30, queue_size: 1000}",
        "",
    ]
    return "\n".join(lines)


def _init(args: argparse.Namespace, out: Output) -> int:
    from sdk.card import atomic_write

    path = Path(args.output or f"{args.app}.yaml")
    if path.exists() and not args.force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it or -o to write elsewhere")
    if not path.parent.is_dir():
        raise ConfigError(f"-o {path}: folder {path.parent} does not exist")
    atomic_write(path, default_config_text(args.app).encode(), mode=0o644)
    out.emit({"config": str(path), "app": args.app}, f"wrote {path}; edit it, then: edgesdk run {path}")
    return 0


def _run(args: argparse.Namespace, out: Output) -> int:
    if args.print_argv:
        import shlex

        argv = to_argv(load_config(args.config), Path(args.config).resolve().parent)
        out.emit({"argv": ["edgesdk", *argv]}, shlex.join(["edgesdk", *argv]))
        return 0
    return run_config(args.config, json_mode=True if args.json else None)


def run_config(path: str | Path, json_mode: bool | None = None) -> int:
    """Run the app ``path`` describes, with its MQTT and ``/metrics`` outputs.

    Args:
        path: The config file.
        json_mode: Overrides ``outputs.json`` (the ``--json`` flag of ``edgesdk run``).

    Returns:
        The app command's exit code.
    """
    from cli import build_parser
    from sdk.telemetry import start_telemetry

    cfg = load_config(path)
    argv = to_argv(cfg, Path(path).resolve().parent)
    if json_mode is not None:
        argv = [a for a in argv if a != "--json"]
        if json_mode:
            argv.insert(len(CONFIG_APPS[cfg.app][1].command), "--json")
    log.debug("running: edgesdk %s", " ".join(argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed why
        raise ConfigError(f"{path}: the app rejected the options (see the message above)") from e
    telemetry = start_telemetry(cfg, config_path=Path(path))
    _exit_on_sigterm()
    try:
        while True:
            rc = int(args.func(args, Output(json_mode=args.json, sinks=telemetry.sinks)) or 0)
            if not cfg.loop or rc != 0:
                return rc
            time.sleep(1.0)  # a replayed file: pause between passes, so a loop never spins a core
            args = build_parser().parse_args(argv)
    finally:
        telemetry.close()


def _exit_on_sigterm() -> None:
    """systemd and ``deploy push`` stop the app with SIGTERM: leave through ``finally`` so the
    sources close and MQTT sends what is queued and says ``offline``."""
    import signal
    import threading

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, leave)
