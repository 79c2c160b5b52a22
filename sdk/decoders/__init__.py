"""Detection output decoders (NumPy, vectorised): raw model outputs → candidate boxes before NMS.

Every decoder returns ``(boxes, scores, class_ids)``: ``[K, 4]`` float32 ``x1, y1, x2, y2`` in
model-input pixels (undo the letterbox with :meth:`sdk.image.Letterbox.unmap`), ``[K]``
float32 scores and ``[K]`` int class ids, keeping only candidates with ``score >= conf``
(best class per box). Outputs arrive as floats: the Runner dequantizes int8 tensors with each
output's own scale and zero point. A batch axis of 1 is optional.

Quantized outputs: :meth:`Decoder.decode_raw` takes the tensors as stored (int8...) with each
output's ``(scale, zero_point)`` and returns exactly what dequantizing everything and calling
the decoder gives; families with a fast path (``yolov8``, ``yolo-split``) compare scores in
the quantized domain and dequantize only the rows that pass.

One module per family, registered by name in :data:`REGISTRY` (the names the model card's
``output.decoder`` uses); a module is imported when its decoder is first asked for:

====================  =====================  ===========================================
name                  module                 layout
====================  =====================  ===========================================
``yolov2``            :mod:`.grid`           one anchor grid, softmax classes
``yolov3``            :mod:`.grid`           one or more anchor grids, sigmoid classes
``yolov5``            :mod:`.rows`           ``[N, 5+C]`` rows with objectness
``yolov8``            :mod:`.rows`           anchor-free ``[4+C, N]`` or ``[N, 4+C]``
``yolo-split``        :mod:`.split`          ``boxes [N, 4]`` + ``scores [N, C]``
====================  =====================  ===========================================

Shared pieces (the :class:`~sdk.decoders.base.Decoder` base, the result type, the
quantized-threshold and lookup-table helpers) live in :mod:`.base`.

Adding a family (SSD, YOLOX, NanoDet...) is one new module and one registry line:

1. ``sdk/decoders/<family>.py`` with a :class:`~sdk.decoders.base.Decoder` subclass that
   sets ``self.name`` in ``__post_init__`` and implements ``__call__`` and ``num_classes``.
   Override ``from_params`` to read card keys beyond ``box_format``/``box_units`` (anchors,
   strides...), ``locate`` when several outputs play different roles, and ``decode_raw`` for a
   quantized fast path (reuse :func:`~sdk.decoders.base.q_threshold` and
   :func:`~sdk.decoders.base.lut`).
2. ``"<name>": "sdk.decoders.<family>:<Class>"`` in :data:`REGISTRY`.

A card's ``output.decoder: <name>`` then selects it with no other change. Only teach
:func:`choose_decoder`'s shape guess about it if its output shapes cannot be mistaken for a
registered layout's.

Card ``output`` keys read by the decoders: ``decoder``, ``anchors``, ``anchor_units`` (``grid``
| ``pixels``), ``box_format`` (``xywh`` | ``xyxy``), ``box_units`` (``normalized`` |
``pixels``; default: detected per frame from the value range, boxes ≤ 2 meaning normalised),
``boxes`` and ``scores`` (``yolo-split`` output roles).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Quant, Result, box_options
from sdk.decoders.grid import V3_TINY_ANCHORS
from sdk.errors import ModelFormatError

__all__ = ["DECODERS", "FLAG_TO_DECODER", "REGISTRY", "Decoder", "Quant", "Result", "choose_decoder", "get", "make_decoder"]

# name -> "module:Class"; explicit registration, no subclass discovery
REGISTRY: dict[str, str] = {
    "yolov2": "sdk.decoders.grid:AnchorGridDecoder",
    "yolov3": "sdk.decoders.grid:AnchorGridDecoder",
    "yolov5": "sdk.decoders.rows:YoloV5Decoder",
    "yolov8": "sdk.decoders.rows:YoloV8Decoder",
    "yolo-split": "sdk.decoders.split:SplitDecoder",
}
DECODERS = tuple(REGISTRY)
FLAG_TO_DECODER = {"v2": "yolov2", "v3": "yolov3", "v5": "yolov5", "v8": "yolov8", "v11": "yolov8"}


def get(name: str) -> type[Decoder]:
    """The decoder class registered as ``name``, its module imported on first use.

    Raises:
        ModelFormatError: If no decoder is registered under ``name``.
    """
    if name not in REGISTRY:
        raise ModelFormatError(f"unknown YOLO decoder {name!r}; expected one of {DECODERS} (or --yolo {{v2,v3,v5,v8}})")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_decoder(name: str, input_size: tuple[int, int], params: Mapping[str, Any] | None = None) -> Decoder:
    """A decoder by registered name (``yolov2``…``yolo-split``) with card ``output`` parameters.

    Args:
        name: A key of :data:`REGISTRY`.
        input_size: Model input ``(w, h)``.
        params: The card's ``output`` mapping (``box_format``, ``anchors``...), if any.

    Raises:
        ModelFormatError: Bad box options (checked first, for every name), an unknown name,
            or a parameter the family cannot use.
    """
    p = dict(params or {})
    box_options(p)
    return get(name).from_params(name, input_size, p)


def _guess(shapes: Sequence[tuple[int, ...]], input_size: tuple[int, int]) -> tuple[str, str]:
    """Decoder name and why, from output shapes alone."""
    if len(shapes) == 2 and all(len(s) in (2, 3) for s in shapes):
        return "yolo-split", "two [1, N, k] outputs: boxes + scores"
    if shapes and all(len(s) in (4, 5) for s in shapes):
        if len(shapes) == 1:
            return "yolov2", "one anchor grid"
        return "yolov3", f"{len(shapes)} anchor grids"
    if len(shapes) == 1 and len(shapes[0]) in (2, 3):
        a, b = shapes[0][-2:]
        if a < b:
            return "yolov8", "channels-first [1, 4+C, N]"
        w, h = input_size
        cells = sum((w // s) * (h // s) for s in (8, 16, 32))
        if a == cells:
            return "yolov8", f"N = {a} = one box per cell at strides 8/16/32"
        return "yolov5", "[1, N, 5+C] rows" + (" (N = 3 anchors per cell at strides 8/16/32)" if a == 3 * cells else "")
    raise ModelFormatError(
        f"outputs {[list(s) for s in shapes]} match no YOLO layout (v2/v3 grids [1, S, S, A*(5+C)], v5 [1, N, 5+C], "
        "v8 [1, 4+C, N], split boxes [1, N, 4] + scores [1, N, C]); pass --yolo {v2,v3,v5,v8} or give the model a card"
    )


def choose_decoder(
    shapes: Sequence[Sequence[int]],
    input_size: tuple[int, int],
    card_output: Mapping[str, Any] | None = None,
    ultralytics: Mapping[str, Any] | None = None,
    override: str | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Decoder, str]:
    """Pick the decoder: ``--yolo`` override, else the card, else Ultralytics metadata, else shapes.

    Args:
        shapes: Output tensor shapes in model order.
        input_size: Model input ``(w, h)``.
        card_output: The model card's ``output`` mapping (decoder parameters), if any.
        ultralytics: :func:`sdk.card.ultralytics_metadata` of the model, if any.
        override: ``v2``/``v3``/``v5``/``v8`` (or a decoder name) from ``--yolo``.
        names: Output names as the Runner reports them (for the card's ``boxes``/``scores``
            roles, else a ``box`` name when shapes are ambiguous).

    Returns:
        The decoder, checked against the shapes, and a one-line reason for the log.

    Raises:
        ModelFormatError: When the outputs fit no decoder (the message shows the shapes).
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    params = dict(card_output or {})
    if override:
        name, reason = FLAG_TO_DECODER.get(override, override), f"--yolo {override}"
    elif params.get("decoder"):
        name, reason = FLAG_TO_DECODER.get(str(params["decoder"]), str(params["decoder"])), "model card"
    elif ultralytics:
        task = ultralytics.get("task", "detect")
        if task != "detect":
            raise ModelFormatError(f"Ultralytics metadata says task {task!r}; edgesdk detect runs detection models only")
        name, reason = "yolov8", f"Ultralytics metadata (task detect, {len(ultralytics.get('names') or [])} classes)"
    else:
        name, why = _guess(shapes, input_size)
        reason = f"output shapes {[list(s) for s in shapes]}: {why}"
    if name == "yolov8" and len(shapes) == 2:
        name = "yolo-split"
    if name == "yolov3" and not params.get("anchors") and len(shapes) == 2:
        params["anchors"] = V3_TINY_ANCHORS
    dec = make_decoder(name, input_size, params)
    dec.locate(shapes, names, params)
    dec([np.zeros(s, np.float32) for s in shapes], 2.0)  # shape check now, not on the first frame
    if name in ("yolov2", "yolov3") and not params.get("anchors"):
        reason += f", default {name} anchors"
    return dec, f"{dec.name} decoder ({reason}), {dec.num_classes(shapes)} classes"
