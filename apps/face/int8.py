"""Convert a trained face embedding to full int8 and measure it against the float model (host side)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from apps.face.calibrate import verification
from apps.face.model import CROP_MARGIN, normalise


def embed_tflite(path: str | Path, chips: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings of RGB uint8 chips through the converted model (device runtime)."""
    from sdk.runner import Runner

    r = Runner(path, threads=1)
    x = normalise(chips)
    out = np.stack([r.run(x[i: i + 1])[0].reshape(-1) for i in range(len(x))])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def convert_and_measure(model: Any, train_chips: np.ndarray, val_chips: np.ndarray, val_labels: np.ndarray, best: dict,
                        args: argparse.Namespace, names: list[str]) -> dict:
    """Save the ``.keras``, convert to int8 with a card, and record float vs int8 held-out numbers in the card."""
    from converters.convert import convert
    from sdk.card import ModelCard, read_card, write_card

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    keras_path = out.with_suffix(".keras")
    model.save(keras_path)
    rng = np.random.default_rng(args.seed)
    cal = normalise(train_chips[rng.permutation(len(train_chips))[:200]])
    command = "edgesdk train face " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else "edgesdk train face"
    card = ModelCard(
        task="face-embed",
        input={"size": [args.size, args.size], "mean": 127.5, "std": 127.5, "channel_order": "rgb", "crop_margin": CROP_MARGIN,
               "detector": args.detector},
        output={"embedding_size": args.embedding, "metric": "euclidean", "threshold": best["eer_threshold"], "normalised": True},
        source={"data": str(args.data), "people": len(names), "faces": int(len(train_chips) + len(val_chips)), "seed": args.seed,
                "command": command, "keras": keras_path.name},
        notes="FaceNet-style embedding trained with edgesdk train face (triplet loss, semi-hard negatives).")
    print("  converting to int8...", file=sys.stderr, flush=True)
    convert(model, mode="int8", output=out, calibration=cal, eval_data=normalise(val_chips[:100]), card=card)
    f_emb = model.predict(normalise(val_chips), verbose=0, batch_size=64)
    q_emb = embed_tflite(out, val_chips)
    cos = np.sum(f_emb * q_emb, axis=1) / np.maximum(np.linalg.norm(f_emb, axis=1), 1e-12)
    fl = verification(f_emb, val_labels, best["eer_threshold"])
    q = verification(q_emb, val_labels)
    q_at = verification(q_emb, val_labels, q["eer_threshold"])
    held_out = {"people": int(len(np.unique(val_labels))), "faces": int(len(val_labels)), "float": fl,
                "int8": q_at, "int8_vs_float_cosine_mean": round(float(cos.mean()), 4),
                "int8_vs_float_cosine_min": round(float(cos.min()), 4), "best_epoch": best["epoch"]}
    card = read_card(out)
    write_card(out, card.replace(output={**card.output, "threshold": q["eer_threshold"]},
                                 metrics={**card.metrics, "held_out_verification": held_out}))
    return {"model": str(out), "keras": str(keras_path), "threshold": q["eer_threshold"], **held_out}
