"""``edgesdk models list`` / ``edgesdk models pull NAME``: the public model registry."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from sdk.console import Output, add_command, table


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = add_command(sub, "models", None, help="registry of public models, downloaded and sha256-verified")
    ms = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    reg = argparse.ArgumentParser(add_help=False)
    reg.add_argument("--registry", default=None, help="registry YAML (default: the one shipped with edgesdk)")
    ls = ms.add_parser("list", parents=[common, reg], help="models in the registry", formatter_class=fmt)
    ls.set_defaults(func=_list)
    pl = ms.add_parser("pull", parents=[common, reg], help="download, verify and install a model", formatter_class=fmt)
    pl.add_argument("name", metavar="NAME")
    pl.add_argument("--dir", dest="dest_dir", default=None, help="where to put it (default: $XDG_DATA_HOME/edgesdk/models)")
    pl.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    pl.add_argument("--no-convert", action="store_true", help="keep a non-TFLite model as downloaded (no conversion)")
    pl.set_defaults(func=_pull)


def _list(args: argparse.Namespace, out: Output) -> int:
    from sdk.models_registry import load_registry

    entries = load_registry(args.registry)
    rows = [{"name": n, "format": e.format, "license": e.license, "description": e.description} for n, e in sorted(entries.items())]
    if out.json_mode:
        for r in rows:
            out.emit(r)
    else:
        out.text(table(rows, ["name", "format", "license", "description"]))
    return 0


def _pull(args: argparse.Namespace, out: Output) -> int:
    from sdk.models_registry import pull

    progress = not args.no_progress and not args.quiet
    convert = None if args.no_convert or not _host_converter() else (lambda path: convert_dlib(path, progress))
    res = pull(args.name, args.dest_dir, args.registry, progress=progress, convert=convert)
    text = f"{res['name']}: {res['path']} ({res['format']}, {res['license']}, sha256 {res['sha256'][:12]})"
    if res["tflite"] and res["tflite"] != res["path"]:
        text += f"\nconverted: {res['tflite']} (card: {res['card']})"
    if res["next"]:
        text += f"\nnext: {res['next']}"
    out.emit(res, text)
    return 0


def convert_dlib(path: Path, progress: bool = True) -> Path:
    """A pulled dlib ``.dat`` network to ``<stem>_fp32.tflite`` with its card (host side: TensorFlow).

    fp32 needs no calibration data; for int8 use ``scripts/build_face_models.py``, which
    calibrates on aligned face chips.
    """
    from converters.convert import convert
    from converters.dlib import dlib_card, load_dlib_as_keras, read_dat

    net = read_dat(path)
    out = path.with_name(f"{path.stem}_fp32.tflite")
    convert(load_dlib_as_keras(net), mode="fp32", output=out, card=dlib_card(net), progress=progress)
    return out


def _host_converter() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("converters", "tensorflow"))
