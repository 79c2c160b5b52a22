"""The web view over plain HTTP: tokens, traversal, read-only routes, live data, and no backpressure."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from apps.detect.app import DEFAULT_MODEL, Detector, annotate
from cli import main
from sdk.errors import ConfigError
from sdk.runner import Runner
from sdk.web import WebView, check_bind, is_loopback, parse_serve

TOKEN = "s3cret-token_0123"


def get(web: WebView, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    """One request with ``path`` sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(web.host, web.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def web() -> Iterator[WebView]:
    view = WebView("detect", "127.0.0.1", 0, TOKEN, {"model": {"name": "m.tflite"}}, draw=annotate)
    yield view
    view.close()


def local_address() -> str | None:
    """This machine's own non-loopback IPv4 address (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(addr) else addr


@pytest.mark.parametrize("text, want", [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9))])
def test_parse_serve(text, want):
    assert parse_serve(text) == want


@pytest.mark.parametrize("text", ["", "x", "1.2.3.4:", ":99999", "host:port"])
def test_parse_serve_rejects(text):
    with pytest.raises(ConfigError, match=r"^serve .*: expected \[HOST:\]PORT"):
        parse_serve(text)


def test_off_loopback_needs_a_token():
    for host in ("0.0.0.0", "192.168.1.5", "::", "pi.local"):
        with pytest.raises(ConfigError, match=r"needs an access token \(`token`"):
            check_bind(host, 8080, None)
        check_bind(host, 8080, TOKEN)
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        check_bind(host, 8080, None)
    with pytest.raises(ConfigError, match="token: expected 8-256"):
        check_bind("0.0.0.0", 8080, "short")
    with pytest.raises(ConfigError, match="token: expected 8-256"):
        check_bind("0.0.0.0", 8080, "has space or <script>")


def test_cli_refuses_off_loopback_without_token(capsys, monkeypatch):
    monkeypatch.delenv("EDGESDK_WEB_TOKEN", raising=False)
    code = main(["detect", "--source", "apps/detect/samples/demo.mp4", "--serve", "0.0.0.0:0"])
    assert code == 2
    assert "needs an access token (--token, or EDGESDK_WEB_TOKEN)" in capsys.readouterr().err


def test_real_off_loopback_server_requires_the_token():
    addr = local_address()
    if addr is None:
        pytest.skip("no non-loopback address on this machine")
    with pytest.raises(ConfigError):
        WebView("detect", addr, 0, None)
    view = WebView("detect", addr, 0, TOKEN)
    try:
        assert get(view, "/api/stats")[0] == 401
        assert get(view, f"/api/stats?token={TOKEN}")[0] == 200
    finally:
        view.close()


ROUTES = ["/", "/index.html", "/static/app.js", "/static/style.css", "/api/info", "/api/stats", "/api/faces", "/healthz", "/metrics"]


@pytest.mark.parametrize("path", [*ROUTES, "/events", "/stream.mjpg", "/nope"])
def test_every_route_needs_the_token(web, path):
    assert get(web, path)[0] == 401
    assert get(web, path + "?token=wrong-token-123")[0] == 401
    assert get(web, path, {"Authorization": "Bearer wrong-token-123"})[0] == 401


@pytest.mark.parametrize("path", ROUTES)
def test_routes_answer_with_the_token(web, path):
    assert get(web, f"{path}?token={TOKEN}")[0] == 200
    assert get(web, path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_page_carries_the_token_to_its_assets(web):
    code, body = get(web, f"/?token={TOKEN}")
    assert code == 200 and f"/static/app.js?token={TOKEN}".encode() in body


TRAVERSALS = [
    "/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%252e%252e/etc/passwd", "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static//etc/passwd",
    "/static/app.js/../../server.py", "/static/../server.py", "/static/index.html%00.js", "/static/..\\..\\server.py",
    "//etc/passwd", "/static/./app.js/..", "/static/APP.JS",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_refused(web, path):
    code, body = get(web, f"{path}?token={TOKEN}")
    assert code == 404
    assert b"root:" not in body and b"import" not in body


def test_read_only(web):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert get(web, f"/api/faces?token={TOKEN}", method=method)[0] == 405


def test_stats_metrics_and_faces_follow_the_app():
    view = WebView("face", frame_hook=True, identities=lambda: [{"name": "ada", "embeddings": 3}])
    try:
        for i in range(5):
            view.metrics({"frame": i, "latency_ms": {"detect": 2.0 + i, "embed": 5.0}, "dropped": 0})
        view.sink({"frame": 4, "time": 0.4, "name": "ada", "match": True, "distance": 0.31, "threshold": 0.6, "latency_ms": {"detect": 9.0}})
        view.sink({"frame": 4, "time": 0.4, "name": None, "match": False, "distance": None, "threshold": 0.6, "reason": "no face"})
        stats = json.loads(get(view, "/api/stats")[1])
        assert stats["frames"] == 5 and stats["events"] == 2 and stats["latency_detect_p50_ms"] == 4.0
        faces = json.loads(get(view, "/api/faces")[1])
        assert {f["name"] for f in faces["latest"]} == {"ada", None}
        assert faces["identities"] == [{"name": "ada", "embeddings": 3}]
        metrics = get(view, "/metrics")[1].decode()
        assert 'edgesdk_frames_total{app="face"} 5' in metrics and 'event="match"' in metrics
        health = json.loads(get(view, "/healthz")[1])
        assert health["status"] == "ok" and health["frames"] == 5
    finally:
        view.close()


def read_sse(view: WebView, n: int) -> list[tuple[str, dict]]:
    """The first ``n`` events of ``/events``."""
    conn = http.client.HTTPConnection(view.host, view.port, timeout=10)
    conn.request("GET", "/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    got, kind = [], None
    while len(got) < n:
        line = resp.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            got.append((kind, json.loads(line[6:])))
    conn.close()
    return got


def test_sse_sends_history_then_live_items():
    view = WebView("trigger-word")
    try:
        view.score(0.05, 0.1, 0.5)
        view.sink({"event": "trigger", "word": "activate", "time": 0.1, "score": 0.9})
        threading.Timer(0.3, view.score, (0.15, 0.7, 0.5)).start()
        items = read_sse(view, 3)
        assert [k for k, _ in items] == ["score", "event", "score"]
        assert items[1][1]["word"] == "activate" and items[2][1]["score"] == 0.7
    finally:
        view.close()


def mjpeg_frames(view: WebView, n: int, path: str = "/stream.mjpg") -> list[bytes]:
    conn = http.client.HTTPConnection(view.host, view.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=edgesdkframe"
    jpegs = []
    while len(jpegs) < n:
        line = resp.fp.readline()
        if line.lower().startswith(b"content-length:"):
            resp.fp.readline()
            jpegs.append(resp.fp.read(int(line.split(b":")[1])))
    conn.close()
    return jpegs


def test_mjpeg_serves_annotated_frames(web):
    from sdk.types import Box, Detection

    img = np.zeros((120, 160, 3), np.uint8)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            web.frames.publish(img, [Detection(Box(10, 10, 80, 80), 0.9, 0, "thing")])
            time.sleep(0.02)

    t = threading.Thread(target=publish)
    t.start()
    try:
        jpegs = mjpeg_frames(web, 3, f"/stream.mjpg?token={TOKEN}")
        assert all(j[:2] == b"\xff\xd8" and j[-2:] == b"\xff\xd9" for j in jpegs)
        import cv2

        frame = cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (120, 160, 3) and frame.max() > 100  # the box was drawn on the black frame
    finally:
        stop.set()
        t.join()


def frames_in(det: Detector, view: WebView, image: np.ndarray, seconds: float) -> int:
    """Frames the detect loop processes (infer + publish) in ``seconds``."""
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        view.frames.publish(image, det(image))
        n += 1
    return n


def test_stalled_viewer_does_not_slow_inference():
    det = Detector(Runner(DEFAULT_MODEL, threads=1))
    # noise makes ~0.5 MB JPEGs, so a client that never reads fills the socket buffers in a few frames
    image = np.random.default_rng(0).integers(0, 255, (720, 960, 3), dtype=np.uint8)
    view = WebView("detect", draw=annotate, max_fps=30)
    try:
        frames_in(det, view, image, 0.3)  # warm-up
        base = [frames_in(det, view, image, 1.5)]
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((view.host, view.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never read
        with_stalled = [frames_in(det, view, image, 1.5)]
        sent = view.frames_sent
        base.append(frames_in(det, view, image, 1.5))
        with_stalled.append(frames_in(det, view, image, 1.5))
        assert view.viewers == 1 and view.frames_sent - sent <= 2, "the stalled viewer should be blocked in its own thread"
        assert max(with_stalled) >= 0.7 * max(base), f"frames with a stalled viewer {with_stalled} vs none {base}"
        stalled.close()
    finally:
        view.close()


def test_without_a_token_only_loopback_host_names_are_served():
    view = WebView("detect")
    try:
        assert get(view, "/api/stats", {"Host": f"localhost:{view.port}"})[0] == 200
        assert get(view, "/api/stats", {"Host": "[::1]"})[0] == 200
        for host in ("evil.example", f"evil.example:{view.port}", "127.0.0.1.evil.example", ""):
            assert get(view, "/api/stats", {"Host": host})[0] == 403  # a DNS-rebinding page
    finally:
        view.close()


def test_face_serve_needs_a_live_source(capsys, tmp_path):
    code = main(["face", "identify", str(tmp_path / "x.jpg"), "--db", str(tmp_path / "f.db"), "--serve", "0"])
    assert code == 2 and "--serve shows a live source" in capsys.readouterr().err


def test_app_config_options_turn_into_serve_flags(tmp_path):
    from apps.config import load_config, to_argv

    cfg = tmp_path / "detect.yaml"
    cfg.write_text(f"app: detect\nsource: {Path('apps/detect/samples/demo.mp4').resolve()}\n"
                   "options:\n  serve: 0.0.0.0:8080\n  token: abcdefgh12345\n  serve_linger: 5\n")
    argv = to_argv(load_config(cfg))
    assert argv[argv.index("--serve") + 1] == "0.0.0.0:8080" and argv[argv.index("--token") + 1] == "abcdefgh12345"
    assert "--serve-linger" in argv


def test_health_says_when_the_input_ended():
    view = WebView("detect")
    try:
        view.metrics({"frame": 0, "latency_ms": {"infer": 1.0}})
        assert json.loads(get(view, "/healthz")[1])["status"] == "ok"
        view.linger(0)
        code, body = get(view, "/healthz")
        assert code == 200 and json.loads(body)["status"] == "input ended"
    finally:
        view.close()


# --- hardening: stream caps, stalled clients, token handling -------------------------------------------------------------

def open_stream(view: WebView, path: str) -> tuple[socket.socket, bytes]:
    """A raw connection to ``path``; returns it (left open) and the status line."""
    s = socket.create_connection((view.host, view.port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s, s.recv(64).split(b"\r\n", 1)[0]


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_live_streams_are_capped():
    view = WebView("detect", max_streams=2)
    view.frames.publish(np.zeros((32, 32, 3), np.uint8))
    try:
        a, status_a = open_stream(view, "/events")
        b, status_b = open_stream(view, "/stream.mjpg")
        assert b"200" in status_a and b"200" in status_b
        assert wait_until(lambda: sum(view.streams.values()) == 2)
        for path in ("/events", "/stream.mjpg"):
            code, body = get(view, path)
            assert code == 503 and b"too many live streams" in body
        assert get(view, "/api/stats")[0] == 200  # ordinary requests are not streams
        stats = json.loads(get(view, "/api/stats")[1])
        assert stats["streams"] == 2 and stats["streams_refused"] == 2 and stats["max_streams"] == 2
        a.close()
        assert wait_until(lambda: view.streams["sse"] == 0, 5)  # a closed tab frees its stream within a second or so
        c, status_c = open_stream(view, "/events")
        assert b"200" in status_c
        b.close()
        c.close()
    finally:
        view.close()
    with pytest.raises(ConfigError, match="max_streams"):
        WebView("detect", max_streams=0)
    with pytest.raises(ConfigError, match="send_timeout_s"):
        WebView("detect", send_timeout_s=60)


def test_stalled_clients_are_dropped():
    import inspect

    assert inspect.signature(WebView).parameters["send_timeout_s"].default <= 30  # by default a stalled client goes within 30 s
    view = WebView("detect", send_timeout_s=1.0, max_fps=30)
    noise = np.random.default_rng(0).integers(0, 255, (720, 960, 3), dtype=np.uint8)  # ~0.5 MB JPEGs fill socket buffers fast
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            view.frames.publish(noise)
            view.sink({"event": "trigger", "word": "x" * 20000, "time": float(i), "score": 1.0})  # big SSE items
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=feed)
    t.start()
    clients = []
    try:
        for path in ("/stream.mjpg", "/events"):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((view.host, view.port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())  # and never read
            clients.append(s)
        assert wait_until(lambda: view.streams == {"mjpeg": 1, "sse": 1}, 5)
        t0 = time.monotonic()
        assert wait_until(lambda: sum(view.streams.values()) == 0, 20), view.streams
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        t.join()
        for s in clients:
            s.close()
        view.close()


def serve_args(*argv: str):
    import argparse

    from sdk.web.serve import add_serve_args

    p = argparse.ArgumentParser()
    add_serve_args(p)
    return p.parse_args(list(argv))


def test_token_from_file_env_or_flag(tmp_path, monkeypatch, caplog):
    from sdk.web.serve import TOKEN_ENV, serve_options

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    os.chmod(f, 0o600)
    with caplog.at_level("WARNING", logger="edgesdk.web"):
        assert serve_options(serve_args("--serve", "0.0.0.0:0", "--token-file", str(f))).token == TOKEN
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        assert serve_options(serve_args("--serve", "0.0.0.0:0")).token == TOKEN
    assert not caplog.records  # neither way is worth a warning
    with caplog.at_level("WARNING", logger="edgesdk.web"):
        assert serve_options(serve_args("--serve", "0.0.0.0:0", "--token", TOKEN)).token == TOKEN
    assert any("ps" in r.getMessage() and TOKEN not in r.getMessage() for r in caplog.records)
    os.chmod(f, 0o644)
    with pytest.raises(ConfigError, match=r"--token-file .*mode 0644.*chmod 600"):
        serve_options(serve_args("--serve", "0", "--token-file", str(f)))
    os.chmod(f, 0o600)
    with pytest.raises(ConfigError, match="both given"):
        serve_options(serve_args("--serve", "0", "--token-file", str(f), "--token", TOKEN))
    f.write_text("short\n")
    with pytest.raises(ConfigError, match="--token-file .*8-256 characters"):
        serve_options(serve_args("--serve", "0", "--token-file", str(f)))
    with pytest.raises(ConfigError, match="--token-file .*cannot read"):
        serve_options(serve_args("--serve", "0", "--token-file", str(tmp_path / "missing")))
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(ConfigError, match="--token-file"):  # a symlink could point anywhere: refused
        serve_options(serve_args("--serve", "0", "--token-file", str(link)))
    with pytest.raises(SystemExit):  # refused when parsed, with the allowed range
        serve_args("--serve", "0", "--max-streams", "0")


def test_token_is_never_logged(monkeypatch, caplog):
    from sdk.console import Output
    from sdk.web.serve import ServeOptions, start_web, stop_web

    with caplog.at_level("DEBUG"):
        web = start_web(ServeOptions("127.0.0.1", 0, TOKEN, 0.0), Output(), "detect")
        try:
            assert get(web, f"/api/stats?token={TOKEN}")[0] == 200
            web.linger(0.01)
        finally:
            stop_web(web, ServeOptions("127.0.0.1", 0, TOKEN, 0.0))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "web view on http://127.0.0.1:" in text and "?token=..." in text and TOKEN not in text
    assert TOKEN in web.url_with_token() and TOKEN not in web.url


def test_cli_refuses_an_unprotected_token_file(tmp_path, capsys):
    f = tmp_path / "token"
    f.write_text(TOKEN)
    os.chmod(f, 0o644)
    code = main(["detect", "--source", "apps/detect/samples/demo.mp4", "--serve", "0.0.0.0:0", "--token-file", str(f)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "chmod 600" in err[0], err


def test_closed_viewers_free_their_streams_without_new_data():
    """After the input ended (no new frames or events), a closed tab must still give its stream back."""
    view = WebView("detect", max_streams=2)
    view.frames.publish(np.zeros((32, 32, 3), np.uint8))
    try:
        conns = [open_stream(view, p)[0] for p in ("/stream.mjpg", "/events")]
        assert wait_until(lambda: sum(view.streams.values()) == 2)
        for c in conns:
            c.close()
        assert wait_until(lambda: sum(view.streams.values()) == 0, 5), view.streams
    finally:
        view.close()


def test_idle_connections_are_capped_and_time_out():
    from sdk.web.server import MAX_CONNECTIONS

    view = WebView("detect", send_timeout_s=2.0)
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS):  # connect and never send a request (slowloris)
            idle.append(socket.create_connection((view.host, view.port), timeout=10))
        assert wait_until(lambda: view.httpd.open_connections == MAX_CONNECTIONS)
        extra = socket.create_connection((view.host, view.port), timeout=10)
        assert extra.recv(1) == b""  # closed at once: no thread for it
        extra.close()
        assert wait_until(lambda: view.httpd.open_connections == 0, 10)  # each idle one dropped after send_timeout_s
        assert get(view, "/api/stats")[0] == 200
    finally:
        for s in idle:
            s.close()
        view.close()
