"""``edgesdk eval APP`` and ``edgesdk train APP``: each app adds its own sub-command.

The apps come from :mod:`apps.registry`. An app's ``apps/<app>/cli.py`` may define
``register_eval(sub, common)`` and its ``apps/<app>/train.py`` ``register_train(sub, common)``
(TensorFlow imported lazily inside); modules that are not installed are skipped.
"""

from __future__ import annotations

import argparse

from apps.registry import APPS
from sdk.console import add_command


def _app_modules(role: str):
    for app in APPS.values():
        mod = app.module(role)
        if mod is not None:
            yield mod


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    ev = add_command(sub, "eval", None, help="measure an app's metric on a labelled set, float vs converted")
    ev_sub = ev.add_subparsers(dest="app", metavar="APP", required=True)
    tr = add_command(sub, "train", None, help="host-side recipes that rebuild the shipped default models")
    tr_sub = tr.add_subparsers(dest="app", metavar="APP", required=True)
    for mod in _app_modules("cli"):
        if hasattr(mod, "register_eval"):
            mod.register_eval(ev_sub, common)
    for mod in _app_modules("train"):
        if hasattr(mod, "register_train"):
            mod.register_train(tr_sub, common)
