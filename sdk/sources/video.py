"""Video sources: cameras, video files, images, image folders, MJPEG over HTTP and RTSP.

Every source is a context manager and an iterator of :class:`sdk.types.Frame` (BGR uint8).
A capture thread reads frames into a bounded :class:`FrameQueue`:

* live sources (cameras, ``http://``, ``rtsp://``) keep only the latest frame (queue of one):
  when the consumer is slower than the source, stale frames are dropped and counted, so latency
  stays bounded. ``Frame.dropped`` is the number of frames dropped so far (cumulative).
* files and images are never dropped (the capture thread waits for room) unless
  ``realtime=True``, which paces a video file at its own frame rate and drops like a camera.

Network streams reconnect with exponential backoff when they drop. ``Frame.time`` is seconds
of video for files (index / fps), seconds since the start for live sources, 0 for images.
"""

from __future__ import annotations

import functools
import glob
import http.client
import logging
import os
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import SourceError
from sdk.paths import not_special
from sdk.types import Frame

log = logging.getLogger("edgesdk")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
INITIAL_RETRIES = 3  # reconnection attempts before a stream has delivered its first frame
_END = object()


class FrameQueue:
    """Bounded hand-off from the capture thread to the consumer.

    Args:
        maxsize: Capacity.
        drop: When full, discard the oldest item (latest wins) and count it, instead of blocking.
    """

    def __init__(self, maxsize: int = 1, drop: bool = True) -> None:
        self.maxsize = maxsize
        self.drop = drop
        self.dropped = 0
        self._items: deque[Any] = deque()
        self._final: deque[Any] = deque()  # end marker or error: after the frames, outside the bound
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, final: bool = False) -> bool:
        """Add ``item``; returns False once the consumer has closed the queue.

        ``final`` items (end of stream, errors) are never dropped and never wait.
        """
        with self._cond:
            while not final and not self.drop and len(self._items) >= self.maxsize and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if final:
                self._final.append(item)
            else:
                if self.drop and len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
                self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item, waiting up to ``timeout`` seconds (``TimeoutError`` after)."""
        return self.get_counted(timeout)[0]

    def get_counted(self, timeout: float | None = None) -> tuple[Any, int]:
        """The oldest item and the number dropped before it, read together under the lock."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._final, timeout):
                raise TimeoutError("no frame within the timeout")
            item = self._items.popleft() if self._items else self._final.popleft()
            self._cond.notify_all()
            return item, self.dropped

    def __len__(self) -> int:
        """Frames waiting (never more than ``maxsize``)."""
        return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._final.clear()
            self._cond.notify_all()


class VideoSource:
    """Base class: subclasses implement :meth:`_frames` (runs in the capture thread).

    Attributes:
        name: What was opened (for messages). ``live``: drops stale frames.
        fps: Nominal frame rate (0 if unknown). ``dropped``: frames dropped so far.
    """

    live = False

    def __init__(self, name: str, latest: bool | None = None, maxsize: int = 4) -> None:
        self.name = name
        self.fps = 0.0
        latest = self.live if latest is None else latest
        self.queue = FrameQueue(1 if latest else maxsize, drop=latest)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def _frames(self) -> Iterator[tuple[np.ndarray, float, str | None]]:
        """Yield ``(image, time, path)``; return at the end of the stream."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the device or file (called once, after the capture thread ends)."""

    def _capture(self) -> None:
        index = 0
        try:
            for image, t, path in self._frames():
                if self._stop.is_set() or not self.queue.put((image, index, t, path)):
                    return
                index += 1
        except Exception as e:  # handed to the consumer, which raises it in its own thread
            self.queue.put(e, final=True)
            return
        self.queue.put(_END, final=True)

    def start(self) -> VideoSource:
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture, name=f"capture {self.name}", daemon=True)
            self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or ``None`` at the end of the stream."""
        self.start()
        item, dropped = self.queue.get_counted(timeout)
        if item is _END:
            self.queue.put(_END, final=True)  # later reads see the end too
            return None
        if isinstance(item, BaseException):
            raise item
        image, index, t, path = item
        return Frame(image, index, t, path, dropped)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release()

    def __enter__(self) -> VideoSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache  # set the log levels once, not per image or frame
def _cv2():
    from sdk.lazy import require

    # FFmpeg's and OpenCV's own warnings ("moov atom not found", V4L2 probes) would reach the
    # terminal beside our one-line errors; the env var is read when FFmpeg is first used
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2 = require("cv2", "reading video and images")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


class ImageSource(VideoSource):
    """One image or a folder of images (sorted by name); unreadable files are skipped with a warning."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._first: np.ndarray | None = None
        if path.is_dir():
            try:
                self.paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
            except OSError as e:
                raise SourceError(f"{path}: cannot list this folder ({e.strerror or e})") from e
            if not self.paths:
                raise SourceError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
        else:
            self.paths = [path]
            # a lone image is read now: an unreadable one is an error before any model loads
            self._first = _read_image(path)
            if self._first is None:
                raise SourceError(f"{path}: cannot read this image; check that it is a JPEG/PNG/BMP/WebP file")

    def _frames(self) -> Iterator[tuple[np.ndarray, float, str | None]]:
        if self._first is not None:
            yield self._first, 0.0, str(self.paths[0])
            return
        read = 0
        for p in self.paths:
            img = _read_image(p)
            if img is None:
                log.warning("edgesdk: warning: %s: cannot read this image, skipped", p)
                continue
            read += 1
            yield img, 0.0, str(p)
        if not read:  # nothing processed is a failure, not an empty success
            raise SourceError(f"{self.name}: cannot read any of the {len(self.paths)} images; check that they are JPEG/PNG/BMP/WebP files")


def _read_image(path: Path) -> np.ndarray | None:
    cv2 = _cv2()
    return cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None


class VideoFileSource(VideoSource):
    """A video file; ``realtime`` paces it at its frame rate and drops frames like a camera."""

    def __init__(self, path: Path, realtime: bool = False) -> None:
        super().__init__(str(path), latest=realtime)
        cv2 = _cv2()
        self.realtime = realtime
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"{path}: cannot open this video (not a video file, or no decoder for its format)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def _frames(self) -> Iterator[tuple[np.ndarray, float, str | None]]:
        fps = self.fps if self.fps > 0 else 30.0
        t0, index = time.monotonic(), 0
        while not self._stop.is_set():
            ok, img = self.cap.read()
            if not ok:
                return
            if self.realtime:  # the frame is due at index / fps after the start
                self._stop.wait(max(0.0, t0 + index / fps - time.monotonic()))
            yield img, index / fps, None
            index += 1

    def _release(self) -> None:
        self.cap.release()


class _ReconnectingSource(VideoSource):
    """A live source that reopens itself with exponential backoff when it fails or ends."""

    live = True

    def __init__(self, name: str, retries: int | None = None, backoff: float = 0.5, max_backoff: float = 8.0) -> None:
        super().__init__(name)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.reconnects = 0

    def _session(self) -> Iterator[np.ndarray]:
        """Open the stream and yield frames until it ends or raises ``OSError``."""
        raise NotImplementedError

    def _frames(self) -> Iterator[tuple[np.ndarray, float, str | None]]:
        t0, failures, connected = time.monotonic(), 0, False
        while not self._stop.is_set():
            why = "stream ended"
            try:
                for img in self._session():
                    failures, connected = 0, True
                    yield img, time.monotonic() - t0, None
            except SourceError:
                raise  # wrong kind of stream: retrying cannot help
            except (OSError, http.client.HTTPException) as e:
                why = str(e) or type(e).__name__
            if self._stop.is_set():
                return
            # a stream that never worked is most likely a wrong URL: give up early
            limit = self.retries if connected else min(self.retries or INITIAL_RETRIES, INITIAL_RETRIES)
            if limit is not None and failures >= limit:
                raise SourceError(f"{self.name}: {why}; gave up after {failures} reconnection attempts")
            delay = min(self.max_backoff, self.backoff * 2**failures)
            log.warning("edgesdk: warning: %s: %s; reconnecting in %.1f s", self.name, why, delay)
            failures += 1
            self.reconnects += 1
            self._stop.wait(delay)


class CaptureSource(_ReconnectingSource):
    """An OpenCV ``VideoCapture``: a V4L2 camera (index or ``/dev/videoN``) or an ``rtsp://`` URL."""

    def __init__(self, target: int | str, size: tuple[int, int] | None = None, fps: float | None = None, **kw: Any) -> None:
        super().__init__(str(target), **kw)
        cv2 = _cv2()
        self.target, self.size = target, size
        self.camera = isinstance(target, int) or str(target).startswith("/dev/")
        self.api = cv2.CAP_V4L2 if self.camera else cv2.CAP_FFMPEG
        self._want_fps = fps
        self.cap = self._open()
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) if fps is None else float(fps)

    def _open(self):
        cv2 = _cv2()
        cap = cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            if self.camera:
                found = sorted(glob.glob("/dev/video*"))
                have = ", ".join(found) if found else "none (is a camera connected, and is this user in the 'video' group?)"
                raise SourceError(f"camera {self.target}: cannot open it with V4L2; video devices on this machine: {have}")
            raise SourceError(f"{self.target}: cannot open this stream (check the URL, credentials and that ffmpeg supports it)")
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self._want_fps:
            cap.set(cv2.CAP_PROP_FPS, self._want_fps)
        return cap

    def _session(self) -> Iterator[np.ndarray]:
        if self.cap is None:
            try:
                self.cap = self._open()
            except SourceError as e:  # a camera or stream that went away: retried like a drop
                raise ConnectionError(str(e)) from e
        while not self._stop.is_set():
            ok, img = self.cap.read()
            if not ok:
                self.cap.release()
                self.cap = None
                raise OSError("read failed")
            yield img

    def _release(self) -> None:
        if self.cap is not None:
            self.cap.release()


class MJPEGSource(_ReconnectingSource):
    """``http://`` MJPEG (``multipart/x-mixed-replace``), parsed here so no FFmpeg probing is needed."""

    def __init__(self, url: str, timeout: float = 5.0, **kw: Any) -> None:
        super().__init__(url, **kw)
        self.url, self.timeout = url, timeout

    def _session(self) -> Iterator[np.ndarray]:
        cv2 = _cv2()
        with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
            kind = resp.headers.get("Content-Type", "")
            if "multipart" not in kind:
                raise SourceError(f"{self.url}: expected an MJPEG stream (multipart/x-mixed-replace), got Content-Type {kind!r}; other video over HTTP: download it and pass the file")
            for jpeg in _mjpeg_parts(resp):
                if self._stop.is_set():
                    return
                img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                if img is not None:  # a corrupt part is skipped, the stream goes on
                    yield img


def _mjpeg_parts(resp: Any) -> Iterator[bytes]:
    """JPEG payloads of a multipart stream: by Content-Length, else by JPEG start/end markers."""
    length = None
    while True:
        line = resp.readline()
        if not line:
            return
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1].strip() or 0)
        elif line.startswith(b"\xff\xd8"):  # payload without a length header
            buf = bytearray(line)
            while (end := buf.find(b"\xff\xd9")) < 0:
                more = resp.readline()
                if not more:
                    return
                buf += more
            yield bytes(buf[: end + 2])
        elif not line.strip() and length:  # blank line ends the part headers
            data = resp.read(length)
            if len(data) < length:
                return
            length = None
            yield data


def _parse_camera(spec: str) -> int | str | None:
    if spec.isdigit():
        return int(spec)
    if spec.startswith("/dev/video"):
        return spec
    return None


def open_source(spec: str | int | Path, size: tuple[int, int] | None = None, fps: float | None = None, realtime: bool = False) -> VideoSource:
    """Open a camera index or ``/dev/videoN``, a video file, an image, an image folder or a URL.

    Args:
        spec: What to read (see :mod:`sdk.sources.video`).
        size: Capture ``(w, h)`` asked of a camera (hardware scaling where it has it).
        fps: Frame rate asked of a camera.
        realtime: Pace a video file at its frame rate and drop stale frames.

    Raises:
        SourceError: When it cannot be opened (a camera error lists ``/dev/video*``).
    """
    text = str(spec)
    cam = spec if isinstance(spec, int) else _parse_camera(text)
    if cam is not None:
        return CaptureSource(cam, size, fps)
    if text.startswith(("http://", "https://")):
        return MJPEGSource(text)
    if text.startswith(("rtsp://", "rtsps://", "rtmp://")):
        return CaptureSource(text)
    path = Path(text)
    if not path.exists():
        raise SourceError(f"{text}: no such file, folder or camera; expected a camera index, /dev/videoN, a file, a folder or a URL")
    not_special(path, "give a video or image file, a folder or /dev/videoN", SourceError, where=text)
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTS:
        return ImageSource(path)
    return VideoFileSource(path, realtime)
