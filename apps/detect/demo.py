"""``edgesdk demo`` part for the detect app: the default COCO model on the bundled photos.

``samples/photos/`` holds public-domain/CC0 photographs (an astronaut, a cat, a coffee cup, a
rocket launch; sources and licences in its README) with objects the default model (NanoDet-m,
80 COCO classes) knows; each photo's detections are printed with their labels.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sdk.console import Output

SAMPLE = Path(__file__).resolve().parent / "samples" / "photos"


def _missing(path: Path) -> bool:
    return not (path.is_dir() and any(path.iterdir())) if path.suffix == "" else not path.is_file()


def demo(out: Output) -> None:
    """Run the default model over the bundled photos (or clip) and print what it found and how fast."""
    from apps.detect.app import DEFAULT_MODEL, Detector, human_line, run_stream
    from apps.registry import APPS
    from sdk.runner import Runner
    from sdk.sources.video import open_source

    for what, path in (("default model", DEFAULT_MODEL), ("demo samples", SAMPLE)):
        if _missing(path):
            out.emit(
                {"app": "detect", "status": f"{what} missing", "path": str(path)},
                f"{what} {path} is missing; build the default model with `{APPS['detect'].rebuild}`",
            )
            return
    det = Detector(Runner(DEFAULT_MODEL))
    out.text(f"model {DEFAULT_MODEL.name}: {det.reason}")
    counts: Counter[str] = Counter()

    def emit(ev: dict, dets: list, frame: object) -> None:
        counts.update(d.label for d in dets)
        if SAMPLE.is_dir():  # a few photos: show each one's detections
            out.text("  " + human_line(ev))

    with open_source(SAMPLE) as src:
        totals = run_stream(det, src, emit, stats_every=0)
    lat = {k: round(v.get("p50_ms", 0.0), 2) for k, v in det.stats.summaries().items()}
    found = ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing"
    out.emit(
        {"app": "detect", "sample": SAMPLE.name, "frames": totals["frames"], "fps": totals["fps"], "detections": dict(counts), "latency_ms_p50": lat},
        f"  {SAMPLE.name}: {totals['frames']} frames at {totals['fps']} FPS; detections: {found}; "
        f"p50 pre {lat.get('pre', 0)} / infer {lat.get('infer', 0)} / post {lat.get('post', 0)} ms",
    )
