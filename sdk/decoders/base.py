"""What every decoder family shares: the :class:`Decoder` base, its result type and the
quantized-domain helpers that let ``decode_raw`` skip dequantizing rows below the threshold.

The helpers are public to the package (the family modules use them), not to users: import
decoders through :mod:`sdk.decoders`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, ClassVar

import numpy as np

from sdk.errors import ModelFormatError
from sdk.quant import dequantize  # the Runner's arithmetic: both paths agree bit for bit

Result = tuple[np.ndarray, np.ndarray, np.ndarray]
Quant = tuple[float, int] | None  # an output's (scale, zero point); None: stored as float

# the families a user may name (``decoder``); the registry also holds layout variants
FAMILIES = ("yolov2", "yolov3", "yolov5", "yolov8", "yolox", "ssd", "nanodet")


@dataclass(frozen=True)
class Guess:
    """A fact the model did not state and was assumed: said once, with what overrides it.

    Attributes:
        what: What was assumed and why (``"anchors: YOLOv3-tiny defaults for 2 grids"``).
        param: The parameter that sets it (``anchors``, ``decoder``, ``mean``...), or ``""``
            when only the card can (SSD anchors, output roles).
        card_key: The model card key that records it (``output.anchors``).
    """

    what: str
    param: str
    card_key: str


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function through ``tanh``: no overflow (``exp(-x)`` overflows below -88)."""
    out = np.multiply(x, 0.5, dtype=np.float32)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def empty_result() -> Result:
    """No candidates: ``[0, 4]`` boxes, ``[0]`` scores and ``[0]`` class ids of the usual dtypes."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """``[K, 4]`` centre-size boxes → corner boxes (new float32 array)."""
    out = np.empty(b.shape, np.float32)
    half = b[:, 2:4] * 0.5
    out[:, :2] = b[:, :2] - half
    out[:, 2:] = b[:, :2] + half
    return out


@lru_cache(maxsize=64)
def q_threshold(conf: float, scale: float, zero_point: int, dtype: str) -> int | None:
    """The smallest stored value whose dequantized score is ``>= conf``.

    Found by dequantizing every value of the type, so ``q >= threshold`` selects exactly what
    ``dequantize(q) >= conf`` selects. ``None`` when no threshold applies (float outputs,
    wide integer types, a non-positive scale). When no value passes, one past the type's
    maximum (NumPy compares it correctly: nothing passes).
    """
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize > 2 or not scale > 0:
        return None
    info = np.iinfo(dt)
    values = np.arange(info.min, info.max + 1, dtype=np.int64)
    ok = np.flatnonzero(dequantize(values, scale, zero_point) >= conf)
    return int(values[ok[0]]) if ok.size else info.max + 1


@lru_cache(maxsize=64)
def lut(scale: float, zero_point: int, dtype: str) -> np.ndarray | None:
    """8-bit types: float32 ``[256]`` indexed by the stored byte, built with :func:`dequantize`."""
    dt = np.dtype(dtype)
    if dt.itemsize != 1:
        return None
    return dequantize(np.arange(256, dtype=np.uint8).view(dt), scale, zero_point)


@lru_cache(maxsize=64)
def passing(conf: float, scale: float, zero_point: int, dtype: str, logits: bool = False) -> np.ndarray | None:
    """8-bit types: bool ``[256]``, indexed by the stored byte, true where the value (its
    :func:`sigmoid` when ``logits``) is ``>= conf``, computed with the float path's own functions,
    so selecting with it is exactly what dequantizing everything selects. ``None`` otherwise."""
    table = lut(scale, zero_point, dtype)
    if table is None:
        return None
    return (sigmoid(table) if logits else table) >= np.float32(conf)


def select(q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Flat indices of the 8-bit values of ``q`` that :func:`passing`'s ``table`` lets through."""
    return np.flatnonzero(table.take(q.view(np.uint8)))


def dequantize_some(q: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    """:func:`dequantize` as one table lookup for 8-bit values (same numbers, fewer passes)."""
    table = lut(float(quant[0]), int(quant[1]), q.dtype.str)
    return dequantize(q, *quant) if table is None else table.take(q.view(np.uint8))


def shape_error(name: str, shapes: Sequence[Sequence[int]], why: str) -> ModelFormatError:
    """The error for outputs that do not fit decoder ``name``: the shapes, why, and the way out.

    It names the ``decoder`` parameter (the command line shows its flag there).
    """
    return ModelFormatError(
        f"outputs {[list(s) for s in shapes]} do not fit the {name} layout ({why}); set decoder to the family "
        f"that matches the model ({', '.join(FAMILIES)}), or give the model a card with output.decoder",
        param="decoder",
    )


def box_options(params: Mapping[str, Any]) -> tuple[str, str | None]:
    """The card's ``output.box_format`` and ``output.box_units``, checked.

    Raises:
        ModelFormatError: A format other than ``xywh``/``xyxy`` or units other than
            ``normalized``/``pixels``/unset.
    """
    fmt = str(params.get("box_format", "xywh"))
    units = params.get("box_units")
    if fmt not in ("xywh", "xyxy") or units not in (None, "normalized", "pixels"):
        raise ModelFormatError(f"card output.box_format must be xywh|xyxy and box_units normalized|pixels, got {fmt!r}, {units!r}")
    return fmt, units


@dataclass
class Decoder:
    """Base: ``decoder(outputs, conf) -> (boxes_xyxy, scores, class_ids)`` in input pixels.

    Class attributes a family may set: ``applies_nms`` (the outputs are already suppressed:
    callers skip NMS) and ``convention``, the input recipe the family's models usually expect
    (``mean``, ``std``, ``channel_order``, ``letterbox`` and a ``why``) for models that do not
    say. ``guesses`` lists what the decoder assumed (default anchors...), for the caller to say.
    """

    input_size: tuple[int, int]  # (w, h)
    box_format: str = "xywh"
    box_units: str | None = None  # None: detect per call
    name: str = field(default="", init=False)
    guesses: list[Guess] = field(default_factory=list, init=False)
    # per output (scale, zero point, dtype) or None, set before locate() by choose_decoder
    output_quant: list[tuple[float, int, str] | None] | None = field(default=None, init=False)

    applies_nms: ClassVar[bool] = False
    convention: ClassVar[Mapping[str, Any]] = {"mean": 0.0, "std": 255.0, "channel_order": "rgb", "letterbox": True, "why": "the YOLO convention"}

    def __post_init__(self) -> None:
        """Subclasses set ``name`` here (dataclass calls it only if the base defines it)."""

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """Build the decoder registered as ``name`` from the card's ``output`` mapping.

        Families with more card keys than the box options (anchors...) override this.

        Raises:
            ModelFormatError: A card key with a value the family cannot use.
        """
        fmt, units = box_options(params)
        return cls(input_size, fmt, units)

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Match outputs to their roles (boxes, scores...) before the first frame.

        Single-role layouts have nothing to match; multi-output families override this.
        """

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode float outputs in model order, keeping candidates scoring ``>= conf``."""
        raise NotImplementedError

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """Decode outputs as stored in the model (``Runner.run(x, raw=True)``).

        Args:
            outputs: Output tensors in model order, in their stored dtype.
            quant: Per output ``(scale, zero_point)``, or ``None`` where it is float.
            conf: Score threshold.

        Returns:
            Exactly what ``self([dequantized outputs], conf)`` returns; this base version
            dequantizes everything, subclasses skip the work for rows below ``conf``.
        """
        return self([o if q is None else dequantize(o, *q) for o, q in zip(outputs, quant)], conf)

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """How many classes outputs of these shapes hold."""
        raise NotImplementedError

    def _to_pixels(self, boxes: np.ndarray, normalized: bool) -> np.ndarray:
        out = xywh_to_xyxy(boxes) if self.box_format == "xywh" else np.asarray(boxes, np.float32)
        if normalized:
            out *= self._size4
        return out

    @cached_property
    def _size4(self) -> np.ndarray:
        w, h = self.input_size
        return np.array([w, h, w, h], np.float32)

    def _normalized(self, box_rows: np.ndarray, quant: Quant = None) -> bool:
        if self.box_units is not None:
            return self.box_units == "normalized"
        if box_rows.size == 0:
            return True
        # centres of every candidate span the image: their max tells normalised from pixels
        if quant is None:
            return float(np.abs(box_rows).max()) <= 2.0
        # dequantizing is monotonic: the largest |value| is at the smallest or largest stored one
        ends = dequantize(np.array([box_rows.min(), box_rows.max()]), *quant)
        return float(np.abs(ends).max()) <= 2.0
