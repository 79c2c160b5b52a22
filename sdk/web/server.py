"""The web view's HTTP server: a page, live data, ``/healthz`` and ``/metrics``, from a thread.

Standard library only (``ThreadingHTTPServer``): a Pi needs no extra packages and there is no
frontend build. Routes are a fixed table; static files are a fixed allow-list read from this
package, so no URL ever becomes a file-system path. Off loopback a token is mandatory and
every route checks it (``?token=`` or ``Authorization: Bearer``), compared in constant time.
The web view is read-only: it has no route that enrols, deletes or changes anything.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sdk.errors import ConfigError
from sdk.telemetry import Metrics, is_event
from sdk.web.state import EventLog, FrameSlot

log = logging.getLogger("edgesdk.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{8,256}")
BOUNDARY = "edgesdkframe"


def parse_serve(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` → ``(host, port)``; the host defaults to 127.0.0.1.

    Raises:
        ConfigError: When the port is not 0-65535.
    """
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise ConfigError(f"--serve {text}: expected [HOST:]PORT such as 8080 or 0.0.0.0:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and 127.0.0.0/8 or ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token, and tokens that cannot go in a URL.

    Raises:
        ConfigError: Off-loopback host without a token, or a malformed token.
    """
    if token is not None and not TOKEN_RE.fullmatch(token):
        raise ConfigError("--token: expected 8-256 characters from A-Z a-z 0-9 . _ ~ - (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--serve {host}:{port}: serving beyond 127.0.0.1 needs --token (or EDGESDK_WEB_TOKEN) so only you can see the camera; "
                          "or serve on 127.0.0.1 and use an SSH tunnel")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled viewer's thread must never keep the app from exiting

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a viewer closing its tab mid-response is routine: no traceback on the app's stderr
        exc = sys.exc_info()[1]
        level = logging.DEBUG if isinstance(exc, OSError) else logging.WARNING
        log.log(level, "web view: request from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)


class WebView:
    """The running app's web view.

    Args:
        app: ``detect``, ``face`` or ``trigger-word`` (the page shows that app's panel).
        host, port: Where to listen (port 0: any free port).
        token: Required on every request when set (mandatory off loopback).
        info: Static facts for ``/api/info``: model card summary, backend, source.
        frame_hook: True when the app feeds per-frame stats to :attr:`metrics` itself, so
            emitted decisions count as events but not as frames.
        identities: Callable listing enrolled identities (face).
        max_fps: Frame-rate cap of each MJPEG viewer.
        draw: Draws detections on a frame for the stream (detect).
    """

    def __init__(self, app: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None, info: dict[str, Any] | None = None,
                 frame_hook: bool = False, identities: Callable[[], list[dict[str, Any]]] | None = None, max_fps: float = 10.0,
                 draw: Callable[..., Any] | None = None, stall_s: float = 30.0) -> None:
        check_bind(host, port, token)
        self.app, self.token, self.info = app, token, dict(info or {})
        self.metrics = Metrics(app)
        self.frames = FrameSlot(draw)
        self.events = EventLog(1000)
        self.faces: dict[str, dict[str, Any]] = {}
        self.frame_hook, self.identities, self.max_fps, self.stall_s = frame_hook, identities, max_fps, stall_s
        self.viewers = 0
        self.frames_sent = 0
        self.ended = False  # the app's input is over; still serving (--serve-linger)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}
        page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        self._page = page.replace("__Q__", f"?token={token}" if token else "").encode()
        try:
            self.httpd = _Server((host, port), _handler(self))
        except OSError as e:
            raise ConfigError(f"--serve {host}:{port}: cannot listen there ({e.strerror or e}); choose a free port or address") from e
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgesdk-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address (with the token when one is set)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def host_allowed(self, header: str) -> bool:
        """A ``Host`` header naming loopback or the bound address (any port)."""
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        name = name.strip("[]")
        return name == self.host or is_loopback(name)

    def sink(self, obj: dict[str, Any]) -> None:
        """An :class:`~sdk.console.Output` sink: counts the object, logs events, keeps each face's latest decision."""
        if self.frame_hook:
            obj_m = {k: v for k, v in obj.items() if k not in ("frame", "latency_ms", "dropped")}
            self.metrics(obj_m)
        else:
            self.metrics(obj)
        if "name" in obj and "distance" in obj:
            with self._lock:
                self.faces[str(obj["name"] or "unknown")] = {**obj, "seen": round(time.time(), 3)}
        if is_event(obj):
            self.events.add("event", obj)

    def score(self, t: float, value: float, threshold: float) -> None:
        """A trigger-word score at stream time ``t`` (for the timeline)."""
        self.events.add("score", {"t": round(t, 3), "score": round(float(value), 4), "threshold": threshold})

    def health(self) -> dict[str, Any]:
        """As :class:`sdk.telemetry.MetricsServer`: ``stalled`` (503) once frames stop for ``stall_s``; ``input ended`` when lingering."""
        snap = self.metrics.snapshot()
        age = snap["last_emit_age_s"]
        stalled = snap["frames"] > 0 and age is not None and age > self.stall_s
        status = "input ended" if self.ended else "stalled" if stalled else "ok"
        return {"status": status, **snap}

    def stats(self) -> dict[str, Any]:
        """``/api/stats``: the metrics snapshot plus the web view's own counters."""
        return {**self.metrics.snapshot(), "viewers": self.viewers, "frames_sent": self.frames_sent, "frames_encoded": self.frames.encoded}

    def face_state(self) -> dict[str, Any]:
        with self._lock:
            latest = sorted(self.faces.values(), key=lambda d: -d["seen"])
        return {"latest": latest, "identities": self.identities() if self.identities else []}

    def linger(self, seconds: float) -> None:
        """Keep serving ``seconds`` after the app's input ended (Ctrl-C ends it sooner)."""
        self.ended = True
        if seconds > 0:
            log.info("input ended; web view stays up %.0f s on %s (Ctrl-C to quit)", seconds, self.url)
            try:
                self.stop.wait(seconds)
            except KeyboardInterrupt:
                pass

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(view: WebView) -> type[BaseHTTPRequestHandler]:
    from sdk.web.routes import Handler

    return type("BoundHandler", (Handler,), {"view": view})


def authorized(view: WebView, query: str, header: str | None) -> bool:
    """Constant-time check of ``?token=`` or ``Authorization: Bearer`` against the view's token."""
    if view.token is None:
        return True
    given = parse_qs(query).get("token", [""])[-1]
    if header and header.startswith("Bearer "):
        given = header[7:].strip()
    return hmac.compare_digest(given.encode(), view.token.encode())


def split_path(raw: str) -> tuple[str, str]:
    parts = urlsplit(raw)
    return parts.path, parts.query


def dumps(obj: Any) -> bytes:
    from sdk.console import to_jsonable

    return json.dumps(obj, default=to_jsonable).encode()
