"""The converter child process: ``python -m converters._child JOB_DIR``.

The TFLite converter can segfault or abort (full-int8 of a recurrent ``WHILE`` loop does),
so it runs here, never in the user's process. The parent writes ``job.json``; this process
writes, per mode, ``<mode>.tflite`` + ``<mode>.json``, plus ``model.json``, ``eval.npz``
and on failure ``error.json``. ``current`` names the mode being converted, so the parent
can say which mode crashed. Lines on stderr starting with ``edgesdk:`` are progress for
the user; everything else (TensorFlow's logs) is kept by the parent for diagnosis only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Tests set these to make the child crash in a given mode / wait before working (honoured only under pytest).
CRASH_ENV = "EDGESDK_TEST_CHILD_CRASH"
SLEEP_ENV = "EDGESDK_TEST_CHILD_SLEEP"
PARENT_ENV = "EDGESDK_CONVERT_PARENT"
PR_SET_PDEATHSIG = 1
MAX_CALIBRATION = 500
MAX_EVAL = 200


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), then check
    the parent did not die before the request; elsewhere the parent's cleanup kills the child."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        os._exit(1)


def main(job_dir: str) -> int:
    die_with_parent()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    jd = Path(job_dir)
    (jd / "child.pid").write_text(str(os.getpid()))
    _maybe_sleep()
    job = json.loads((jd / "job.json").read_text())
    try:
        run_job(job, jd)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        from sdk.errors import EdgeSDKError

        kind = type(e).__name__ if isinstance(e, EdgeSDKError) else "ConversionError"
        msg = str(e) if isinstance(e, EdgeSDKError) else f"the converter failed unexpectedly: {_first_error(str(e)) or repr(e)[:300]}"
        (jd / "error.json").write_text(json.dumps({"type": kind, "message": msg}))
        return 3
    return 0


def _quiet_tf() -> Any:
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def run_job(job: dict[str, Any], jd: Path) -> None:
    from converters import data, keras_model, loader
    from sdk.errors import ConversionError

    tf = _quiet_tf()
    custom = loader.import_custom_objects(job.get("custom_objects", []), job.get("optional_custom_objects", []))
    model, load_notes = loader.load_model(job["model"], custom, trust=bool(job.get("trust")), work=jd)
    shapes = keras_model.input_shapes(model)
    recurrent = keras_model.recurrent_layers(model)
    routes, plan = _routes(model, job, recurrent)
    (jd / "model.json").write_text(json.dumps({"inputs": [list(s) for s in shapes], "recurrent": recurrent, "load_notes": load_notes,
                                               "routes": routes}))
    sample_shapes = [s[1:] for s in shapes]
    card_input = job.get("card_input") or {}
    calib = None
    if job.get("calibration") is not None:
        calib, desc = data.load_samples(job["calibration"], sample_shapes, what="calibration", card_input=card_input, limit=MAX_CALIBRATION)
        (jd / "calibration.json").write_text(json.dumps({"source": desc, "count": len(calib[0])}))
    eval_in, eval_out = _keras_reference(job, model, sample_shapes, card_input, calib, jd)
    stream = None
    if plan is not None and any(r["route"] == "stream" for r in routes.values()):
        from converters import stream_job

        stream = stream_job.prepare(model, plan, calib, eval_in, eval_out[0])
    for mode in job["modes"]:
        (jd / "current").write_text(mode)
        _maybe_crash(mode)
        try:
            if routes.get(mode, {}).get("route") == "stream":
                info = stream_job.convert(tf, stream, mode, job, lambda m, md, c: _convert_stream(tf, m, md, job, c))
            else:
                info = convert_one(tf, model, mode, job, calib, custom, routes.get(mode, {}).get("route"))
        except ConversionError as e:  # other modes may still work
            info = {"error": str(e)}
        if mode == "int8" and calib is not None and "error" not in info:
            info["coarse_inputs"] = data.coarse_inputs(calib, _input_names(model))
        (jd / f"{mode}.json").write_text(json.dumps(info))


def _input_names(model: Any) -> list[str]:
    """The model's input names (a SavedModel's signature keys), for messages."""
    keys = getattr(model, "input_keys", None) or [getattr(t, "name", None) for t in getattr(model, "inputs", [])]
    return [k or f"input {i}" for i, k in enumerate(keys)]


def _routes(model: Any, job: dict[str, Any], recurrent: list[str]) -> tuple[dict[str, dict[str, str]], Any]:
    """The recurrent route per mode (see :mod:`converters.recurrent`), said once on stderr when inferred."""
    from converters import recurrent as rec

    if not recurrent:
        return {}, None
    requested = job.get("route") or "auto"
    plan, why_not = rec.plan(model, int(job.get("stream_steps") or rec.DEFAULT_STREAM_STEPS))
    steps = rec.sequence_steps(model)
    routes = {}
    for mode in job["modes"]:
        route, why = rec.choose_route(requested, mode, job.get("target", "cpu"), steps, plan)
        routes[mode] = {"route": route, "why": why if route != "loop" or plan is not None else f"{why} ({why_not})"}
    if requested == "stream" and plan is None:
        print(f"edgesdk: route stream: not possible ({why_not}); using the automatic choice", file=sys.stderr, flush=True)
    if requested == "auto":
        said = "; ".join(f"{m}: {r['route']}" for m, r in routes.items())
        first = next(iter(routes.values()))["why"]
        print(f"edgesdk: recurrent layers {recurrent}: route {said} ({first}); override with route= (CLI --route stream|loop|unroll)",
              file=sys.stderr, flush=True)
    return routes, plan


def _keras_reference(job: dict[str, Any], model: Any, shapes: list[tuple], card_input: dict, calib: list[np.ndarray] | None,
                     jd: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Eval inputs and the Keras outputs on them (also saved for the parent's accuracy report)."""
    from converters import data, keras_model

    if job.get("eval") is not None:
        arrays, desc = data.load_samples(job["eval"], shapes, what="eval", card_input=card_input, limit=MAX_EVAL)
    elif calib is not None:
        arrays, desc = [a[:MAX_EVAL] for a in calib], "calibration samples (no eval data given)"
    else:
        rng = np.random.default_rng(0)
        n = 8
        arrays = [rng.standard_normal((n, *[d or 16 for d in s])).astype(np.float32) for s in shapes]
        desc = "random normal inputs (no eval data given)"
    print(f"edgesdk: eval: running the Keras model on {len(arrays[0])} samples", file=sys.stderr, flush=True)
    outs = keras_model.predict(model, arrays)
    np.savez(jd / "eval.npz", **{f"in{i}": a for i, a in enumerate(arrays)}, **{f"out{i}": o for i, o in enumerate(outs)})
    (jd / "eval.json").write_text(json.dumps({"source": desc, "count": len(arrays[0])}))
    return arrays, outs


def _maybe_sleep() -> None:
    if os.environ.get(SLEEP_ENV) and "PYTEST_CURRENT_TEST" in os.environ:
        time.sleep(float(os.environ[SLEEP_ENV]))


def _maybe_crash(mode: str) -> None:
    if os.environ.get(CRASH_ENV) == mode and "PYTEST_CURRENT_TEST" in os.environ:
        os.kill(os.getpid(), signal.SIGSEGV)


def convert_one(tf: Any, model: Any, mode: str, job: dict[str, Any], calib: list[np.ndarray] | None, custom: dict,
                route: str | None = None) -> dict[str, Any]:
    """Convert ``model`` in ``mode`` (``route``: ``loop`` or ``unroll`` for recurrent models); writes ``<mode>.tflite``."""
    from converters import keras_model

    unroll = route == "unroll"
    built, notes = keras_model.rebuild(model, unroll=unroll, custom_objects=custom, trust=bool(job.get("trust")))
    t0 = time.perf_counter()
    data, path_used = _convert_or_fail(tf, built, mode, job, calib, "", selective=mode == "int8" and bool(job.get("float_layers")))
    if calib:
        data = default_input_shapes(data, calib)
    out = Path(job["dir"]) / f"{mode}.tflite"
    out.write_bytes(data)
    info = {"notes": notes, "path": path_used, "seconds": round(time.perf_counter() - t0, 2), "route": route,
            "unrolled": any(n.startswith("unrolled recurrent") for n in notes)}
    if job.get("debug_quant") and mode == "int8":

        info["debug_quant"] = worst_layers(tf, built, calib or [], data)
    return info


def _convert_stream(tf: Any, model: Any, mode: str, job: dict[str, Any], calib: list[np.ndarray] | None) -> tuple[bytes, str, dict[str, Any]]:
    """The stream route's converter call: ``(tflite, path, extra info)``, with ``float_layers`` and ``debug_quant`` as on the other routes."""
    selective = mode == "int8" and bool(job.get("float_layers"))
    data, path = _convert_or_fail(tf, model, mode, job, calib, "the step model", selective=selective)
    extra = {}
    if job.get("debug_quant") and mode == "int8":

        extra["debug_quant"] = worst_layers(tf, model, calib or [], data)
    return data, path, extra


def _convert_or_fail(tf: Any, model: Any, mode: str, job: dict[str, Any], calib: list[np.ndarray] | None, what: str,
                     selective: bool = False) -> tuple[bytes, str]:
    """Convert ``model`` (``what`` names it in the error, e.g. "the step model"); any converter failure becomes one line.

    Raises:
        ConversionError: ``<mode>: the TFLite converter failed[ on <what>]: <first MLIR error>``.
    """
    from sdk.errors import ConversionError

    try:
        if selective:
            return _selective_int8(tf, model, job, calib or []), "from_keras_model, selective (QuantizationDebugger)"
        return _convert_with_fallback(tf, model, mode, job, calib)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        on = f" on {what}" if what else ""
        raise ConversionError(f"{mode}: the TFLite converter failed{on}: {_first_error(str(e)) or repr(e)[:300]}") from e


def _selective_int8(tf: Any, model: Any, job: dict[str, Any], calib: list[np.ndarray]) -> bytes:
    """int8 with the ops writing ``job['float_layers']`` tensors left in float (TF's debugger denylist).

    Raises:
        ConversionError: When a name is no tensor of the int8 model (the names ``--debug-quant`` lists).
    """
    import difflib

    from sdk.errors import ConversionError
    from sdk.tflite_file import TFLiteFile

    names = list(job["float_layers"])
    print(f"edgesdk: int8: keeping {len(names)} layer(s) in float", file=sys.stderr, flush=True)
    conv = configure(tf, tf.lite.TFLiteConverter.from_keras_model(model), "int8", job, calib)
    plain = conv.convert()
    known = {t.name for t in TFLiteFile(plain).main.tensors}
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = {n: difflib.get_close_matches(n, known, n=1) for n in unknown}
        said = ", ".join(f"{n!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for n, h in hints.items())
        raise ConversionError(f"int8: --float-layers: no tensor named {said}; use the names `--debug-quant` lists")
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names, fully_quantize=job.get("io") != "float")
    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=_debug_dataset(calib, plain), debug_options=opts)
    return dbg.get_nondebug_quantized_model()


def _first_error(text: str) -> str:
    """The first MLIR ``error:`` of a converter message without its ``loc(...)`` prefix."""
    for line in text.splitlines():
        if "error:" in line:
            msg = line.split("error:", 1)[1].strip()
            if msg.startswith("loc(") and "): " in msg:
                msg = msg.rsplit("): ", 1)[1]
            return msg[:300]
    return (text.strip().splitlines() or [""])[0][:300]


def worst_layers(tf: Any, model: Any, calib: list[np.ndarray], int8: bytes, top: int = 10) -> list[dict[str, Any]]:
    """Per-layer quantization error (TF's QuantizationDebugger), worst first.

    Ranked by RMSE over the tensor's quantization scale (how many int8 steps the error is),
    the measure TF's debugger guide uses. The debugger's instrumented model names each tensor
    ``NumericVerify/<name><digit>:<index>``; the names reported are those of the tensors of
    ``int8`` (the converted model), which ``--float-layers`` accepts.
    """
    from sdk.tflite_file import TFLiteFile

    known = {t.name for t in TFLiteFile(int8).main.tensors}
    print("edgesdk: debug-quant: comparing every layer's float and int8 outputs", file=sys.stderr, flush=True)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calib)
    opts = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"scale": lambda f, q, s, zp: s})
    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=_debug_dataset(calib, int8), debug_options=opts)
    dbg.run()
    rows = []
    for name, m in dbg.layer_statistics.items():
        rmse = float(np.sqrt(m.get("mean_squared_error", 0.0)))
        scale = float(m.get("scale", 0.0) or 0.0)
        name = name.removeprefix("NumericVerify/").rsplit(":", 1)[0]
        name = max((k for k in known if name.startswith(k)), key=len, default=name)
        rows.append({"tensor": name, "rmse": rmse, "max_abs_error": float(m.get("max_abs_error", 0.0)), "rmse_per_scale": rmse / scale if scale else None})
    rows.sort(key=lambda r: (r["rmse_per_scale"] if r["rmse_per_scale"] is not None else r["rmse"]), reverse=True)
    return rows[:top]


def default_input_shapes(data: bytes, calib: list[np.ndarray]) -> bytes:
    """Give inputs with dynamic non-batch axes the calibration samples' shape as their default.

    The converter stores 1 for every dynamic axis; a model whose length axis is dynamic
    (e.g. frames) then cannot even be allocated at its default shape, so an interpreter fails
    before anyone can resize it. The ``shape_signature`` keeps the axis dynamic.
    """
    from sdk.tflite_file import pack, unpack

    model = unpack(data)
    graph, changed = model.subgraphs[0], False
    for i, t_idx in enumerate(graph.inputs[: len(calib)]):
        t = graph.tensors[t_idx]
        sig = list(t.shapeSignature) if t.shapeSignature is not None else []
        want = [1, *calib[i].shape[1:]]
        if any(d == -1 for d in sig[1:]) and len(want) == len(sig):
            t.shape, changed = want, True
    return pack(model, len(data)) if changed else data


def _convert_with_fallback(tf: Any, model: Any, mode: str, job: dict[str, Any], calib: list[np.ndarray] | None) -> tuple[bytes, str]:
    from converters.keras_model import SavedModelFn

    if isinstance(model, SavedModelFn):
        cf = model.batch1_function()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], model.obj)
        return _run(tf, lambda: configure(tf, conv, mode, job, calib), mode), "saved_model signature"
    try:
        return _run(tf, lambda: configure(tf, tf.lite.TFLiteConverter.from_keras_model(model), mode, job, calib), mode), "from_keras_model"
    except Exception as first:  # noqa: BLE001 - retry through a SavedModel export
        print(f"edgesdk: {mode}: from_keras_model failed ({_first_error(str(first))}); retrying through model.export", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="edgesdk-sm-", dir=job.get("dir")) as d:
            model.export(d, format="tf_saved_model", verbose=False)
            return _run(tf, lambda: configure(tf, tf.lite.TFLiteConverter.from_saved_model(d), mode, job, calib), mode), "model.export + from_saved_model"


def _run(tf: Any, make: Any, mode: str) -> bytes:
    """``make().convert()``; for int16x8, ops without a 16x8 kernel are retried in float instead of failing."""
    try:
        return make().convert()
    except RuntimeError as e:
        if mode != "int16x8" or "not yet supported for op" not in str(e):
            raise
        print(f"edgesdk: int16x8: {str(e).strip().splitlines()[-1][:120]}; keeping such ops in float", file=sys.stderr, flush=True)
        conv = make()
        conv.target_spec.supported_ops = [*conv.target_spec.supported_ops, tf.lite.OpsSet.TFLITE_BUILTINS]
        return conv.convert()


def configure(tf: Any, conv: Any, mode: str, job: dict[str, Any], calib: list[np.ndarray] | None) -> Any:
    """Set the converter's options for ``mode`` and ``job['io']``."""
    io = job.get("io")
    if mode == "fp32":
        return conv
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
        return conv
    if mode == "dynamic":
        return conv
    conv.representative_dataset = _representative(calib or [])
    if mode == "int8":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"uint8": tf.uint8, "float": tf.float32}.get(io, tf.int8)
    else:  # int16x8
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io_type = tf.int16 if io == "int16" else tf.float32
    conv.inference_input_type = io_type
    conv.inference_output_type = io_type
    return conv


def _debug_dataset(calib: list[np.ndarray], converted: bytes, n: int = 20) -> Any:
    """The first ``n`` samples for TF's QuantizationDebugger, as lists in ``converted``'s input order.

    The debugger feeds lists by position, unlike the representative dataset; a step model's
    samples carry input ``names``, and its converted inputs are ``serving_default_<name>:0``
    in an order of the converter's choosing.
    """
    from sdk.tflite_file import TFLiteFile

    arrays = [a[:n] for a in calib]
    names = getattr(calib, "names", None)
    if names:
        stored = [re.sub(r"^serving_default_|:\d+$", "", t.name) for t in TFLiteFile(converted).inputs]
        if sorted(stored) == sorted(names):
            arrays = [arrays[names.index(k)] for k in stored]

    def gen() -> Any:
        for i in range(len(arrays[0]) if arrays else 0):
            yield [a[i : i + 1] for a in arrays]

    return gen


def _representative(calib: list[np.ndarray]) -> Any:
    """Samples one at a time; as ``{input name: array}`` when ``calib`` carries ``names`` (the order of a
    multi-input model's tensors in the converted file is not the Keras order)."""
    n = len(calib[0]) if calib else 0
    names = getattr(calib, "names", None)

    def gen() -> Any:
        step = max(10, n // 5)
        for i in range(n):
            if (i + 1) % step == 0 or i + 1 == n:
                print(f"edgesdk: calibrating {i + 1}/{n}", file=sys.stderr, flush=True)
            sample = [a[i : i + 1] for a in calib]
            yield dict(zip(names, sample)) if names else sample

    return gen


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
