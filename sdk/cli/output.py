"""Results on stdout: human text, or one JSON object per line with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np


def _default(o: Any) -> Any:
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
            self.stream.write(json.dumps(obj, default=_default, separators=(", ", ": ")) + "\n")
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
