"""Checks on paths given by users, before anything opens them."""

from __future__ import annotations

import stat
from pathlib import Path

from sdk.errors import ConfigError, EdgeSDKError


def not_special(path: str | Path, fix: str, error: type[EdgeSDKError] = ConfigError, param: str | None = None,
                where: str | None = None) -> Path:
    """``path``, refused when it exists but is not a regular file or folder.

    Opening a FIFO blocks until a writer appears (forever, for a mistyped path), and reading a
    device or socket as a model or a config makes no sense: both get one clear error instead.

    Args:
        path: The path.
        fix: What to give instead (the end of the message: ``"give a .wav file"``).
        error: The exception class raised.
        param: The caller's parameter that named ``path``.
        where: Message prefix; ``None`` for the path, ``""`` for none.

    Raises:
        error: ``path`` is a FIFO, socket or device.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return p  # missing or unreadable: the caller's own open() says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        where = str(p) if where is None else where
        raise error(f"{where + ': ' if where else ''}not a regular file (a FIFO, socket or device); {fix}", param=param)
    return p
