"""Detection output decoders (NumPy, vectorised): raw model outputs → candidate boxes before NMS.

Every decoder returns ``(boxes, scores, class_ids)``: ``[K, 4]`` float32 ``x1, y1, x2, y2`` in
model-input pixels (undo the letterbox with :meth:`sdk.image.Letterbox.unmap`), ``[K]``
float32 scores and ``[K]`` int class ids, keeping only candidates with ``score >= conf``
(best class per box). Outputs arrive as floats: the Runner dequantizes int8 tensors with each
output's own scale and zero point. A batch axis of 1 is optional.

Quantized outputs: :meth:`Decoder.decode_raw` takes the tensors as stored (int8...) with each
output's ``(scale, zero_point)`` and returns exactly what dequantizing everything and calling
the decoder gives; every family but the post-processed SSD (whose outputs are float) compares
scores or objectness in the quantized domain and dequantizes only the rows that pass.

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
``yolox``             :mod:`.yolox`          ``[N, 5+C]`` one row per cell, decoded or raw grid
``ssd``               :mod:`.ssd`            raw head: encodings ``[N, 4]`` + scores + anchors
``ssd-postprocessed`` :mod:`.ssd`            ``TFLite_Detection_PostProcess``: 4 outputs
``nanodet``           :mod:`.nanodet`        per stride: ``scores [N, C]`` + GFL ``[N, 4*bins]``
====================  =====================  ===========================================

Shared pieces (the :class:`~sdk.decoders.base.Decoder` base, the result type, the
quantized-threshold and lookup-table helpers) live in :mod:`.base`.

Adding a family is one new module and one registry line:

1. ``sdk/decoders/<family>.py`` with a :class:`~sdk.decoders.base.Decoder` subclass that
   sets ``self.name`` in ``__post_init__`` and implements ``__call__`` and ``num_classes``.
   Override ``from_params`` to read card keys beyond ``box_format``/``box_units`` (anchors,
   strides...), ``locate`` when several outputs play different roles, and ``decode_raw`` for a
   quantized fast path (reuse :func:`~sdk.decoders.base.q_threshold`,
   :func:`~sdk.decoders.base.passing` and :func:`~sdk.decoders.base.lut`). Set ``convention``
   when the family's models take other inputs than RGB in [0, 1], and append a
   :class:`~sdk.decoders.base.Guess` to ``guesses`` for every fact assumed.
2. ``"<name>": "sdk.decoders.<family>:<Class>"`` in :data:`REGISTRY`.

A card's ``output.decoder: <name>`` then selects it with no other change. Only teach
:func:`choose_decoder`'s shape guess about it if its output shapes cannot be mistaken for a
registered layout's.

Card ``output`` keys read by the decoders: ``decoder``, ``anchors``, ``anchor_units`` (``grid``
| ``pixels``), ``box_format`` (``xywh`` | ``xyxy``), ``box_units`` (``normalized`` |
``pixels``; default: detected per frame from the value range, boxes ≤ 2 meaning normalised),
``boxes`` and ``scores`` (``yolo-split``/``ssd`` output roles); each family module lists its own.

What a model does not say is assumed and listed in the decoder's ``guesses`` (a
:class:`~sdk.decoders.base.Guess` names the parameter and card key that override it): the
decoder itself when only shapes chose it, default anchors, SSD background and score kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import FAMILIES, Decoder, Guess, Quant, Result, box_options, shape_error
from sdk.errors import EdgeSDKError, ModelFormatError

__all__ = ["DECODERS", "FAMILIES", "FLAG_TO_DECODER", "REGISTRY", "Decoder", "Guess", "Quant", "Result", "choose_decoder", "get", "make_decoder"]

# name -> "module:Class"; explicit registration, no subclass discovery
REGISTRY: dict[str, str] = {
    "yolov2": "sdk.decoders.grid:AnchorGridDecoder",
    "yolov3": "sdk.decoders.grid:AnchorGridDecoder",
    "yolov5": "sdk.decoders.rows:YoloV5Decoder",
    "yolov8": "sdk.decoders.rows:YoloV8Decoder",
    "yolo-split": "sdk.decoders.split:SplitDecoder",
    "nanodet": "sdk.decoders.nanodet:NanoDetDecoder",
    "yolox": "sdk.decoders.yolox:YoloXDecoder",
    "ssd": "sdk.decoders.ssd:SSDDecoder",
    "ssd-postprocessed": "sdk.decoders.ssd:SSDPostprocessedDecoder",
}
DECODERS = tuple(REGISTRY)
# short names (the former --yolo values) for the families
FLAG_TO_DECODER = {"v2": "yolov2", "v3": "yolov3", "v5": "yolov5", "v8": "yolov8", "v11": "yolov8", "yolo11": "yolov8"}


def get(name: str) -> type[Decoder]:
    """The decoder class registered as ``name``, its module imported on first use.

    Raises:
        ModelFormatError: (``param="decoder"``) no decoder is registered under ``name``.
    """
    if name not in REGISTRY:
        raise ModelFormatError(f"unknown decoder {name!r}; expected one of {', '.join(FAMILIES)} (installed: {', '.join(DECODERS)})", param="decoder")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_decoder(name: str, input_size: tuple[int, int], params: Mapping[str, Any] | None = None) -> Decoder:
    """A decoder by registered name (``yolov2``…``ssd-postprocessed``) with card ``output`` parameters.

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


def _cells(input_size: tuple[int, int], strides: Sequence[int] = (8, 16, 32)) -> int:
    w, h = input_size
    return sum((w // s) * (h // s) for s in strides)


def _postprocessed(shapes: Sequence[tuple[int, ...]]) -> bool:
    """Boxes ``[1, K, 4]``, two ``[1, K]`` and a ``[1]`` count: TFLite_Detection_PostProcess's outputs."""
    if len(shapes) != 4:
        return False
    sizes = sorted(int(np.prod(s)) for s in shapes)
    boxes = [s for s in shapes if len(s) == 3 and s[0] == 1 and s[-1] == 4]
    return len(boxes) == 1 and sizes[0] == 1 and sizes[1] == sizes[2] == boxes[0][1] and sizes[3] == 4 * boxes[0][1]


def _guess(shapes: Sequence[tuple[int, ...]], input_size: tuple[int, int], names: Sequence[str] | None = None) -> tuple[str, str]:
    """Decoder name and why, from output shapes (and names) alone."""
    if len(shapes) >= 4:  # NanoDet: pairs of [1, N, C] scores + [1, N, 4*bins] per stride level
        from sdk.decoders.nanodet import looks_like_nanodet

        why = looks_like_nanodet(shapes, input_size)
        if why:
            return "nanodet", why
    if _postprocessed(shapes):
        return "ssd-postprocessed", "boxes [1, K, 4], classes and scores [1, K], count [1]: TFLite_Detection_PostProcess outputs"
    if len(shapes) == 2 and all(len(s) in (2, 3) for s in shapes):
        text = " ".join(names or ()).lower()
        if "encoding" in text or "class_pred" in text:
            return "ssd", f"output names {list(names or [])}: an SSD head's box encodings + class predictions"
        from sdk.decoders.ssd import mobilenet_maps, ssd_anchors

        if shapes[0][-2] == len(ssd_anchors(input_size)) and shapes[0][-2] != _cells(input_size):
            return "ssd", f"N = {shapes[0][-2]} = the TF Object Detection API's SSD anchors on maps {mobilenet_maps(input_size[1])}"
        return "yolo-split", "two [1, N, k] outputs: boxes + scores"
    if shapes and all(len(s) in (4, 5) for s in shapes):
        if len(shapes) == 1:
            return "yolov2", "one anchor grid"
        return "yolov3", f"{len(shapes)} anchor grids"
    if len(shapes) == 1 and len(shapes[0]) in (2, 3):
        a, b = shapes[0][-2:]
        cells = _cells(input_size)
        if 85 in (a, b) and cells in (a, b) and a != b:
            return "yolox", f"N = {cells} = one row per cell at strides 8/16/32, 85 = box + objectness + 80 classes (YOLOX)"
        if a < b:
            return "yolov8", "channels-first [1, 4+C, N]"
        if a == cells:
            if b != 84:
                return "yolox", f"rows-first [1, N, 5+C] with N = {a} = one row per cell at strides 8/16/32 (YOLOX; YOLOv8 exports are channels-first)"
            return "yolov8", f"N = {a} = one box per cell at strides 8/16/32"
        return "yolov5", "[1, N, 5+C] rows" + (" (N = 3 anchors per cell at strides 8/16/32)" if a == 3 * cells else "")
    raise ModelFormatError(
        f"outputs {[list(s) for s in shapes]} match no known layout (YOLO v2/v3 grids [1, S, S, A*(5+C)], v5 [1, N, 5+C], "
        "v8 [1, 4+C, N], YOLOX [1, N, 5+C], split boxes [1, N, 4] + scores [1, N, C], SSD post-processed (4 outputs) or raw "
        f"(encodings + scores), NanoDet levels); set decoder to the model's family ({', '.join(FAMILIES)}) or give the model a card",
        param="decoder",
    )


def _variant(name: str, shapes: Sequence[tuple[int, ...]], graph: Mapping[str, Any] | None) -> str:
    """The registered layout of family ``name`` that these outputs take."""
    if name == "yolov8" and len(shapes) == 2:
        return "yolo-split"
    if name == "ssd" and (graph or len(shapes) == 4):
        return "ssd-postprocessed"
    return name


def _pick(
    shapes: Sequence[tuple[int, ...]],
    input_size: tuple[int, int],
    params: Mapping[str, Any],
    ultralytics: Mapping[str, Any] | None,
    override: str | None,
    names: Sequence[str] | None,
    graph: Mapping[str, Any] | None,
) -> tuple[str, str, Guess | None]:
    """The family asked for or implied, why, and the guess to say when only the shapes chose it."""
    if override:
        return FLAG_TO_DECODER.get(override, override), f"decoder={override}", None
    if params.get("decoder"):
        return FLAG_TO_DECODER.get(str(params["decoder"]), str(params["decoder"])), "model card", None
    if graph:
        return "ssd-postprocessed", "a TFLite_Detection_PostProcess op makes the outputs", None
    if ultralytics:
        task = ultralytics.get("task", "detect")
        if task != "detect":
            raise ModelFormatError(f"Ultralytics metadata says task {task!r}; edgesdk detect runs detection models only")
        return "yolov8", f"Ultralytics metadata (task detect, {len(ultralytics.get('names') or [])} classes)", None
    name, why = _guess(shapes, input_size, names)
    reason = f"output shapes {[list(s) for s in shapes]}: {why}"
    return name, reason, Guess(f"decoder: {name} (from {reason})", "decoder", "output.decoder")


def choose_decoder(
    shapes: Sequence[Sequence[int]],
    input_size: tuple[int, int],
    card_output: Mapping[str, Any] | None = None,
    ultralytics: Mapping[str, Any] | None = None,
    override: str | None = None,
    names: Sequence[str] | None = None,
    quant: Sequence[tuple[float, int, str] | None] | None = None,
    graph: Mapping[str, Any] | None = None,
) -> tuple[Decoder, str]:
    """Pick the decoder: ``override``, else the card, else the graph's post-processing op, else
    Ultralytics metadata, else shapes (then listed in the decoder's ``guesses``).

    Args:
        shapes: Output tensor shapes in model order.
        input_size: Model input ``(w, h)``.
        card_output: The model card's ``output`` mapping (decoder parameters), if any.
        ultralytics: :func:`sdk.card.ultralytics_metadata` of the model, if any.
        override: A family or layout name (or ``v2``/``v3``/``v5``/``v8``) chosen by the caller.
        names: Output names as the Runner reports them (for the card's output roles, else
            names that tell roles apart when shapes cannot).
        quant: Per output ``(scale, zero_point, dtype)`` or ``None`` (float), for facts the
            quantization implies (an SSD's scores in [0, 1] are probabilities).
        graph: :func:`sdk.decoders.ssd.postprocess_roles` of the model, when it has that op.

    Returns:
        The decoder, checked against the shapes, and a one-line reason for the log.

    Raises:
        ModelFormatError: (``param="decoder"``) the outputs fit no decoder, or not the one
            asked for (the message shows the shapes).
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    params = dict(card_output or {})
    name, reason, guessed = _pick(shapes, input_size, params, ultralytics, override, names, graph)
    name = _variant(name, shapes, graph)
    if name == "ssd-postprocessed" and graph:
        for key, value in graph.items():
            params.setdefault(key, value)
    try:
        dec = make_decoder(name, input_size, params)
        dec.output_quant = list(quant) if quant is not None else None
        dec.locate(shapes, names, params)
        dec([np.zeros(s, np.float32) for s in shapes], 2.0)  # shape check now, not on the first frame
        n = dec.num_classes(shapes)
    except EdgeSDKError:
        raise
    except (IndexError, ValueError, TypeError, KeyError, ZeroDivisionError) as e:  # a family's own checks missed this shape
        raise shape_error(name, shapes, f"{type(e).__name__}: {e}") from e
    if guessed is not None:
        dec.guesses.insert(0, guessed)
    return dec, f"{dec.name} decoder ({reason}), {n if n else 'an unknown number of'} classes"
