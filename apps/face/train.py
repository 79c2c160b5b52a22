"""``edgesdk train face --data DIR``: train a face embedding on your own photos (host side).

``DIR`` holds one sub-folder per person with their photos. Faces are found and cropped with
the same detector and square crop the device uses (``--detector``; ``none`` when the photos
are already face crops). A share of the *identities* is held out: early stopping and the
threshold are chosen on people the network never saw. Training samples P people x K photos
per batch and minimises the triplet loss with semi-hard negatives (``apps.face.model``),
with Adam. The best network is converted to full int8 (calibrated on training faces) with a
``face-embed`` card holding the input recipe, the threshold at the held-out EER and the
held-out verification numbers, float and int8.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from apps.face.calibrate import verification
from apps.face.int8 import convert_and_measure
from apps.face.model import CROP_MARGIN, build_embedding_model, normalise, semi_hard_triplet_loss
from sdk.console import add_command
from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.face")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def register_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "face", common, help="train a face embedding (triplet loss) on DIR/<person>/*.jpg")
    p.add_argument("--data", required=True, help="folder with one sub-folder of photos per person")
    p.add_argument("-o", "--output", default="face_embed_int8.tflite", help="int8 model to write (the .keras goes beside it)")
    p.add_argument("--detector", choices=("blazeface", "haar", "none"), default="blazeface", help="face finder; none: photos are crops")
    p.add_argument("--size", type=int, default=96, help="input size in pixels")
    p.add_argument("--embedding", type=int, default=128, help="embedding size")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps", type=int, default=50, help="batches per epoch")
    p.add_argument("--people", type=int, default=8, help="P: people per batch")
    p.add_argument("--per-person", type=int, default=4, help="K: photos per person per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--patience", type=int, default=6, help="epochs without a better held-out EER before stopping")
    p.add_argument("--holdout", type=float, default=0.2, help="share of people held out for validation")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def pk_batches(labels: np.ndarray, p: int, k: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``steps`` index arrays of P identities x K samples each (with replacement when a person has fewer)."""
    ids = np.unique(labels)
    if len(ids) < 2:
        raise ConfigError(f"training needs at least 2 people, got {len(ids)}")
    members = {i: np.flatnonzero(labels == i) for i in ids}
    for _ in range(steps):
        chosen = rng.choice(ids, size=min(p, len(ids)), replace=False)
        yield np.concatenate([rng.choice(members[i], size=k, replace=len(members[i]) < k) for i in chosen])


def load_faces(data: str | Path, size: int, detector: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Face crops ``[N, size, size, 3]`` uint8 RGB, labels ``[N]`` and person names, from ``data/<person>/*``."""
    import cv2

    from apps.face.app import read_image, square_crop

    root = Path(data)
    people = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if len(people) < 3:
        raise ConfigError(f"--data {root}: expected one sub-folder of photos per person, at least 3 people; found {len(people)}")
    det = None
    if detector != "none":
        from apps.face.loader import make_detector

        det = make_detector(detector)
    chips, labels, skipped = [], [], 0
    files = [(i, f) for i, d in enumerate(people) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    for n, (i, f) in enumerate(files):
        img = read_image(f)
        if det is not None:
            faces = det.detect(img)
            if not faces:
                skipped += 1
                continue
            crop = square_crop(img, max(faces, key=lambda d: d.box.area).box, (size, size), CROP_MARGIN)
        else:
            crop = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        chips.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        labels.append(i)
        if n % 25 == 0 or n + 1 == len(files):
            print(f"\r  faces {n + 1}/{len(files)} ({skipped} without a face)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if not chips:
        raise ConfigError(f"--data {root}: no usable face in {len(files)} photos")
    return np.stack(chips), np.array(labels), [d.name for d in people]


def augment(chips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random mirror, shift (up to 6%), contrast and brightness, per image, vectorised over the batch."""
    x = chips.astype(np.float32)
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    s = max(1, int(0.06 * x.shape[1]))
    dy, dx = rng.integers(-s, s + 1, 2)
    x = np.roll(x, (int(dy), int(dx)), axis=(1, 2))
    gain = rng.uniform(0.75, 1.25, (len(x), 1, 1, 1)).astype(np.float32)
    bias = rng.uniform(-25, 25, (len(x), 1, 1, 1)).astype(np.float32)
    return np.clip((x - 127.5) * gain + 127.5 + bias, 0, 255)


def fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, args: argparse.Namespace) -> tuple[Any, dict]:
    """Train with early stopping on the held-out EER; returns the best model and its held-out numbers."""
    import keras

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_embedding_model(args.size, args.embedding)
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=semi_hard_triplet_loss)
    best, best_w, wait = None, None, 0
    for epoch in range(args.epochs):
        losses = [float(model.train_on_batch(normalise(augment(x[idx], rng)), y[idx]))
                  for idx in pk_batches(y, args.people, args.per_person, args.steps, rng)]
        val = verification(model.predict(normalise(xv), verbose=0, batch_size=64), yv)
        print(f"  epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f}, held-out EER {val['eer']:.3f} AUC {val['auc']:.3f}",
              file=sys.stderr, flush=True)
        if best is None or val["eer"] < best["eer"]:
            best, best_w, wait = {**val, "epoch": epoch + 1}, model.get_weights(), 0
        else:
            wait += 1
            if wait >= args.patience:
                break
    model.set_weights(best_w)
    return model, best


def _split(y: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    ids = np.unique(y)
    n_val = max(2, int(round(len(ids) * holdout)))
    if len(ids) - n_val < 2:
        raise ConfigError(f"--holdout {holdout}: {len(ids)} people leave fewer than 2 for training; add people")
    val_ids = np.random.default_rng(seed).choice(ids, size=n_val, replace=False)
    return np.isin(y, val_ids)


def _run(args: argparse.Namespace, out: Any) -> int:
    if args.size < 32 or args.people < 2 or args.per_person < 2:
        raise ConfigError("--size must be >= 32, --people and --per-person >= 2 (triplets need positives and negatives)")
    chips, y, names = load_faces(args.data, args.size, args.detector)
    val = _split(y, args.holdout, args.seed)
    model, best = fit(chips[~val], y[~val], chips[val], y[val], args)
    res = convert_and_measure(model, chips[~val], chips[val], y[val], best, args, names)
    out.emit(res, json.dumps(res, indent=2))
    return 0
