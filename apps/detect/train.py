"""``edgesdk train detect``: train your own small detector (the shipped default is NanoDet, built
by ``scripts/build_detect_default.py``; this recipe teaches training one for your own objects).

Generate (or read with ``--data``) → train the Keras model of :mod:`apps.detect.model`
(Adam, early stopping on the validation loss) → convert to fp32 and int8 with
:func:`converters.convert.convert`, each carrying its model card → evaluate both with the
detect app's COCO evaluation on a held-out set → write the measured mAP into the cards.

TensorFlow, Keras and the converter are imported inside functions: this module is imported
by the CLI at start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdk.console import add_command

DEFAULT_OUT = Path("detect_model")  # never the shipped models folder: the default detector is NanoDet
INPUT_SPEC = {"letterbox": True, "mean": 0.0, "std": 255.0, "channel_order": "rgb"}
STRIDES = (8, 16)
# which converted output holds what: the Keras model's outputs are [boxes, scores], and the
# converter names them by position; with 4 classes both are [1, N, 4], so the card must say
OUTPUT_ROLES = {"boxes": "output_0", "scores": "output_1"}


def register_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``edgesdk train detect``."""
    p = add_command(sub, "detect", common, help="train the small YOLO detector (generated shapes-on-photos data, or --data) and convert it to int8")
    p.add_argument("--data", help="your own data: a COCO json (images beside it or in images/) or a YOLO-txt folder (images/, labels/, classes.txt); default: generate")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder for detect_fp32.tflite and detect_int8.tflite")
    p.add_argument("--work", default="detect_work", help="folder for the trained detect.keras and the held-out eval set (COCO json + images)")
    p.add_argument("--epochs", type=int, default=12, help="maximum epochs (early stopping usually ends sooner)")
    p.add_argument("--seed", type=int, default=0, help="seed for data generation, splits and weights")
    p.add_argument("--imgsz", type=int, default=160, help="square model input size (multiple of 16)")
    p.add_argument("--train-size", type=int, default=2000, help="generated training scenes")
    p.add_argument("--val-size", type=int, default=400, help="generated validation scenes (early stopping)")
    p.add_argument("--test-size", type=int, default=500, help="generated held-out scenes for the reported mAP")
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--width", type=int, default=24, help="base channel width of the network")
    p.add_argument("--patience", type=int, default=4, help="early stopping patience in epochs")
    p.add_argument("--init", help="start training from the weights of this .keras detector (same classes, --imgsz and --width), e.g. to continue a run")
    p.add_argument("--keras", help="skip training: convert and evaluate this saved detector (.keras from an earlier run)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    p.set_defaults(func=run_train)


def _log(msg: str) -> None:
    print(f"train detect: {msg}", file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> None:
    from sdk.errors import ConfigError

    if args.imgsz < 32 or args.imgsz % max(STRIDES):
        raise ConfigError(f"--imgsz must be a multiple of {max(STRIDES)} and at least 32, got {args.imgsz}")
    for name in ("epochs", "batch", "width", "train_size", "val_size", "test_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.data and not Path(args.data).exists():
        raise ConfigError(f"--data {args.data}: no such file or folder; give a COCO json or a YOLO-txt folder")


def prepare_data(args: argparse.Namespace):
    """``(train, val, test, description)`` :class:`DetectionSet` s at the model size."""
    from apps.detect import data

    size = (args.imgsz, args.imgsz)
    if not args.data:
        _log(f"generating {args.train_size}+{args.val_size}+{args.test_size} scenes at {size[0]}x{size[1]} (seed {args.seed})")
        parts = [data.generate(n, args.seed * 1000 + k, size, progress=True) for k, n in enumerate((args.train_size, args.val_size, args.test_size))]
        desc = f"generated: shapes on scikit-image photographs ({', '.join(data.BACKGROUNDS)}), seeds {args.seed}*1000+0/1/2"
        return (*parts, desc)
    samples, labels = data.read_dataset(args.data)
    if len(samples) < 10:
        from sdk.errors import ConfigError

        raise ConfigError(f"--data {args.data}: found {len(samples)} labelled images; need at least 10")
    order = np.random.default_rng(args.seed).permutation(len(samples))
    n_val = max(1, len(samples) // 10)
    _log(f"{len(samples)} images, {len(labels)} classes from {args.data}; {n_val} held out (seed {args.seed})")
    train = data.load_samples([samples[i] for i in order[n_val:]], labels, size)
    held = data.load_samples([samples[i] for i in order[:n_val]], labels, size)
    return train, held, held, f"{args.data} (10% held out by seed {args.seed}, used for early stopping and mAP)"


def to_inputs(images: np.ndarray) -> np.ndarray:
    """BGR uint8 ``[B, h, w, 3]`` → model inputs, through :func:`sdk.image.normalize` (the device's preprocessing)."""
    from sdk.image import normalize

    out = np.empty(images.shape, np.float32)
    for i, img in enumerate(images):
        normalize(img, INPUT_SPEC["mean"], INPUT_SPEC["std"], INPUT_SPEC["channel_order"], out=out[i])
    return out


def _batches(ds, args, shuffle: bool):
    """A Keras PyDataset of ``(x, (box_t, cls_t))``; training batches are reshuffled and randomly flipped."""
    import keras

    from apps.detect.model import make_targets

    size = (args.imgsz, args.imgsz)
    n_cls = len(ds.labels)

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(args.seed + 7)
            self.order = np.arange(len(ds))

        def __len__(self) -> int:
            return int(np.ceil(len(ds) / args.batch))

        def on_epoch_end(self) -> None:
            if shuffle:
                self.rng.shuffle(self.order)

        def __getitem__(self, i: int):
            idx = self.order[i * args.batch : (i + 1) * args.batch]
            images, boxes = ds.images[idx], [ds.boxes[j].copy() for j in idx]
            if shuffle:
                flip = self.rng.random(len(idx)) < 0.5
                images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
                for b, f in zip(boxes, flip):
                    if f and len(b):
                        b[:, [0, 2]] = size[0] - b[:, [2, 0]]
            box_t, cls_t = make_targets(boxes, [ds.classes[j] for j in idx], n_cls, size, STRIDES)
            return to_inputs(images), (box_t, cls_t)

    return Batches()


class _Progress:
    """Per-epoch progress on stderr (Keras' own progress bar goes to stdout)."""

    @staticmethod
    def make(epochs: int):
        import keras

        class P(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                _log(f"epoch {epoch + 1}/{epochs} loss {logs.get('loss', float('nan')):.4f} val_loss {logs.get('val_loss', float('nan')):.4f} ({time.time() - self.t0:.0f} s)")

        return P()


def train_model(train, val, args: argparse.Namespace):
    """Train and return the functional Keras detector (best validation weights)."""
    import keras

    from apps.detect.model import build_model, make_trainer

    keras.utils.set_random_seed(args.seed)
    net = build_model(len(train.labels), (args.imgsz, args.imgsz), STRIDES, args.width)
    if getattr(args, "init", None):
        _load_init(net, args.init)
    _log(f"model: {net.count_params():,} parameters, {len(train)} training images, up to {args.epochs} epochs")
    trainer = make_trainer(net)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-3))
    callbacks = [
        keras.callbacks.EarlyStopping(patience=args.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(factor=0.3, patience=max(1, args.patience // 2), min_lr=1e-5),
        _Progress.make(args.epochs),
    ]
    trainer.fit(_batches(train, args, True), validation_data=_batches(val, args, False), epochs=args.epochs, callbacks=callbacks, verbose=0)
    return net


def _load_init(net, path: str) -> None:
    """Copy the weights of a saved detector into ``net`` (same architecture required)."""
    import keras

    from apps.detect.model import DecodeBoxes
    from sdk.errors import ConfigError

    try:
        src = keras.saving.load_model(path, custom_objects={"DecodeBoxes": DecodeBoxes}, compile=False)
        net.set_weights(src.get_weights())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--init {path}: cannot use it as starting weights ({str(e).splitlines()[0][:160]}); it must be a detect.keras with the same classes, --imgsz and --width") from e
    _log(f"starting from the weights of {path}")


def card_for(labels, args: argparse.Namespace, desc: str):
    """The detect model card (the converter adds quantization, source and version)."""
    from sdk.card import ModelCard

    generated = not getattr(args, "data", None)
    return ModelCard(
        task="detect",
        input={"size": [args.imgsz, args.imgsz], **INPUT_SPEC},
        output={"decoder": "yolo-split", "box_format": "xyxy", "box_units": "normalized", **OUTPUT_ROLES, "strides": list(STRIDES), "labels": list(labels)},
        license="Apache-2.0 (weights); training images generated from CC0/public-domain scikit-image photographs" if generated else "",
        notes=f"edgesdk train detect --seed {args.seed} --imgsz {args.imgsz} --width {args.width} --epochs {args.epochs}"
        + (f" --init {Path(args.init).name}" if getattr(args, "init", None) else "")
        + f"; data: {desc}",
    )


def export_and_evaluate(net, train, test, args: argparse.Namespace, desc: str) -> dict[str, Any]:
    """Convert to fp32 and int8, evaluate both on ``test``, write the metrics into each card."""
    from apps.detect import data
    from apps.detect.model import export_copy
    from converters.convert import convert
    from sdk.card import read_card, write_card

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eval_dir = Path(args.work) / "eval"
    coco = data.write_coco(test, eval_dir)
    rng = np.random.default_rng(args.seed)
    calib = to_inputs(train.images[rng.choice(len(train), min(300, len(train)), replace=False)])
    card = card_for(train.labels, args, desc)
    net = export_copy(net, len(train.labels), (args.imgsz, args.imgsz), STRIDES, args.width)
    results: dict[str, Any] = {}
    for mode in ("fp32", "int8"):
        path = out / f"detect_{mode}.tflite"
        _log(f"converting to {mode} → {path}")
        res = convert(net, mode=mode, output=str(path), calibration=calib if mode == "int8" else None, card=card, custom_objects=_custom_objects())
        check_output_roles(path, len(train.labels))
        m = _evaluate(path, eval_dir / "images", coco)
        results[mode] = {**m, "size_bytes": res.size_bytes}
        _log(f"{mode}: mAP@0.5 {m['map50']:.4f}  mAP@0.5:0.95 {m['map']:.4f}  ({res.size_bytes / 1024:.0f} KiB)")
    for mode in ("fp32", "int8"):
        path = out / f"detect_{mode}.tflite"
        c = read_card(path)
        on = f"{len(test)} held-out images ({'generated, seed ' + str(args.seed * 1000 + 2) if not args.data else args.data})"
        metrics = {**c.metrics, "map50": results[mode]["map50"], "map50_95": results[mode]["map"], "float_map50": results["fp32"]["map50"], "eval_set": on}
        write_card(path, dataclasses.replace(c, metrics=metrics))
    return results


def check_output_roles(path: Path, num_classes: int) -> None:
    """Fail loudly if the converted outputs are not named as :data:`OUTPUT_ROLES` records.

    Raises:
        ConversionError: When a recorded name is missing or its shape does not fit its role.
    """
    from sdk.errors import ConversionError
    from sdk.runner import Runner

    outs = {s.name: s.shape for s in Runner(str(path)).outputs}
    want = {"boxes": 4, "scores": num_classes}
    for role, name in OUTPUT_ROLES.items():
        if name not in outs or outs[name][-1] != want[role]:
            raise ConversionError(
                f"{path}: expected output {name!r} to hold the {role} [1, N, {want[role]}], but the converted outputs are "
                f"{ {k: list(v) for k, v in outs.items()} }; update OUTPUT_ROLES in apps/detect/train.py to the converter's naming"
            )


def _custom_objects() -> dict[str, Any]:
    from apps.detect.model import DecodeBoxes

    return {"DecodeBoxes": DecodeBoxes}


def _evaluate(model_path: Path, images_dir: Path, coco: Path) -> dict[str, float]:
    from apps.detect.eval import evaluate
    from sdk.runner import Runner

    r = evaluate(Runner(str(model_path)), str(images_dir), str(coco))
    return {"map50": float(r["map50"]), "map": float(r["map"])}


def run_train(args: argparse.Namespace, out) -> int:
    """Entry point of ``edgesdk train detect``."""
    _check_args(args)
    if args.threads:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    t0 = time.time()
    train, val, test, desc = prepare_data(args)
    if args.keras:
        import keras

        from apps.detect.model import DecodeBoxes

        net = keras.saving.load_model(args.keras, custom_objects={"DecodeBoxes": DecodeBoxes}, compile=False)
    else:
        net = train_model(train, val, args)
        Path(args.work).mkdir(parents=True, exist_ok=True)
        keras_path = Path(args.work) / "detect.keras"
        net.save(keras_path)  # kept so a failed conversion can be redone with --keras
        _log(f"saved {keras_path}")
    results = export_and_evaluate(net, train, test, args, desc)
    summary = {"out": str(args.out), "seconds": round(time.time() - t0, 1), **{f"{m}_{k}": v for m, r in results.items() for k, v in r.items()}}
    out.emit(summary, json.dumps(summary, indent=1))
    return 0
