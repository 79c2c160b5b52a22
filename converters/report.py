"""Accuracy of a converted model against its Keras original, and the tables that show it.

The TFLite side runs through :class:`sdk.runner.Runner` (the device runtime), so the
report measures exactly what the device will compute. No TensorFlow here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.console import table
from sdk.tflite_file import TFLiteFile


def run_tflite(data: bytes, inputs: Sequence[np.ndarray], show_progress: bool = True,
               stream: dict[str, Any] | None = None) -> tuple[list[np.ndarray], list[str], Any]:
    """Outputs of the TFLite model on every sample (batch 1 at a time), output names, and the runner.

    With ``stream`` (a step model's card section) each sample is a whole sequence, streamed
    through the step model from a zero state with the state carried by the runtime.
    """
    from sdk.runner import Runner

    runner = Runner(data)
    if stream is not None:
        return _run_stream(runner, inputs[0], stream, show_progress)
    n = len(inputs[0])
    outs: list[list[np.ndarray]] = [[] for _ in runner.outputs]
    step = max(1, n // 5)
    for i in range(n):
        res = runner.run([a[i : i + 1] for a in inputs])
        for k, o in enumerate(res):
            outs[k].append(o)
        if show_progress and ((i + 1) % step == 0 or i + 1 == n) and n >= 100:
            print(f"edgesdk: eval: TFLite {i + 1}/{n}", file=sys.stderr, flush=True)
    return [np.concatenate(o) for o in outs], runner.output_names, runner


def _run_stream(runner: Any, x: np.ndarray, stream: dict[str, Any], show_progress: bool) -> tuple[list[np.ndarray], list[str], Any]:
    from sdk.runner import StreamState

    state = StreamState(runner, stream)
    outs = []
    for i in range(len(x)):
        outs.append(state.run_sequence(x[i])[0])
        if show_progress and (i + 1 == len(x) or (i + 1) % max(1, len(x) // 5) == 0):
            print(f"edgesdk: eval: streaming sequence {i + 1}/{len(x)} through the step model", file=sys.stderr, flush=True)
    return [np.concatenate(outs)], list(state.outputs), runner


def match_outputs(keras_outs: list[np.ndarray], tfl_outs: list[np.ndarray]) -> list[int]:
    """For each Keras output, the index of the TFLite output with the same shape.

    The converter may reorder outputs; shapes (minus batch) disambiguate in practice, and
    equal shapes keep their order.
    """
    used: set[int] = set()
    order = []
    for k in keras_outs:
        cands = [i for i, t in enumerate(tfl_outs) if i not in used and t.shape[1:] == k.shape[1:]]
        if not cands:
            cands = [i for i in range(len(tfl_outs)) if i not in used and tfl_outs[i].size == k.size]
        i = cands[0] if cands else len(used)
        used.add(i)
        order.append(i)
    return order


def compare(keras_outs: list[np.ndarray], tfl_outs: list[np.ndarray], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-output max/mean absolute error, mean cosine similarity and (classifiers) top-1 agreement."""
    rows = []
    for k_idx, t_idx in enumerate(match_outputs(keras_outs, tfl_outs)):
        k = keras_outs[k_idx].astype(np.float32)
        t = tfl_outs[t_idx].astype(np.float32).reshape(k.shape)
        err = np.abs(k - t)
        kf, tf_ = k.reshape(len(k), -1), t.reshape(len(t), -1)
        denom = np.linalg.norm(kf, axis=1) * np.linalg.norm(tf_, axis=1)
        cos = np.where(denom > 0, np.sum(kf * tf_, axis=1) / np.maximum(denom, 1e-12), 1.0)
        row: dict[str, Any] = {
            "output": names[t_idx] if t_idx < len(names) else f"output_{k_idx}",
            "shape": list(k.shape[1:]),
            "max_abs_err": float(err.max()),
            "mean_abs_err": float(err.mean()),
            "cosine": float(cos.mean()),
            "min_cosine": float(cos.min()),
        }
        if nearly_constant(k):
            # random weights give the same output for every input: argmax then flips on rounding noise
            row["nearly_constant"] = True
        elif k.ndim == 2 and k.shape[1] >= 2:  # a classifier's scores or logits
            row["top1_agreement"] = float(np.mean(np.argmax(k, axis=1) == np.argmax(t, axis=1)))
        rows.append(row)
    return rows


def nearly_constant(k: np.ndarray, rel: float = 1e-3) -> bool:
    """Whether the Keras outputs hardly vary between samples (spread below ``rel`` of their magnitude)."""
    if len(k) < 2:
        return False
    spread = float(np.max(np.max(k, axis=0) - np.min(k, axis=0)))
    return spread <= rel * max(float(np.max(np.abs(k))), 1e-12)


POOR_COSINE = 0.99


def coarse_input_notes(coarse: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    """One note when an int8 output drifts (cosine below :data:`POOR_COSINE`) and inputs lost most values to zero.

    ``coarse`` comes from :func:`converters.data.coarse_inputs` (measured on the calibration
    data). Measured on the course trigger-word model with a random first BatchNormalization:
    int8 cosine 0.976 where dynamic reaches 0.9995.
    """
    if not coarse or not rows or min(r["cosine"] for r in rows) >= POOR_COSINE:
        return []
    return [f"int8 outputs drift (cosine {min(r['cosine'] for r in rows):.3f}) and {'; '.join(coarse)}: they quantize to zero, "
            "so full int8 cannot keep an input spanning this many orders of magnitude (e.g. a linear power spectrogram); "
            "mode dynamic or int16x8 keeps them, or log-compress the input in the model and retrain"]


NOT_MEANINGFUL = "outputs nearly constant: agreement not meaningful"


def _agreement(r: dict[str, Any]) -> str:
    if r.get("nearly_constant"):
        return NOT_MEANINGFUL
    return f"{r['top1_agreement'] * 100:.1f}%" if "top1_agreement" in r else "-"


def quantization_facts(f: TFLiteFile) -> dict[str, Any]:
    """Whether the model is full-integer: float tensors left (graph inputs/outputs aside), ops, I/O types."""
    floats = 0
    for sg in f.subgraphs:
        edge = set(sg.inputs) | set(sg.outputs)
        floats += sum(1 for t in sg.tensors if t.dtype.startswith("float") and t.index not in edge)
    hist = f.op_histogram()
    return {
        "full_integer": floats == 0,
        "float_tensors": floats,
        "input_dtypes": [t.dtype for t in f.inputs],
        "output_dtypes": [t.dtype for t in f.outputs],
        "subgraphs": len(f.subgraphs),
        "ops": hist,
        "while_loop": "WHILE" in hist,
    }


def latency_p50(runner: Any, inputs: Sequence[np.ndarray], runs: int = 20, warmup: int = 3) -> float:
    """Median invoke time in ms on the first sample, warm-up excluded."""
    x = [a[:1] for a in inputs]
    for _ in range(warmup):
        runner.run(x)
    runner.stats.reset()
    for _ in range(runs):
        runner.run(x)
    return float(runner.stats.summary("infer")["p50_ms"])


def format_report(report: dict[str, Any]) -> str:
    """The accuracy table of one conversion, for humans."""
    acc = report.get("accuracy") or {}
    head = f"accuracy vs Keras on {acc.get('count', 0)} samples ({acc.get('source', '?')}):"
    rows = [
        {
            "output": r["output"],
            "max abs err": f"{r['max_abs_err']:.4g}",
            "mean abs err": f"{r['mean_abs_err']:.4g}",
            "cosine": f"{r['cosine']:.5f}",
            "top-1 agree": _agreement(r),
        }
        for r in acc.get("outputs", [])
    ]
    return head + "\n" + table(rows)


def summary_row(mode: str, report: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """One line of the ``--mode all`` table."""
    if error or not report:
        return {"mode": mode, "size KiB": "-", "p50 ms": "-", "max abs err": "-", "cosine": "-", "top-1": "-", "full int": "-", "note": (error or "")[:60]}
    outs = (report.get("accuracy") or {}).get("outputs", [])
    top1 = [o["top1_agreement"] for o in outs if "top1_agreement" in o]
    constant = any(o.get("nearly_constant") for o in outs)
    lat = report.get("latency_p50_ms")
    return {
        "mode": mode,
        "size KiB": f"{report['size_bytes'] / 1024:.1f}",
        "p50 ms": f"{lat:.3f}" if lat is not None else "-",
        "max abs err": f"{max(o['max_abs_err'] for o in outs):.4g}" if outs else "-",
        "cosine": f"{min(o['cosine'] for o in outs):.5f}" if outs else "-",
        "top-1": "n/a (nearly constant)" if constant else f"{min(top1) * 100:.1f}%" if top1 else "-",
        "full int": "yes" if report.get("full_integer") else "no",
        "note": _route_note(report),
    }


def _route_note(report: dict[str, Any]) -> str:
    route = (report.get("route") or {}).get("route")
    if route == "stream":
        return "streaming step model"
    if route == "unroll":
        return "unrolled"
    return "WHILE loop" if report.get("while_loop") else ""


def format_modes(rows: Sequence[dict[str, Any]]) -> str:
    return table(list(rows))
