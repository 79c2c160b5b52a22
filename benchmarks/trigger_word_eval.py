"""Trigger-word model on the recipe's test sets: FRR, false accepts/hour, delay, speed.

Rebuilds the test sets exactly as ``edgesdk train trigger-word`` does
(:func:`apps.trigger_word.dataset.test_sets`: same seed, same cached speech; synthesised on
first use, a few minutes) and evaluates one or more models with
:func:`apps.trigger_word.eval.evaluate` at each model's own threshold.

Also prints file-processing speed (x real time) on one thread. Not a test.

    .venv/bin/python benchmarks/trigger_word_eval.py [--model M.tflite ...] [--work DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.trigger_word import data as D  # noqa: E402
from apps.trigger_word import dataset as S  # noqa: E402
from apps.trigger_word.eval import evaluate  # noqa: E402
from apps.trigger_word.train import TrainConfig  # noqa: E402
from sdk.console import table  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / "apps" / "trigger_word" / "models" / "activate_int8.tflite"


def speed(model: Path, seconds: float = 120.0, chunk: int | None = None) -> float:
    """x real time of the streaming detector on one thread over ``seconds`` of noise.

    ``chunk=None`` feeds the whole file at once (file processing: many hops per front-end call);
    ``chunk=1280`` feeds one 80 ms hop at a time, as a live microphone does.
    """
    from apps.trigger_word.app import TriggerWordDetector
    from sdk.runner import Runner

    det = TriggerWordDetector(Runner(model, threads=1))
    x = (0.05 * np.random.default_rng(0).standard_normal(int(seconds * det.sample_rate))).astype(np.float32)
    step = chunk or x.shape[0]
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], step):
        det.scores(x[i : i + step])
    return seconds / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    cfg = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", type=Path, default=[DEFAULT], help="models to evaluate")
    ap.add_argument("--work", default=cfg.work, help="speech cache of the training recipe")
    ap.add_argument("--seed", type=int, default=cfg.seed, help="the recipe's seed")
    ap.add_argument("--minutes", type=float, default=cfg.test_minutes, help="minutes of espeak negatives (flite: half, real: a third)")
    args = ap.parse_args(argv)
    corpus = D.synthesize(D.CorpusConfig(seed=args.seed), Path(args.work).expanduser() / "cache")
    sets = S.test_sets(corpus, cfg.word, args.seed, args.minutes)
    rows = []
    for model in args.model:
        for name, (pos, neg) in sets.items():
            r = evaluate(model, pos, neg, progress=False)
            rows.append({"model": model.name, "set": name, "positives": r["positives"], "neg_min": round(r["negatives_hours"] * 60, 1),
                         "threshold": f"{r['threshold']:g}", "frr": f"{r['frr']:.1%}", "fa_per_hour": r["fa_per_hour"],
                         "delay_ms_median": r["delay_ms_median"], "delay_ms_p90": r["delay_ms_p90"]})
        for what, chunk in (("file", None), ("live, 80 ms chunks", 1280)):
            x = speed(model, chunk=chunk)
            rows.append({"model": model.name, "set": f"speed, 1 thread, {what}", "frr": None, "fa_per_hour": None, "threshold": None,
                         "positives": None, "neg_min": None, "delay_ms_median": f"{x:.0f}x real time", "delay_ms_p90": f"{80 / x:.2f} ms/hop"})
    print(table(rows, ["model", "set", "positives", "neg_min", "threshold", "frr", "fa_per_hour", "delay_ms_median", "delay_ms_p90"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
