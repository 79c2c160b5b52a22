"""Triplet loss with semi-hard mining on toy embeddings (Keras ops vs a loop reference), and PK batches."""

from __future__ import annotations

import numpy as np
import pytest

from apps.face.model import MARGIN, semi_hard_triplet_loss_np, triplet_loss

pytestmark = pytest.mark.tensorflow


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_course_triplet_loss_explicit_values():
    a = np.array([[0.0, 1.0]])
    p = np.array([[0.0, 0.9]])  # |a-p|^2 = 0.01
    n_far, n_close = np.array([[1.0, 0.0]]), np.array([[0.0, 0.85]])  # 2.0, 0.0225
    assert triplet_loss(a, p, n_far) == 0.0
    assert triplet_loss(a, p, n_close) == pytest.approx(0.01 - 0.0225 + MARGIN)


def test_keras_loss_matches_reference(rng):
    from apps.face.model import semi_hard_triplet_loss

    for trial in range(5):
        labels = rng.integers(0, 4, 12)
        emb = unit(rng.normal(size=(12, 8)))
        got = float(semi_hard_triplet_loss(labels, emb))
        assert got == pytest.approx(semi_hard_triplet_loss_np(labels, emb), rel=1e-4, abs=1e-6), trial


def test_mining_picks_the_semi_hard_negative():
    # anchor 0, positive 1 at squared distance 0.04; negatives at 0.01 (hard), 0.09 (semi-hard), 1.0 (easy)
    emb = np.array([[0, 0], [0.2, 0], [0.1, 0], [0, 0.3], [1.0, 0]], np.float32)
    labels = np.array([0, 0, 1, 2, 3])
    from apps.face.model import semi_hard_triplet_loss

    loss = float(semi_hard_triplet_loss(labels, emb))
    # pairs (0,1) and (1,0): a=0 -> semi-hard n=3 (0.09): 0.04-0.09+0.2=0.15;
    # a=1 (d_ap 0.04) -> negatives 0.01, 0.13, 0.64: semi-hard 0.13 -> 0.04-0.13+0.2 = 0.11
    assert loss == pytest.approx((0.15 + 0.11) / 2, abs=1e-5)
    assert loss == pytest.approx(semi_hard_triplet_loss_np(labels, emb), abs=1e-6)


def test_separated_clusters_have_zero_loss(rng):
    from apps.face.model import semi_hard_triplet_loss

    centres = unit(rng.normal(size=(4, 16))) * 10
    labels = np.repeat(np.arange(4), 3)
    emb = (centres[labels] + rng.normal(scale=0.01, size=(12, 16))).astype(np.float32)
    assert float(semi_hard_triplet_loss(labels, emb)) == 0.0


def test_a_few_steps_separate_toy_identities(rng):
    """A linear embedding trained a few steps on toy 'faces' lowers the loss and improves the held-out EER."""
    import keras

    from apps.face.calibrate import eer, pair_distances
    from apps.face.model import semi_hard_triplet_loss

    keras.utils.set_random_seed(0)
    protos = rng.normal(size=(10, 32)).astype(np.float32)
    labels = np.repeat(np.arange(10), 8)
    x = protos[labels] + rng.normal(scale=1.5, size=(80, 32)).astype(np.float32)  # noisy views
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(8), keras.layers.UnitNormalization()])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=semi_hard_triplet_loss)
    before = eer(*pair_distances(model.predict(x, verbose=0), labels))[0]
    first = float(semi_hard_triplet_loss(labels, model.predict(x, verbose=0)))
    model.fit(x, labels, batch_size=80, epochs=15, verbose=0, shuffle=False)
    after_loss = float(semi_hard_triplet_loss(labels, model.predict(x, verbose=0)))
    after = eer(*pair_distances(model.predict(x, verbose=0), labels))[0]
    assert after_loss < first and after < before


def test_pk_batches_hold_k_views_of_p_identities(rng):
    from apps.face.train import pk_batches

    labels = np.array([0] * 5 + [1] * 2 + [2] * 6 + [3] * 4)
    for idx in pk_batches(labels, p=3, k=2, steps=10, rng=rng):
        assert len(idx) == 6
        ids, counts = np.unique(labels[idx], return_counts=True)
        assert len(ids) == 3 and np.all(counts == 2)


def test_train_recipe_runs_a_few_steps(tmp_path, rng):
    """load_faces (crops given, --detector none) → identity split → two epochs of two PK batches."""
    import argparse

    import cv2

    from apps.face.train import _split, fit, load_faces

    for p in range(5):
        base = cv2.resize(rng.integers(0, 255, (4, 4, 3)).astype(np.uint8), (48, 48), interpolation=cv2.INTER_CUBIC)
        (tmp_path / f"person{p}").mkdir()
        for k in range(4):
            noisy = np.clip(base.astype(np.int16) + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / f"person{p}" / f"{k}.png"), noisy)
    chips, y, names = load_faces(tmp_path, 32, "none")
    assert chips.shape == (20, 32, 32, 3) and names == [f"person{p}" for p in range(5)]
    val = _split(y, 0.4, seed=0)
    assert len(np.unique(y[val])) == 2 and not set(y[val]) & set(y[~val])
    args = argparse.Namespace(seed=0, size=32, embedding=16, lr=1e-3, epochs=2, steps=2, people=3, per_person=2, patience=3)
    model, best = fit(chips[~val], y[~val], chips[val], y[val], args)
    assert model.output_shape == (None, 16) and 1 <= best["epoch"] <= 2 and 0.0 <= best["eer"] <= 1.0
