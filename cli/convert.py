"""``edgesdk convert MODEL --mode ...``: Keras to TFLite with a card and an accuracy report.

Every option is checked before TensorFlow starts; bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdk.console import Output

MODE_CHOICES = ("fp32", "fp16", "dynamic", "int8", "int16x8", "all")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "convert",
        parents=[common],
        help="convert a Keras model to .tflite (quantize, embed the card, report accuracy vs Keras)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="a .keras or .h5 file, a SavedModel folder, a TF.js model.json or a frozen .pb")
    p.add_argument("--mode", "-m", choices=MODE_CHOICES, default="int8", help="precision; 'all' converts every mode and prints a comparison table")
    p.add_argument("--calibration", "-c", metavar="PATH", help="int8/int16x8 samples: .npy/.npz [N, ...], or a folder of images or .wav files")
    p.add_argument("--eval", "-e", metavar="PATH", help="samples for the accuracy report (default: the calibration samples)")
    p.add_argument("--target", "-t", choices=("cpu", "edgetpu", "gpu"), default="cpu", help="where the model will run")
    p.add_argument("--io", choices=("int8", "uint8", "float", "int16"), help="input/output tensor type (default: int8 for int8, float otherwise)")
    p.add_argument("-o", "--output", metavar="OUT", help="output .tflite (a folder with --mode all); default <model>_<mode>.tflite beside the model")
    p.add_argument("--card", metavar="CARD.yaml", help="model card fields (task, input, output...) to embed")
    p.add_argument("--no-unroll", action="store_true", help="same as --route loop: keep GRU/LSTM as WHILE loops even for int8 (the converter crashes on them)")
    p.add_argument("--route", choices=("auto", "stream", "loop", "unroll"), default="auto",
                   help="recurrent models: a streaming step model with the state as tensors, one WHILE loop, or unrolled; auto picks per model and says which")
    p.add_argument("--stream-steps", type=int, default=None, metavar="N", help="output steps per invoke of a streaming step model (default 4)")
    p.add_argument("--custom-objects", nargs="+", metavar="FILE.py|MODULE:NAME", default=[],
                   help="custom layers/functions: a Python file (its CUSTOM_OBJECTS dict, or every class and function in it) or module:Name")
    p.add_argument("--trust-model-code", action="store_true",
                   help="allow Python code stored in the model file (Lambda layers) to load and run: only for files you trust")
    p.add_argument("--debug-quant", action="store_true", help="int8: list the layers with the largest quantization error")
    p.add_argument("--float-layers", metavar="NAME,...", type=lambda v: [n.strip() for n in v.split(",") if n.strip()], default=[],
                   help="int8: keep the ops writing these tensors (names as --debug-quant lists them) in float")
    p.add_argument("--runs", type=int, default=20, help="invocations for the latency p50 of --mode all")
    # graph importers (converters.import_graph): TF.js model.json, TF1 frozen .pb
    names = lambda v: [n.strip() for n in v.split(",") if n.strip()]  # noqa: E731
    p.add_argument("--inputs", metavar="NAME,...", type=names, default=[], help="TF.js/.pb: tensors that become the inputs (default: placeholders)")
    p.add_argument("--outputs", metavar="NAME,...", type=names, default=[], help="TF.js/.pb: tensors returned (default: signature, else sinks)")
    p.add_argument("--keep-layout", action="store_true", help="TF.js/.pb: keep NCHW image inputs (default: rewritten to NHWC)")
    p.add_argument("--input-shapes", metavar="D,D,..;...", default=None, help=".pb: shapes of --inputs the graph leaves open, e.g. 1,300,300,3")
    p.set_defaults(func=run)


def _preflight(args: argparse.Namespace) -> tuple[list[str], Any, list[str]]:
    """All checks that need no TensorFlow: model path, options, output, data paths, card."""
    from converters.convert import MODES, TARGET_MODES, check_model_path, check_options, check_output, default_output
    from sdk.errors import ConfigError

    model = Path(args.model)
    check_model_path(model)
    from converters.import_graph import graph_model  # --inputs/--outputs/--keep-layout: graph importers only

    if (args.inputs or args.outputs or args.keep_layout or args.input_shapes) and graph_model(model) is None:
        raise ConfigError("--inputs/--outputs/--input-shapes/--keep-layout apply to a TF.js model.json or a frozen .pb only")
    try:
        args.input_shapes = tuple(tuple(int(d) for d in s.split(",")) for s in args.input_shapes.split(";")) if args.input_shapes else ()
    except ValueError as e:
        raise ConfigError(f"--input-shapes {args.input_shapes!r}: expected integers such as 1,300,300,3 (';' between inputs)") from e
    notes = []
    if args.mode == "all":
        modes = [m for m in MODES if m in TARGET_MODES.get(args.target, MODES)]
        if args.calibration is None:
            notes.append("int8/int16x8 skipped: they need --calibration")
            modes = [m for m in modes if m not in ("int8", "int16x8")]
        if not modes:
            raise ConfigError(f"--mode all --target {args.target}: no mode left to convert; pass --calibration")
        out_dir = Path(args.output) if args.output else model.parent
        if not out_dir.is_dir():
            raise ConfigError(f"-o {out_dir}: with --mode all, -o must be an existing folder")
        for m in modes:
            check_options(m, args.target, args.io if args.io in _io_of(m) else None, args.calibration, args.float_layers if m == "int8" else ())
            check_output(out_dir / default_output(model, m).name)
    else:
        modes = [args.mode]
        check_options(args.mode, args.target, args.io, args.calibration, args.float_layers)
        check_output(Path(args.output) if args.output else default_output(model, args.mode))
    if args.no_unroll and args.route not in ("auto", "loop"):
        raise ConfigError(f"--no-unroll conflicts with --route {args.route}; use one of them")
    if args.stream_steps is not None and args.stream_steps < 1:
        raise ConfigError(f"--stream-steps must be >= 1, got {args.stream_steps}")
    if args.debug_quant and "int8" not in modes:
        raise ConfigError(f"--debug-quant analyses int8 quantization; it does not apply to --mode {args.mode}")
    for opt, value in (("--calibration", args.calibration), ("--eval", args.eval)):
        if value is not None:
            _check_data_path(opt, Path(value))
    card = None
    if args.card:
        from sdk.card import ModelCard
        from sdk.yamlio import read_bytes

        try:
            card = ModelCard.from_yaml(read_bytes(args.card, "model card", f"--card {args.card}"), args.card)  # bounded, binary refused
        except OSError as e:
            raise ConfigError(f"--card {args.card}: cannot read ({e.strerror})") from e
    return modes, card, notes


# library parameters named in converter messages, and the flags that set them
_FLAGS = (("custom_objects=", "--custom-objects "), ("trust_model_code=True", "--trust-model-code"), ("route='loop'", "--route loop"),
          ("route=", "--route "), ("card=", "--card "), ("stream_steps", "--stream-steps"))


def _flags(message: str) -> str:
    for param, flag in _FLAGS:
        message = message.replace(param, flag)
    return message


@contextlib.contextmanager
def _flag_names() -> Iterator[None]:
    """Re-raise the converter's errors with flags where they name library parameters."""
    from sdk.errors import EdgeSDKError

    try:
        yield
    except EdgeSDKError as e:
        raise type(e)(_flags(str(e))) from e


def _convert(args: argparse.Namespace, modes: list[str], output: Any, card: Any) -> dict[str, Any]:
    from converters.convert import convert_modes
    from converters.import_graph import GraphModel, graph_model

    model: Any = args.model
    if graph_model(Path(args.model)) is not None:  # TF.js model.json / frozen .pb with the importer flags
        model = GraphModel(Path(args.model), tuple(args.inputs), tuple(args.outputs), "keep" if args.keep_layout else "auto", args.input_shapes)
    return convert_modes(
        model, modes, output=output, calibration=args.calibration, eval_data=args.eval, card=card, target=args.target,
        io=args.io, progress=not args.quiet, unroll=False if args.no_unroll else None, custom_objects=None,
        latency_runs=args.runs if args.mode == "all" else 0, custom_specs=[_spec(c) for c in args.custom_objects], debug_quant=args.debug_quant,
        float_layers=args.float_layers, route=args.route, stream_steps=args.stream_steps, trust_model_code=args.trust_model_code,
    )


def _spec(value: str) -> str:
    """A ``--custom-objects`` value: an existing ``FILE.py`` (made absolute for the converter process) or ``module:Name``."""
    from sdk.errors import ConfigError

    if value.endswith(".py"):
        p = Path(value)
        if not p.is_file():
            raise ConfigError(f"--custom-objects {value}: no such file")
        return str(p.resolve())
    if ":" not in value:
        raise ConfigError(f"--custom-objects {value}: expected a Python file (FILE.py) or module:Name")
    return value


def _io_of(mode: str) -> tuple[str, ...]:
    from converters.convert import IO_TYPES

    return IO_TYPES[mode]


def _check_data_path(opt: str, p: Path) -> None:
    from converters.data import IMAGE_EXTS, WAV_EXTS
    from sdk.errors import ConfigError

    if not p.exists():
        raise ConfigError(f"{opt} {p}: no such file or folder")
    if p.is_dir():
        if not any(q.suffix.lower() in IMAGE_EXTS + WAV_EXTS for q in p.iterdir() if q.is_file()):
            raise ConfigError(f"{opt} {p}: the folder holds no images or .wav files")
    elif p.suffix.lower() not in (".npy", ".npz"):
        raise ConfigError(f"{opt} {p}: expected a .npy/.npz array [N, ...] or a folder of images or .wav files, got {p.suffix or 'no extension'}")


def run(args: argparse.Namespace, out: Output) -> int:
    from converters.report import format_modes, summary_row

    modes, card, notes = _preflight(args)
    output = args.output if (args.mode != "all" or args.output) else None
    with _flag_names():
        results = _convert(args, modes, output, card)
    if args.mode != "all":
        res = results[modes[0]]
        if isinstance(res, str):
            from sdk.errors import ConversionError

            raise ConversionError(_flags(res))
        out.emit(res.to_json(), _human(res))
        return 0
    rows = []
    for m in modes:
        res = results[m]
        if isinstance(res, str):
            rows.append(summary_row(m, None, _flags(res)))
            obj = {"mode": m, "error": _flags(res)}
        else:
            rows.append(summary_row(m, res.report))
            obj = res.to_json()
        if out.json_mode:
            out.emit(obj)
    out.text(f"{args.model}: accuracy vs Keras on {_first_eval(results)}\n" + format_modes(rows) + "".join(f"\nnote: {n}" for n in notes))
    for m in modes:
        if isinstance(results[m], str):
            out.text(f"{m}: {_flags(results[m])}")
    ok = [r for r in results.values() if not isinstance(r, str)]
    for r in ok:
        out.text(f"wrote {r.path}")
    return 0 if ok else 1


def _first_eval(results: dict[str, Any]) -> str:
    for r in results.values():
        if not isinstance(r, str):
            acc = r.report.get("accuracy", {})
            return f"{acc.get('count')} samples ({acc.get('source')})"
    return "-"


def _human(res: Any) -> str:
    from converters.report import format_report
    from sdk.edgetpu_readiness import format_readiness

    rep = res.report
    ints = "full-integer" if rep["full_integer"] else f"{rep['float_tensors']} float tensors"
    lines = [
        f"wrote {res.path} ({res.size_bytes / 1024:.1f} KiB, {res.mode}, inputs {rep['input_dtypes']}, outputs {rep['output_dtypes']}, {ints})",
        "ops: " + ", ".join(f"{k} ×{v}" for k, v in rep["ops"].items()),
        format_report(rep),
    ]
    lines += [f"note: {n}" for n in res.notes]
    if rep.get("debug_quant"):
        from sdk.console import table

        rows = [{"tensor": r["tensor"], "rmse": f"{r['rmse']:.4g}", "max abs err": f"{r['max_abs_error']:.4g}",
                 "rmse/scale": f"{r['rmse_per_scale']:.3g}" if r["rmse_per_scale"] is not None else "-"} for r in rep["debug_quant"]]
        lines += ["", "layers with the largest int8 error (rmse/scale: error in int8 steps):", table(rows)]
    if "edgetpu" in rep:
        lines += ["", format_readiness(rep["edgetpu"])]
    return "\n".join(lines)
