"""The ``edgesdk`` command line: the top floor, which may use every package below it.

Commands are registered explicitly in :data:`COMMANDS` (name to module). Each module has
``register(subparsers, common)`` adding its parser(s) with ``set_defaults(func=...)``; the
function takes ``(args, out)`` and returns an exit code. A module that is not installed
(an app not yet built) simply does not appear. Modules import heavy dependencies lazily,
inside the command function, so ``edgesdk --help`` and the device side stay light.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from apps.registry import APPS
from sdk import __version__
from sdk.console import Output, common_parent
from sdk.errors import EdgeSDKError

# command -> module; order is the order in --help. The apps' own commands come from
# apps/registry.py (one module per app, inserted after "devices").
COMMANDS: dict[str, str] = {
    "convert": "cli.convert",
    "inspect": "cli.inspect_cmd",
    "card": "cli.card",
    "bench": "cli.bench",
    "devices": "cli.devices",
    **{name: f"apps.{app.package}.cli" for name, app in APPS.items()},
    "eval": "cli.app_commands",
    "train": "cli.app_commands",
    "models": "cli.models",
    "config": "cli.config",
    "run": "cli.config",
    "deploy": "cli.deploy",
    "demo": "cli.demo",
}

log = logging.getLogger("edgesdk")


class Parser(argparse.ArgumentParser):
    """argparse with the SDK's one-line usage errors (sub-command parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        cmd = self.prog.removeprefix("edgesdk").strip()
        self.exit(2, f"edgesdk: error: {cmd + ': ' if cmd else ''}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    common = common_parent()
    parser = Parser(
        prog="edgesdk",
        description="Take Keras models to small devices: convert, inspect, benchmark and run apps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgesdk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen: set[str] = set()
    for module_name in COMMANDS.values():
        if module_name in seen:
            continue
        seen.add(module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue  # that part of the SDK is not installed/built
            _broken(module_name, e)
            continue
        except Exception as e:  # noqa: BLE001 - one broken command must not take the others down
            _broken(module_name, e)
            continue
        module.register(sub, common)
    return parser


def _broken(module_name: str, e: BaseException) -> None:
    commands = ", ".join(k for k, v in COMMANDS.items() if v == module_name)
    print(f"edgesdk: warning: command(s) {commands} unavailable: {type(e).__name__}: {e}", file=sys.stderr)


def command_parser(parser: argparse.ArgumentParser, func: object) -> argparse.ArgumentParser:
    """The (sub-)parser of the command whose function is ``func`` (``parser`` itself if none)."""
    stack = [parser]
    while stack:
        p = stack.pop()
        if func is not None and p.get_default("func") is func:
            return p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed; an unknown argument is reported by the command's own parser (``SystemExit(2)``)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command_parser(parser, getattr(args, "func", None)).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def command_flags(parser: argparse.ArgumentParser, func: object) -> dict[str, str]:
    """Parameter (argparse ``dest``) to its long flag, for the command whose function is ``func``."""
    p = command_parser(parser, func)
    if p is parser:
        return {}
    return {a.dest: max(a.option_strings, key=len) for a in p._actions if a.option_strings}


def flag_message(e: EdgeSDKError, parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``e``'s message with the parameter it names replaced by the flag that sets it.

    Library errors name parameters (``threshold must be in [0, 1]``); the user of the command
    line typed flags (``--threshold``). A parameter the command has no flag for is left as is.
    """
    text = str(e)
    param = getattr(e, "param", None)
    # a command may name library parameters that differ from its own (set_defaults(param_flags=...))
    flags = {**command_flags(parser, getattr(args, "func", None)), **getattr(args, "param_flags", {})}
    flag = flags.get(param) if param else None
    if not flag:
        return text
    # a parameter quoted `like_this` is the one meant; else its first appearance as a word
    replaced, n = re.subn(f"`{re.escape(param)}`", flag, text, count=1)
    if not n:
        replaced, n = re.subn(rf"(?<![\w`-]){re.escape(param)}(?![\w-])", flag, text, count=1)
    return replaced if n else f"{flag}: {text}"


class _Formatter(logging.Formatter):
    """Plain messages; warnings and errors start with ``edgesdk: warning:`` / ``edgesdk: error:``
    like the CLI's own lines (unless the message already says so)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING and not text.startswith("edgesdk:"):
            text = f"edgesdk: {'error' if record.levelno >= logging.ERROR else 'warning'}: {text}"
        return text


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("edgesdk").setLevel(level)
    if verbose < 2:
        for noisy in ("absl", "tensorflow", "h5py"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as e:  # usage error (one line already printed) or --help/--version
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", 0)
    if verbose < 2:
        # TensorFlow (host commands) floods stderr with C++ logs at import; keep them for -vv
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "3")
    setup_logging(verbose, getattr(args, "quiet", False))
    out = Output(json_mode=getattr(args, "json", False))
    try:
        return int(args.func(args, out) or 0)
    except EdgeSDKError as e:
        print(f"edgesdk: error: {flag_message(e, parser, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgesdk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
