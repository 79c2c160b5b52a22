"""The detection pipeline: source → letterbox/normalise → Runner → decode → NMS → events.

:class:`Detector` turns one BGR image into :class:`sdk.types.Detection` objects in original
pixels, with everything (input size, normalisation, channel order, decoder, anchors, labels)
from the settings, else the model card, else what the model implies (Ultralytics metadata, a
post-processing op, the input quantization, a packed label file), else the decoder family's
convention and tensor shapes, each such guess said once with the parameter that overrides it. :func:`run_stream` drives it from a
video source: the source's capture thread feeds a bounded queue (latest frame wins for live
sources), inference runs in the calling thread, and each frame becomes one JSON line.
Device side: never imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apps.registry import APPS
from sdk.card import ultralytics_metadata
from sdk.decoders import Guess, choose_decoder
from sdk.decoders.grid import parse_anchors
from sdk.decoders.labels import resolve_labels
from sdk.decoders.ssd import postprocess_roles
from sdk.errors import ConfigError, ModelFormatError
from sdk.image import Preprocessor, range_from_quant
from sdk.nms import nms
from sdk.stats import StageStats
from sdk.types import Box, Detection, Frame

log = logging.getLogger("edgesdk")

DEFAULT_MODEL = APPS["detect"].default_model_path


def default_model() -> Path:
    """The shipped default model, or a clear error if this install lacks it."""
    if not DEFAULT_MODEL.is_file():
        raise ModelFormatError(f"the default detection model {DEFAULT_MODEL} is missing; give a model explicitly "
                               f"or rebuild it with `{APPS['detect'].rebuild}`")
    return DEFAULT_MODEL


def read_labels_file(path: str | Path) -> list[str]:
    """One label per line (blank lines ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--labels {path}: cannot read it ({e.strerror or e})") from e
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


@dataclass(frozen=True)
class Settings:
    """Post-processing options and the facts a model may not state (``None``: the card's value,
    else what the model implies, else the decoder family's convention, said as a guess).

    ``decoder`` is a family (``yolov8``, ``ssd``...; ``v8`` and the other short names too),
    ``anchors`` YOLO anchor pairs (``"10,14 23,27 37,58"``, ``;`` between scales, or lists),
    ``mean``/``std`` one number or three in pixel units, ``channel_order`` ``rgb`` or ``bgr``.
    """

    conf: float | None = None
    iou: float | None = None
    max_det: int = 300
    agnostic: bool = False
    decoder: str | None = None
    labels_file: str | None = None
    anchors: str | Sequence[Any] | None = None
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None
    channel_order: str | None = None


class Detector:
    """One model, ready to turn images into detections.

    Args:
        runner: A :class:`sdk.runner.Runner` on a detection model.
        settings: Thresholds and the model facts to impose (see :class:`Settings`).
        say: Called once per :class:`~sdk.decoders.base.Guess` (what was assumed and the
            parameter that overrides it); default: one log line each. Also kept in ``guesses``.

    Raises:
        ModelFormatError: Input not an image tensor, outputs matching no decoder.
        ConfigError: Bad thresholds or input options, or a labels file that does not fit.
    """

    def __init__(self, runner: Any, settings: Settings = Settings(), say: Callable[[Guess], None] | None = None) -> None:
        self.runner = runner
        card = runner.card
        if card is not None and card.task not in ("detect", "generic"):
            raise ModelFormatError(f"{runner.name}: its card says task {card.task!r}; `edgesdk detect` needs a detection model")
        spec = runner.inputs[0]
        if len(runner.inputs) != 1 or len(spec.shape) != 4 or spec.shape[-1] != 3:
            shapes = [list(s.shape) for s in runner.inputs]
            raise ModelFormatError(f"{runner.name}: expected one image input [1, H, W, 3] (NHWC), got {shapes}")
        size = (spec.shape[2], spec.shape[1])
        quant = (spec.scale, spec.zero_point, spec.dtype) if spec.quantized and spec.dtype.kind in "iu" and spec.dtype.itemsize == 1 else None
        out = dict(card.output) if card else {}
        if settings.anchors is not None:
            out["anchors"] = parse_anchors(settings.anchors)
        ultra = None if card else ultralytics_metadata(runner.file.data)
        shapes = [s.shape for s in runner.outputs]
        oq = [(s.scale, s.zero_point, s.dtype.str) if s.quantized else None for s in runner.outputs]
        graph = postprocess_roles(runner.file, [s.index for s in runner.outputs])
        self.decoder, self.reason = choose_decoder(shapes, size, out, ultra, settings.decoder, runner.output_names, oq, graph)
        self.guesses: list[Guess] = list(self.decoder.guesses)
        recipe = self._input_recipe(dict(card.input) if card else {}, settings, quant, ultra is not None)
        self.preprocess = Preprocessor.from_card_input(recipe, size, quant)
        if self.preprocess.size != size:
            raise ModelFormatError(f"{runner.name}: card input.size {list(self.preprocess.size)} differs from the input tensor {list(size)}")
        n = self.decoder.num_classes(shapes)
        self.labels, self.labels_from, said = resolve_labels(n, settings.labels_file, out.get("labels"), (ultra or {}).get("names"), runner.file.data)
        self.guesses += said
        self.conf = _threshold("conf", settings.conf, out.get("conf", 0.25))
        self.iou = _threshold("iou", settings.iou, out.get("iou", 0.45))
        if settings.max_det < 1:
            raise ConfigError(f"max_det must be at least 1, got {settings.max_det}", param="max_det")
        self.max_det, self.agnostic = settings.max_det, settings.agnostic
        # int8 outputs stay int8: the decoder thresholds scores in their quantized domain and
        # dequantizes only the rows that pass (same detections as dequantizing everything)
        self._quant = [(s.scale, s.zero_point) if s.quantized else None for s in runner.outputs]
        self._raw = any(q is not None for q in self._quant)
        self.stats = StageStats()
        for g in self.guesses:
            if say is not None:
                say(g)
            else:
                log.info("detect: guessed %s (set %sthe card's %s)", g.what, f"{g.param}, or " if g.param else "", g.card_key)

    def _input_recipe(self, spec: dict[str, Any], settings: Settings, quant: tuple[float, int, Any] | None, ultralytics: bool) -> dict[str, Any]:
        """The card's ``input`` with the settings applied and every missing fact filled (and said)."""
        for key in ("mean", "std", "channel_order"):
            value = getattr(settings, key)
            if value is not None:
                spec[key] = _input_value(key, value)
        conv = self.decoder.convention
        if ultralytics:  # Ultralytics models all take RGB in [0, 1], letterboxed
            conv = {"mean": 0.0, "std": 255.0, "channel_order": "rgb", "letterbox": True}
        implied = range_from_quant(*quant) if quant is not None and not ultralytics else None
        if "mean" not in spec or "std" not in spec:
            if implied is not None:
                mean, std, text = implied
                how = f"input range {text}, implied by the input's quantization (scale {quant[0]:.6g}, zero point {quant[1]})"
            else:
                mean, std, how = conv["mean"], conv["std"], f"input normalisation ({conv.get('why')})"
            if not ultralytics:
                self.guesses.append(Guess(f"{how}: mean {_num(spec.get('mean', mean))}, std {_num(spec.get('std', std))}", "mean", "input.mean"))
            spec.setdefault("mean", mean)
            spec.setdefault("std", std)
        if "channel_order" not in spec:
            spec["channel_order"] = conv["channel_order"]
            if not ultralytics:
                self.guesses.append(Guess(f"channel order {conv['channel_order'].upper()} ({conv.get('why')})", "channel_order", "input.channel_order"))
        if "letterbox" not in spec and not conv["letterbox"]:
            spec["letterbox"] = False
            self.guesses.append(Guess(f"images stretched to the input size, not letterboxed ({conv.get('why')})", "", "input.letterbox"))
        return spec

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """Detections in ``image`` (BGR uint8), in its pixels, best first; stages timed in ``stats``."""
        t0 = time.perf_counter()
        x, lb = self.preprocess(image)
        t1 = time.perf_counter()
        outs = self.runner.run(x, raw=self._raw)
        t2 = time.perf_counter()
        if self._raw:
            boxes, scores, cls = self.decoder.decode_raw(outs, self._quant, self.conf)
        else:
            boxes, scores, cls = self.decoder(outs, self.conf)
        dets: list[Detection] = []
        if scores.size:
            if self.decoder.applies_nms:  # suppressed in the graph already
                keep = np.argsort(-scores, kind="stable")[: self.max_det].tolist()
            else:
                keep = nms(boxes, scores, cls, self.iou, self.max_det, self.agnostic).tolist()
            # Python objects only for the kept few, from lists: cheaper than indexing arrays again
            b_rows, s_list, c_list, labels = boxes.tolist(), scores.tolist(), cls.tolist(), self.labels
            dets = [
                Detection(Box(*b), s_list[i], c_list[i], labels[c_list[i]] if 0 <= c_list[i] < len(labels) else str(c_list[i]))
                for i, b in zip(keep, lb.unmap_rows([b_rows[i] for i in keep]))
            ]
        t3 = time.perf_counter()
        invoke = self.runner.stats.last_ms("infer") / 1e3
        # "post" includes the Runner's work around invoke() (input checks; dequantization
        # when the decoder cannot take stored integers): everything but the model
        self.stats.add("pre", t1 - t0)
        self.stats.add("infer", invoke)
        self.stats.add("post", (t2 - t1 - invoke) + (t3 - t2))
        return dets

    def latency_ms(self) -> dict[str, float]:
        """The last frame's ``pre``/``infer``/``post`` in milliseconds."""
        return {k: round(self.stats.last_ms(k), 2) for k in ("pre", "infer", "post")}


def _threshold(param: str, value: float | None, default: float) -> float:
    v = float(default if value is None else value)
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{param} must be between 0 and 1, got {v}", param=param)
    return v


def _num(v: Any) -> str:
    """A mean or std for a log line: 6 significant digits, lists as ``a,b,c``."""
    return ",".join(f"{x:.6g}" for x in v) if isinstance(v, (list, tuple)) else f"{v:.6g}"


def _input_value(key: str, value: Any) -> Any:
    """A ``mean``/``std`` (one number or three, std non-zero) or ``channel_order`` setting, checked."""
    if key == "channel_order":
        if str(value).lower() not in ("rgb", "bgr"):
            raise ConfigError(f"channel_order must be rgb or bgr, got {value!r}", param=key)
        return str(value).lower()
    try:
        arr = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size not in (1, 3) or not np.all(np.isfinite(arr)) or (key == "std" and np.any(arr == 0)):
        raise ConfigError(f"{key} must be one number or three (per channel{', non-zero' if key == 'std' else ''}), got {value!r}", param=key)
    return float(arr[0]) if arr.size == 1 else arr.tolist()


def frame_event(frame: Frame, dets: list[Detection], latency: dict[str, float]) -> dict[str, Any]:
    """One JSON line per frame, as in ARCHITECTURE.md (+ ``path`` for images, ``dropped``)."""
    ev: dict[str, Any] = {"frame": frame.index, "time": round(frame.time, 3)}
    if frame.path is not None:
        ev["path"] = frame.path
    ev["detections"] = [d.to_json() for d in dets]
    ev["latency_ms"] = latency
    ev["dropped"] = frame.dropped
    return ev


def human_line(ev: dict[str, Any]) -> str:
    where = ev.get("path") or f"t={ev['time']:.2f}s"
    found = ", ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in ev["detections"]) or "nothing"
    lat = ev["latency_ms"]
    return f"frame {ev['frame']} ({where}): {found}  [{lat['pre']:.1f}+{lat['infer']:.1f}+{lat['post']:.1f} ms]"


def stats_line(det: Detector, frames: int, elapsed: float, dropped: int) -> str:
    """``FPS, p50/p90 per stage, dropped`` for the periodic stderr line."""
    parts = [f"{frames / elapsed:.1f} FPS" if elapsed > 0 else "- FPS"]
    for stage in ("pre", "infer", "post"):
        s = det.stats.summary(stage)
        if s.get("count"):
            parts.append(f"{stage} p50 {s['p50_ms']:.1f} / p90 {s['p90_ms']:.1f} ms")
    parts.append(f"dropped {dropped}")
    return "detect: " + " | ".join(parts)


def run_stream(
    det: Detector,
    source: Any,
    emit: Callable[[dict[str, Any], list[Detection], Frame], bool | None],
    stats_every: float = 5.0,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Run ``det`` on every frame ``source`` delivers (its capture thread fills a bounded queue).

    Args:
        det: The detector.
        source: An open :class:`sdk.sources.video.VideoSource`.
        emit: Called with ``(event, detections, frame)`` for each frame; returning False stops.
        stats_every: Seconds between stats lines on stderr (0: only the final one).
        max_frames: Stop after this many processed frames.

    Returns:
        Totals: ``frames``, ``dropped``, ``seconds``, ``fps`` and per-stage summaries.
    """
    t0 = last = time.monotonic()
    frames = 0
    for frame in source:
        dets = det(frame.image)
        frames += 1
        if emit(frame_event(frame, dets, det.latency_ms()), dets, frame) is False:
            break
        now = time.monotonic()
        if stats_every and now - last >= stats_every:
            log.info("%s", stats_line(det, frames, now - t0, source.dropped))
            last = now
        if max_frames is not None and frames >= max_frames:
            break
    elapsed = time.monotonic() - t0
    log.info("%s", stats_line(det, frames, elapsed, source.dropped))
    return {
        "frames": frames,
        "dropped": source.dropped,
        "seconds": round(elapsed, 3),
        "fps": round(frames / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": {k: {m: round(v, 3) for m, v in s.items()} for k, s in det.stats.summaries().items()},
    }


VIDEO_EXTS = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def annotate(image: np.ndarray, dets: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with boxes and ``label score`` drawn."""
    import cv2

    out = image.copy()
    for d in dets:
        hue = (d.class_id * 47) % 180
        color = tuple(int(v) for v in cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0])
        p1 = (int(round(d.box.x1)), int(round(d.box.y1)))
        cv2.rectangle(out, p1, (int(round(d.box.x2)), int(round(d.box.y2))), color, 2)
        text = f"{d.label} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(th + 4, p1[1])
        cv2.rectangle(out, (p1[0], y - th - 4), (p1[0] + tw + 4, y), color, -1)
        cv2.putText(out, text, (p1[0] + 2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def check_save_target(target: Path) -> None:
    """Refuse a ``save`` target before any frame is processed: its folder must exist and be
    writable, and a name with a suffix must be a video format (a folder of images has none).

    Raises:
        ConfigError: (``param="save"``) naming the target and the fix.
    """
    video = target.suffix.lower() in VIDEO_EXTS
    if not video and target.suffix and not target.is_dir():
        raise ConfigError(f"save {target}: {target.suffix} is not a video format; use {', '.join(sorted(VIDEO_EXTS))} "
                          "or a folder name (annotated images)", param="save")
    folder = target.parent if video or not target.exists() else target
    if not folder.is_dir():
        raise ConfigError(f"save {target}: folder {folder} does not exist; create it first", param="save")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"save {target}: folder {folder} is not writable", param="save")


class AnnotatedSaver:
    """``--save``: an annotated video (``.mp4``/``.avi``/``.mkv``/``.mov``) or a folder of images.

    A video is written to a temporary file beside the target and renamed on :meth:`close`, so an
    interrupted run never leaves a half-written file under the requested name.
    """

    def __init__(self, target: str | Path, fps: float = 0.0) -> None:
        self.target = Path(target)
        self.fps = fps if fps and fps > 0 else 10.0
        self.video = self.target.suffix.lower() in VIDEO_EXTS
        self._writer: Any = None
        self._tmp = self.target.with_name(f".{self.target.stem}.part{self.target.suffix}")
        check_save_target(self.target)
        if not self.video:
            self.target.mkdir(exist_ok=True)
        self.count = 0

    def write(self, frame: Frame, dets: Sequence[Detection]) -> None:
        import cv2

        img = annotate(frame.image, dets)
        if self.video:
            if self._writer is None:
                h, w = img.shape[:2]
                self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*VIDEO_EXTS[self.target.suffix.lower()]), self.fps, (w, h))
                if not self._writer.isOpened():
                    raise ConfigError(f"save {self.target}: OpenCV cannot write this video format; try .avi or a folder", param="save")
            self._writer.write(img)
        else:
            from sdk.card import atomic_write

            name = Path(frame.path).name if frame.path else f"frame_{frame.index:06d}.jpg"
            ext = Path(name).suffix or ".jpg"
            ok, buf = cv2.imencode(ext, img)
            if not ok:
                ok, buf = cv2.imencode(".jpg", img)
                name = f"{Path(name).stem}.jpg"
            atomic_write(self.target / name, buf.tobytes())
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Finish the video (rename into place when ``keep``, else delete the partial file)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if keep:
                self._tmp.replace(self.target)
            else:
                self._tmp.unlink(missing_ok=True)


class Window:
    """``--show``: an OpenCV window (needs a GUI build of OpenCV and a display)."""

    def __init__(self, title: str = "edgesdk detect") -> None:
        import cv2

        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise ConfigError(
                "--show needs a GUI build of OpenCV and a display (pip install opencv-python instead of "
                "opencv-python-headless); use --save instead"
            ) from e

    def show(self, frame: Frame, dets: Sequence[Detection]) -> bool:
        """Show the annotated frame; False when the user pressed q or Esc."""
        import cv2

        cv2.imshow(self.title, annotate(frame.image, dets))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)
