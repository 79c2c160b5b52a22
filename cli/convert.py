"""``edgesdk convert MODEL --mode ...``: Keras to TFLite with a card and an accuracy report.

Every option is checked before TensorFlow starts; bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("model", help="a .keras or .h5 file, or a SavedModel folder")
    p.add_argument("--mode", "-m", choices=MODE_CHOICES, default="int8", help="precision; 'all' converts every mode and prints a comparison table")
    p.add_argument("--calibration", "-c", metavar="PATH", help="int8/int16x8 samples: .npy/.npz [N, ...], or a folder of images or .wav files")
    p.add_argument("--eval", "-e", metavar="PATH", help="samples for the accuracy report (default: the calibration samples)")
    p.add_argument("--target", "-t", choices=("cpu", "edgetpu", "gpu"), default="cpu", help="where the model will run")
    p.add_argument("--io", choices=("int8", "uint8", "float", "int16"), help="input/output tensor type (default: int8 for int8, float otherwise)")
    p.add_argument("-o", "--output", metavar="OUT", help="output .tflite (a folder with --mode all); default <model>_<mode>.tflite beside the model")
    p.add_argument("--card", metavar="CARD.yaml", help="model card fields (task, input, output...) to embed")
    p.add_argument("--no-unroll", action="store_true", help="keep GRU/LSTM as WHILE loops even for int8 (the converter crashes on them)")
    p.add_argument("--custom-objects", nargs="+", metavar="MODULE:CLASS", default=[], help="custom layer classes to import")
    p.add_argument("--debug-quant", action="store_true", help="int8: list the layers with the largest quantization error")
    p.add_argument("--float-layers", metavar="NAME,...", type=lambda v: [n.strip() for n in v.split(",") if n.strip()], default=[],
                   help="int8: keep the ops writing these tensors (names as --debug-quant lists them) in float")
    p.add_argument("--runs", type=int, default=20, help="invocations for the latency p50 of --mode all")
    p.set_defaults(func=run)


def _preflight(args: argparse.Namespace) -> tuple[list[str], Any, list[str]]:
    """All checks that need no TensorFlow: model path, options, output, data paths, card."""
    from converters.convert import MODES, TARGET_MODES, check_model_path, check_options, check_output, default_output
    from sdk.errors import ConfigError

    model = Path(args.model)
    check_model_path(model)
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
    if args.debug_quant and "int8" not in modes:
        raise ConfigError(f"--debug-quant analyses int8 quantization; it does not apply to --mode {args.mode}")
    for opt, value in (("--calibration", args.calibration), ("--eval", args.eval)):
        if value is not None:
            _check_data_path(opt, Path(value))
    card = None
    if args.card:
        from sdk.card import ModelCard

        try:
            card = ModelCard.from_yaml(Path(args.card).read_text(), args.card)
        except OSError as e:
            raise ConfigError(f"--card {args.card}: cannot read ({e.strerror})") from e
    return modes, card, notes


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
    from converters.convert import convert_modes
    from converters.report import format_modes, summary_row

    modes, card, notes = _preflight(args)
    output = args.output if (args.mode != "all" or args.output) else None
    results = convert_modes(
        args.model, modes, output=output, calibration=args.calibration, eval_data=args.eval, card=card, target=args.target,
        io=args.io, progress=not args.quiet, unroll=False if args.no_unroll else None, custom_objects=None,
        latency_runs=args.runs if args.mode == "all" else 0, custom_specs=args.custom_objects, debug_quant=args.debug_quant,
        float_layers=args.float_layers,
    )
    if args.mode != "all":
        res = results[modes[0]]
        if isinstance(res, str):
            from sdk.errors import ConversionError

            raise ConversionError(res)
        out.emit(res.to_json(), _human(res))
        return 0
    rows = []
    for m in modes:
        res = results[m]
        if isinstance(res, str):
            rows.append(summary_row(m, None, res))
            obj = {"mode": m, "error": res}
        else:
            rows.append(summary_row(m, res.report))
            obj = res.to_json()
        if out.json_mode:
            out.emit(obj)
    out.text(f"{args.model}: accuracy vs Keras on {_first_eval(results)}\n" + format_modes(rows) + "".join(f"\nnote: {n}" for n in notes))
    for m in modes:
        if isinstance(results[m], str):
            out.text(f"{m}: {results[m]}")
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
    from converters.edgetpu import format_readiness
    from converters.report import format_report

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
