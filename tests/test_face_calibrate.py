"""ROC, EER and threshold at a FAR on synthetic distance distributions with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.face import calibrate as cal
from sdk.errors import ConfigError


def test_gaussian_eer_and_threshold_are_known(rng):
    # genuine ~ N(0.4, 0.1), impostor ~ N(1.0, 0.1): by symmetry EER at 0.7 is Phi(-3)
    g = rng.normal(0.4, 0.1, 200_000)
    i = rng.normal(1.0, 0.1, 200_000)
    rate, thr = cal.eer(g, i)
    assert rate == pytest.approx(0.5 * math.erfc(3 / math.sqrt(2)), abs=4e-4)
    assert thr == pytest.approx(0.7, abs=0.01)


def test_uniform_eer_with_overlap(rng):
    # genuine U(0, 1), impostor U(0.5, 1.5): FRR(t) = 1 - t, FAR(t) = t - 0.5 -> EER 0.25 at t = 0.75
    g, i = rng.uniform(0, 1, 100_000), rng.uniform(0.5, 1.5, 100_000)
    rate, thr = cal.eer(g, i)
    assert rate == pytest.approx(0.25, abs=0.005) and thr == pytest.approx(0.75, abs=0.005)
    assert cal.roc(g, i).auc() == pytest.approx(1 - 0.125, abs=0.005)  # P(genuine < impostor)


def test_threshold_at_far_never_exceeds_the_target(rng):
    g, i = rng.uniform(0, 1, 5000), rng.uniform(0.5, 1.5, 20_000)
    for far in (0.0, 1e-3, 0.01, 0.1):
        thr, got, tar = cal.threshold_at_far(g, i, far)
        assert got <= far
        assert np.mean(i <= thr) == pytest.approx(got)
        assert tar == pytest.approx(np.mean(g <= thr))
        assert thr == pytest.approx(0.5 + far, abs=0.01)  # FAR(t) = t - 0.5


def test_roc_table_operating_points(rng):
    g, i = rng.uniform(0, 1, 5000), rng.uniform(0.5, 1.5, 20_000)
    rows = cal.roc_table(g, i, (0.01, 0.1))
    assert [r["target_far"] for r in rows] == [0.01, 0.1]
    assert rows[0]["threshold"] < rows[1]["threshold"] and rows[0]["tar"] < rows[1]["tar"]
    assert all(r["far"] <= r["target_far"] for r in rows)


def test_separated_sets_threshold_in_the_gap():
    g, i = np.array([0.1, 0.2, 0.3]), np.array([0.6, 0.7, 0.9])
    thr, far, tar = cal.threshold_at_far(g, i, 0.0)
    assert 0.3 < thr < 0.6 and far == 0 and tar == 1
    assert cal.roc(g, i).auc() == pytest.approx(1.0)
    assert cal.accuracy_at(g, i, thr) == 1.0
    s = cal.summary(g, i, 0.0)
    assert s["eer"] == pytest.approx(0.0, abs=1e-9) and s["accuracy"] == 1.0


def test_identical_distributions_auc_half(rng):
    x = rng.normal(size=50_000)
    assert cal.roc(x, rng.normal(size=50_000)).auc() == pytest.approx(0.5, abs=0.01)


def test_pair_distances_split(rng):
    v = rng.normal(size=(7, 4)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    g, i = cal.pair_distances(v, labels)
    assert g.size == 3 + 1 + 1 and i.size == 21 - 5
    assert g[0] == pytest.approx(np.linalg.norm(v[0] - v[1]), rel=1e-5)
    gc, _ = cal.pair_distances(v, labels, "cosine")
    assert np.all((gc >= -1e-6) & (gc <= 2 + 1e-6))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="genuine and impostor"):
        cal.summary([], [0.5])
    with pytest.raises(ConfigError, match=r"far must be in \[0, 1\)"):
        cal.threshold_at_far([0.1], [0.5], 1.5)
