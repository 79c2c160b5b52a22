"""Verification thresholds from genuine and impostor distances: ROC, EER, threshold at a FAR.

A pair is accepted when its distance is ``<= threshold``. The false-accept rate (FAR) is the
share of impostor pairs accepted, the false-reject rate (FRR) the share of genuine pairs
rejected. Everything is vectorised over the sorted distances (no loop over thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdk.errors import ConfigError


@dataclass(frozen=True)
class Roc:
    """FAR and TAR (= 1 - FRR) at every distinct distance used as a threshold, ascending."""

    thresholds: np.ndarray
    far: np.ndarray
    tar: np.ndarray

    @property
    def frr(self) -> np.ndarray:
        return 1.0 - self.tar

    def auc(self) -> float:
        """Area under TAR(FAR), starting at (0, 0) and ending at (1, 1)."""
        far = np.concatenate([[0.0], self.far, [1.0]])
        tar = np.concatenate([[0.0], self.tar, [1.0]])
        return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def _check(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ConfigError(f"calibration needs genuine and impostor pairs; got {g.size} genuine and {i.size} impostor "
                          "(enroll at least two identities with two or more images each, or give pairs from a CSV file)", param="pairs")
    return g, i


def roc(genuine: np.ndarray, impostor: np.ndarray) -> Roc:
    """The ROC of accepting ``distance <= t`` for every distinct distance ``t``.

    Args:
        genuine: Distances of same-identity pairs.
        impostor: Distances of different-identity pairs.
    """
    g, i = _check(genuine, impostor)
    t = np.unique(np.concatenate([g, i]))
    tar = np.searchsorted(np.sort(g), t, side="right") / g.size
    far = np.searchsorted(np.sort(i), t, side="right") / i.size
    return Roc(t, far, tar)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """Equal-error rate and its threshold (where FAR crosses FRR, linearly interpolated)."""
    r = roc(genuine, impostor)
    diff = r.far - r.frr  # rises from <= 0 to >= 0 with the threshold
    k = int(np.searchsorted(diff, 0.0))
    if k == 0:
        return float((r.far[0] + r.frr[0]) / 2), float(r.thresholds[0])
    if k >= diff.size:
        return float((r.far[-1] + r.frr[-1]) / 2), float(r.thresholds[-1])
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    rate = (1 - w) * (r.far[k - 1] + r.frr[k - 1]) / 2 + w * (r.far[k] + r.frr[k]) / 2
    thr = (1 - w) * r.thresholds[k - 1] + w * r.thresholds[k]
    return float(rate), float(thr)


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float, float]:
    """The largest threshold whose FAR is ``<= far``; returns (threshold, achieved FAR, TAR).

    Below the smallest impostor distance every threshold has FAR 0; the midpoint between
    the largest accepted and the smallest rejected distance is returned so that a little
    noise does not flip decisions on the boundary.
    """
    if not 0.0 <= far < 1.0:
        raise ConfigError(f"far must be in [0, 1), got {far}", param="far")
    g, i = _check(genuine, impostor)
    si = np.sort(i)
    allowed = int(np.floor(far * si.size + 1e-9))  # impostor pairs we may accept
    upper = si[allowed]  # the smallest impostor distance that must be rejected (allowed < size as far < 1)
    below = np.concatenate([g[g < upper], si[:allowed][si[:allowed] < upper]])
    lower = below.max() if below.size else upper
    thr = float(min((lower + upper) / 2, np.nextafter(upper, -np.inf)))
    achieved = float(np.mean(i <= thr))
    return thr, achieved, float(np.mean(g <= thr))


def accuracy_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> float:
    """Share of pairs decided correctly at ``threshold`` (genuine accepted, impostor rejected)."""
    g, i = _check(genuine, impostor)
    return float((np.sum(g <= threshold) + np.sum(i > threshold)) / (g.size + i.size))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """True-accept rate at the threshold whose FAR is at most ``far``."""
    return threshold_at_far(genuine, impostor, far)[2]


def summary(genuine: np.ndarray, impostor: np.ndarray, far: float = 1e-3) -> dict:
    """AUC, EER (+ threshold), and the threshold at ``far`` with its achieved FAR and TAR."""
    g, i = _check(genuine, impostor)
    rate, eer_thr = eer(g, i)
    thr, got_far, tar = threshold_at_far(g, i, far)
    return {"genuine_pairs": int(g.size), "impostor_pairs": int(i.size), "auc": roc(g, i).auc(), "eer": rate,
            "eer_threshold": eer_thr, "target_far": far, "threshold": thr, "far": got_far, "tar": tar,
            "accuracy": accuracy_at(g, i, thr)}


def roc_table(genuine: np.ndarray, impostor: np.ndarray, fars: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.05, 0.1)) -> list[dict]:
    """Operating points of the ROC: threshold, achieved FAR and TAR at each target FAR."""
    rows = []
    for f in fars:
        thr, got, tar = threshold_at_far(genuine, impostor, f)
        rows.append({"target_far": f, "threshold": round(thr, 4), "far": round(got, 5), "tar": round(tar, 4)})
    return rows


def pair_distances(vectors: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor distances of every pair among ``vectors`` (N, D) with ``labels`` (N,)."""
    v = np.asarray(vectors, dtype=np.float32)
    lab = np.asarray(labels)
    iu, ju = np.triu_indices(len(v), k=1)
    if metric == "cosine":
        n = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        d = 1.0 - np.einsum("ij,ij->i", n[iu], n[ju])
    else:
        d = np.linalg.norm(v[iu] - v[ju], axis=1)
    same = lab[iu] == lab[ju]
    return d[same], d[~same]


def verification(emb: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """AUC, EER (+ threshold) and accuracy at ``threshold`` (default: the EER's) over all pairs of ``emb``."""
    g, i = pair_distances(emb, labels)
    rate, thr = eer(g, i)
    t = thr if threshold is None else threshold
    return {"auc": round(roc(g, i).auc(), 4), "eer": round(rate, 4), "eer_threshold": round(thr, 4),
            "accuracy": round(accuracy_at(g, i, t), 4), "genuine_pairs": int(g.size), "impostor_pairs": int(i.size)}
