"""``edgesdk demo``: every app on the shipped default models and bundled samples."""

from __future__ import annotations

import argparse
import importlib

from sdk.cli.output import Output

APPS = {"trigger-word": "apps.trigger_word.demo", "detect": "apps.detect.demo", "face": "apps.face.demo"}


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the apps on the shipped default models and bundled samples")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from sdk.cli.selftest import runtime_demo

    runtime_demo(out)
    for app, module_name in APPS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                out.emit({"app": app, "status": "not yet available"}, f"\n[{app}] not yet available in this version")
                continue
            raise
        out.text(f"\n[{app}]")
        module.demo(out)
    return 0
