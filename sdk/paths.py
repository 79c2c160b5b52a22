"""Checks on paths given by users, before anything opens them."""

from __future__ import annotations

import stat
from pathlib import Path

from sdk.errors import ConfigError, EdgeSDKError


def not_special(path: str | Path, what: str = "file", error: type[EdgeSDKError] = ConfigError, param: str | None = None) -> Path:
    """``path``, refused when it exists but is not a regular file or folder.

    Opening a FIFO blocks until a writer appears (forever, for a mistyped path), and reading a
    device or socket as a model or a config makes no sense: both get one clear error instead.

    Raises:
        error: ``path`` is a FIFO, socket or device.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return p  # missing or unreadable: the caller's own open() says so
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise error(f"{p}: not a regular file (a FIFO, socket or device); give a {what}", param=param)
    return p
