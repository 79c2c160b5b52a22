"""The one per-run work folder of a conversion, removed on exit, on Ctrl-C and on SIGTERM/SIGHUP.

Everything a conversion writes before the final atomic rename lives here: the staged model,
calibration arrays, the child's outputs and (through ``TMPDIR``) TensorFlow's own temporary
files. SIGTERM and SIGHUP are turned into ``SystemExit`` while the folder is in use, so the
``finally`` clauses run: the child is killed and the folder removed. A run killed with
SIGKILL cannot clean up; its folder (it records its owner's pid) is removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

PREFIX = "edgesdk-convert-"
OWNER_FILE = "owner.pid"
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


@contextlib.contextmanager
def run_folder(prefix: str = PREFIX) -> Iterator[Path]:
    """A fresh folder in the system temp dir, removed when the block ends, however it ends."""
    remove_stale(prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    try:
        with _signals_unwind():
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(prefix: str = PREFIX) -> list[Path]:
    """Remove work folders whose owner process is gone (left by a SIGKILLed run); returns them."""
    removed = []
    root = Path(tempfile.gettempdir())
    for d in root.glob(f"{prefix}*"):
        try:
            if not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid
        return True
    return True


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM/SIGHUP raise ``SystemExit(128 + signal)`` inside the block (main thread, default handlers only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    mine = [s for s, h in previous.items() if h in (signal.SIG_DFL, None)]  # an application's own handler stays

    def unwind(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for s in mine:
        signal.signal(s, unwind)
    try:
        yield
    finally:
        for s in mine:
            signal.signal(s, previous[s])
