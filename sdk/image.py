"""Image preprocessing shared by training and the device: letterbox, normalisation, channel order.

This module is the ONE place where an image becomes a model input, so a model trained with
it sees exactly what it sees on the device. The detect model card's ``input`` mapping
describes it:

``size: [w, h]``
    Model input width and height in pixels (default: read from the input tensor shape).
``letterbox: true``
    Keep the aspect ratio: scale the image to fit inside ``size`` and pad the rest with
    grey (114), centred as Ultralytics does. ``false`` stretches to ``size``.
``mean: [r, g, b]`` and ``std: [r, g, b]``
    Per-channel normalisation in pixel units (0–255): ``x = (pixel - mean) / std``, in the
    model's channel order. A scalar applies to every channel. Default ``mean: 0``,
    ``std: 255`` (inputs in [0, 1], as YOLOv5/v8 expect).
``channel_order: rgb``
    ``rgb`` (default) or ``bgr``; frames arrive BGR from OpenCV and are swapped when needed.

Boxes found in the model's input pixels go back to original-image pixels with
:meth:`Letterbox.unmap`; :meth:`Letterbox.map` does the forward direction (training labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sdk.errors import ConfigError
from sdk.quant import quantize

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``src_w × src_h`` was placed in the model input.

    ``model = original * scale + pad`` (x uses ``scale`` and ``pad_x``; y uses ``scale_y``,
    equal to ``scale`` unless the image was stretched, and ``pad_y``).
    """

    scale: float
    pad_x: float
    pad_y: float
    src_w: int = 0
    src_h: int = 0
    scale_y: float | None = None

    @property
    def sy(self) -> float:
        return self.scale if self.scale_y is None else self.scale_y

    def unmap(self, boxes_xyxy: np.ndarray, clip: bool = True) -> np.ndarray:
        """Boxes ``[N, 4]`` (x1, y1, x2, y2) in model-input pixels → original-image pixels.

        Args:
            boxes_xyxy: Float array ``[N, 4]``.
            clip: Clip to the original image when its size is known.

        Returns:
            A new float32 array ``[N, 4]``.
        """
        b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        pad, inv, size = self._unmap_arrays
        # whole-array ops (no strided slices) with constants made once: this runs on every frame
        out = b - pad
        out *= inv
        if clip and self.src_w and self.src_h:
            # minimum/maximum: np.clip's Python wrapper costs more than the work on a few boxes
            np.maximum(out, 0, out=out)
            np.minimum(out, size, out=out)
        return out

    def unmap_rows(self, rows: Sequence[Sequence[float]], clip: bool = True) -> list[tuple[float, float, float, float]]:
        """:meth:`unmap` for a few boxes as Python lists (the detections of one frame), in double
        precision: for a handful of boxes, plain arithmetic beats five NumPy calls."""
        pad_x, pad_y, sx, sy = self.pad_x, self.pad_y, 1.0 / self.scale, 1.0 / self.sy
        out = [((x1 - pad_x) * sx, (y1 - pad_y) * sy, (x2 - pad_x) * sx, (y2 - pad_y) * sy) for x1, y1, x2, y2 in rows]
        if clip and self.src_w and self.src_h:
            w, h = float(self.src_w), float(self.src_h)
            out = [(min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)) for x1, y1, x2, y2 in out]
        return out

    @cached_property
    def _unmap_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-coordinate padding, inverse scale and image size (the Letterboxer reuses one instance per geometry)."""
        return (
            np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32),
            np.array([1 / self.scale, 1 / self.sy, 1 / self.scale, 1 / self.sy], np.float32),
            np.array([self.src_w, self.src_h, self.src_w, self.src_h], np.float32),
        )

    def map(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes ``[N, 4]`` in original-image pixels → model-input pixels (for training labels)."""
        b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = b[:, 0::2] * self.scale + self.pad_x
        out[:, 1::2] = b[:, 1::2] * self.sy + self.pad_y
        return out


class Letterboxer:
    """Letterboxes images into one preallocated ``(h, w, 3)`` uint8 buffer (no per-frame allocation).

    The returned array is the internal buffer: copy it if you keep it past the next call.
    :attr:`region` is the part of it the last image was written to (the rest is padding,
    painted only when the geometry changes).

    Args:
        size: Model input ``(w, h)``.
        color: Padding grey level, or one value per channel.
        keep_aspect: ``False`` stretches to ``size`` instead of padding.
        out: A ``(h, w, 3)`` uint8 buffer to use instead of allocating one.
    """

    def __init__(self, size: Sequence[int], color: int | Sequence[int] = PAD_VALUE, keep_aspect: bool = True, out: np.ndarray | None = None) -> None:
        w, h = _size(size)
        self.size = (w, h)
        self.color = color
        self.keep_aspect = keep_aspect
        if out is not None and (out.shape != (h, w, 3) or out.dtype != np.uint8):
            raise ValueError(f"letterbox buffer must be ({h}, {w}, 3) uint8, got {out.shape} {out.dtype}")
        self._buf = np.empty((h, w, 3), dtype=np.uint8) if out is None else out
        self._buf[:] = color
        self.region = self._buf
        # a video's frames all have one size: its geometry (and its buffers) are worked out once
        self._geometry: tuple[Any, ...] | None = None

    def _place(self, sw: int, sh: int) -> tuple[Letterbox, np.ndarray, list[np.ndarray], np.ndarray | None]:
        """Mapping, destination view, halving buffers and a scratch region for ``sw × sh`` images
        (repaints the border; everything a frame of this size needs is allocated here, once)."""
        w, h = self.size
        if not self.keep_aspect:
            lb, dst = Letterbox(w / sw, 0.0, 0.0, sw, sh, h / sh), self._buf
        else:
            r = min(w / sw, h / sh)
            nw, nh = min(w, round(sw * r)), min(h, round(sh * r))
            px, py = (w - nw) // 2, (h - nh) // 2
            self._buf[:] = self.color
            # the exact per-axis scale of the resized region (rounding makes it differ slightly from r)
            lb, dst = Letterbox(nw / sw, float(px), float(py), sw, sh, nh / sh), self._buf[py : py + nh, px : px + nw]
        # shrinking: exact halvings by pixel averaging (OpenCV's fast INTER_AREA case) while at
        # least 2x is left, then bilinear for the last factor below 2; a general INTER_AREA
        # resize costs 5-30 ms a frame at 1080p here
        halves, cw, ch = [], sw, sh
        while cw % 2 == 0 and ch % 2 == 0 and cw >= 2 * dst.shape[1] and ch >= 2 * dst.shape[0] and (cw, ch) != (2 * dst.shape[1], 2 * dst.shape[0]):
            cw, ch = cw // 2, ch // 2
            halves.append(np.empty((ch, cw, 3), np.uint8))
        scratch = None if dst.flags.c_contiguous else np.empty(dst.shape, np.uint8)
        return lb, dst, halves, scratch

    @property
    def scratch(self) -> np.ndarray:
        """A contiguous buffer shaped like :attr:`region` (the region itself when contiguous)."""
        if self._geometry is None or self._geometry[-1] is None:
            return self.region
        return self._geometry[-1]

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"letterbox expects an (H, W, 3) image, got shape {img.shape}")
        key = (img.shape[1], img.shape[0])
        if self._geometry is None or self._geometry[0] != key:
            self._geometry = (key, *self._place(*key))
        _, lb, dst, halves, scratch = self._geometry
        self.region = dst
        if dst.shape[:2] == img.shape[:2]:
            dst[:] = img
            return self._buf, lb
        _resize(img, dst if scratch is None else scratch, halves)
        if scratch is not None:  # a pillarbox column: OpenCV cannot write into the strided view
            dst[:] = scratch
        return self._buf, lb


def _resize(img: np.ndarray, out: np.ndarray, halves: Sequence[np.ndarray]) -> None:
    """``img`` resized into ``out`` through the preallocated halving buffers ``halves``."""
    import cv2

    src = img
    for buf in halves:
        cv2.resize(src, (buf.shape[1], buf.shape[0]), dst=buf, interpolation=cv2.INTER_AREA)
        src = buf
    h, w = out.shape[:2]
    exact_half = src.shape[0] == 2 * h and src.shape[1] == 2 * w
    cv2.resize(src, (w, h), dst=out, interpolation=cv2.INTER_AREA if exact_half else cv2.INTER_LINEAR)


def letterbox(img: np.ndarray, size: Sequence[int], color: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Fit ``img`` (H, W, 3) into ``size`` ``(w, h)`` keeping its aspect ratio, padding with ``color``.

    Returns:
        A new ``(h, w, 3)`` array and the :class:`Letterbox` mapping back to ``img``.
    """
    out, lb = Letterboxer(size, color)(img)
    return out.copy(), lb


def _size(size: Sequence[int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"image size must be [width, height], got {size!r}") from e
    if w < 1 or h < 1:
        raise ConfigError(f"image size must be positive, got {size!r}")
    return w, h


def _per_channel(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ConfigError(f"card input.{name} must be a number or 3 numbers, got {value!r}")
    return arr


def normalize(
    img: np.ndarray,
    mean: Any = 0.0,
    std: Any = 255.0,
    channel_order: str = "rgb",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """BGR uint8 image → float32 ``(pixel - mean) / std`` in ``channel_order``.

    Args:
        img: ``(H, W, 3)`` BGR uint8 (OpenCV order).
        mean: Per-channel mean in pixel units, in the model's channel order.
        std: Per-channel std in pixel units.
        channel_order: ``"rgb"`` or ``"bgr"``.
        out: Optional float32 buffer of the same shape to write into.

    Returns:
        ``out`` (or a new array) holding the normalised image.
    """
    import cv2

    mean_c, inv_c = _mean_inv(mean, std)
    src = _ordered(img, channel_order)
    if out is None:
        out = np.empty(img.shape, dtype=np.float32)
    if np.all(mean_c == mean_c[0]) and np.all(inv_c == inv_c[0]):
        # one scalar multiply-add: NumPy broadcasting over a last axis of 3 is ~10x slower
        np.multiply(src, inv_c[0], out=out, casting="unsafe")
        np.add(out, -mean_c[0] * inv_c[0], out=out)
    else:
        cv2.multiply(src, (*inv_c.tolist(), 0.0), dst=out, dtype=cv2.CV_32F)
        cv2.add(out, (*(-mean_c * inv_c).tolist(), 0.0), dst=out)
    return out


def _mean_inv(mean: Any, std: Any) -> tuple[np.ndarray, np.ndarray]:
    std_c = _per_channel(std, "std")
    if np.any(std_c == 0):
        raise ConfigError(f"card input.std must not be 0, got {std!r}")
    return _per_channel(mean, "mean"), (1.0 / std_c).astype(np.float32)


def _ordered(img: np.ndarray, channel_order: str) -> np.ndarray:
    import cv2

    order = str(channel_order).lower()
    if order not in ("rgb", "bgr"):
        raise ConfigError(f"card input.channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if order == "rgb" else img


def quantize_lut(mean: Any, std: Any, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """``[256, 3]`` table: pixel value → quantized normalised value, per channel (model order).

    Identical to normalising then quantizing (round half to even, saturate), as the Runner does.
    """
    mean_c, inv_c = _mean_inv(mean, std)
    return quantize((np.arange(256, dtype=np.float32)[:, None] - mean_c) * inv_c, scale, zero_point, dtype)


# input ranges a quantized input may imply: (low, high, mean, std, how it is said)
KNOWN_RANGES = ((0.0, 1.0, "[0, 1]"), (-1.0, 1.0, "[-1, 1]"), (0.0, 255.0, "0-255"))


def range_from_quant(scale: float, zero_point: int, dtype: Any) -> tuple[float, float, str] | None:
    """``(mean, std, range)`` an 8-bit input's quantization implies, or ``None``.

    When the 256 levels of the type span one of :data:`KNOWN_RANGES` (within 2%), the model
    was calibrated on pixels scaled to that range: the returned ``mean``/``std`` map each pixel
    value to one quantized level (``mean = zero_point - type min``, ``std = 1 / scale``), the
    mapping the model's own calibration used (a uint8 SSD with scale 1/128 and zero point 128
    takes the pixels as they are).
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize != 1 or not scale > 0:
        return None
    info = np.iinfo(dt)
    lo, hi = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    for low, high, text in KNOWN_RANGES:
        span = high - low
        if abs(lo - low) <= 0.02 * span and abs(hi - high) <= 0.02 * span:
            return float(zero_point - info.min), float(1.0 / scale), text
    return None


class Preprocessor:
    """The card's ``input`` recipe as one callable: BGR frame → ``[1, h, w, 3]`` tensor + Letterbox.

    For a quantized (int8/uint8) model input, pass ``quant=(scale, zero_point, dtype)``: the
    tensor is then produced in that integer type through a lookup table (exactly what
    quantizing the float tensor would give, ~10x cheaper). Buffers are allocated once; the
    returned tensor is reused by the next call.

    Args:
        size: Model input ``(w, h)``.
        letterbox: Keep aspect ratio with padding (``False``: stretch).
        mean, std, channel_order: As in :func:`normalize`.
        quant: Input tensor quantization, or ``None`` for a float32 tensor.
    """

    def __init__(
        self,
        size: Sequence[int],
        letterbox: bool = True,
        mean: Any = 0.0,
        std: Any = 255.0,
        channel_order: str = "rgb",
        quant: tuple[float, int, Any] | None = None,
    ) -> None:
        self.size = _size(size)
        self.mean, self.std, self.channel_order = mean, std, str(channel_order).lower()
        _ordered(np.zeros((1, 1, 3), np.uint8), channel_order)  # validate early
        w, h = self.size
        self._lut: np.ndarray | None = None
        if quant is not None:
            scale, zp, dtype = quant
            table = quantize_lut(mean, std, scale, zp, np.dtype(dtype))
            self._dtype = np.dtype(dtype)
            same = bool(np.all(table == table[:, :1]))
            # cv2.LUT wants uint8 bits; a single-channel table is 3x faster than a 3-channel one
            self._lut = np.ascontiguousarray(table[:, 0] if same else table[None]).view(np.uint8)
            # the usual int8 input (scale 1/255, zero point -128) maps pixel p to p - 128, whose
            # bits are p ^ 0x80: one XOR instead of a table lookup; a uint8 input taking pixels
            # as they are (0-255, or [-1, 1] as scale 1/128, zero point 128) needs nothing at all
            bits = np.ascontiguousarray(table).view(np.uint8)
            levels = np.arange(256, dtype=np.uint8)[:, None]
            self._xor = bool(np.all(bits == levels ^ 0x80))
            self._identity = bool(np.all(bits == levels))
            self._qbuf = np.empty((1, h, w, 3), dtype=np.uint8)
            self._tensor = self._qbuf.view(self._dtype)
            # letterbox straight into the tensor, its border already quantized: each frame then
            # converts only the image region, in place
            pad = tuple(int(v) for v in bits[PAD_VALUE])
            self._boxer = Letterboxer(self.size, pad, bool(letterbox), out=self._qbuf[0])
        else:
            self._boxer = Letterboxer(self.size, keep_aspect=bool(letterbox))
            self._tensor = np.empty((1, h, w, 3), dtype=np.float32)

    @classmethod
    def from_card_input(
        cls, spec: Mapping[str, Any] | None, default_size: Sequence[int] | None = None, quant: tuple[float, int, Any] | None = None
    ) -> Preprocessor:
        """Build from a card's ``input`` mapping; ``default_size`` (w, h) when it has no ``size``.

        Raises:
            ConfigError: On unknown keys or invalid values.
        """
        spec = dict(spec or {})
        known = {"size", "letterbox", "mean", "std", "channel_order"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"card input has unknown keys {unknown}; expected {sorted(known)}")
        size = spec.get("size", default_size)
        if size is None:
            raise ConfigError("card input.size is missing and the model input shape does not give it")
        return cls(size, bool(spec.get("letterbox", True)), spec.get("mean", 0.0), spec.get("std", 255.0), spec.get("channel_order", "rgb"), quant)

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, Letterbox]:

        boxed, lb = self._boxer(img)
        if self._lut is None:
            normalize(boxed, self.mean, self.std, self.channel_order, out=self._tensor[0])
            return self._tensor, lb
        region = self._boxer.region
        if not region.flags.c_contiguous:  # a pillarbox column: OpenCV cannot write into the view
            tmp = self._boxer.scratch
            tmp[:] = region
            region[:] = self._quantize(tmp)
        else:
            self._quantize(region)
        return self._tensor, lb

    def _quantize(self, region: np.ndarray) -> np.ndarray:
        """BGR pixels of ``region`` → the input's quantized values in model channel order, in place."""
        import cv2

        if self.channel_order == "rgb":
            cv2.cvtColor(region, cv2.COLOR_BGR2RGB, dst=region)
        if self._identity:
            return region
        if self._xor:
            np.bitwise_xor(region, np.uint8(0x80), out=region)
        else:
            cv2.LUT(region, self._lut, dst=region)
        return region
