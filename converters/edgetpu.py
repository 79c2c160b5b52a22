"""``edgetpu_compiler`` (host side), and the readiness analysis re-exported from :mod:`sdk.edgetpu_readiness`.

The analysis reads only the flatbuffer and lives in ``sdk`` so the device side
(``edgesdk inspect --edgetpu``) has it without this package; compiling needs Coral's
x86-64 compiler and so belongs to the host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sdk.card import atomic_write
from sdk.edgetpu_readiness import Readiness, format_readiness, readiness

# re-exported: host code written against converters.edgetpu keeps working
__all__ = ["COMPILER_HELP", "Readiness", "compile_model", "format_readiness", "parse_compiler_log", "readiness"]

COMPILER_HELP = (
    "edgetpu_compiler is not installed; it runs only on x86-64 Debian/Ubuntu: add Coral's apt repository "
    "(echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list; "
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -), then sudo apt-get update && sudo apt-get install edgetpu-compiler; "
    "the int8 model written here is ready to compile"
)


_LOG_ROW = re.compile(r"^(\w+)\s+(\d+)\s+(\S.*)$")


def parse_compiler_log(log: str) -> dict[str, Any]:
    """The per-op table and TPU/CPU counts from ``edgetpu_compiler -s`` output."""
    ops, in_table = [], False
    counts: dict[str, int] = {}
    for line in log.splitlines():
        s = line.strip()
        m = re.match(r"Number of operations that will run on (Edge TPU|CPU):\s*(\d+)", s)
        if m:
            counts["tpu_ops" if m.group(1) == "Edge TPU" else "cpu_ops"] = int(m.group(2))
        if s.startswith("Operator") and "Status" in s:
            in_table = True
            continue
        if in_table:
            row = _LOG_ROW.match(s)
            if row and not set(s) <= {"-", " "}:
                ops.append({"op": row.group(1), "count": int(row.group(2)), "status": row.group(3).strip()})
            elif s and not set(s) <= {"-", " "}:
                in_table = False
    return {**counts, "ops": ops}


def compile_model(path: Path, timeout: float = 600) -> tuple[Path | None, dict[str, Any]]:
    """Run ``edgetpu_compiler`` on ``path``; writes ``<stem>_edgetpu.tflite`` beside it.

    Returns:
        ``(compiled_path or None, info)``; ``info['message']`` says what happened or how to install it.
    """
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return None, {"available": False, "message": COMPILER_HELP}
    with tempfile.TemporaryDirectory(prefix="edgesdk-tpu-") as d:
        try:
            proc = subprocess.run([exe, "-s", "-o", d, str(path)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, {"available": True, "message": f"edgetpu_compiler timed out after {timeout:.0f} s"}
        info = {"available": True, **parse_compiler_log(proc.stdout + proc.stderr)}
        produced = Path(d) / f"{path.stem}_edgetpu.tflite"
        if proc.returncode != 0 or not produced.exists():
            last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            info["message"] = f"edgetpu_compiler failed (exit {proc.returncode}): {last[0]}"
            return None, info
        out = path.with_name(f"{path.stem}_edgetpu.tflite")
        atomic_write(out, produced.read_bytes())
    info["message"] = f"compiled {out.name}: {info.get('tpu_ops', '?')} ops on the Edge TPU, {info.get('cpu_ops', '?')} on the CPU"
    return out, info
