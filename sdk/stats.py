"""Latency statistics per pipeline stage."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class StageStats:
    """Keeps the most recent latency samples of named stages (``pre``, ``infer``, ``post``...).

    Samples are kept in bounded deques, so a long-running app never grows without bound.
    Call :meth:`reset` after warm-up to exclude it.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self._maxlen = maxlen
        self._samples: dict[str, deque[float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Record one sample of ``stage`` lasting ``seconds``."""
        if stage not in self._samples:
            self._samples[stage] = deque(maxlen=self._maxlen)
            self.counts[stage] = 0
        self._samples[stage].append(seconds)
        self.counts[stage] += 1

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Context manager that records the time spent inside it under ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def last_ms(self, stage: str) -> float:
        """The most recent sample of ``stage`` in milliseconds (0 if none)."""
        s = self._samples.get(stage)
        return s[-1] * 1e3 if s else 0.0

    def reset(self) -> None:
        """Forget every sample (e.g. after warm-up)."""
        self._samples.clear()
        self.counts.clear()

    @property
    def stages(self) -> list[str]:
        return list(self._samples)

    def summary(self, stage: str) -> dict[str, float]:
        """p50/p90/p99/mean/min/max in milliseconds and the sample count for ``stage``."""
        s = self._samples.get(stage)
        if not s:
            return {"count": 0}
        a = np.fromiter(s, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return {
            "count": int(a.size),
            "mean_ms": float(a.mean()),
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "min_ms": float(a.min()),
            "max_ms": float(a.max()),
        }

    def summaries(self) -> dict[str, dict[str, float]]:
        """:meth:`summary` of every stage."""
        return {k: self.summary(k) for k in self._samples}
