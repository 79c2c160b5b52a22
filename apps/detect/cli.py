"""``edgesdk detect`` and ``edgesdk eval detect``. Heavy imports (cv2, the Runner) happen inside the commands."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from sdk.console import Output, add_command, add_runner_args, number, runner_kwargs, table
from sdk.decoders.base import FAMILIES
from sdk.errors import ConfigError
from sdk.web.serve import add_serve_args

log = logging.getLogger("edgesdk")


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return int(w), int(h)


def _floats(text: str, positive: bool = False) -> float | list[float]:
    """``--mean``/``--std``: one number, or three separated by commas or spaces (per channel)."""
    parts = text.replace(",", " ").split()
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive numbers" if positive else "numbers"
        raise argparse.ArgumentTypeError(f"expected one or three {kind} (per channel, e.g. 123.7,116.3,103.5), got {text!r}")
    return values[0] if len(values) == 1 else values


def _stds(text: str) -> float | list[float]:
    return _floats(text, positive=True)


_floats.__name__ = "one number or three"
_stds.__name__ = "one positive number or three"
DECODER_CHOICES = (*FAMILIES, "yolo-split", "ssd-postprocessed", "v2", "v3", "v5", "v8")
# parameter (Settings field / argparse dest) -> flag, for the guess lines
FLAGS = {"decoder": "--decoder", "anchors": "--anchors", "mean": "--mean", "std": "--std", "channel_order": "--channel-order", "labels_file": "--labels"}


def _add_model_facts(p: argparse.ArgumentParser) -> None:
    """The facts a model may not state: each overrides the card and every guess."""
    p.add_argument("--decoder", "--yolo", dest="decoder", choices=DECODER_CHOICES, default=None, metavar="{" + ",".join(FAMILIES) + "}",
                   help="output layout family (--yolo v2/v3/v5/v8 is an alias); unset: the card, a post-processing op, Ultralytics metadata, then tensor shapes")
    p.add_argument("--anchors", default=None, metavar='"W,H W,H ..."',
                   help="YOLO anchor grids' anchors in input pixels (v2: grid cells), smallest first; ';' between scales; unset: the card, else published defaults")
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean in pixel units (one value or three); unset: the card, the input quantization, else the family's")
    p.add_argument("--std", type=_stds, default=None, help="per-channel std in pixel units (one value or three); 255 gives [0, 1], 1 gives 0-255")
    p.add_argument("--channel-order", choices=("rgb", "bgr"), default=None, help="channel order the model takes; unset: the card, else the family's (YOLOX: bgr)")
    p.add_argument("--labels", dest="labels_file", metavar="FILE", default=None,
                   help="class names, one per line ('id name' pairs and ??? placeholders accepted; overrides the model's)")


def _add_post_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", type=number(float, 0, 1), default=None, help="score threshold; unset: the card's, else 0.25")
    p.add_argument("--iou", type=number(float, 0, 1), default=None, help="NMS IoU threshold; unset: the card's, else 0.45")
    p.add_argument("--max-det", type=number(int, 1), default=300, help="at most this many detections per frame")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS (boxes of different classes suppress each other)")
    _add_model_facts(p)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "detect", common, help="object detection (YOLO, YOLOX, SSD, NanoDet) on a camera, video, image(s) or stream (JSON lines per frame)")
    p.add_argument("-m", "--model", default=None, help="a .tflite detection model; unset: the shipped default")
    p.add_argument("-s", "--source", required=True, help="camera index, /dev/videoN, video file, image, image folder, http:// MJPEG or rtsp:// URL")
    _add_post_args(p)
    p.add_argument("--save", metavar="OUT.mp4|DIR", default=None, help="write annotated video (.mp4/.avi/.mkv/.mov) or annotated images into DIR")
    p.add_argument("--show", action="store_true", help="show annotated frames in a window (q or Esc quits)")
    p.add_argument("--realtime", action="store_true", help="pace video files at their frame rate and drop stale frames like a camera")
    p.add_argument("--size", type=_size, default=None, metavar="WxH", help="capture size asked of a camera")
    p.add_argument("--fps", type=number(float, 0, low_open=True), default=None, help="frame rate asked of a camera")
    p.add_argument("--max-frames", type=number(int, 1), default=None, metavar="N", help="stop after N frames")
    p.add_argument("--stats-every", type=number(float, 0), default=5.0, metavar="S", help="seconds between stats lines on stderr (0: only at the end)")
    add_runner_args(p)
    add_serve_args(p)
    p.set_defaults(func=run_detect)


def make_detector(model: str | None, args: argparse.Namespace) -> Any:
    """A :class:`apps.detect.app.Detector` from ``--model`` and the post-processing/runner flags."""
    from apps.detect.app import Detector, Settings, default_model
    from sdk.runner import Runner

    runner = Runner(model or default_model(), **runner_kwargs(args))
    settings = Settings(
        conf=args.conf, iou=args.iou, max_det=args.max_det, agnostic=args.agnostic, decoder=args.decoder,
        labels_file=args.labels_file, anchors=args.anchors, mean=args.mean, std=args.std, channel_order=args.channel_order,
    )
    det = Detector(runner, settings, say=say_guess)
    log.info("detect: %s: %s; labels from %s", runner.name, det.reason, det.labels_from)
    if runner.fallback_reason:
        log.info("detect: running on CPU: %s", runner.fallback_reason)
    return det


def say_guess(g: Any) -> None:
    """One stderr line per guess: what was assumed and the flag (or card key) that overrides it."""
    flag = FLAGS.get(g.param)
    fix = f"{flag} or the card's {g.card_key}" if flag else f"the card's {g.card_key}"
    log.info("detect: guessed %s; override with %s (edgesdk card set MODEL %s=...)", g.what, fix, g.card_key)


def run_detect(args: argparse.Namespace, out: Output) -> int:
    from apps.detect.app import AnnotatedSaver, Window, annotate, check_save_target, human_line, run_stream
    from sdk.sources.video import open_source
    from sdk.web.serve import serve_options, start_web, stop_web

    serve = serve_options(args)
    if args.save:
        check_save_target(Path(args.save))
    # the source first: a bad one is one error line, before the model's lines
    with open_source(args.source, size=args.size, fps=args.fps, realtime=args.realtime) as src:
        det = make_detector(args.model, args)
        window = Window() if args.show else None
        web = start_web(serve, out, "detect", det.runner, args.source, draw=annotate)
        saver = AnnotatedSaver(args.save, src.fps) if args.save else None

        def emit(ev: dict[str, Any], dets: list, frame: Any) -> bool:
            out.emit(ev, human_line(ev))
            if web is not None:  # a reference swap; drawing and encoding happen in the viewers' threads
                web.frames.publish(frame.image, dets)
            if saver is not None:
                saver.write(frame, dets)
            return window.show(frame, dets) if window is not None else True

        ok = False
        try:
            totals = run_stream(det, src, emit, args.stats_every, args.max_frames)
            ok = True
        finally:
            if saver is not None:
                saver.close(keep=ok)
            if window is not None:
                window.close()
            stop_web(web, serve)
    if saver is not None:
        log.info("detect: wrote %d annotated frame(s) to %s", saver.count, args.save)
    log.debug("detect: totals %s", totals)
    return 0


def register_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "detect", common, help="COCO mAP@0.5 and mAP@0.5:0.95 on an annotated image folder (float vs int8 with --compare)")
    p.add_argument("-m", "--model", default=None, help="a .tflite model; unset: the shipped int8 model")
    p.add_argument("--compare", metavar="MODEL2", default=None, help="a second model (e.g. the float one) to compare")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the images named in the annotations")
    p.add_argument("--annotations", required=True, metavar="COCO.json", help="COCO-format ground truth")
    p.add_argument("--conf", type=number(float, 0, 1), default=0.001, help="score threshold for AP (low, as COCO evaluation does)")
    p.add_argument("--iou", type=number(float, 0, 1), default=None, help="NMS IoU threshold; unset: the card's, else 0.45")
    p.add_argument("--max-det", type=number(int, 1), default=100, help="detections per image (COCO uses 100)")
    p.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    _add_model_facts(p)
    add_runner_args(p)
    p.set_defaults(func=run_eval, param_flags={"coco_json": "--annotations", "images_dir": "--images"})


def run_eval(args: argparse.Namespace, out: Output) -> int:
    from apps.detect.eval import evaluate, load_coco

    if not Path(args.images).is_dir():
        raise ConfigError(f"--images {args.images}: no such folder")
    gt = load_coco(args.annotations)  # checked before any model loads
    results = []
    for model in [args.model, args.compare] if args.compare else [args.model]:
        det = make_detector(model, args)
        r = evaluate(det, args.images, gt, progress=not args.quiet)
        r["model"] = det.runner.name
        results.append(r)
        out.emit({k: v for k, v in r.items() if k != "per_class"} | {"per_class": r["per_class"]}, _eval_text(r))
    if len(results) == 2:
        a, b = results
        diff = {
            "compare": {"model": a["model"], "other": b["model"]},
            "map50_diff_points": round(100 * (a["map50"] - b["map50"]), 2),
            "map_diff_points": round(100 * (a["map"] - b["map"]), 2),
        }
        out.emit(diff, f"\n{a['model']} vs {b['model']}: mAP@0.5 {diff['map50_diff_points']:+.2f} points, mAP@0.5:0.95 {diff['map_diff_points']:+.2f} points")
    return 0


def _eval_text(r: dict[str, Any]) -> str:
    rows = [{"class": k, "AP@0.5": v["ap50"], "AP@0.5:0.95": v["ap"], "instances": v["instances"]} for k, v in r["per_class"].items()]
    head = f"{r['model']}: mAP@0.5 {r['map50']:.4f}  mAP@0.5:0.95 {r['map']:.4f}  ({r['images']} images, {r['instances']} objects)"
    return head + "\n" + table(rows, floatfmt=".4f")
