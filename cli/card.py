"""``edgesdk card``: read and edit the model card embedded in a ``.tflite`` without writing Python.

``edgesdk card set MODEL.tflite KEY=VALUE ...`` fixes a third-party model once: what it lacks
(decoder, anchors, normalisation, channel order, labels) is written into the file, and every
later run reads it from there. Keys are dotted card paths (``output.decoder``,
``input.channel_order``, ``task``); values are YAML (``true``, ``[8, 16, 32]``, ``bgr``), with
a few conveniences: ``1,2,3`` is a list of numbers, ``output.anchors="10,14 23,27; 81,82 ..."``
takes YOLO anchor pairs, and ``@FILE`` reads a value from a file (``output.labels=@labels.txt``
one label per line; any other key: YAML). A detection card is checked against the model's
outputs before anything is written; the file is replaced atomically (``-o`` writes a copy).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdk.console import Output, add_command
from sdk.errors import ConfigError

SECTIONS = ("input", "output", "quantization", "metrics", "source")
TOP = ("task", "license", "notes")
IMAGE_KEYS = ("size", "letterbox", "mean", "std", "channel_order")
_NUMBERS = re.compile(r"^\s*-?[\d.]+(e-?\d+)?(\s*,\s*-?[\d.]+(e-?\d+)?)+\s*$")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "card", common, help="show or edit a model's embedded card (fix a third-party model once)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", parents=[common], help="print the card (YAML; --json: JSON)")
    show.add_argument("model", help="a .tflite file")
    show.set_defaults(func=run_show)
    for verb, what, meta in (("set", "set KEY=VALUE pairs", "KEY=VALUE"), ("unset", "remove keys", "KEY")):
        q = add_command(verbs, verb, common, help=f"{what} in the card and write the model")
        q.add_argument("model", help="a .tflite file")
        q.add_argument("pairs", nargs="+", metavar=meta, help="dotted card keys: output.decoder=yolox input.channel_order=bgr input.std=1 ...")
        q.add_argument("-o", "--output", default=None, metavar="OUT.tflite", help="write a copy instead of changing MODEL in place")
        q.add_argument("--dry-run", action="store_true", help="check and print the new card without writing")
        q.set_defaults(func=run_edit)


def run_show(args: argparse.Namespace, out: Output) -> int:
    from sdk.card import read_card

    card = read_card(args.model)
    if card is None:
        out.emit({"model": args.model, "card": None}, f"{args.model}: no model card (add one with `edgesdk card set {args.model} KEY=VALUE ...`)")
        return 0
    out.emit({"model": args.model, "card": asdict(card)}, card.to_yaml().rstrip())
    return 0


def run_edit(args: argparse.Namespace, out: Output) -> int:
    from sdk.card import ModelCard, read_card, write_card

    old = read_card(args.model)
    if old is None and args.verb == "unset":
        raise ConfigError(f"{args.model}: has no card; nothing to unset")
    data = asdict(old) if old is not None else {"task": "generic"}
    keys = [_key(p.partition("=")[0] if args.verb == "set" else p) for p in args.pairs]
    if old is None and any(k == ("output", "decoder") or (k[0] == "input" and k[1:] and k[1] in IMAGE_KEYS) for k in keys):
        data["task"] = "detect"
    for pair, key in zip(args.pairs, keys):
        if args.verb == "unset":
            if key == ("task",):
                raise ConfigError(f"{args.model}: task is required in a card; set another one instead (task=detect)")
            section = data if len(key) == 1 else (data.get(key[0]) or {})
            if key[-1] not in section or section[key[-1]] in (None, "", {}, []):
                raise ConfigError(f"{args.model}: {'.'.join(key)} is not in the card; nothing to unset (see `edgesdk card show {args.model}`)")
            section.pop(key[-1])
            continue
        text = pair.partition("=")[2]
        if "=" not in pair:
            raise ConfigError(f"expected KEY=VALUE, got {pair!r} (e.g. output.decoder=yolox)")
        value = _value(key, text)
        if len(key) == 1:
            data[key[0]] = value
        else:
            data.setdefault(key[0], {})
            data[key[0]][key[1]] = value
    try:
        card = ModelCard.from_dict(data, args.model)
        note = check_detect_card(args.model, card)
    except ConfigError as e:
        raise ConfigError(f"{args.model}: the new card does not fit: {e}") from e
    if not args.dry_run:
        write_card(args.model, card, args.output)
    target = "(dry run, nothing written)" if args.dry_run else f"written to {args.output or args.model}"
    out.emit({"model": args.model, "written": None if args.dry_run else str(args.output or args.model), "card": asdict(card), "check": note},
             f"{card.to_yaml().rstrip()}\n\n{note}\ncard {target}")
    return 0


def _key(text: str) -> tuple[str, ...]:
    parts = tuple(text.strip().split("."))
    if (len(parts) == 1 and parts[0] in TOP) or (len(parts) == 2 and parts[0] in SECTIONS and parts[1]):
        return parts
    raise ConfigError(f"unknown card key {text!r}: expected {', '.join(TOP)} or SECTION.KEY with SECTION one of {', '.join(SECTIONS)} "
                      "(e.g. output.decoder, input.channel_order)")


def _value(key: tuple[str, ...], text: str) -> Any:
    """A card value from its command-line text (see the module docstring)."""
    from sdk.yamlio import loads

    if text.startswith("@"):
        path = Path(text[1:])
        if key == ("output", "labels"):
            from sdk.decoders.labels import fit_labels, read_labels

            return fit_labels(*read_labels(path), 0, str(path))[0]
        try:
            return loads(path.read_text(encoding="utf-8"), "card value", str(path))
        except OSError as e:
            raise ConfigError(f"{'.'.join(key)}: cannot read {path} ({e.strerror or e})") from e
    if key == ("output", "anchors") and "," in text and not text.lstrip().startswith(("[", "{")):
        from sdk.decoders.grid import parse_anchors

        return parse_anchors(text)
    if _NUMBERS.match(text):
        value: Any = [float(v) if any(c in v for c in ".e") else int(v) for v in text.replace(" ", "").split(",")]
    else:
        value = loads(text, "card value", ".".join(key)) if text.strip() else ""
    if key in (("input", "mean"), ("input", "std")):
        _check_numbers(key, text, value, positive=key[1] == "std")
    if key == ("input", "size") and not (isinstance(value, list) and len(value) in (1, 2)
                                         and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"input.size: expected one or two positive integers (e.g. 416 or [640, 480]), got {text!r}")
    return value


def _check_numbers(key: tuple[str, ...], text: str, value: Any, positive: bool) -> None:
    """``input.mean``/``input.std``: one finite number or three (std > 0: the preprocessor divides by it)."""
    values = value if isinstance(value, list) else [value]
    ok = len(values) in (1, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not ok or (positive and any(v <= 0 for v in values)):
        kind = "positive numbers" if positive else "numbers"
        raise ConfigError(f"{'.'.join(key)}: expected one or three {kind} (e.g. 255 or 58.4,57.1,57.4), got {text!r}")


def check_detect_card(path: str, card: Any) -> str:
    """For detection cards: the decoder the card now gives on this model's outputs (one line).

    Raises:
        ModelFormatError, ConfigError: The card does not fit the model (nothing is written).
    """
    if card.task not in ("detect", "generic") or not (card.output.get("decoder") or set(card.input) & set(IMAGE_KEYS)):
        return "not a detection card: not checked against the model"
    from sdk.decoders import choose_decoder
    from sdk.decoders.ssd import postprocess_roles
    from sdk.image import Preprocessor
    from sdk.runner import Runner

    r = Runner(path, threads=1)  # the interpreter's shapes: some files store outputs without static shapes
    shape = r.inputs[0].shape
    size = (shape[2], shape[1]) if len(shape) == 4 else (1, 1)
    Preprocessor.from_card_input(card.input, size)
    if not card.output.get("decoder"):
        return "input checked; no decoder in the card: the outputs were not checked"
    quant = [(s.scale, s.zero_point, s.dtype.str) if s.quantized else None for s in r.outputs]
    graph = postprocess_roles(r.file, [s.index for s in r.outputs])
    _, reason = choose_decoder([s.shape for s in r.outputs], size, card.output, names=r.output_names, quant=quant, graph=graph)
    return f"checked against the outputs: {reason}"
