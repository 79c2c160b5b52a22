"""Trigger-word evaluation: false rejects, false accepts per hour, detection delay, threshold sweep.

Protocol (also what ``edgesdk eval trigger-word`` reports):

* **Positives**: each clip holds the word once. It is streamed through a fresh detector
  after ``window_s`` of silence (so the first window is full) and followed by
  ``max_delay_s`` of silence. The word ends where the clip's non-silent region ends: frames
  of 10 ms whose level is within 30 dB of the clip's loudest frame and at least 10 dB above
  its quietest tenth (so background noise in the clip is not "speech"). A positive is
  detected when the first event falls between the start of that region and
  ``word end + max_delay_s``; its delay is the event time minus the word end. Callers that
  know where the word is (synthetic data) pass ``(clip, (start_s, end_s))`` instead.
* **Negatives**: all negative files are concatenated into one continuous stream (sorted by
  name) and every event in it is a false accept; the rate is per hour of that audio.
* Scores are computed once per clip; every threshold is then applied with the detector's own
  smoothing and refractory logic, so the sweep equals re-running the detector.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apps.trigger_word.app import TriggerWordDetector
from sdk.runner import Runner

log = logging.getLogger("edgesdk.trigger_word")

Audio = str | Path | np.ndarray  # a positive may also be (Audio, (word_start_s, word_end_s))
SWEEP = tuple(round(t, 2) for t in np.arange(0.1, 1.0, 0.1))
# 0.01 steps, 0.005 from 0.9 (about one int8 step of a logit there), then finer near 1 where a
# confident model's operating points lie (a head that outputs logits resolves them; a sigmoid
# quantized to int8 stops at 0.996)
DET_THRESHOLDS = tuple(sorted({round(float(t), 4) for t in np.linspace(0.01, 0.99, 99)} | {round(float(t), 4) for t in np.linspace(0.9, 0.99, 19)}
                              | {0.993, 0.995, 0.997, 0.998, 0.999, 0.9993, 0.9995, 0.9997, 0.9998, 0.9999}))


def _items(spec: str | Path | Sequence[Audio], what: str) -> Sequence[Audio]:
    """A folder's ``.wav`` files (sorted), or the given list of paths / arrays."""
    from sdk.sources.audio import wav_files

    return spec if not isinstance(spec, (str, Path)) else wav_files(spec, what)


def _load(item: Audio, i: int, what: str, rate: int) -> tuple[str, np.ndarray]:
    """One named mono clip at ``rate`` (arrays are taken to be at ``rate`` already); read lazily to bound memory."""
    from sdk.sources.audio import read_wav

    if isinstance(item, np.ndarray):
        return f"{what}[{i}]", np.asarray(item, dtype=np.float32).reshape(-1)
    return str(item), read_wav(item, rate)[0]


def word_span(x: np.ndarray, rate: int) -> tuple[float, float]:
    """Start and end (s) of the non-silent region of a clip (see the module docstring)."""
    hop = max(1, rate // 100)
    n = max(1, -(-x.shape[0] // hop))  # the last partial frame is zero-padded
    frames = np.pad(x, (0, n * hop - x.shape[0])).reshape(n, hop)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    level = max(db.max() - 30.0, np.percentile(db, 10) + 10.0)
    active = np.flatnonzero(db >= level)
    if active.size == 0:
        return 0.0, x.shape[0] / rate
    return active[0] * hop / rate, (active[-1] + 1) * hop / rate


def smoothed(scores: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last ``k`` scores at each step (fewer at the start), as :class:`TriggerLogic`."""
    c = np.concatenate([[0.0], np.cumsum(scores, dtype=np.float64)])
    idx = np.arange(1, scores.shape[0] + 1)
    lo = np.maximum(0, idx - k)
    return (c[idx] - c[lo]) / (idx - lo)


def event_times(times: np.ndarray, smooth: np.ndarray, threshold: float, refractory_s: float) -> list[float]:
    """Event times for smoothed scores: above ``threshold`` and ``refractory_s`` after the previous."""
    out: list[float] = []
    for t in times[smooth >= threshold]:  # only candidates are looped over
        if not out or t - out[-1] >= refractory_s:
            out.append(float(t))
    return out


def _delay(p: dict, threshold: float, refractory_s: float, max_delay: float) -> float | None:
    """Seconds from the word end to the first event after the word starts, or ``None`` if missed."""
    ev = [t for t in event_times(p["times"], p["smooth"], threshold, refractory_s) if t >= p["start"]]
    return ev[0] - p["end"] if ev and ev[0] <= p["end"] + max_delay else None


def _rates(pos: list[dict], neg: tuple[np.ndarray, np.ndarray], hours: float, refractory_s: float, thr: float, max_delay: float):
    delays = [d for d in (_delay(p, thr, refractory_s, max_delay) for p in pos) if d is not None]
    fa = len(event_times(neg[0], neg[1], thr, refractory_s))
    return {
        "threshold": round(float(thr), 4),
        "frr": round(1.0 - len(delays) / len(pos), 4) if pos else None,
        "false_accepts": fa,
        "fa_per_hour": round(fa / hours, 3) if hours > 0 else None,
        "delay_ms_median": round(float(np.median(delays)) * 1000, 1) if delays else None,
        "delay_ms_p90": round(float(np.percentile(delays, 90)) * 1000, 1) if delays else None,
    }


@dataclass
class Scores:
    """One model's raw scores over an evaluation set: operating points are applied afterwards (:func:`report`)."""

    model: str
    word: str
    threshold: float  # the card's operating point
    smoothing: int
    refractory_s: float
    max_delay_s: float
    pos: list[dict]  # per positive: name, times, raw scores, word start and end
    neg: tuple[np.ndarray, np.ndarray]  # times and raw scores over all negatives as one stream
    hours: float  # of negatives
    seconds: float  # of audio streamed in all
    wall: float  # seconds it took


def score(
    model: Runner | str | Path,
    positives: str | Path | Sequence[Audio],
    negatives: str | Path | Sequence[Audio],
    threshold: float | None = None,
    max_delay_s: float = 1.0,
    runner_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Scores:
    """Stream every positive clip and the negatives through the model once (see the module docstring).

    Args:
        model: A :class:`Runner` or a ``.tflite`` path with a trigger-word card.
        positives: Folder of ``.wav`` clips, or a list of paths / float arrays at the model rate,
            or of ``(path_or_array, (word_start_s, word_end_s))`` when the word's position is known.
        negatives: Same, without the word; concatenated into one stream.
        threshold: Operating threshold (default: the card's).
        max_delay_s: Latest accepted detection after the word end.
        runner_kwargs: For :class:`Runner` when ``model`` is a path.
        progress: Show progress on stderr.
    """
    det = TriggerWordDetector(model, threshold=threshold, runner_kwargs=runner_kwargs)
    pos_items, neg_items = _items(positives, "positives"), _items(negatives, "negatives")
    t0 = time.perf_counter()
    pos, pos_s = _score_positives(det, pos_items, max_delay_s, progress)
    neg, neg_s = _score_negatives(det, neg_items, progress)
    logic = det.logic
    return Scores(det.runner.name, det.word, logic.threshold, logic.smoothing, logic.refractory_s, max_delay_s, pos, neg, neg_s / 3600.0,
                  pos_s + neg_s, time.perf_counter() - t0)


FA_POINTS = (0.5, 1.0, 2.0)  # false accepts per hour at which the DET curve is read


def frr_at_fa(det: Sequence[Sequence[float | None]], hours: float, points: Sequence[float] = FA_POINTS) -> dict[str, float | None]:
    """The lowest false-reject rate of the DET curve at <= each of ``points`` false accepts per hour.

    A threshold read off the curve of the same set (not an operating point chosen beforehand):
    what the model can do there. With ``hours`` of negatives one false accept is ``1 / hours``
    FA/h, so a point below that is read at zero false accepts.
    """
    out: dict[str, float | None] = {}
    for p in points:
        ok = [frr for _, frr, fa in det if fa is not None and frr is not None and fa <= p + 1e-9]
        out[f"{p:g}"] = min(ok) if ok else None
    return out


def report(s: Scores, threshold: float | None = None, smoothing: int | None = None, thresholds: Sequence[float] = SWEEP) -> dict[str, Any]:
    """The rates of ``s`` at an operating point (default: the card's), the sweep and the DET curve (see :func:`evaluate`)."""
    thr = s.threshold if threshold is None else threshold
    k = s.smoothing if smoothing is None else smoothing
    pos = [dict(p, smooth=smoothed(p["raw"], k)) for p in s.pos]
    neg = (s.neg[0], smoothed(s.neg[1], k))
    rates = lambda t: _rates(pos, neg, s.hours, s.refractory_s, t, s.max_delay_s)  # noqa: E731
    det = [[r["threshold"], r["frr"], r["fa_per_hour"]] for r in map(rates, DET_THRESHOLDS)]
    return {
        "model": s.model,
        "word": s.word,
        "positives": len(pos),
        "negatives_hours": round(s.hours, 4),
        **rates(thr),
        "smoothing": k,
        "speed_x_realtime": round(s.seconds / s.wall, 1) if s.wall > 0 else None,
        "missed": [p["name"] for p in pos if _delay(p, thr, s.refractory_s, s.max_delay_s) is None],
        "sweep": [rates(t) for t in thresholds],
        "det": det,
        "frr_at_fa_per_hour": frr_at_fa(det, s.hours),
    }


def evaluate(model: Runner | str | Path, positives: Any, negatives: Any, thresholds: Sequence[float] = SWEEP, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a trigger-word model: :func:`score` (same arguments) then :func:`report` at the card's (or ``threshold``'s) point.

    Returns:
        ``model, word, threshold, positives, negatives_hours, frr, fa_per_hour, false_accepts,
        delay_ms_median, delay_ms_p90, smoothing, speed_x_realtime, missed, sweep`` (rows for
        ``thresholds``), ``det`` (``[threshold, frr, fa_per_hour]`` over :data:`DET_THRESHOLDS`)
        and ``frr_at_fa_per_hour`` (:func:`frr_at_fa` at :data:`FA_POINTS`).
    """
    return report(score(model, positives, negatives, **kwargs), thresholds=thresholds)


def _score_positives(det: TriggerWordDetector, items: Sequence[Audio], max_delay_s: float, progress: bool) -> tuple[list[dict], float]:
    """Per positive clip: raw scores on the clip's own time axis and its word span; total seconds streamed."""
    rate = det.sample_rate
    lead = np.zeros(det.window_samples, dtype=np.float32)
    tail = np.zeros(int(round(max_delay_s * rate)) + det.hop_samples, dtype=np.float32)
    pos, seconds = [], 0.0
    for i, item in enumerate(items):
        span = None
        if isinstance(item, tuple):  # (audio, (start_s, end_s)): the word's position is known
            item, span = item
        name, x = _load(item, i, "positives", rate)
        start, end = span if span is not None else word_span(x, rate)
        det.reset()
        times, scores = det.scores(np.concatenate([lead, x, tail]))
        pos.append(
            {
                "name": name,
                "times": times - lead.shape[0] / rate,
                "raw": scores,
                "start": start,
                "end": end,
            }
        )
        seconds += (lead.shape[0] + x.shape[0] + tail.shape[0]) / rate
        _progress(progress, "positives", i + 1, len(items))
    return pos, seconds


def _score_negatives(det: TriggerWordDetector, items: Sequence[Audio], progress: bool) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Times and raw scores over all negatives as one stream; its length in seconds."""
    det.reset()
    times, scores, samples = [], [], 0
    for i, item in enumerate(items):
        _, x = _load(item, i, "negatives", det.sample_rate)
        t, s = det.scores(x)
        times.append(t)
        scores.append(s)
        samples += x.shape[0]
        _progress(progress, "negatives", i + 1, len(items))
    t_all = np.concatenate(times) if times else np.zeros(0)
    s_all = np.concatenate(scores) if scores else np.zeros(0)
    return (t_all, s_all), samples / det.sample_rate


def _progress(on: bool, what: str, done: int, total: int) -> None:
    """A counter on a terminal, else a log line at every quarter."""
    if not on:
        return
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{what} {done}/{total}" + ("\n" if done == total else ""))
        sys.stderr.flush()
    elif done == total or done % max(1, total // 4) == 0:
        log.info("%s %d/%d", what, done, total)


def report_text(res: dict[str, Any]) -> str:
    """Human-readable report: the operating point and the sweep table."""
    from sdk.console import table

    head = (
        f"{res['model']} ({res['word']!r}): {res['positives']} positives, {res['negatives_hours'] * 60:.1f} min of negatives, "
        f"{res['speed_x_realtime']}x real time\n"
        f"threshold {res['threshold']}: false rejects {_pct(res['frr'])}, false accepts {res['fa_per_hour']}/h "
        f"({res['false_accepts']}), delay after word end median {res['delay_ms_median']} ms, p90 {res['delay_ms_p90']} ms\n"
        "DET curve: false rejects " + ", ".join(f"{_pct(v)} at <= {k} FA/h" for k, v in res["frr_at_fa_per_hour"].items())
        + f" (one false accept = {1 / res['negatives_hours']:.2g} FA/h)" * (res["negatives_hours"] > 0)
    )
    cols = ("threshold", "frr", "fa_per_hour", "false_accepts", "delay_ms_median", "delay_ms_p90")
    return head + "\n\n" + table(res["sweep"], cols, floatfmt=".3f")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def plot_det(results: Sequence[dict[str, Any]], path: str | Path) -> str | None:
    """Write a DET curve (false rejects vs false accepts/hour) for one or more results.

    Returns:
        The path written, or ``None`` when matplotlib is not installed (said on stderr).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        msg = f"plot: matplotlib is not installed, no plot written to {path} (pip install matplotlib)"
        log.warning(msg)
        return None
    import io

    from sdk.card import atomic_write

    fig, ax = plt.subplots(figsize=(5, 4))
    for res in results:
        pts = np.array([[fa, frr] for _, frr, fa in res["det"] if fa is not None and frr is not None])
        ax.plot(pts[:, 0], 100 * pts[:, 1], marker=".", label=f"{res['model']}")
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false rejects (%)")
    ax.set_title(f"DET: {results[0]['word']!r}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return str(path)
