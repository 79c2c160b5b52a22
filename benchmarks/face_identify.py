"""Identify speed against N stored embeddings (SQLite store, in-memory float32 matrix).

Usage: ``python benchmarks/face_identify.py [--sizes 1000 10000 100000] [--dim 128] [--queries 200]``

Prints, per N: the one-off load of the matrix from SQLite, and per-query identify latency
(wall p50/p90/p99 and thread CPU time p50, warm-up excluded) for the Euclidean and cosine metrics, plus a NumPy brute-force
check of the answers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdk.console import table  # noqa: E402
from sdk.embeddings import EmbeddingStore  # noqa: E402


def bench(n: int, dim: int, queries: int, metric: str, folder: Path, rng: np.random.Generator) -> dict:
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    per = 5  # embeddings per identity
    db = folder / f"bench_{n}_{metric}.db"
    store = EmbeddingStore(db, "0" * 64, dim, metric=metric, default_threshold=10.0)
    t0 = time.perf_counter()
    store.enroll_many({f"id{i:07d}": vecs[i * per:(i + 1) * per] for i in range((n + per - 1) // per)})
    t_enroll = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.matrix()
    t_load = time.perf_counter() - t0
    q = vecs[rng.integers(0, n, queries)] + rng.normal(scale=0.05, size=(queries, dim)).astype(np.float32)
    for x in q[:10]:
        store.identify(x)  # warm-up
    times, cpu, wrong = [], [], 0
    for k, x in enumerate(q):
        t0, c0 = time.perf_counter(), time.thread_time()
        m = store.identify(x)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        if k < 20:  # brute force check on a few
            ref = np.linalg.norm(vecs - x, axis=1) if metric == "euclidean" else 1 - vecs @ x / np.linalg.norm(x)
            wrong += m.name != f"id{int(np.argmin(ref)) // per:07d}"
    store.close()
    db.unlink()
    ms = np.array(times) * 1e3
    return {"N": n, "metric": metric, "enroll_s": t_enroll, "load_ms": t_load * 1e3, "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)), "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3), "brute_force_mismatch": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            for metric in ("euclidean", "cosine"):
                rows.append(bench(n, args.dim, args.queries, metric, Path(d), rng))
                print(f"  N={n} {metric} done", file=sys.stderr)
    print(f"identify, {args.dim}-d, {os.cpu_count()} CPUs, NumPy {np.__version__}")
    print(table(rows, ["N", "metric", "enroll_s", "load_ms", "p50_ms", "p90_ms", "p99_ms", "cpu_p50_ms", "brute_force_mismatch"]))
    print(f"load average {os.getloadavg()[0]:.1f}: wall times include waiting for a CPU; cpu_p50_ms is this thread's CPU time")


if __name__ == "__main__":
    main()
