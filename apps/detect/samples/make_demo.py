"""Make ``demo.mp4``: shapes drifting and turning over a photograph, for ``edgesdk demo``.

Rebuild (deterministic for a seed)::

    .venv/bin/python apps/detect/samples/make_demo.py --seed 3 -o apps/detect/samples/demo.mp4

The background is scikit-image's ``coffee`` photograph (CC0, Rachel Michetti). The objects are
drawn by :func:`apps.detect.data.draw_object`, the same renderer that made the training data.
The ground-truth boxes of every frame go to ``demo.json`` beside the video (COCO-style per frame).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from apps.detect.data import CLASSES, draw_object  # noqa: E402
from sdk.card import atomic_write  # noqa: E402


def make_demo(out: Path, seed: int = 3, size: tuple[int, int] = (320, 240), seconds: float = 4.0, fps: int = 15, n_objects: int = 4) -> Path:
    """Write the demo video to ``out`` and its per-frame boxes to ``out.with_suffix('.json')``."""
    import cv2
    import skimage.data as skd

    w, h = size
    bg = cv2.resize(np.ascontiguousarray(skd.coffee()[..., ::-1]), (w, h), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    cls = rng.permutation(len(CLASSES))[:n_objects]
    radius = rng.uniform(14, 28, n_objects)
    pos = np.stack([rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)], 1)
    vel = rng.uniform(-1, 1, (n_objects, 2)) * rng.uniform(30, 70, (n_objects, 1)) / fps  # px per frame
    spin = rng.uniform(-1.5, 1.5, n_objects) / fps
    looks = rng.integers(0, 2**31, n_objects)  # each object's colour/shape seed, fixed over frames
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_video = str(Path(tmp) / "demo.mp4")
        writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v video here")
        for f in range(int(seconds * fps)):
            img = bg.copy()
            boxes = []
            for i in range(n_objects):
                box = draw_object(img, int(cls[i]), *pos[i], radius[i], np.random.default_rng(looks[i]), angle=spin[i] * f)
                boxes.append({"label": CLASSES[cls[i]], "class_id": int(cls[i]), "box": [round(float(v), 1) for v in np.clip(box, 0, [w, h, w, h])]})
            writer.write(img)
            frames.append({"frame": f, "time": round(f / fps, 4), "objects": boxes})
            pos += vel
            bounce = (pos < radius[:, None]) | (pos > np.array([w, h]) - radius[:, None])
            vel[bounce] *= -1
        writer.release()
        atomic_write(out, Path(tmp_video).read_bytes())
    atomic_write(out.with_suffix(".json"), json.dumps({"size": [w, h], "fps": fps, "seed": seed, "frames": frames}).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default=str(Path(__file__).with_name("demo.mp4")))
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    print(make_demo(Path(args.out), args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
