"""Camera modes: verify/identify with debounced decisions, and enrolment from good frames.

Frames come from :func:`sdk.sources.video.open_source` (camera index, ``/dev/videoN``, video
file, image folder, MJPEG/RTSP URL): capture runs in its own thread and a live camera keeps
only the latest frame, so a slow pipeline drops stale frames instead of lagging.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from apps.face.app import Face, FaceApp, FaceError
from sdk.console import Output
from sdk.sources.video import open_source

log = logging.getLogger("edgesdk.face")


def frontal(face: Face, max_roll_deg: float = 15.0) -> bool:
    """Eyes level and nose between them (when the detector gives keypoints; Haar's cascade is frontal)."""
    kp = face.landmarks
    if kp is None or len(kp) < 3:
        return True
    right_eye, left_eye, nose = kp[0], kp[1], kp[2]
    dx, dy = left_eye[0] - right_eye[0], left_eye[1] - right_eye[1]
    if dx == 0:
        return False
    roll = math.degrees(math.atan2(abs(dy), abs(dx)))
    t = (nose[0] - right_eye[0]) / dx  # 0 at one eye, 1 at the other; ~0.5 when facing the camera
    return roll <= max_roll_deg and 0.25 <= t <= 0.75


def _usable(app: FaceApp, faces: list[Face], where: str, largest: bool = False) -> tuple[Face | None, str]:
    try:
        return app.usable(faces, where, largest), ""
    except FaceError as e:
        return None, str(e).split(": ", 1)[-1]


def enroll_from_camera(app: FaceApp, name: str, source: str, count: int, max_frames: int = 0, min_gap_s: float = 0.2,
                       largest: bool = False) -> dict:
    """Keep ``count`` sharp, frontal, single-face frames (video: at least ``min_gap_s`` apart), then enrol them at once.

    Raises:
        FaceError: If the source ends (or ``max_frames`` pass) before enough good frames; nothing is written.
    """
    kept: list[np.ndarray] = []
    sources: list[str] = []
    last, seen, reasons = -1e9, 0, {}
    with open_source(source) as frames:
        for frame in frames:
            seen += 1
            face, why = _usable(app, app.embedder.detect(frame.image), f"frame {frame.index}", largest)
            if face is not None and not frontal(face):
                face, why = None, "face not frontal"
            if face is None:
                reasons[why] = reasons.get(why, 0) + 1
            elif frame.path is not None or frame.time - last >= min_gap_s:  # photos of a folder: no time gap
                kept.append(app.embedder.embed([face.chip])[0])
                sources.append(f"{source}#frame{frame.index}")
                last = frame.time
                log.info("kept frame %d (%d/%d)", frame.index, len(kept), count)
                if len(kept) == count:
                    break
            if max_frames and seen >= max_frames:
                break
    if len(kept) < count:
        top = ", ".join(f"{r} ({n})" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        raise FaceError(f"source {source}: only {len(kept)} of {count} usable frames in {seen}"
                        + (f"; rejected: {top}" if top else "") + "; nothing enrolled", param="source")
    return app.enroll_vectors(name, np.stack(kept), sources)


class Debouncer:
    """Reports a decision only once the last ``n`` frames agree, and only when it changes."""

    def __init__(self, n: int) -> None:
        self.window: deque[Any] = deque(maxlen=max(1, n))
        self.reported: Any = object()

    def push(self, key: Any) -> bool:
        self.window.append(key)
        if len(self.window) == self.window.maxlen and all(k == key for k in self.window) and key != self.reported:
            self.reported = key
            return True
        return False


def live(app: FaceApp, out: Output, source: str, mode: str, name: str | None, threshold: float | None,
         consistent: int = 3, max_frames: int = 0, largest: bool = False,
         on_frame: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Verify ``name`` or identify every frame of ``source``; emit debounced decisions with per-stage latency.

    ``on_frame`` (the web view's stats) gets ``frame``, ``latency_ms`` and ``dropped`` for every frame.

    Returns:
        0 if the last decision was a match, 1 otherwise.
    """
    store = app.require_store()
    if mode == "verify":
        store.embeddings_of(name)  # unknown name: fail before opening the camera
    else:
        store.require_enrolled()
    stats, deb = app.embedder.stats, Debouncer(consistent)
    stats.reset()
    last_match, n, t_start = False, 0, time.perf_counter()
    with open_source(source) as frames:
        for frame in frames:
            n += 1
            face, why = _usable(app, app.embedder.detect(frame.image), f"frame {frame.index}", largest)
            if face is None:
                key, m = ("none",), None  # any unusable frame is "nobody"; the latest reason is reported
            else:
                vec = app.embedder.embed([face.chip])[0]
                with stats.time("match"):
                    m = store.verify(name, vec, threshold) if mode == "verify" else store.identify(vec, threshold)
                key = ("face", m.name, m.match)
            if on_frame is not None:
                on_frame({"frame": frame.index, "latency_ms": {k: round(stats.last_ms(k), 2) for k in stats.stages}, "dropped": frame.dropped})
            if deb.push(key):
                lat = {k: round(stats.last_ms(k), 2) for k in stats.stages}
                fps = n / max(time.perf_counter() - t_start, 1e-9)
                ev = {"frame": frame.index, "time": round(frame.time, 3)}
                if m is None:
                    ev.update({"name": None, "match": False, "distance": None, "threshold": store.threshold if threshold is None else threshold, "reason": why})
                else:
                    ev.update(m.to_json())
                ev.update({"latency_ms": lat, "fps": round(fps, 1)})
                last_match = bool(ev["match"])
                out.emit(ev, f"[{ev['time']:7.2f}s] {ev['name'] or 'unknown'}: {'MATCH' if ev['match'] else 'no match'}"
                         + (f" (distance {ev['distance']:.3f})" if ev["distance"] is not None else f" ({why})"))
            if max_frames and n >= max_frames:
                break
    summ = {k: round(v.get("p50_ms", 0.0), 2) for k, v in stats.summaries().items()}
    out.text(f"{n} frames, {n / max(time.perf_counter() - t_start, 1e-9):.1f} FPS; p50 ms per stage: {summ}")
    return 0 if last_match else 1
