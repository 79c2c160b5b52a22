"""``edgesdk demo``: every app on the shipped default models and bundled samples."""

from __future__ import annotations

import argparse

from apps.registry import APPS
from sdk.console import Output


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the apps on the shipped default models and bundled samples")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from cli.selftest import runtime_demo

    runtime_demo(out)
    for app in APPS.values():
        module = app.module("demo")
        if module is None:
            out.emit({"app": app.name, "status": "not yet available"}, f"\n[{app.name}] not yet available in this version")
            continue
        out.text(f"\n[{app.name}]")
        module.demo(out)
    return 0
