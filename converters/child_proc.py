"""Running the converter child process and turning its death into a one-line error.

The parent never imports TensorFlow for a conversion: it writes ``job.json``, starts
``python -m converters._child`` and reads back files. A signal (segfault, abort, the OOM
killer) becomes a :class:`ConversionError` naming the mode, the likely cause and the mode
that would work.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import errors
from sdk.errors import ConversionError

PARENT_ENV = "EDGESDK_CONVERT_PARENT"
_ERRORS = {"ConfigError": errors.ConfigError, "ModelFormatError": errors.ModelFormatError, "ConversionError": errors.ConversionError}


@dataclass
class ChildResult:
    """What one child run produced: finished modes, per-mode failures, and shared facts."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(job_dir: Path, job: dict[str, Any], show_progress: bool) -> tuple[int, list[str]]:
    """Start the child on ``job``; forward its ``edgesdk:`` lines to stderr; return (returncode, other stderr tail)."""
    (job_dir / "job.json").write_text(json.dumps(job))
    tail: collections.deque[str] = collections.deque(maxlen=60)
    tmp = job_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    # TensorFlow's own temporary files land in the run's folder too, so they go when it goes
    env = {**child_env(), "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), PARENT_ENV: str(os.getpid())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "converters._child", str(job_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        errors="replace",
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("edgesdk:"):
                if show_progress:
                    sys.stderr.write(line)
                    sys.stderr.flush()
            elif line.strip():
                tail.append(line.rstrip())
        rc = proc.wait()
    except BaseException:  # Ctrl-C: take the child down with us, write nothing
        proc.kill()
        proc.wait()
        raise
    return rc, list(tail)


def run_modes(job_dir: Path, job: dict[str, Any], show_progress: bool) -> ChildResult:
    """Convert every mode of ``job['modes']``, restarting the child after a crash for the modes left.

    Raises:
        ConfigError, ModelFormatError, ConversionError: Errors that concern every mode
            (bad model, bad calibration data), raised as the child reported them.
    """
    res = ChildResult()
    remaining = list(job["modes"])
    while remaining:
        for f in ("current", "error.json"):
            (job_dir / f).unlink(missing_ok=True)
        rc, tail = run_child(job_dir, {**job, "modes": remaining}, show_progress)
        _collect(job_dir, res, remaining)
        if rc == 0:
            break
        if (job_dir / "error.json").exists():
            err = json.loads((job_dir / "error.json").read_text())
            raise _ERRORS.get(err["type"], ConversionError)(err["message"])
        current = (job_dir / "current").read_text() if (job_dir / "current").exists() else None
        if current is None:  # died before converting anything: no mode to blame, nothing to retry
            raise ConversionError(f"the converter process failed before converting ({describe_exit(rc)}): {tail[-1] if tail else 'no output'}")
        res.failed[current] = crash_message(current, rc, res.model, job)
        remaining = [m for m in remaining if m not in res.done and m not in res.failed]
    return res


def _collect(job_dir: Path, res: ChildResult, modes: list[str]) -> None:
    for name, attr in (("model.json", "model"), ("calibration.json", "calibration"), ("eval.json", "eval")):
        p = job_dir / name
        if p.exists():
            setattr(res, attr, json.loads(p.read_text()))
    for m in modes:
        p = job_dir / f"{m}.json"
        if p.exists():
            info = json.loads(p.read_text())
            if "error" in info:
                res.failed[m] = info["error"]
            else:
                res.done[m] = info


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def crash_message(mode: str, rc: int, model: dict[str, Any], job: dict[str, Any]) -> str:
    """One line: which mode crashed, the likely cause, and what would work."""
    how = describe_exit(rc)
    recurrent = model.get("recurrent") or []
    route = ((model.get("routes") or {}).get(mode) or {}).get("route")
    if rc in (-signal.SIGKILL, 137):
        cause = "probably out of memory"
        fix = "close other programs, pass fewer calibration samples, or use mode dynamic"
    elif recurrent and mode in ("int8", "int16x8") and route == "loop":
        cause = f"recurrent layers {recurrent} convert to a WHILE loop, which the converter cannot {mode}-quantize"
        fix = "use route stream or unroll (CLI --route; drop --no-unroll), or mode dynamic or fp16"
    elif recurrent:
        cause = f"the converter crashed on the recurrent layers {recurrent}"
        fix = "try mode dynamic or fp16"
    else:
        cause = "the TFLite converter crashed (a TensorFlow bug for this graph)"
        fix = "try mode dynamic or fp16" if mode in ("int8", "int16x8") else "try mode fp32"
    return f"{mode}: the converter process crashed ({how}); likely cause: {cause}; {fix}"
