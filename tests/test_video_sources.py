"""Video sources: files, images, folders, an MJPEG IP camera on 127.0.0.1 (with a dropped
connection), the latest-frame policy and the camera error."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk.errors import SourceError
from sdk.sources.video import FrameQueue, MJPEGSource, open_source


def solid(level: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(20):
        writer.write(solid(i * 10))
    writer.release()
    return path


class MJPEGServer:
    """A tiny IP camera: frame k is a solid image of level 5*k; ``drop_after`` closes the first connection."""

    def __init__(self, fps: float = 200.0, drop_after: int | None = None, content_length: bool = True) -> None:
        self.frame = 0
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_GET(self):
                outer.connections += 1
                first = outer.connections == 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                sent = 0
                try:
                    while not outer.stopped.is_set():
                        ok, jpeg = cv2.imencode(".jpg", solid((outer.frame * 5) % 250))
                        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        if content_length:
                            head += f"Content-Length: {len(jpeg)}\r\n".encode()
                        self.wfile.write(head + b"\r\n" + jpeg.tobytes() + b"\r\n")
                        outer.frame += 1
                        sent += 1
                        if first and drop_after is not None and sent >= drop_after:
                            return  # the camera drops the connection
                        time.sleep(1 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.stopped = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kw) -> MJPEGServer:
        servers.append(MJPEGServer(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_video_file_every_frame_in_order_even_with_a_slow_consumer(video):
    with open_source(video) as src:
        assert src.fps == pytest.approx(25)
        frames = []
        for f in src:
            time.sleep(0.005)
            frames.append(f)
    assert [f.index for f in frames] == list(range(20))
    assert all(f.dropped == 0 for f in frames)
    assert frames[3].time == pytest.approx(3 / 25)
    assert abs(float(frames[7].image.mean()) - 70) < 3
    assert len(src.queue) <= src.queue.maxsize


def test_video_file_realtime_drops_stale_frames(video):
    with open_source(video, realtime=True) as src:
        got = []
        for f in src:
            got.append(f)
            time.sleep(0.15)  # ~4x slower than 25 fps
    assert src.dropped > 0 and got[-1].dropped == src.dropped
    assert len(got) + src.dropped == 20
    idx = [f.index for f in got]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_image_folder_sorted_unreadable_skipped_with_warning(tmp_path, caplog):
    for name, level in (("b.png", 20), ("a.jpg", 10), ("c.png", 30)):
        cv2.imwrite(str(tmp_path / name), solid(level))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="edgesdk"), open_source(tmp_path) as src:
        frames = list(src)
    assert [Path(f.path).name for f in frames] == ["a.jpg", "b.png", "c.png"]
    assert "bad.jpg: cannot read this image, skipped" in caplog.text
    single = list(open_source(tmp_path / "b.png"))
    assert len(single) == 1 and single[0].image.shape == (48, 64, 3)


def test_bad_specs(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        open_source(tmp_path / "empty")
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(SourceError, match="cannot open this video"):
        open_source(tmp_path / "junk.mp4")


def test_unopenable_camera_lists_video_devices():
    with pytest.raises(SourceError, match=r"camera /dev/video97: cannot open.*video devices on this machine"):
        open_source("/dev/video97")
    with pytest.raises(SourceError, match="camera 97"):
        open_source(97)


@pytest.mark.parametrize("content_length", [True, False])
def test_mjpeg_ip_camera(server_factory, content_length):
    srv = server_factory(fps=100, content_length=content_length)
    with open_source(srv.url) as src:
        assert isinstance(src, MJPEGSource)
        frames = [src.read(timeout=10) for _ in range(5)]
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    levels = [float(f.image.mean()) for f in frames]
    assert levels == sorted(levels)  # frames arrive in order


def test_mjpeg_reconnects_after_a_dropped_connection(server_factory, caplog):
    srv = server_factory(fps=100, drop_after=3)
    src = MJPEGSource(srv.url, backoff=0.05)
    with caplog.at_level(logging.WARNING, logger="edgesdk"), src:
        frames = [src.read(timeout=10) for _ in range(8)]
    assert srv.connections >= 2 and src.reconnects >= 1
    assert "reconnecting in" in caplog.text
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_mjpeg_latest_frame_wins_with_a_slow_consumer(server_factory):
    srv = server_factory(fps=200)
    with open_source(srv.url) as src:
        got = []
        for f in src:
            assert len(src.queue) <= 1  # bounded: never more than the one latest frame
            got.append(f)
            time.sleep(0.1)
            if len(got) == 5:
                break
    assert got[-1].dropped > 0
    gaps = sum(b.index - a.index - 1 for a, b in zip(got, got[1:]))
    assert gaps == got[-1].dropped - got[0].dropped  # every skipped frame was counted as dropped


def test_stream_that_never_connects_gives_up(caplog):
    src = MJPEGSource("http://127.0.0.1:9/none.mjpg", backoff=0.01)  # port 9: discard, nothing listens
    with caplog.at_level(logging.ERROR), src, pytest.raises(SourceError, match="gave up after 3 reconnection attempts"):
        src.read(timeout=20)


def test_non_mjpeg_http_is_an_error(tmp_path):
    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html></html>")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with MJPEGSource(f"http://127.0.0.1:{httpd.server_address[1]}/") as src, pytest.raises(SourceError, match="text/html"):
            src.read(timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_frame_queue_blocking_mode_never_drops():
    q = FrameQueue(2, drop=False)
    produced = []

    def producer():
        for i in range(10):
            q.put(i)
            produced.append(i)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.05)
    assert len(q) == 2 and len(produced) == 2  # the producer waits for room
    assert [q.get(1) for _ in range(10)] == list(range(10))
    t.join(2)
    assert q.dropped == 0


def test_capture_source_reopens_when_the_stream_ends(video, caplog):
    """The RTSP/camera path (OpenCV VideoCapture) reconnects on a failed read; a file stands in for the stream."""
    from sdk.sources.video import CaptureSource

    src = CaptureSource(str(video), backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="edgesdk"), src:
        frames = [src.read(timeout=10) for _ in range(30)]
    assert src.reconnects >= 1 and "read failed; reconnecting" in caplog.text
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] == 29 + frames[-1].dropped  # live: stale frames may be dropped, never reordered
