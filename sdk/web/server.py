"""The web view's HTTP server: a page, live data, ``/healthz`` and ``/metrics``, from a thread.

Standard library only (``ThreadingHTTPServer``): a Pi needs no extra packages and there is no
frontend build. Routes are a fixed table; static files are a fixed allow-list read from this
package, so no URL ever becomes a file-system path. Off loopback a token is mandatory and
every route checks it (``?token=`` or ``Authorization: Bearer``), compared in constant time.
The web view is read-only: it has no route that enrols, deletes or changes anything. Live
streams (MJPEG and Server-Sent Events) are capped at ``max_streams`` (503 beyond), connections
at :data:`MAX_CONNECTIONS`, and a client that stops reading is dropped after ``send_timeout_s``.
The token never appears in logs: :attr:`WebView.url` hides it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sdk.errors import ConfigError
from sdk.telemetry import Metrics, is_event, is_loopback
from sdk.web.routes import STATIC_FILES, Handler
from sdk.web.state import EventLog, FrameSlot

log = logging.getLogger("edgesdk.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{8,256}")
MAX_CONNECTIONS = 64  # open connections of any kind (each is a thread); more are closed at once
MAX_SEND_TIMEOUT_S = 30.0


def parse_serve(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` → ``(host, port)``; the host defaults to 127.0.0.1.

    Raises:
        ConfigError: When the port is not 0-65535.
    """
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise ConfigError(f"serve {text}: expected [HOST:]PORT such as 8080 or 0.0.0.0:8080", param="serve")
    return host, int(port)




def check_bind(host: str, port: int, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token, and tokens that cannot go in a URL.

    Raises:
        ConfigError: Off-loopback host without a token, or a malformed token.
    """
    if token is not None and not TOKEN_RE.fullmatch(token):
        raise ConfigError("token: expected 8-256 characters from A-Z a-z 0-9 . _ ~ - (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)", param="token")
    if token is None and not is_loopback(host):
        raise ConfigError(f"serve {host}:{port}: serving beyond 127.0.0.1 needs an access token (`token`, or EDGESDK_WEB_TOKEN) so only you can see the camera; "
                          "or serve on 127.0.0.1 and use an SSH tunnel", param="token")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled viewer's thread must never keep the app from exiting
    request_queue_size = MAX_CONNECTIONS  # listen() backlog: socketserver's 5 stalls a burst of page loads

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_connections = 0
        self._count_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        # one thread per connection: a flood of idle connections must not grow threads without bound
        with self._count_lock:
            full = self.open_connections >= MAX_CONNECTIONS
            self.open_connections += not full
        if full:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count_lock:
            self.open_connections -= 1

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
        stall_s: ``/healthz`` says ``stalled`` once frames stop for this long.
        max_streams: Live streams (MJPEG and ``/events``) open at once; more get 503.
        send_timeout_s: A client that accepts no data for this long (at most 30 s) is dropped.

    Raises:
        ConfigError: A bad address, token, ``max_streams`` or ``send_timeout_s``, or a port in use.
    """

    def __init__(self, app: str, host: str = "127.0.0.1", port: int = 0, token: str | None = None, info: dict[str, Any] | None = None,
                 frame_hook: bool = False, identities: Callable[[], list[dict[str, Any]]] | None = None, max_fps: float = 10.0,
                 draw: Callable[..., Any] | None = None, stall_s: float = 30.0, max_streams: int = 8, send_timeout_s: float = 20.0) -> None:
        check_bind(host, port, token)
        if not 1 <= max_streams <= MAX_CONNECTIONS // 2:
            raise ConfigError(f"max_streams must be 1-{MAX_CONNECTIONS // 2}, got {max_streams}", param="max_streams")
        if not 0 < send_timeout_s <= MAX_SEND_TIMEOUT_S:
            raise ConfigError(f"send_timeout_s must be in (0, {MAX_SEND_TIMEOUT_S:g}], got {send_timeout_s}", param="send_timeout_s")
        self.max_streams, self.send_timeout_s = max_streams, send_timeout_s
        self.streams = {"mjpeg": 0, "sse": 0}
        self.streams_refused = 0
        self.app, self.token, self.info = app, token, dict(info or {})
        self.metrics = Metrics(app)
        self.frames = FrameSlot(draw)
        self.events = EventLog(1000)
        self.faces: dict[str, dict[str, Any]] = {}
        self.frame_hook, self.identities, self.max_fps, self.stall_s = frame_hook, identities, max_fps, stall_s
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
            raise ConfigError(f"serve {host}:{port}: cannot listen there ({e.strerror or e}); choose a free port or address", param="serve") from e
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="edgesdk-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address for logs: the token, when one is set, shows as ``?token=...`` (never in full)."""
        return self.url_with_token().replace(f"?token={self.token}", "?token=...") if self.token else self.url_with_token()

    def url_with_token(self) -> str:
        """The page's address with the token: to open the page, never to log."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def viewers(self) -> int:
        """MJPEG viewers connected now."""
        return self.streams["mjpeg"]

    def open_stream(self, kind: str) -> bool:
        """Count a new live stream of ``kind`` (``mjpeg``/``sse``); False (and counted as refused) beyond ``max_streams``."""
        with self._lock:
            if sum(self.streams.values()) >= self.max_streams:
                self.streams_refused += 1
                return False
            self.streams[kind] += 1
            return True

    def close_stream(self, kind: str) -> None:
        with self._lock:
            self.streams[kind] -= 1

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
        return {**self.metrics.snapshot(), "viewers": self.viewers, "frames_sent": self.frames_sent, "frames_encoded": self.frames.encoded,
                "streams": sum(self.streams.values()), "max_streams": self.max_streams, "streams_refused": self.streams_refused}

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
    return type("BoundHandler", (Handler,), {"view": view})
