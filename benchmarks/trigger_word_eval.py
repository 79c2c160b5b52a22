"""Trigger-word models on the recipe's test sets: FRR, false accepts/hour, delay, and the DET curve at 0.5/1/2 FA/h.

Rebuilds the test sets exactly as ``edgesdk train trigger-word`` does
(:func:`apps.trigger_word.dataset.test_sets`: same seed, same cached speech; synthesised on
first use, minutes) and evaluates one or more models with
:func:`apps.trigger_word.eval.evaluate` at each model's own operating point (before/after
tables: give the old and the new model). Streaming speed: ``benchmarks/trigger_word_stream.py``.
Not a test.

    .venv/bin/python benchmarks/trigger_word_eval.py [--model M.tflite ...] [--word activate] [--work DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.trigger_word import data as D  # noqa: E402
from apps.trigger_word import dataset as S  # noqa: E402
from apps.trigger_word.eval import evaluate  # noqa: E402
from apps.trigger_word.train import TrainConfig, corpus_config  # noqa: E402
from sdk.console import table  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / "apps" / "trigger_word" / "models" / "activate_int8.tflite"


def main(argv: list[str] | None = None) -> int:
    cfg = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", type=Path, default=[DEFAULT], help="models to evaluate (e.g. the old and the new default)")
    ap.add_argument("--work", default=cfg.work, help="speech cache of the training recipe")
    ap.add_argument("--seed", type=int, default=cfg.seed, help="the recipe's seed")
    ap.add_argument("--word", default=cfg.word, help="the trigger word the models detect (the test sets say it)")
    ap.add_argument("--minutes", type=float, default=cfg.test_minutes, help="minutes of the espeak-ng stress set (the others scale with it)")
    args = ap.parse_args(argv)
    cache = Path(args.work).expanduser() / "cache"
    corpus = D.synthesize(corpus_config(TrainConfig(word=args.word, seed=args.seed)), cache)  # the recipe's speech
    sets = {f"validation {k}": v for k, v in S.validation_sets(corpus, args.word, args.seed, cfg.val_minutes).items()}
    sets |= S.test_sets(corpus, args.word, args.seed, args.minutes)
    rows = []
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for model in args.model:
        for name, (pos, neg) in sets.items():
            if not pos or not neg:
                continue
            r = evaluate(model, pos, neg, progress=False)
            rows.append({"model": model.name, "set": name, "positives": r["positives"], "neg_h": round(r["negatives_hours"], 2),
                         "threshold": f"{r['threshold']:g}", "frr": pct(r["frr"]), "fa_per_hour": r["fa_per_hour"], "delay_ms_median": r["delay_ms_median"],
                         **{f"frr@{k}/h": pct(v) for k, v in r["frr_at_fa_per_hour"].items()}})
    print(table(rows, ["model", "set", "positives", "neg_h", "threshold", "frr", "fa_per_hour", "delay_ms_median", "frr@0.5/h", "frr@1/h", "frr@2/h"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
