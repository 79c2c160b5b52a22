"""``edgesdk bench MODEL.tflite``: latency p50/p90/p99 and throughput, warm-up excluded."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from sdk.console import Output, add_command, add_runner_args, runner_kwargs, table


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "bench", common, help="latency p50/p90/p99 and throughput (warm-up excluded)")
    p.add_argument("model", help="a .tflite file")
    add_runner_args(p)
    p.add_argument("-n", "--runs", type=int, default=50, help="timed runs")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    p.add_argument("--compare", metavar="OTHER", help="a second .tflite to compare side by side")
    p.set_defaults(func=run)


def sample_inputs(runner: Any, seed: int = 0) -> list[np.ndarray]:
    """Random inputs in each tensor's representable range (floats in [0, 1))."""
    rng = np.random.default_rng(seed)
    xs = []
    for spec in runner.inputs:
        if spec.dtype.kind == "f" or spec.quantized:
            lo, hi = (0.0, 1.0)
            if spec.quantized:
                info = np.iinfo(spec.dtype)
                lo, hi = spec.dequantize(np.array([info.min, info.max], dtype=spec.dtype)).tolist()
            xs.append(rng.uniform(lo, hi, size=spec.shape).astype(np.float32))
        elif spec.dtype.kind in "iu":
            xs.append(rng.integers(0, 2, size=spec.shape).astype(spec.dtype))
        else:
            xs.append(np.zeros(spec.shape, dtype=spec.dtype))
    return xs


def measure(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from sdk.errors import ConfigError
    from sdk.runner import Runner

    if args.runs < 1 or args.warmup < 0:
        raise ConfigError(f"--runs must be >= 1 and --warmup >= 0, got {args.runs} and {args.warmup}")
    runner = Runner(model, **runner_kwargs(args))
    xs = sample_inputs(runner)
    for _ in range(args.warmup):
        runner.run(xs, raw=True)
    runner.stats.reset()
    t0 = time.perf_counter()
    for i in range(args.runs):
        runner.run(xs, raw=True)
        if not args.json and sys.stderr.isatty():
            print(f"\r{i + 1}/{args.runs}", end="", file=sys.stderr)
    wall = time.perf_counter() - t0
    if not args.json and sys.stderr.isatty():
        print("\r", end="", file=sys.stderr)
    s = runner.stats.summary("infer")
    return {
        "model": model,
        **{k: v for k, v in runner.describe().items() if k != "model"},
        "runs": args.runs,
        "warmup": args.warmup,
        **{k: round(v, 3) for k, v in s.items() if k.endswith("_ms")},
        "throughput_per_s": round(args.runs / wall, 2),
        "size_bytes": runner.file.size_bytes(),
    }


COLUMNS = ("model", "delegate", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_per_s", "size_bytes")


def run(args: argparse.Namespace, out: Output) -> int:
    results = [measure(args.model, args)]
    if args.compare:
        results.append(measure(args.compare, args))
    if out.json_mode:
        for r in results:
            out.emit(r)
        if len(results) == 2:
            out.emit({"compare": {"p50_ratio": round(results[1]["p50_ms"] / results[0]["p50_ms"], 3)}})
        return 0
    rows = [{c: r.get(c) for c in COLUMNS} for r in results]
    text = table(rows, COLUMNS, floatfmt=".3f")
    if len(results) == 2:
        ratio = results[1]["p50_ms"] / results[0]["p50_ms"]
        size = results[1]["size_bytes"] / results[0]["size_bytes"]
        text += f"\n\n{results[1]['model']} vs {results[0]['model']}: p50 ×{ratio:.2f}, size ×{size:.2f}"
    text += f"\n\nbackend {results[0]['backend']}; {args.runs} runs after {args.warmup} warm-up runs"
    out.text(text)
    return 0
