"""``edgesdk config init APP`` (a commented default config) and ``edgesdk run CONFIG.yaml``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdk.cli.output import Output
from sdk.errors import ConfigError

DEFAULT_SOURCES = {"trigger-word": "mic", "detect": "0", "face-verify": "0", "face-identify": "0"}
SOURCE_HELP = {
    "trigger-word": "a .wav file, 'mic' (default input) or 'mic:DEVICE' (index or part of a name)",
    "detect": "camera index, /dev/videoN, video or image file, folder, http:// or rtsp:// URL",
    "face-verify": "an image file, or a camera index, /dev/videoN, video file or URL",
    "face-identify": "an image file, or a camera index, /dev/videoN, video file or URL",
}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from sdk.appconfig import APPS

    cfg = sub.add_parser("config", help="app config files (YAML)")
    cs = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cs.add_parser("init", parents=[common], help="write a commented default config for APP",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("app", choices=sorted(APPS), metavar="APP", help=f"one of: {', '.join(sorted(APPS))}")
    p.add_argument("-o", "--output", default=None, help="file to write (default: APP.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_init)

    p = sub.add_parser("run", parents=[common], help="run an app from one YAML config (flags and config behave the same)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="written by `edgesdk config init APP`")
    p.add_argument("--print-argv", action="store_true", help="print the equivalent `edgesdk` command line and exit")
    p.set_defaults(func=_run)


def default_config_text(app: str) -> str:
    """A commented default config for ``app``; every option of the app command listed, commented out."""
    from sdk.appconfig import RESERVED, option_actions

    lines = [
        f"# edgesdk app config: run with `edgesdk run {app}.yaml`, ship with `edgesdk deploy bundle {app}.yaml`.",
        "# Relative paths start at this file's folder. Unknown keys are rejected.",
        f"app: {app}",
        "model: null            # .tflite with a model card; null: the app's shipped default",
        f"source: {DEFAULT_SOURCES[app]!r}{' ' * max(1, 15 - len(repr(DEFAULT_SOURCES[app])))}# {SOURCE_HELP[app]}",
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
    from sdk.appconfig import load_config, run_config, to_argv

    if args.print_argv:
        import shlex

        argv = to_argv(load_config(args.config), Path(args.config).resolve().parent)
        out.emit({"argv": ["edgesdk", *argv]}, shlex.join(["edgesdk", *argv]))
        return 0
    return run_config(args.config, json_mode=True if args.json else None)
