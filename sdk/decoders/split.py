"""``yolo-split``: the int8-safe head with boxes and scores in two outputs.

``boxes [N, 4]`` and ``scores [N, C]`` (class probabilities, sigmoid applied). Boxes are
normalised to [0, 1] of the input size, ``box_format`` ``xywh`` (centre, default) or ``xyxy``.
Each output gets its own int8 scale, so scores keep their resolution. Which output holds the
boxes: the card's ``output.boxes`` / ``output.scores`` (output names as the Runner reports
them, e.g. ``output_0``, or indices), else the one output with last axis 4, else the one named
``*box*``; when C is 4 too and neither tells, it is an error.

``decode_raw`` compares scores with the threshold in the quantized domain and dequantizes only
the rows that pass, through 256-entry tables for 8-bit outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdk.decoders.base import Decoder, Quant, Result, empty_result, lut, q_threshold, shape_error
from sdk.errors import ModelFormatError


class SplitDecoder(Decoder):
    """``boxes [N, 4]`` (normalised) + ``scores [N, C]``: the int8-safe two-output head."""

    def __post_init__(self) -> None:
        self.name = "yolo-split"
        self.box_index = 0
        self._plan: tuple[Any, ...] | None = None  # decode_raw's tables for the last (conf, quant)

    def locate(self, shapes: Sequence[Sequence[int]], names: Sequence[str] | None = None, roles: Mapping[str, Any] | None = None) -> None:
        """Find which output holds the boxes: the card's ``boxes``/``scores`` roles, else shapes, else names.

        Raises:
            ModelFormatError: Shapes that do not fit, a role naming no output, or two
                ``[1, N, 4]`` outputs (4 classes) with nothing saying which holds the boxes.
        """
        if len(shapes) != 2:
            raise shape_error(self.name, shapes, f"expects two outputs (boxes, scores), got {len(shapes)}")
        # the last two axes; anything before them must be a batch of 1 (C may be 1: one class)
        dims = [list(s[-2:]) for s in shapes]
        if any(len(s) < 2 or any(d != 1 for d in s[:-2]) for s in shapes) or dims[0][0] != dims[1][0]:
            raise shape_error(self.name, shapes, "expects boxes [1, N, 4] and scores [1, N, C] with the same N")
        by_role = role_index(roles or {}, names, shapes)
        fours = [i for i, d in enumerate(dims) if d[1] == 4]
        if by_role is not None:
            if dims[by_role][1] != 4:
                raise shape_error(self.name, shapes, f"the card's output roles put the boxes in output {by_role}, whose last axis is not 4")
            self.box_index = by_role
            return
        if not fours:
            raise shape_error(self.name, shapes, "no output has a last axis of 4 for the boxes")
        if len(fours) == 2:
            named = [i for i, n in enumerate(names or ()) if "box" in n.lower()]
            if len(named) != 1:
                shown = [list(s) for s in shapes]
                raise ModelFormatError(
                    f"outputs {shown} (names {list(names or [])}) are ambiguous for the yolo-split layout: both have a last "
                    "axis of 4 (4 classes) and nothing says which holds the boxes; set output.boxes and output.scores in "
                    "the model card to the output names (edgesdk train detect records them), or set decoder to the model's family",
                    param="decoder",
                )
            fours = named
        self.box_index = fours[0]

    def num_classes(self, shapes: Sequence[Sequence[int]]) -> int:
        """``C``: the last axis of the scores output."""
        return int(shapes[1 - self.box_index][-1])

    def __call__(self, outputs: Sequence[np.ndarray], conf: float) -> Result:
        """Decode the float boxes and scores outputs (in model order)."""
        return self._decode(outputs, conf)

    def decode_raw(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> Result:
        """As :meth:`Decoder.decode_raw`, thresholding 8-bit scores before dequantizing."""
        if len(outputs) != 2 or len(quant) != 2:
            raise shape_error(self.name, [o.shape for o in outputs], "expects two outputs")
        key = (conf, list(quant), outputs[0].dtype, outputs[1].dtype, self.box_index)
        if self._plan is None or self._plan[0] != key:
            self._plan = (key, *self._make_plan(outputs, quant, conf))
        threshold, lut_s, lut_b, scaled = self._plan[1:]
        if threshold is None:
            return super().decode_raw(outputs, quant, conf)
        return self._decode(outputs, threshold, lut_s, lut_b, scaled)

    def _make_plan(self, outputs: Sequence[np.ndarray], quant: Sequence[Quant], conf: float) -> tuple[Any, ...]:
        """``(threshold, score table, box table, box table scaled to pixels)``; threshold None: no fast path."""
        qb, qs = quant[self.box_index], quant[1 - self.box_index]
        st, bt = outputs[1 - self.box_index].dtype.str, outputs[self.box_index].dtype.str
        threshold = None if qs is None else q_threshold(conf, float(qs[0]), int(qs[1]), st)
        lut_s = None if qs is None else lut(float(qs[0]), int(qs[1]), st)
        lut_b = None if qb is None else lut(float(qb[0]), int(qb[1]), bt)
        if threshold is None or lut_s is None or (qb is not None and lut_b is None):  # 16-bit: dequantize all
            return None, None, None, False
        w, h = self.input_size
        if lut_b is not None and self.box_format == "xyxy" and self.box_units != "pixels" and w == h:
            # corners × size straight from the table: the same float32 products _to_pixels makes
            return threshold, lut_s, lut_b * np.float32(w), True
        return threshold, lut_s, lut_b, False

    def _decode(
        self,
        outputs: Sequence[np.ndarray],
        threshold: float | int,
        lut_s: np.ndarray | None = None,
        lut_b: np.ndarray | None = None,
        scaled: bool = False,
    ) -> Result:
        """Decode floats, or stored 8-bit values: scores compared with ``threshold`` in their own
        domain, then only the passing rows dequantized through the tables ``lut_s`` / ``lut_b``."""
        if len(outputs) != 2:
            raise shape_error(self.name, [o.shape for o in outputs], "expects two outputs")
        scores = outputs[1 - self.box_index]
        c = scores.shape[-1]
        keep = np.flatnonzero((scores.reshape(-1, c) >= threshold).any(axis=1))  # rows, ascending, each once
        if keep.size == 0:
            return empty_result()
        rows = scores.reshape(-1, c)[keep]
        cls = rows.argmax(axis=1)  # dequantizing is monotonic: the same class either way
        best = rows[np.arange(keep.size), cls]
        boxes = outputs[self.box_index].reshape(-1, 4)[keep]
        best = best.astype(np.float32) if lut_s is None else lut_s.take(best.view(np.uint8))
        if lut_b is not None:
            boxes = lut_b.take(boxes.view(np.uint8))
            if scaled:
                return boxes, best, cls
        return self._to_pixels(boxes, self.box_units != "pixels"), best, cls


def role_index(roles: Mapping[str, Any], names: Sequence[str] | None, shapes: Sequence[Sequence[int]]) -> int | None:
    """Index of the boxes output from the card's ``output.boxes`` / ``output.scores``, or None."""
    found: dict[str, int] = {}
    for role in ("boxes", "scores"):
        ref = roles.get(role)
        if ref is None:
            continue
        if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < len(shapes):
            found[role] = ref
        elif isinstance(ref, str) and names and ref in names:
            found[role] = list(names).index(ref)
        else:
            raise ModelFormatError(
                f"card output.{role} is {ref!r}, which names no output of this model (outputs {list(names or [])}, "
                f"shapes {[list(s) for s in shapes]}); fix the card or set decoder to the model's family",
                param="decoder",
            )
    if "boxes" in found and "scores" in found and found["boxes"] == found["scores"]:
        raise ModelFormatError(f"card output.boxes and output.scores both name output {found['boxes']}; they must differ")
    if "boxes" in found:
        return found["boxes"]
    return 1 - found["scores"] if "scores" in found else None
