"""Request handling for :class:`sdk.web.server.WebView`: a fixed route table, nothing else.

Imports go one way: :mod:`sdk.web.server` builds its handler from this module, which never
imports the server (a view is any object with the attributes :class:`Handler` reads).
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
BOUNDARY = "edgesdkframe"
KEEPALIVE_S = 10.0  # an SSE comment this often keeps proxies from closing a quiet stream

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token may be in the page's URL
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


def authorized(view: Any, query: str, header: str | None) -> bool:
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


class Handler(BaseHTTPRequestHandler):
    """One request; ``view`` is set on a per-server subclass."""

    view: Any = None
    server_version = "edgesdk-web"
    sys_version = ""

    def setup(self) -> None:
        # the socket timeout bounds each whole send (socket.sendall): a viewer that stops reading
        # is dropped after send_timeout_s, and one that never sends its request line as well
        self.timeout = self.view.send_timeout_s
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, query = split_path(self.path)
        if self.view.token is None and not self.view.host_allowed(self.headers.get("Host", "")):
            # without a token, only loopback names: a web page elsewhere cannot DNS-rebind its name to 127.0.0.1 and read the stream
            self._send(403, "text/plain; charset=utf-8", b"forbidden Host header: use http://127.0.0.1:PORT/ or pass --token\n")
            return
        if not authorized(self.view, query, self.headers.get("Authorization")):
            self._send(401, "text/plain; charset=utf-8", b"token required: add ?token=... or an Authorization: Bearer header\n",
                       {"WWW-Authenticate": 'Bearer realm="edgesdk"'})
            return
        route = ROUTES.get(path)
        if route is None and path.startswith("/static/") and path[8:] in STATIC_FILES:
            name = path[8:]
            self._send(200, STATIC_FILES[name], self.view._static[name])
            return
        if route is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        route(self)

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only: the web view only answers GET\n", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815 (http.server's names)

    def _send(self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self._headers(ctype, {"Content-Length": str(len(body)), **(extra or {})})
        self.wfile.write(body)

    def _headers(self, ctype: str, extra: dict[str, str]) -> None:
        self.send_header("Content-Type", ctype)
        for k, v in {**SECURITY_HEADERS, **extra}.items():
            self.send_header(k, v)
        self.end_headers()

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, "application/json", dumps(obj))

    def log_message(self, *args: Any) -> None:  # polling every second would flood stderr
        pass

    # routes -----------------------------------------------------------------------------

    def page(self) -> None:
        self._send(200, "text/html; charset=utf-8", self.view._page)

    def api_info(self) -> None:
        self._json({"app": self.view.app, "max_fps": self.view.max_fps, **self.view.info})

    def api_stats(self) -> None:
        self._json(self.view.stats())

    def api_faces(self) -> None:
        self._json(self.view.face_state())

    def healthz(self) -> None:
        health = self.view.health()
        self._json(health, 503 if health["status"] == "stalled" else 200)

    def metrics(self) -> None:
        self._send(200, "text/plain; version=0.0.4; charset=utf-8", self.view.metrics.prometheus().encode())

    def _peer_gone(self) -> bool:
        """True when the client closed its side (readable with nothing to read): its stream slot is free again."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _busy(self) -> None:
        self._send(503, "text/plain; charset=utf-8", b"too many live streams open; close another tab or try again later\n",
                   {"Retry-After": "10", "Connection": "close"})
        self.close_connection = True

    def stream(self) -> None:
        """MJPEG: the newest annotated frame, at most ``max_fps`` a second; a slow viewer skips frames."""
        view, slot = self.view, self.view.frames
        if not view.open_stream("mjpeg"):
            self._busy()
            return
        period = 1.0 / max(view.max_fps, 0.1)
        seq, due = 0, 0.0
        try:
            self.send_response(200)
            self._headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}", {"Connection": "close"})
            while not view.stop.is_set():
                wait = due - time.monotonic()
                if wait > 0 and view.stop.wait(wait):
                    break
                if slot.wait_newer(seq, 1.0) == seq:
                    if self._peer_gone():  # no new frame to write: a closed tab must still free its stream
                        break
                    continue
                seq, jpeg = slot.jpeg()
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                self.wfile.write(head + jpeg + b"\r\n")
                due = time.monotonic() + period
                view.frames_sent += 1
        except OSError:  # TimeoutError included: viewer gone or stalled past send_timeout_s
            pass
        finally:
            view.close_stream("mjpeg")
            self.close_connection = True

    def sse(self) -> None:
        """Server-Sent Events: the recent history first, then each new event or score as it comes."""
        view = self.view
        if not view.open_stream("sse"):
            self._busy()
            return
        last = 0
        try:
            self.send_response(200)
            self._headers("text/event-stream; charset=utf-8", {"Connection": "close"})
            quiet_since = time.monotonic()
            while not view.stop.is_set():
                items = view.events.since(last, timeout=1.0)
                if not items:
                    if self._peer_gone():
                        break
                    if time.monotonic() - quiet_since >= KEEPALIVE_S:
                        self.wfile.write(b": keep-alive\n\n")
                        quiet_since = time.monotonic()
                    continue
                quiet_since = time.monotonic()
                chunk = b"".join(b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), dumps(obj)) for seq, kind, obj in items)
                self.wfile.write(chunk)
                last = items[-1][0]
        except OSError:  # viewer gone, or stalled past send_timeout_s
            pass
        finally:
            view.close_stream("sse")
            self.close_connection = True


ROUTES = {
    "/": Handler.page,
    "/index.html": Handler.page,
    "/api/info": Handler.api_info,
    "/api/stats": Handler.api_stats,
    "/api/faces": Handler.api_faces,
    "/events": Handler.sse,
    "/stream.mjpg": Handler.stream,
    "/healthz": Handler.healthz,
    "/metrics": Handler.metrics,
}
