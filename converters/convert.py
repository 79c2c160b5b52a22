"""``convert()``: a Keras model to a correct, quantized, self-describing ``.tflite``.

Options are checked against a capability table before any work; the TensorFlow converter
runs in a child process (:mod:`converters.child_proc`); the result carries a model card
with the quantization, the accuracy against Keras (measured with the device runtime) and
the source model's SHA-256, and is written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdk.card import ModelCard, atomic_write, embed_card
from sdk.errors import ConfigError, ConversionError, ModelFormatError
from sdk.tflite_file import TFLiteFile

log = logging.getLogger("edgesdk")

MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
CALIBRATED = ("int8", "int16x8")
TARGET_MODES = {
    "cpu": MODES,
    "edgetpu": ("int8",),  # the Edge TPU runs only full-integer 8-bit models
    "gpu": ("fp32", "fp16", "int8"),  # the GPU delegate has no hybrid (dynamic-range) or int16 kernels
}
IO_TYPES = {"fp32": ("float",), "fp16": ("float",), "dynamic": ("float",), "int8": ("int8", "uint8", "float"), "int16x8": ("float", "int16")}
RECOMMENDED_CALIBRATION = 100


@dataclass
class ConvertResult:
    """One converted model.

    Attributes:
        path: The written model (the compiled ``*_edgetpu.tflite`` when the compiler ran).
        mode: Quantization mode.
        size_bytes: File size.
        report: Accuracy vs Keras, quantization facts, notes (JSON-able).
        card: The embedded model card.
    """

    path: Path
    mode: str
    size_bytes: int
    report: dict[str, Any]
    card: ModelCard
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "mode": self.mode, "size_bytes": self.size_bytes, "report": self.report, "notes": self.notes}


def check_options(mode: str, target: str = "cpu", io: str | None = None, calibration: Any = None, float_layers: Sequence[str] = ()) -> None:
    """Reject unsupported or conflicting options before any work.

    Raises:
        ConfigError: Naming the option, what is supported and what to do.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r} is not supported; choose one of {', '.join(MODES)} (or all)")
    if target not in TARGET_MODES:
        raise ConfigError(f"--target {target!r} is not supported; choose one of {', '.join(TARGET_MODES)}")
    if mode not in TARGET_MODES[target]:
        raise ConfigError(f"--mode {mode} cannot run on --target {target}; that target supports {', '.join(TARGET_MODES[target])}")
    if io is not None and io not in IO_TYPES[mode]:
        raise ConfigError(f"--io {io} does not apply to --mode {mode}; it supports {', '.join(IO_TYPES[mode])}")
    if target == "edgetpu" and io == "float":
        raise ConfigError("--io float with --target edgetpu leaves float quantize ops at the edges that run on the CPU; use --io int8 or uint8")
    if mode in CALIBRATED and calibration is None:
        raise ConfigError(
            f"--mode {mode} needs --calibration PATH (a .npy/.npz [N, ...], or a folder of images/.wav files, ~{RECOMMENDED_CALIBRATION}+ samples "
            "like the real inputs); it never calibrates on random noise"
        )
    if float_layers:
        if mode != "int8":
            raise ConfigError(f"--float-layers keeps layers of an int8 model in float; it does not apply to --mode {mode}")
        if target == "edgetpu":
            raise ConfigError("--float-layers with --target edgetpu: float layers run on the CPU and split the Edge TPU graph; use --target cpu")
        if io == "uint8":
            raise ConfigError("--float-layers supports --io int8 or float, not uint8")


def default_output(model_path: Path | None, mode: str) -> Path:
    """``<stem>_<mode>.tflite`` beside the model (``model_<mode>.tflite`` for in-memory models)."""
    if model_path is None:
        return Path(f"model_{mode}.tflite")
    stem = model_path.name if model_path.is_dir() else model_path.stem
    return model_path.parent / f"{stem}_{mode}.tflite"


def check_output(path: Path) -> None:
    """Raise ConfigError unless ``path`` can be written (its folder exists and is writable)."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"-o {path}: is a folder; give a .tflite file name")
    if not parent.is_dir():
        raise ConfigError(f"-o {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"-o {path}: folder {parent} is not writable; choose another output path")


def check_model_path(p: Path) -> None:
    """Raise ModelFormatError unless ``p`` is a readable .keras/.h5/.dat file or a SavedModel folder."""
    from converters.files import check_model_path as check
    from converters.import_graph import graph_model  # TF.js model.json / frozen .pb: converters.import_graph reads them

    if graph_model(p) is None:
        check(p)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]
    for q in files:
        with open(q, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _custom_specs(model: Any) -> list[str]:
    """``module:Class`` of an in-memory model's non-Keras layers that the child can import."""
    specs = set()
    for layer in getattr(model, "_flatten_layers", lambda: [])():
        cls = type(layer)
        if not cls.__module__.startswith(("keras", "tensorflow", "tf_keras")) and cls.__module__ != "__main__":
            specs.add(f"{cls.__module__}:{cls.__qualname__}")
    return sorted(specs)


def _source(model: Any, work: Path, custom_objects: dict[str, Any] | None) -> tuple[Path, bool, list[str]]:
    """The model as a file the child can load: (path, was_in_memory, custom object specs)."""
    specs = [f"{c.__module__}:{c.__qualname__}" for c in (custom_objects or {}).values()]
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        check_model_path(p)
        return p, False, specs
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(model, keras.Model):
        raise ModelFormatError(f"model: expected a .keras/.h5 path, a SavedModel folder or a keras.Model, got {type(model).__name__}")
    p = work / f"{model.name or 'model'}.keras"
    try:
        model.save(p)
    except (NotImplementedError, TypeError, ValueError) as e:
        raise ModelFormatError(f"model {model.name!r}: cannot be saved as .keras ({str(e).splitlines()[0][:160] if str(e) else 'no reason given'}); "
                               "implement get_config() in custom layers/models") from e
    return p, True, specs


def _stage_data(data: Any, work: Path, name: str) -> Any:
    """Arrays go to an .npz the child reads; paths pass through."""
    if data is None:
        return None
    if isinstance(data, np.ndarray) or (isinstance(data, (list, tuple)) and data and isinstance(data[0], np.ndarray)):
        arrays = [data] if isinstance(data, np.ndarray) else list(data)
        p = work / f"{name}.npz"
        np.savez(p, **{f"x{i:02d}": a for i, a in enumerate(arrays)})
        return str(p)
    p = Path(data)
    if not p.exists():
        raise ConfigError(f"--{name}: {p}: no such file or folder")
    if p.is_dir() and not any(q.is_file() for q in p.iterdir()):
        raise ConfigError(f"--{name}: {p}: the folder is empty; expected images or .wav files")
    return str(p.resolve())


def convert(
    model: Any,
    mode: str = "int8",
    output: str | Path | None = None,
    calibration: Any = None,
    eval_data: Any = None,
    card: ModelCard | None = None,
    target: str = "cpu",
    io: str | None = None,
    progress: bool = True,
    *,
    unroll: bool | None = None,
    custom_objects: dict[str, Any] | None = None,
    debug_quant: bool = False,
    float_layers: Sequence[str] = (),
    route: str = "auto",
    stream_steps: int | None = None,
    trust_model_code: bool = False,
) -> ConvertResult:
    """Convert ``model`` to a ``.tflite`` file with an embedded model card and an accuracy report.

    Args:
        model: A ``.keras``/``.h5`` path, a SavedModel folder, a dlib DNN ``.dat`` file, or an
            in-memory ``keras.Model``.
        mode: ``fp32``, ``fp16``, ``dynamic``, ``int8`` (full integer) or ``int16x8``.
        output: Output path; default ``<stem>_<mode>.tflite`` beside the model.
        calibration: Samples for int8/int16x8 (array ``[N, ...]``, list of arrays, .npy/.npz, folder).
        eval_data: Samples for the accuracy report (default: the calibration samples).
        card: Task-specific card fields; quantization/metrics/source are filled in.
        target: ``cpu``, ``edgetpu`` (also runs readiness and ``edgetpu_compiler``) or ``gpu``.
        io: I/O tensor type: int8 (default for int8), uint8 or float; int16 or float for int16x8.
        progress: Progress lines on stderr.
        unroll: ``True``/``False`` force the ``unroll``/``loop`` route (older spelling of ``route``).
        custom_objects: Custom layer classes and functions (must live in importable modules).
        debug_quant: int8 only: add the layers with the largest quantization error to the report.
        float_layers: int8 only: tensor names (as ``debug_quant`` lists them) whose ops stay float.
        route: Recurrent models: ``auto``, ``stream`` (a step model with the state as tensors),
            ``loop`` (one WHILE loop) or ``unroll`` (see :mod:`converters.recurrent`).
        stream_steps: Output steps per invoke of a streaming step model (default 4).
        trust_model_code: Allow code stored in the model file (Lambda layers) to load and run.

    Raises:
        ConfigError, ModelFormatError, ConversionError: One-line messages.
    """
    results = convert_modes(model, [mode], output=output, calibration=calibration, eval_data=eval_data, card=card, target=target,
                            io=io, progress=progress, unroll=unroll, custom_objects=custom_objects, debug_quant=debug_quant,
                            float_layers=float_layers, route=route, stream_steps=stream_steps, trust_model_code=trust_model_code)
    res = results[mode]
    if isinstance(res, str):
        raise ConversionError(res)
    return res


def convert_modes(
    model: Any,
    modes: Sequence[str],
    output: str | Path | None = None,
    calibration: Any = None,
    eval_data: Any = None,
    card: ModelCard | None = None,
    target: str = "cpu",
    io: str | None = None,
    progress: bool = True,
    *,
    unroll: bool | None = None,
    custom_objects: dict[str, Any] | None = None,
    latency_runs: int = 0,
    custom_specs: Sequence[str] = (),
    debug_quant: bool = False,
    float_layers: Sequence[str] = (),
    route: str = "auto",
    stream_steps: int | None = None,
    trust_model_code: bool = False,
) -> dict[str, ConvertResult | str]:
    """Convert ``model`` in several modes with one child process (one TensorFlow start).

    ``output`` is a file for one mode, a folder for several. A mode that fails maps to its
    one-line error message instead of a result. ``latency_runs`` > 0 adds ``latency_p50_ms``.
    ``custom_specs`` names custom objects as ``FILE.py`` or ``module:Name`` (the CLI's
    ``--custom-objects``). Other arguments as in :func:`convert`.
    """
    from converters import child_proc, workdir
    from converters.recurrent import ROUTES

    if route not in ROUTES:
        raise ConfigError(f"route {route!r} is not supported; choose one of {', '.join(ROUTES)}")
    if stream_steps is not None and stream_steps < 1:
        raise ConfigError(f"stream_steps must be >= 1, got {stream_steps}")
    if unroll is not None:
        route = "unroll" if unroll else "loop"

    modes = list(modes)
    for m in modes:
        # with several modes, --io applies to the modes that support it
        check_options(m, target, io if len(modes) == 1 or io in IO_TYPES[m] else None, calibration, float_layers if m == "int8" else ())
    dat = Path(model) if isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".dat" else None
    if dat is not None:
        from converters.dlib import dlib_card, load_dlib_as_keras, read_dat

        check_model_path(dat)
        net = read_dat(dat)
        card = card or dlib_card(net)
        model = load_dlib_as_keras(net)
    from converters.import_graph import graph_model, import_graph

    graph = graph_model(model)  # TF.js model.json / frozen .pb (a GraphModel for --inputs/--outputs): imported to a SavedModel
    with workdir.run_folder() as work:
        if graph is not None:
            model, card = import_graph(graph, work, card, progress)
        src, in_memory, specs = _source(model, work, custom_objects)
        origin = dat or (graph.path if graph is not None else None) or (None if in_memory else src)  # names the outputs and is hashed into the card
        outputs = _outputs(origin, modes, output)
        for p in outputs.values():
            check_output(p)
        job = {
            "model": str(src), "modes": modes, "io": io, "target": target, "route": route, "stream_steps": stream_steps, "dir": str(work),
            "trust": bool(trust_model_code or in_memory),  # an in-memory model's code already runs in this process
            "calibration": _stage_data(calibration, work, "calibration"), "eval": _stage_data(eval_data, work, "eval"),
            "card_input": (card.input if card else {}), "custom_objects": sorted(set(specs) | set(custom_specs)),
            "optional_custom_objects": _custom_specs(model) if in_memory else [],
            "debug_quant": debug_quant, "float_layers": list(float_layers),
        }
        child = child_proc.run_modes(work, job, progress)
        for info, data in ((child.calibration, calibration), (child.eval, eval_data)):
            if info and data is not None and not isinstance(data, (str, os.PathLike)):
                info["source"] = "array"  # not the temporary .npz it was passed through
        if child.calibration and child.calibration["count"] < RECOMMENDED_CALIBRATION:
            log.warning("calibration: only %d samples; %d+ like the real inputs are recommended", child.calibration["count"], RECOMMENDED_CALIBRATION)
        if card is None:
            from converters.course import guess_card

            card = guess_card(child.model.get("inputs") or [])
        ctx = {"src": origin or src, "in_memory": origin is None, "card": card, "child": child, "work": work, "target": target, "progress": progress, "latency_runs": latency_runs,
               "float_layers": list(float_layers)}
        out: dict[str, ConvertResult | str] = {}
        for m in modes:
            try:
                out[m] = child.failed[m] if m in child.failed else _finish(m, outputs[m], ctx)
            except ConversionError as e:  # this mode's model is unusable; the other modes may be fine
                out[m] = str(e)
    return out


def _outputs(src: Path | None, modes: list[str], output: str | Path | None) -> dict[str, Path]:
    if output is None:
        return {m: default_output(src, m) for m in modes}
    out = Path(output)
    if len(modes) == 1 and not out.is_dir():
        if out.suffix != ".tflite":
            raise ConfigError(f"-o {out}: expected a file name ending in .tflite")
        return {modes[0]: out}
    if not out.is_dir():
        raise ConfigError(f"-o {out}: with several modes, -o must be an existing folder")
    return {m: out / default_output(src, m).name for m in modes}


def _finish(mode: str, out_path: Path, ctx: dict[str, Any]) -> ConvertResult:
    """Report, card, atomic write (and the Edge TPU steps) for one converted mode."""
    from converters import report as rpt

    child, work = ctx["child"], ctx["work"]
    data = (work / f"{mode}.tflite").read_bytes()
    f = TFLiteFile(data, str(out_path))
    rep: dict[str, Any] = {"mode": mode, "size_bytes": len(data), **rpt.quantization_facts(f)}
    info = child.done[mode]
    notes = [*child.model.get("load_notes", []), *info.get("notes", [])]
    route = (child.model.get("routes") or {}).get(mode)
    if route:
        rep["route"] = {**route, "route": info.get("route") or route["route"]}
        notes.insert(0, f"recurrent route: {rep['route']['route']} ({route['why']})")
    if info.get("unrolled"):
        notes.append("unrolling copies the recurrent cell per time step, so this model can be larger than the fp32 WHILE-loop one")
    if mode == "int8" and ctx["float_layers"]:
        notes.append(f"{rep['float_tensors']} tensors kept in float by --float-layers; those ops run in float")
    elif mode == "int8" and not rep["full_integer"]:
        notes.append(f"{rep['float_tensors']} tensors stayed float (the converter found no int8 range for them, e.g. a constant "
                     "zero-range tensor such as an untrained zero bias); those ops run in float and on the CPU of an Edge TPU")
    if info.get("path") != "from_keras_model":
        notes.append(f"converted via {info.get('path')}")
    with np.load(work / "eval.npz") as z:
        ins = [z[f"in{i}"] for i in range(sum(k.startswith("in") for k in z.files))]
        kouts = [z[f"out{i}"] for i in range(sum(k.startswith("out") for k in z.files))]
    try:
        touts, names, runner = rpt.run_tflite(data, ins, ctx["progress"], info.get("stream"))
    except ModelFormatError as e:  # e.g. int16x8 kernels refusing a scale ratio the converter wrote (random weights)
        detail = str(e).split("cannot load this model: ", 1)[-1]
        raise ConversionError(f"{mode}: the converter wrote a model the TFLite interpreter refuses ({detail}); nothing was written; "
                              "try another mode") from e
    rep["accuracy"] = {**(child.eval or {}), "outputs": rpt.compare(kouts, touts, names)}
    notes += rpt.coarse_input_notes(info.get("coarse_inputs") or [], rep["accuracy"]["outputs"])
    if ctx["latency_runs"]:
        rep["latency_p50_ms"] = rpt.latency_p50(runner, ins, ctx["latency_runs"])
    rep["notes"] = notes
    if info.get("debug_quant"):
        rep["debug_quant"] = info["debug_quant"]
    card = _card(mode, ctx, rep, f)
    final = embed_card(data, card)
    rep["size_bytes"] = len(final)
    atomic_write(out_path, final)
    path = out_path
    if ctx["target"] == "edgetpu":
        from converters.edgetpu import compile_model
        from sdk.edgetpu_readiness import readiness

        rep["edgetpu"] = readiness(TFLiteFile(final, str(out_path))).to_json()
        compiled, compile_info = compile_model(out_path)
        rep["edgetpu"]["compiler"] = compile_info
        path = compiled or out_path
    return ConvertResult(path=path, mode=mode, size_bytes=path.stat().st_size, report=rep, card=card, notes=notes)


def _card(mode: str, ctx: dict[str, Any], rep: dict[str, Any], f: TFLiteFile) -> ModelCard:
    """The caller's card with quantization, metrics and source filled in."""
    base: ModelCard = ctx["card"] or ModelCard()
    stream = ctx["child"].done[mode].get("stream")
    if stream:  # the device carries the state between invokes as these tensors
        base = base.replace(input={**base.input, "stream": stream})
    calib = ctx["child"].calibration if mode in CALIBRATED else None
    quant = {**base.quantization, "mode": mode, "io": rep["input_dtypes"][0] if rep["input_dtypes"] else None,
             "target": ctx["target"], "full_integer": rep["full_integer"],
             "calibration": calib, "unrolled": ctx["child"].done[mode].get("unrolled", False),
             **({"route": rep["route"]["route"]} if "route" in rep else {}),
             **({"float_layers": ctx["float_layers"]} if mode == "int8" and ctx["float_layers"] else {})}
    acc = rep["accuracy"]
    metrics = {**base.metrics, "vs_keras": {"data": acc.get("source"), "count": acc.get("count"),
               "outputs": [{k: v for k, v in o.items() if k != "shape"} for o in acc["outputs"]]}}
    src: Path = ctx["src"]
    source = {**base.source, "sha256": sha256(src)}
    if not ctx["in_memory"] or "file" not in base.source:
        source["file"] = src.name if not ctx["in_memory"] else base.source.get("file", "in-memory keras.Model")
    return base.replace(quantization=quant, metrics=metrics, source=source)

