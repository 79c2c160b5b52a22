"""``edgesdk devices`` (what this machine has) and ``edgesdk doctor`` (pass/fail checks with fixes)."""

from __future__ import annotations

import argparse
from typing import Any

from sdk.console import Output, table


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("devices", parents=[common], help="backends, delegates, Edge TPUs, cameras, audio inputs and the matching profile")
    p.set_defaults(func=run_devices)
    d = sub.add_parser("doctor", parents=[common], help="the same as pass/fail checks, with the fix for each failure")
    d.add_argument("--profile", help="check against this profile instead of the detected one")
    d.set_defaults(func=run_doctor)


def run_devices(args: argparse.Namespace, out: Output) -> int:
    from devices.discovery import discover

    m = discover().to_json()
    lines = [
        f"machine:  {m['board']}, {m['cpu_model']}, {m['cores']} cores, {m['arch']}, Python {m['python']}",
        f"profile:  {m['profile'] or '(no matching profile)'}",
        "backends: " + "; ".join(f"{k} {v}" for k, v in m["backends"].items()),
        "delegates: " + "; ".join(f"{k} {v}" for k, v in m["delegates"].items()),
        "edge tpus: " + (", ".join(m["edgetpus"]) or "none"),
        "cameras:  " + (", ".join(m["cameras"]) or "none (/dev/video*)"),
        "audio in: " + (", ".join(m["audio_inputs"]) or "none"),
        "tools:    " + "; ".join(f"{k} {v}" for k, v in m["tools"].items()),
    ]
    out.emit(m, "\n".join(lines))
    return 0


def run_doctor(args: argparse.Namespace, out: Output) -> int:
    from devices.doctor import run_checks

    checks = run_checks(args.profile)
    if out.json_mode:
        for c in checks:
            out.emit(c)
    else:
        out.text(table(checks, ("check", "status", "detail", "fix")))
    failed = [c for c in checks if c["status"] == "fail"]
    summary: dict[str, Any] = {k: sum(c["status"] == k for c in checks) for k in ("pass", "warn", "fail", "skip")}
    out.emit({"summary": summary}, f"\n{summary['pass']} passed, {summary['fail']} failed, {summary['warn']} warnings, {summary['skip']} skipped")
    return 1 if failed else 0
