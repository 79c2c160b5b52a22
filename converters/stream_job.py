"""The converter child's ``stream`` route: build, check, calibrate and convert a step model.

The step model (:func:`converters.recurrent.step_model`) is checked against the full model
before anything is converted: streaming the eval sequences through it from a zero state must
give the full model's outputs. Its int8 calibration samples are what the device feeds it:
windows of the calibration sequences together with the recurrent state reached there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.recurrent import StreamPlan, step_model, stream_keras
from sdk.errors import ConversionError

MAX_STEP_SAMPLES = 500
# streaming and the full model compute the same float ops in another order: allow float noise only
TOLERANCE = 1e-3


@dataclass
class StreamJob:
    """A checked step model (batch 1, for the converter) and its calibration samples."""

    plan: StreamPlan
    model: Any
    calibration: list[np.ndarray] | None
    names: list[str]
    max_diff: float


def prepare(model: Any, plan: StreamPlan, calib: list[np.ndarray] | None, eval_in: list[np.ndarray], eval_out: np.ndarray) -> StreamJob:
    """Build the step model, compare it with ``model``'s outputs ``eval_out`` on ``eval_in`` and collect calibration samples.

    ``eval_out`` is passed in because the full model already ran on the eval data for the
    report, and running a 1,375-step GRU model again costs tens of seconds.

    Raises:
        ConversionError: When the streamed outputs differ from the full model's.
    """
    print(f"edgesdk: stream: step model of {plan.steps} steps ({plan.frames} frames in, hop {plan.hop_frames}), "
          f"state {[s['input'] for s in plan.states]}", file=sys.stderr, flush=True)
    free = step_model(model, plan, batch=None)
    x = eval_in[0][:16]
    full = np.asarray(eval_out[: len(x)])
    streamed, _ = stream_keras(free, plan, x)
    scale = float(np.max(np.abs(full))) or 1.0
    diff = float(np.max(np.abs(full - streamed))) / scale
    if diff > TOLERANCE:
        raise ConversionError(f"stream: the step model's outputs differ from the full model's (max relative difference {diff:.3g}); "
                              "convert with route='loop'")
    steps_calib = None
    if calib is not None:
        print(f"edgesdk: stream: running {len(calib[0])} calibration sequences through the step model", file=sys.stderr, flush=True)
        _, kept = stream_keras(free, plan, calib[0], keep_inputs=MAX_STEP_SAMPLES)
        names = ["frames", *(s["input"] for s in plan.states)]
        steps_calib = [kept[n].astype(np.float32) for n in names]
    batch1 = step_model(model, plan, batch=1)
    return StreamJob(plan, batch1, steps_calib, ["frames", *(s["input"] for s in plan.states)], diff)


def convert(tf: Any, job: StreamJob, mode: str, options: dict[str, Any],
            convert_fn: Callable[[Any, str, Any], tuple[bytes, str, dict[str, Any]]]) -> dict[str, Any]:
    """Convert the step model in ``mode``; writes ``<mode>.tflite`` into the job folder.

    ``convert_fn(model, mode, calibration)`` is the child's converter call, returning ``(tflite,
    how it converted, extra report fields)``; it turns converter failures into
    :class:`ConversionError` itself (so this module never imports the child). The calibration
    is passed as a dict per sample, so the inputs are matched by name, not by their order in
    the file.
    """
    from sdk.runner import Runner

    t0 = time.perf_counter()
    calib = _NamedSamples(job.names, job.calibration) if job.calibration is not None else None
    data, path_used, extra = convert_fn(job.model, mode, calib)
    names = [f"output_{i}" for i in range(1 + len(job.plan.states))]
    got = Runner(data).output_names
    if sorted(got) != sorted(names):
        raise ConversionError(f"{mode}: the step model's outputs are named {got}, not {names}; convert with route='loop'")
    (Path(options["dir"]) / f"{mode}.tflite").write_bytes(data)
    p = job.plan
    notes = [f"streaming step model: {p.steps} steps per invoke ({p.frames} frames in, {p.hop_frames} new), recurrent state "
             f"{[s['input'] for s in p.states]} carried between invokes by the runtime; matches the full Keras model to "
             f"{job.max_diff:.1e} (relative) in float"]
    return {"notes": notes, "path": f"{path_used}, step model", "seconds": round(time.perf_counter() - t0, 2), "route": "stream",
            "unrolled": False, "stream": p.card(names), **extra}


class _NamedSamples(list):
    """Calibration arrays that the child's representative dataset yields as ``{input name: sample}``."""

    def __init__(self, names: list[str], arrays: list[np.ndarray]) -> None:
        super().__init__(arrays)
        self.names = names
