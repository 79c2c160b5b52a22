"""Calibration and evaluation samples: arrays, ``.npy``/``.npz`` files, folders of images or ``.wav`` files.

Everything ends up as one float32 array ``[N, *input_shape]`` per model input and is checked
against the model's input shapes, so a wrong layout is reported as "expected [N, ...], got ..."
before any conversion work. No TensorFlow here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import ConfigError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
WAV_EXTS = (".wav",)
RECOMMENDED_SAMPLES = 100
# Waveform inputs are long 1-D vectors; feature inputs (spectrograms) are short or 2-D.
MIN_WAVEFORM_SAMPLES = 1000

Shape = Sequence[int | None]


def shape_str(shape: Sequence[Any]) -> str:
    """``["N", 98, None]`` → ``"[N, 98, ?]"``."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def progress(what: str, done: int, total: int) -> None:
    """One progress line on stderr (callers print every few percent, not every item)."""
    print(f"edgesdk: {what} {done}/{total}", file=sys.stderr, flush=True)


def load_samples(
    source: Any,
    input_shapes: Sequence[Shape],
    *,
    what: str = "calibration",
    card_input: dict[str, Any] | None = None,
    limit: int | None = None,
    show_progress: bool = True,
) -> tuple[list[np.ndarray], str]:
    """Load samples for every model input.

    Args:
        source: An array ``[N, *shape]`` (a list of arrays for multi-input models), a
            ``.npy``/``.npz`` path, or a folder of images or ``.wav`` files.
        input_shapes: The model's input shapes without the batch axis (``None`` = any size).
        what: ``"calibration"`` or ``"eval"``, for messages.
        card_input: The card's ``input`` section (``mean``, ``std``, ``channel_order``,
            ``letterbox``, ``sample_rate``) used to preprocess folders.
        limit: Keep at most this many samples.
        show_progress: Print progress on stderr while reading folders.

    Returns:
        ``(arrays, description)``: one float32 array per input, and a short source description.

    Raises:
        ConfigError: Missing/empty/unsupported source, or samples of the wrong shape.
    """
    if isinstance(source, np.ndarray) or (isinstance(source, (list, tuple)) and source and isinstance(source[0], np.ndarray)):
        arrays = [source] if isinstance(source, np.ndarray) else list(source)
        desc = "array"
    else:
        path = Path(source)
        arrays, desc = _load_path(path, input_shapes, what, card_input or {}, show_progress)
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    check_shapes(arrays, input_shapes, what)
    if limit is not None and len(arrays[0]) > limit:
        arrays = [a[:limit] for a in arrays]
    return arrays, desc


def check_shapes(arrays: Sequence[np.ndarray], input_shapes: Sequence[Shape], what: str) -> None:
    """Raise a ConfigError unless ``arrays`` match ``input_shapes`` (plus a leading N axis)."""
    if len(arrays) != len(input_shapes):
        raise ConfigError(f"{what}: the model has {len(input_shapes)} inputs; got {len(arrays)} arrays (pass a list, one [N, ...] array per input)")
    n = len(arrays[0])
    for i, (a, shape) in enumerate(zip(arrays, input_shapes)):
        expected = ["N", *shape]
        ok = a.ndim == len(shape) + 1 and all(d is None or d == g for d, g in zip(shape, a.shape[1:]))
        if not ok:
            which = f" input {i}" if len(arrays) > 1 else ""
            raise ConfigError(f"{what}{which}: expected {shape_str(expected)}, got {list(a.shape)}; samples must be preprocessed like the model's input, with a leading sample axis")
        if len(a) != n:
            raise ConfigError(f"{what}: input arrays hold different sample counts ({[len(x) for x in arrays]})")
    if n == 0:
        raise ConfigError(f"{what}: no samples (an empty array); provide at least {RECOMMENDED_SAMPLES}")


def _load_path(path: Path, input_shapes: Sequence[Shape], what: str, card_input: dict[str, Any], show: bool) -> tuple[list[np.ndarray], str]:
    if not path.exists():
        raise ConfigError(f"{what}: {path}: no such file or folder")
    if path.is_dir():
        return _load_folder(path, input_shapes, what, card_input, show)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return [np.load(path, allow_pickle=False)], path.name
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if not keys:
                    raise ConfigError(f"{what}: {path}: the .npz archive is empty")
                return [z[k] for k in keys[: len(input_shapes)]], path.name
    except (ValueError, OSError) as e:
        raise ConfigError(f"{what}: {path}: cannot read as a NumPy array ({e})") from e
    raise ConfigError(f"{what}: {path}: unsupported file type {suffix!r}; expected a .npy/.npz array [N, ...] or a folder of images or .wav files")


def _load_folder(path: Path, input_shapes: Sequence[Shape], what: str, card_input: dict[str, Any], show: bool) -> tuple[list[np.ndarray], str]:
    files = sorted(p for p in path.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    wavs = [p for p in files if p.suffix.lower() in WAV_EXTS]
    if not images and not wavs:
        raise ConfigError(f"{what}: {path}: the folder holds no images ({', '.join(IMAGE_EXTS)}) or .wav files")
    if len(input_shapes) != 1:
        raise ConfigError(f"{what}: {path}: folders work for single-input models only; pass a list of arrays or an .npz with one array per input")
    shape = list(input_shapes[0])
    if images and len(images) >= len(wavs):
        return [_read_images(images, shape, what, card_input, show)], f"{path.name}/ ({len(images)} images)"
    return [_read_wavs(wavs, shape, what, card_input, show)], f"{path.name}/ ({len(wavs)} wav files)"


def _read_images(files: list[Path], shape: list[int | None], what: str, card_input: dict[str, Any], show: bool) -> np.ndarray:
    from sdk.lazy import require

    cv2 = require("cv2", "reading calibration images")
    if len(shape) != 3 or shape[0] is None or shape[1] is None or shape[2] not in (1, 3):
        raise ConfigError(f"{what}: images need a model input [H, W, 1|3]; the model takes {shape_str(['N', *shape])}; pass a .npy of preprocessed samples")
    h, w, c = int(shape[0]), int(shape[1]), int(shape[2])
    pre = image_preprocessor(h, w, card_input, what)
    out = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE if c == 1 else cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"{what}: {f}: cannot decode the image")
        out[i] = pre(img)[..., :c]
        if show and (i + 1 == len(files) or (i + 1) % 50 == 0):
            progress(f"{what}: reading images", i + 1, len(files))
    return out


IMAGE_KEYS = ("size", "letterbox", "mean", "std", "channel_order")


def image_preprocessor(h: int, w: int, card_input: dict[str, Any], what: str = "calibration") -> Any:
    """The device's image preprocessing (:class:`sdk.image.Preprocessor`) as ``BGR image -> [h, w, 3] float32``.

    The card's ``size``, ``letterbox`` (default: letterboxed), ``mean``/``std`` (pixel units,
    default ``0``/``255``) and ``channel_order`` apply exactly as on the device, so calibration
    and evaluation tensors are the ones the device computes. Gray models (one channel) get the
    first channel of the grey image replicated to BGR.

    Raises:
        ConfigError: When the card's ``size`` is not the model input's.
    """
    from sdk.image import Preprocessor

    spec = {k: v for k, v in card_input.items() if k in IMAGE_KEYS}
    if "size" in spec and [int(v) for v in spec["size"]] != [w, h]:
        raise ConfigError(f"{what}: the card's input.size {list(spec['size'])} is not the model input's [{w}, {h}] (width, height); fix the card")
    std = spec.get("std")
    if std is not None and float(np.max(np.asarray(std, dtype=np.float32))) <= 1.0:
        print(f"edgesdk: {what}: card input.std {std} is in pixel units (0-255), as on the device: inputs will span up to "
              f"{255 / max(float(np.min(np.asarray(std, dtype=np.float32))), 1e-6):.0f}; give mean/std in 0-255 units if that is not meant",
              file=sys.stderr, flush=True)
    pre = Preprocessor.from_card_input({**spec, "size": [w, h]})

    def run(img: np.ndarray) -> np.ndarray:
        import cv2

        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return pre(img)[0][0].copy()

    return run


def preprocess_image(img: np.ndarray, h: int, w: int, card_input: dict[str, Any]) -> np.ndarray:
    """One BGR (or grey) image preprocessed as the device does (see :func:`image_preprocessor`)."""
    return image_preprocessor(h, w, card_input)(img)


def _read_wavs(files: list[Path], shape: list[int | None], what: str, card_input: dict[str, Any], show: bool) -> np.ndarray:
    length = shape[0] if shape else None
    is_waveform = len(shape) in (1, 2) and length is not None and length >= MIN_WAVEFORM_SAMPLES and (len(shape) == 1 or shape[1] == 1)
    if not is_waveform:
        raise ConfigError(
            f"{what}: .wav files can calibrate only models that take raw waveforms [N, samples(, 1)]; this model takes "
            f"{shape_str(['N', *shape])} (features): compute the features with the app's feature extractor and pass them as a .npy [N, ...]"
        )
    rate = card_input.get("sample_rate")
    windows = []
    for i, f in enumerate(files):
        audio = read_wav(f, rate)
        n = len(audio) // length
        windows.extend(audio[k * length : (k + 1) * length] for k in range(max(n, 0)))
        if show and (i + 1 == len(files) or (i + 1) % 50 == 0):
            progress(f"{what}: reading wav files", i + 1, len(files))
    if not windows:
        raise ConfigError(f"{what}: every .wav file is shorter than the model's window of {length} samples")
    return np.stack(windows).reshape(len(windows), *shape).astype(np.float32)


def read_wav(path: Path, rate: int | None = None) -> np.ndarray:
    """A mono float32 waveform in [-1, 1], resampled to ``rate`` if given.

    The device's reader (:func:`sdk.sources.audio.read_wav`), so calibration audio is decoded
    and resampled exactly as the app will see it.
    """
    from sdk.errors import SourceError
    from sdk.sources.audio import read_wav as read_audio

    try:
        return read_audio(path, rate)[0]
    except SourceError as e:
        raise ConfigError(str(e)) from e


# Above this share of an input's calibration values rounding to the int8 level of 0, one linear scale cannot hold the input.
COARSE_SHARE = 0.5


def coarse_inputs(calib: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[str]:
    """Inputs whose calibrated int8 range leaves most values at the zero level, one phrase each.

    A full-int8 model gives each tensor one linear scale from the calibrated min/max. An
    input spanning many orders of magnitude (the course's linear power spectrogram: a median
    of ~5, peaks of ~1e6) then rounds most of its values to zero. Whether that matters depends
    on the model (a BatchNormalization fitted to such data scales the small values away), so
    the converter mentions it only beside a poor accuracy line.
    """
    found = []
    for i, a in enumerate(calib):
        x = np.asarray(a, np.float32)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        step = (hi - lo) / 255
        share = float(np.mean(np.abs(x) < step / 2)) if step > 0 else 0.0
        if share > COARSE_SHARE:
            name = names[i] if names and i < len(names) else f"input {i}"
            found.append(f"{name}: {share:.1%} of the calibration values are below half an int8 step ({step:.3g} over {lo:.3g}..{hi:.3g})")
    return found
