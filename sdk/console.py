"""Console helpers every command shares: results on stdout (human text or JSON lines), tables,
and the common option groups (``--json``/``-v``/``-q``, the runner flags).

The app commands (``apps/<app>/cli.py``) and the top-floor ``cli/`` both use them, so they
live here, on the ground floor, once."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np


def to_jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_json"):
        return o.to_json()
    return str(o)


class Output:
    """Writes results; ``json_mode`` selects JSON lines.

    ``sinks`` are callables that also receive every emitted object (an MQTT publisher, the
    ``/metrics`` counters...), so apps report once and every consumer sees the same events.
    """

    def __init__(self, json_mode: bool = False, stream: TextIO | None = None, sinks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.json_mode = json_mode
        self.stream = stream or sys.stdout
        self.sinks = list(sinks)

    def emit(self, obj: dict[str, Any], text: str | None = None) -> None:
        """Print ``obj`` as one JSON line, or ``text`` (default: ``key: value`` lines) for humans."""
        for sink in self.sinks:
            sink(obj)
        if self.json_mode:
            self.stream.write(json.dumps(obj, default=to_jsonable, separators=(", ", ": ")) + "\n")
        else:
            self.stream.write((text if text is not None else format_mapping(obj)) + "\n")
        self.stream.flush()

    def text(self, text: str) -> None:
        """Human-only output (suppressed with ``--json``)."""
        if not self.json_mode:
            self.stream.write(text + "\n")
            self.stream.flush()


def format_mapping(obj: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in obj.items())


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".2f") -> str:
    """A plain-text table of ``rows`` (dicts), aligned, with a header line."""
    if not rows:
        return "(none)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in cols]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def number(kind: type = float, low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Any:
    """An argparse ``type`` accepting a finite ``kind`` number in ``[low, high]`` (``(low, ...`` if ``low_open``).

    NaN, infinities and out-of-range values are refused when the command line is parsed, with
    the allowed range in the message; app configs check their options through the same types.
    """
    lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
    hi = "" if high is None else f"{high:g}]"
    allowed = f"in {lo or '(-inf'}, {hi or 'inf)'}"
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {name} {allowed}, got {text!r}") from None
        if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {name} {allowed}, got {text!r}")
        return value

    parse.__name__ = f"{name} {allowed}"
    return parse


def add_command(sub: Any, name: str, common: argparse.ArgumentParser | None, help: str, **kw: Any) -> argparse.ArgumentParser:
    """One command's parser: the common options (``--json``, ``-v``, ``-q``), defaults shown in ``--help``."""
    return sub.add_parser(name, parents=[common] if common is not None else [], help=help,
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)


def common_parent() -> argparse.ArgumentParser:
    """Options every command takes (``--json``, ``-v``, ``-q``), usable after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print one JSON object per line on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def add_runner_args(p: argparse.ArgumentParser) -> None:
    """``--delegate``, ``--threads``, ``--backend``, ``--require-delegate``, ``--delegate-option``."""
    p.add_argument("-d", "--delegate", default=None, help="cpu, edgetpu[:usb|:usb:N|:pci:N], gpu[:LIB.so] or a delegate .so path")
    p.add_argument("-t", "--threads", type=number(int, 1), default=None, help="CPU threads (default: all cores)")
    p.add_argument("--backend", default=None, help="ai_edge_litert, tflite_runtime or tensorflow (default: first importable)")
    p.add_argument("--require-delegate", action="store_true", help="fail instead of falling back to the CPU")
    p.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE", help="option for an external delegate")


def runner_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Runner keyword arguments from :func:`add_runner_args` options."""
    from sdk.errors import ConfigError

    opts = {}
    for kv in args.delegate_option:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ConfigError(f"--delegate-option expects KEY=VALUE, got {kv!r}")
        opts[key] = value
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    return {
        "backend": args.backend,
        "delegate": args.delegate,
        "threads": args.threads,
        "require_delegate": args.require_delegate,
        "delegate_options": opts,
    }
