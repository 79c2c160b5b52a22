"""SSD (TensorFlow Object Detection API, MobileNet-SSD, SSDLite): raw heads and post-processed models.

``ssd-postprocessed`` — the four outputs of TFLite's ``TFLite_Detection_PostProcess`` op (most
Coral and TFLite examples): boxes ``[1, K, 4]`` (``ymin, xmin, ymax, xmax``, normalised),
classes ``[1, K]`` (0-based ids, background excluded), scores ``[1, K]`` and count ``[1]``.
NMS has been done in the graph (:attr:`applies_nms`). Output order differs between exporters:
the roles come from the card (``output.boxes``/``classes``/``scores``/``count``: output names or
indices), else from the op's own outputs in the graph (:func:`postprocess_roles`), else from
names, else from the op's order (said as a guess).

``ssd`` — a raw head: box encodings ``[1, N, 4]`` and class scores ``[1, N, C+1]`` (column 0 the
background unless ``output.background: false``), decoded with the anchors and the TF Object
Detection API box coder: ``yc = ty / y_scale * ha + ya``, ``xc = tx / x_scale * wa + xa``,
``h = exp(th / h_scale) * ha``, ``w = exp(tw / w_scale) * wa``.

Card keys of ``ssd``: ``anchors`` (``[N, 4]`` ``ycenter, xcenter, height, width`` normalised,
in the model's anchor order; or a mapping of :func:`ssd_anchors` arguments, e.g.
``{num_layers: 6, min_scale: 0.2, max_scale: 0.95}``), ``scales`` (``[y, x, h, w]``, default
``[10, 10, 5, 5]``), ``score`` (``logit``: sigmoid applied here, or ``probability``),
``background``, ``boxes``/``scores`` (output roles). Without anchors, the TF Object Detection
API's default SSD anchors are generated when their count matches N (said as a guess).

SSD models take RGB in [-1, 1], stretched to the input size (:attr:`convention`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Guess, Quant, Result, box_options, dequantize_some, empty_result, passing, shape_error, sigmoid
from sdk.decoders.split import role_index
from sdk.errors import ModelFormatError

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
ROLES = ("boxes", "classes", "scores", "count")  # the op's output order
SSD_CONVENTION = {"mean": 127.5, "std": 127.5, "channel_order": "rgb", "letterbox": False, "why": "the TF Object Detection API SSD convention (RGB in [-1, 1], stretched)"}


def mobilenet_maps(size: int, num_layers: int = 6) -> list[int]:
    """MobileNet-SSD feature maps: ``ceil(size / 16)``, then halved (rounding up) per layer."""
    sizes = [math.ceil(size / 16)]
    while len(sizes) < num_layers:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def ssd_anchors(
    input_size: tuple[int, int],
    num_layers: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3),
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    feature_map_sizes: Sequence[Sequence[int] | int] | None = None,
) -> np.ndarray:
    """The TF Object Detection API's SSD anchors (``ssd_anchor_generator``) as ``[N, 4]``
    ``ycenter, xcenter, height, width`` normalised, in the order the heads emit them: layer by
    layer, row-major over the cells, box specs innermost.

    Args:
        input_size: Model input ``(w, h)``.
        num_layers, min_scale, max_scale, aspect_ratios, interpolated_scale_aspect_ratio,
            reduce_boxes_in_lowest_layer: As in the API's ``ssd_anchor_generator`` config.
        feature_map_sizes: Per layer ``(h, w)`` or one size; default: MobileNet's from the input height.
    """
    w, h = input_size
    sizes = [(s, s) if isinstance(s, int) else tuple(s) for s in (feature_map_sizes or mobilenet_maps(h, num_layers))]
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)] + [1.0] if num_layers > 1 else [min_scale, 1.0]
    base_h, base_w = min(w, h) / h, min(w, h) / w  # the API keeps anchors square in pixels
    out = []
    for layer, ((fh, fw), scale, nxt) in enumerate(zip(sizes, scales[:-1], scales[1:])):
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            specs = [(scale, a) for a in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0:
                specs.append((math.sqrt(scale * nxt), interpolated_scale_aspect_ratio))
        hs = np.array([s / math.sqrt(a) * base_h for s, a in specs], np.float32)
        ws = np.array([s * math.sqrt(a) * base_w for s, a in specs], np.float32)
        yc, xc = np.meshgrid((np.arange(fh) + 0.5) / fh, (np.arange(fw) + 0.5) / fw, indexing="ij")
        k = len(specs)
        layer_anchors = np.stack([np.repeat(yc.ravel(), k), np.repeat(xc.ravel(), k), np.tile(hs, fh * fw), np.tile(ws, fh * fw)], axis=1)
        out.append(layer_anchors.astype(np.float32))
    return np.concatenate(out)


def postprocess_roles(file: Any, output_tensors: Sequence[int]) -> dict[str, Any] | None:
    """Where the outputs of a ``TFLite_Detection_PostProcess`` op went, and its options.

    Args:
        file: A :class:`sdk.tflite_file.TFLiteFile`.
        output_tensors: The model's output tensor indices in output order (``TensorSpec.index``).

    Returns:
        ``{"boxes": i, "classes": j, "scores": k, "count": l}`` (output positions) plus the
        op's options (``num_classes``, ``max_detections``...) when readable; ``None`` when the
        graph has no such op feeding the outputs.
    """
    ops = [op for op in file.main.ops if op.name == POSTPROCESS_OP]
    if len(ops) != 1 or len(ops[0].outputs) != 4:
        return None
    where = {t: i for i, t in enumerate(output_tensors)}
    if not all(t in where for t in ops[0].outputs):
        return None
    found: dict[str, Any] = {role: where[t] for role, t in zip(ROLES, ops[0].outputs)}
    try:
        from flatbuffers import flexbuffers

        from sdk.tflite_file import schema

        raw = schema().Model.GetRootAs(file.data, 0).Subgraphs(0).Operators(ops[0].index).CustomOptionsAsNumpy()
        options = flexbuffers.Loads(raw.tobytes())
        found.update({k: v for k, v in options.items() if isinstance(v, (int, float, bool))})
    except Exception:  # noqa: BLE001 - options are a nicety (class count); the roles are what matters
        pass
    return found


def _unit_range(scale: float, zero_point: int, dtype: str) -> bool:
    """Whether an integer type with this quantization spans [0, 1] (probabilities, not logits)."""
    info = np.iinfo(np.dtype(dtype))
    return (info.min - zero_point) * scale >= -1e-6 and (info.max - zero_point) * scale <= 1.01


def _index(ref: Any, names: Sequence[str] | None, n: int, key: str) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < n:
        return ref
    if isinstance(ref, str) and names and ref in names:
        return list(names).index(ref)
    raise ModelFormatError(f"card output.{key} is {ref!r}, which names no output of this model (outputs {list(names or [])}); fix the card")


class SSDPostprocessedDecoder(Decoder):
    """The four outputs of ``TFLite_Detection_PostProcess``: already decoded and suppressed."""

    applies_nms = True
    convention = SSD_CONVENTION

    def __post_init__(self) -> None:
        self.name = "ssd-postprocessed"
        self.roles: dict[str, int] = {}
        self.classes = 0

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """Boxes normalised ``ymin, xmin, ymax, xmax`` unless the card's ``box_units`` says pixels."""
        _, units = box_options(params)
        dec = cls(input_size, "yxyx", units or "normalized")
        dec.classes = int(params.get("num_classes") or 0)
        return dec

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Roles from the card or graph (``roles``), else shapes and names, else the op's order.

        Raises:
            ModelFormatError: Outputs that are not boxes ``[1, K, 4]``, two ``[1, K]`` and a count.
        """
        roles = roles or {}
        sizes = [int(np.prod(s)) for s in shapes]
        box = [i for i, s in enumerate(shapes) if len(s) >= 2 and s[-1] == 4 and all(d == 1 for d in s[:-2])]
        if len(shapes) != 4 or len(box) != 1:
            raise shape_error(self.name, shapes, "expects boxes [1, K, 4], classes [1, K], scores [1, K] and count [1]")
        k = shapes[box[0]][-2]
        given = {r: _index(roles[r], names, len(shapes), r) for r in ROLES if roles.get(r) is not None}
        if len(set(given.values())) != len(given):
            raise ModelFormatError(f"card output roles {given} name one output twice")
        rest = [i for i in range(4) if i not in given.values()]
        count = [i for i in rest if sizes[i] == 1 and "count" not in given]
        given.setdefault("boxes", box[0])
        if "count" not in given and count:
            given["count"] = count[0]
        pair = [i for i in range(4) if i not in given.values()]
        if len(given) == 2 and len(pair) == 2:
            named = {r: [i for i in pair if r[:5] in (names or [""] * 4)[i].lower()] for r in ("classes", "scores")}
            if len(named["classes"]) == 1 and named["scores"] != named["classes"]:
                given["classes"] = named["classes"][0]
            elif len(named["scores"]) == 1:
                given["scores"] = named["scores"][0]
            else:
                given["classes"] = pair[0]
                self.guesses.append(Guess(
                    f"output roles: classes = output {pair[0]}, scores = output {pair[1]} (the op's usual order; nothing names them)",
                    "", "output.classes",
                ))
        for r in ROLES:
            if r not in given:
                given[r] = next(i for i in range(4) if i not in given.values())
        if sizes[given["count"]] != 1 or sizes[given["classes"]] != k or sizes[given["scores"]] != k or given["boxes"] != box[0]:
            raise shape_error(self.name, shapes, f"roles {given} do not fit boxes [1, K, 4], classes [1, K], scores [1, K], count [1]")
        self.roles = given

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """From the op's options or the card's ``num_classes``; 0 when unknown (ids come as numbers)."""
        return self.classes

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """The first ``count`` detections scoring ``>= conf``, boxes in input pixels."""
        if len(outputs) != 4 or not self.roles:
            self.locate([o.shape for o in outputs])
        r = self.roles
        boxes, classes, scores = (outputs[r[k]].reshape(-1, *((4,) if k == "boxes" else ())) for k in ("boxes", "classes", "scores"))
        n = min(max(int(round(float(outputs[r["count"]].reshape(-1)[0]))), 0), len(scores))
        keep = np.flatnonzero(scores[:n] >= conf)
        out = boxes[keep][:, [1, 0, 3, 2]].astype(np.float32)  # ymin, xmin, ymax, xmax -> x1, y1, x2, y2
        if self.box_units != "pixels":
            out *= self._size4
        return out, scores[keep].astype(np.float32), np.rint(classes[keep]).astype(np.int64)


class SSDDecoder(Decoder):
    """A raw SSD head: box encodings ``[1, N, 4]`` + class scores ``[1, N, C(+1)]`` + anchors."""

    convention = SSD_CONVENTION

    def __post_init__(self) -> None:
        self.name = "ssd"
        self.box_index = 0
        self.anchors: Any = None
        self.scales = np.array([10, 10, 5, 5], np.float32)
        self.logits: bool | None = None
        self.background: bool | None = None
        self._card: dict[str, Any] = {}

    @classmethod
    def from_params(cls, name: str, input_size: tuple[int, int], params: Mapping[str, Any]) -> Decoder:
        """A raw SSD decoder with the card's anchors, box coder scales, score kind and background.

        Raises:
            ModelFormatError: Scales that are not 4 positive numbers, a ``score`` other than
                logit/probability, a ``background`` that is not true/false.
        """
        dec = cls(input_size, "yxhw", "normalized")
        dec._card = dict(params)
        dec.anchors = params.get("anchors")
        if params.get("scales") is not None:
            try:
                dec.scales = np.asarray(params["scales"], np.float32).reshape(4)
            except ValueError as e:
                raise ModelFormatError(f"card output.scales must be 4 numbers [y, x, h, w], got {params['scales']!r}") from e
            if not np.all(dec.scales > 0):
                raise ModelFormatError(f"card output.scales must be positive, got {params['scales']!r}")
        score = params.get("score")
        if score not in (None, "logit", "probability"):
            raise ModelFormatError(f"card output.score must be logit or probability, got {score!r}")
        dec.logits = None if score is None else score == "logit"
        if params.get("background") not in (None, True, False):
            raise ModelFormatError(f"card output.background must be true or false, got {params['background']!r}")
        dec.background = params.get("background")
        return dec

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Find the box encodings and scores, resolve anchors, score kind and background (guesses said).

        Raises:
            ModelFormatError: Shapes that do not fit, or no anchors to be had.
        """
        if len(shapes) != 2 or any(len(s) < 2 or any(d != 1 for d in s[:-2]) for s in shapes) or shapes[0][-2] != shapes[1][-2]:
            raise shape_error(self.name, shapes, "expects box encodings [1, N, 4] and class scores [1, N, C] with the same N")
        by_role = role_index(roles or {}, names, shapes)
        fours = [i for i, s in enumerate(shapes) if s[-1] == 4]
        named = [i for i, n in enumerate(names or ()) if "box" in n.lower()]
        self.box_index = by_role if by_role is not None else (fours[0] if len(fours) == 1 else (named[0] if len(named) == 1 else -1))
        if self.box_index < 0 and len(fours) == 2:  # 3 classes + background: both [1, N, 4]
            # the exporter's order (box encodings first), read from numbered names (output_0, Identity:1) when they are
            nums = [re.search(r"(\d+)$", n) for n in (names or ["", ""])]
            self.box_index = min((0, 1), key=lambda i: int(nums[i].group(1))) if all(nums) else 0
            shown = f"output {names[self.box_index]!r}" if all(nums) and names else f"output {self.box_index}"
            self.guesses.append(Guess(f"ssd: {shown} holds the box encodings (the TF Object Detection API's output order; both outputs are "
                                      "[1, N, 4])", "", "output.boxes"))
        if self.box_index < 0 or shapes[self.box_index][-1] != 4:
            raise shape_error(self.name, shapes, "no output is box encodings [1, N, 4]")
        n, c = shapes[0][-2], shapes[1 - self.box_index][-1]
        self._anchor_array(n, shapes)
        if self.background is None:
            self.background = c > 1
            what = "column 0 of the scores is the background class (TF Object Detection API)" if c > 1 else "one score column: no background class"
            self.guesses.append(Guess(f"ssd: {what}", "", "output.background"))
        if self.logits is None:
            q = (self.output_quant or [None, None])[1 - self.box_index]
            self.logits = not (q is not None and _unit_range(*q))
            kind = "logits (sigmoid applied here)" if self.logits else "probabilities (their int8 range is [0, 1])"
            self.guesses.append(Guess(f"ssd: class scores are {kind}", "", "output.score"))

    def _anchor_array(self, n: int, shapes: Sequence[Sequence[int]]) -> None:
        a = self.anchors
        if isinstance(a, Mapping):
            try:
                a = ssd_anchors(self.input_size, **dict(a))
            except TypeError as e:
                raise ModelFormatError(f"card output.anchors: {e}; expected ssd_anchor_generator keys (num_layers, min_scale, max_scale...)") from e
        elif a is None:
            a = ssd_anchors(self.input_size)
            if len(a) != n:
                raise ModelFormatError(
                    f"outputs {[list(s) for s in shapes]}: a raw SSD head needs its {n} anchors, and the TF Object Detection API "
                    f"defaults give {len(a)} at this input size; put them in the model card (output.anchors: [N, 4] ycenter, xcenter, "
                    "height, width normalised, or the anchor generator's settings), e.g. with `edgesdk card set`"
                )
            self.guesses.append(Guess(
                f"ssd: anchors: the TF Object Detection API defaults (6 layers, scales 0.2-0.95, maps {mobilenet_maps(self.input_size[1])}, "
                f"{n} anchors), box coder scales {self.scales.tolist()}", "", "output.anchors",
            ))
        try:
            a = np.asarray(a, np.float32).reshape(-1, 4)
        except ValueError as e:
            raise ModelFormatError("card output.anchors must be [N, 4] (ycenter, xcenter, height, width) or generator settings") from e
        if len(a) != n:
            raise shape_error(self.name, shapes, f"{len(a)} anchors for N = {n} boxes")
        self._anchors = a

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: score columns less the background one."""
        return int(shapes[1 - self.box_index][-1]) - (1 if self.background else 0)

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode float box encodings and scores (in model order)."""
        return self._decode(outputs, [None, None], conf)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`, comparing 8-bit scores in their own domain first."""
        return self._decode(outputs, quant, conf)

    def _decode(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        if len(outputs) != 2 or not hasattr(self, "_anchors"):
            self.locate([o.shape for o in outputs])
        enc, qb = outputs[self.box_index].reshape(-1, 4), quant[self.box_index]
        s, qs = outputs[1 - self.box_index], quant[1 - self.box_index]
        s = s.reshape(-1, s.shape[-1])[:, 1:] if self.background else s.reshape(-1, s.shape[-1])
        if len(enc) != len(self._anchors) or s.shape[1] < 1:
            raise shape_error(self.name, [o.shape for o in outputs], f"expects {len(self._anchors)} boxes and at least one class")
        table = None if qs is None else passing(conf, float(qs[0]), int(qs[1]), s.dtype.str, bool(self.logits))
        if qs is not None and table is None:  # 16-bit scores: dequantize them all
            s, qs = dequantize_some(s, qs), None
        best = s.max(axis=1)  # dequantizing and sigmoid are monotonic: the best class is the same either way
        keep = np.flatnonzero(table.take(best.view(np.uint8)) if table is not None else self._score(best) >= conf)
        if keep.size == 0:
            return empty_result()
        cls = s[keep].argmax(axis=1)
        score = best[keep]
        score = self._score(dequantize_some(score, qs) if qs is not None else score.astype(np.float32))
        t = enc[keep]
        t = (dequantize_some(t, qb) if qb is not None else t.astype(np.float32)) / self.scales
        a = self._anchors[keep]
        yc, xc = t[:, 0] * a[:, 2] + a[:, 0], t[:, 1] * a[:, 3] + a[:, 1]
        hh, hw = 0.5 * np.exp(np.minimum(t[:, 2], 20.0)) * a[:, 2], 0.5 * np.exp(np.minimum(t[:, 3], 20.0)) * a[:, 3]
        boxes = np.stack([xc - hw, yc - hh, xc + hw, yc + hh], axis=1) * self._size4
        ok = score >= conf
        return boxes[ok].astype(np.float32), score[ok], cls[ok]

    def _score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x) if self.logits else np.asarray(x, np.float32)
