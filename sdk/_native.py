"""Keep native runtime logs (LiteRT, XNNPACK, OpenVINO/WebGPU probes) off the user's terminal."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("edgesdk.native")


@contextmanager
def captured_native_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 to a temporary file while inside the block.

    Yields a list that receives the captured text when the block exits; the text is also
    logged at debug level (``EDGESDK_NATIVE_LOGS=1`` disables the capture).
    """
    out: list[str] = []
    if os.environ.get("EDGESDK_NATIVE_LOGS") == "1":
        yield out
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to hide
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if text:
                out.append(text)
                log.debug("native: %s", text.strip())
