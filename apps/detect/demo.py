"""``edgesdk demo`` part for the detect app: the default int8 model on the bundled video.

``samples/demo.mp4`` is made by the training recipe (``edgesdk train detect``) from the same
generator as its data set, so the objects it shows are ones the default model knows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sdk.console import Output

SAMPLE = Path(__file__).resolve().parent / "samples" / "demo.mp4"


def demo(out: Output) -> None:
    """Run the default model over the bundled video and print what it found and how fast."""
    from apps.detect.app import DEFAULT_MODEL, Detector, run_stream
    from sdk.runner import Runner
    from sdk.sources.video import open_source

    for what, path in (("default model", DEFAULT_MODEL), ("demo video", SAMPLE)):
        if not path.is_file():
            out.emit(
                {"app": "detect", "status": f"{what} missing", "path": str(path)},
                f"{what} {path} is missing; build it with `edgesdk train detect`",
            )
            return
    det = Detector(Runner(DEFAULT_MODEL))
    out.text(f"model {DEFAULT_MODEL.name}: {det.reason}")
    counts: Counter[str] = Counter()
    with open_source(SAMPLE) as src:
        totals = run_stream(det, src, lambda ev, dets, frame: counts.update(d.label for d in dets), stats_every=0)
    lat = {k: round(v.get("p50_ms", 0.0), 2) for k, v in det.stats.summaries().items()}
    found = ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing"
    out.emit(
        {"app": "detect", "sample": SAMPLE.name, "frames": totals["frames"], "fps": totals["fps"], "detections": dict(counts), "latency_ms_p50": lat},
        f"  {SAMPLE.name}: {totals['frames']} frames at {totals['fps']} FPS; detections: {found}; "
        f"p50 pre {lat.get('pre', 0)} / infer {lat.get('infer', 0)} / post {lat.get('post', 0)} ms",
    )
