"""The trigger-word model's operating point: threshold and smoothing, chosen on validation and written into its card.

Every evaluation set is scored once per model (:func:`apps.trigger_word.eval.score`); an
operating point is then applied to the stored scores (:func:`apps.trigger_word.eval.report`),
which equals running the detector with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from apps.trigger_word.jobs import log, run_jobs

FA_TARGET = 1.0  # false accepts per hour on confusable-rich validation speech
MAX_FRR = 0.25  # an operating point missing more than this is not considered


class EvalOptions(Protocol):
    """What :func:`choose_and_evaluate` reads of the recipe's config (``apps.trigger_word.train.TrainConfig``)."""

    @property
    def word(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def val_minutes(self) -> float: ...
    @property
    def test_minutes(self) -> float: ...
    @property
    def jobs(self) -> int: ...


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen operating point and the rates measured there.

    Attributes:
        threshold: score threshold.
        smoothing: scores averaged over this many hops before the threshold.
        validation: int8 rates on the validation sets (``confusable``, where it was chosen, and ``general_speech``).
        test: rates per model (``fp32``, ``int8``) and test set.
    """

    threshold: float
    smoothing: int
    validation: dict[str, dict[str, Any]]
    test: dict[str, dict[str, dict[str, Any]]]


def pick_threshold(det: list[list[float]], fa_target: float = FA_TARGET, max_frr: float = MAX_FRR) -> float:
    """Threshold with the lowest FRR at <= ``fa_target`` FA/h (the middle of the best plateau).

    When no threshold reaches the target while missing at most ``max_frr`` of the words, the
    one with the fewest false accepts among those that do (then the fewest misses): a detector
    that never fires has no false accepts, and is no answer.
    ``det`` rows are ``[threshold, frr, fa_per_hour]`` as returned by ``evaluate``.
    """
    rows = [(thr, frr, fa) for thr, frr, fa in det if fa is not None and frr is not None]
    ok = [(frr, thr) for thr, frr, fa in rows if fa <= fa_target and frr <= max_frr]
    if not ok:  # the target is out of reach: fewest false accepts at a usable miss rate, then fewest misses
        log(f"no threshold reaches <= {fa_target} false accepts/hour at <= {max_frr:.0%} missed on validation; taking the fewest")
        usable = [r for r in rows if r[1] <= max_frr] or rows
        return min(usable, key=lambda r: (r[2], r[1]))[0]
    best = min(f for f, _ in ok)
    lo = min(t for f, t in ok if f == best)
    hi = max(t for f, t in ok if f == best)
    return round((lo + hi) / 2, 4)  # middle of the best plateau: furthest from both error kinds


def set_operating_point(path: Path, threshold: float, smoothing: int, out: Path | None = None) -> None:
    """Store ``threshold`` and ``smoothing`` in the model's card (in place, or into ``out``)."""
    from sdk.card import read_card, write_card

    c = read_card(path)
    write_card(path, c.replace(output={**c.output, "threshold": threshold, "smoothing": smoothing}), out)


def choose_operating_point(scores: Any) -> tuple[float, int, dict[str, Any]]:
    """(threshold, smoothing, the validation rates there) for :func:`apps.trigger_word.eval.score`'s ``scores`` of the validation set.

    The lowest FRR at <= FA_TARGET FA/h, else the fewest FA/h then the lowest FRR. Smoothing
    (mean of the last k scores) is tried for k = 1..3: requiring a high score on consecutive
    hops removes isolated spikes while a real word keeps scoring for several hops.
    """
    from apps.trigger_word.eval import report

    best: tuple | None = None
    for k in (1, 2, 3):
        det = report(scores, smoothing=k)["det"]
        thr = pick_threshold(det)
        _, frr, fa = min(det, key=lambda r: abs(r[0] - thr))
        if frr > MAX_FRR:
            key: tuple = (2, frr, fa, k)
        else:
            key = (0, 0.0, frr, k) if fa <= FA_TARGET else (1, fa, frr, k)
        log(f"smoothing {k}: threshold {thr}, validation FRR {frr}, FA/h {fa}")
        if best is None or key < best[0]:
            best = (key, thr, k)
    _, thr, k = best
    return thr, k, _summary(report(scores, thr, k))


def _score_set(model_path: Path, pos: list, neg: list, threads: int | None) -> Any:
    """:func:`apps.trigger_word.eval.score` of one evaluation set (a job of :func:`apps.trigger_word.jobs.run_jobs`)."""
    from apps.trigger_word.eval import score

    return score(model_path, pos, neg, runner_kwargs={"threads": threads} if threads else None, progress=False)


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    """The report's fields of one evaluation (:func:`apps.trigger_word.eval.report`).

    Not its speed: sets are scored side by side here (``benchmarks/trigger_word_eval.py`` measures speed).
    """
    keys = ("threshold", "positives", "negatives_hours", "frr", "fa_per_hour", "false_accepts", "delay_ms_median", "delay_ms_p90", "frr_at_fa_per_hour")
    return {k: r[k] for k in keys}


def _score_sets(cfg: EvalOptions, corpus: Any, paths: dict[str, Path]) -> tuple[dict[tuple[str, str, str], Any], list[str]]:
    """Scores of every evaluation set, keyed ``(model, "val" | "test", set name)``, and the test sets' names.

    Each set is scored once per model that needs it (``cfg.jobs`` at a time, one thread each).
    """
    from apps.trigger_word import dataset as S
    from apps.trigger_word.confusables import check_word
    from apps.trigger_word.data import SR

    word = check_word(cfg.word)
    val_sets = S.validation_sets(corpus, word, cfg.seed, cfg.val_minutes)
    test_sets = {name: ps for name, ps in S.test_sets(corpus, word, cfg.seed, cfg.test_minutes).items() if ps[0] and ps[1]}
    todo = [("int8", "val", name, ps) for name, ps in val_sets.items()] + [(m, "test", name, ps) for m in ("fp32", "int8") for name, ps in test_sets.items()]
    size = lambda ps: sum((x[0] if isinstance(x, tuple) else x).shape[0] for part in ps for x in part)  # noqa: E731
    order = sorted(range(len(todo)), key=lambda i: -size(todo[i][3]))  # longest first: the workers finish together
    log(f"scoring {len(todo)} evaluation sets ({sum(size(t[3]) for t in todo) / SR / 3600:.1f} h of audio), {cfg.jobs} at a time")
    threads = 1 if cfg.jobs > 1 else None
    done = run_jobs(_score_set, [(paths[todo[i][0]], *todo[i][3], threads) for i in order], cfg.jobs)
    return {todo[i][:3]: s for i, s in zip(order, done)}, list(test_sets)


def choose_and_evaluate(cfg: EvalOptions, corpus: Any, paths: dict[str, Path]) -> OperatingPoint:
    """Choose threshold and smoothing on validation (int8), write them into every model's card, evaluate on the test sets.

    Args:
        cfg: the recipe's options (word, seed, minutes of the evaluation sets, jobs).
        corpus: the speech corpus (:func:`apps.trigger_word.data.synthesize`).
        paths: the converted models, ``{"fp32": path, "int8": path}``.

    Returns:
        The operating point with its validation and test rates.
    """
    from apps.trigger_word.eval import report

    scores, test_sets = _score_sets(cfg, corpus, paths)
    log("choosing the threshold and smoothing on validation (int8)")
    threshold, smoothing, val_chosen = choose_operating_point(scores["int8", "val", "confusable"])
    for p in paths.values():
        set_operating_point(p, threshold, smoothing)
    log(f"threshold {threshold}, smoothing {smoothing}")
    general = _summary(report(scores["int8", "val", "general_speech"], threshold, smoothing))
    for name, r in (("confusable", val_chosen), ("general_speech", general)):
        log(f"  validation {name} (int8): {_rates_line(r)}")
    metrics: dict[str, dict[str, Any]] = {"fp32": {}, "int8": {}}
    for m in metrics:
        for name in test_sets:
            r = metrics[m][name] = _summary(report(scores[m, "test", name], threshold, smoothing))
            log(f"  test {name} ({m}): {_rates_line(r)}")
    return OperatingPoint(threshold, smoothing, {"confusable": val_chosen, "general_speech": general}, metrics)


def _rates_line(r: dict[str, Any]) -> str:
    """One set's rates at the operating point and on its DET curve at 0.5, 1 and 2 FA/h."""
    det = ", ".join(f"{'-' if v is None else f'{100 * v:.1f}%'} at <= {k}" for k, v in r["frr_at_fa_per_hour"].items())
    return (f"FRR {100 * r['frr']:.1f}% at {r['fa_per_hour']} FA/h, delay {r['delay_ms_median']} ms; DET: FRR {det} FA/h "
            f"({r['positives']} positives, {r['negatives_hours']:.2f} h of negatives)")
