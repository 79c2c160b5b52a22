"""Fitting one trigger-word model on mixed windows: the batches, the callbacks and :func:`fit`.

Adam, balanced class weights, early stopping on the validation sensitivity at 99.8%
specificity, a time budget, and hard-negative mining. Host side: TensorFlow and Keras are
imported inside functions only (TensorFlow's thread pools must be set before it starts).
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import numpy as np

from apps.trigger_word.jobs import log


class FitOptions(Protocol):
    """What :func:`fit` reads of its config (``apps.trigger_word.train.TrainConfig`` carries all of it)."""

    @property
    def arch(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def l2(self) -> float: ...
    @property
    def batch(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def max_train_minutes(self) -> float: ...
    @property
    def hard_negatives(self) -> bool: ...


def _batches(keras: Any, w: Any, frames: int, batch: int, seed: int, neg_ratio: float, seq: bool) -> Any:
    """A Keras PyDataset over ``w``: all positive windows + ``neg_ratio`` x as many negatives, reshuffled per epoch.

    Defined here because its base class is Keras' and Keras is imported only once TensorFlow's
    threads are set.
    """

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.pos = np.flatnonzero(w.labels == 1)
            self.neg = np.flatnonzero(w.labels == 0)
            self.n_neg = min(self.neg.shape[0], int(neg_ratio * self.pos.shape[0]))
            self.hard: np.ndarray | None = None  # set by HardNegatives: the negatives the model scores highest
            self.on_epoch_end()

        def on_epoch_end(self) -> None:
            n_hard = 0 if self.hard is None else min(self.hard.shape[0], self.n_neg // 2)
            rand = self.rng.choice(self.neg, self.n_neg - n_hard, replace=False)
            idx = np.concatenate([self.pos, self.hard[:n_hard] if n_hard else rand[:0], rand])
            self.idx = idx[self.rng.permutation(idx.shape[0])]

        def __len__(self) -> int:
            return int(np.ceil(self.idx.shape[0] / batch))

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            ix = self.idx[i * batch : (i + 1) * batch]
            x = w.batch(ix, frames)
            if seq:
                y = w.seq_labels[ix][..., None]
                return x, y, np.ones(y.shape[:2], np.float32)
            y = w.labels[ix][:, None]
            # balanced class weights: each class carries half of the loss
            cw = np.where(y[:, 0] == 1, self.idx.shape[0] / (2 * self.pos.shape[0]), self.idx.shape[0] / (2 * self.n_neg))
            return x, y, cw.astype(np.float32)

    return Batches()


class WindowScores:
    """Ranking scores of windows: the mean branch logit, or the model's output (per step for ``course``).

    Args:
        model: the model being trained.
        per_branch: ``model`` outputs one logit per branch (they are averaged).
        frames: feature frames per window.
    """

    def __init__(self, model: Any, per_branch: bool, frames: int) -> None:
        self.model, self.per_branch, self.frames = model, per_branch, frames

    def __call__(self, w: Any, idx: np.ndarray) -> np.ndarray:
        """Scores of windows ``idx`` of ``w``, flattened (all steps of a window in a row)."""
        out = []
        for i in range(0, idx.shape[0], 8192):
            o = np.asarray(self.model(w.batch(idx[i : i + 8192], self.frames), training=False))
            out.append(o.mean(axis=-1) if self.per_branch else o.reshape(o.shape[0], -1))
        return np.concatenate(out).reshape(-1)


class ValidationSensitivity:
    """``val_sens``: the share of validation positives scored above all but 0.2% of the validation negatives.

    Early stopping watches this operating point over *all* validation windows: the mean
    loss mostly measures easy background and stops before hard-negative mining has done
    its work. Computed exactly on logits: Keras' SensitivityAtSpecificity bins scores at
    200 steps in [0, 1] and reads 0 once the sigmoid saturates, where this point lies.

    Args:
        scores: scores the model's windows.
        val_w: the validation windows.
        seq: per-step labels (``course``) instead of one per window.
    """

    def __init__(self, scores: WindowScores, val_w: Any, seq: bool) -> None:
        self.scores, self.val_w = scores, val_w
        self.idx = np.flatnonzero(val_w.labels >= 0)
        self.y = (val_w.seq_labels[self.idx] if seq else val_w.labels[self.idx]).reshape(-1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        s = self.scores(self.val_w, self.idx)
        thr = np.quantile(s[self.y == 0], 0.998)
        if logs is not None:
            logs["val_sens"] = float(np.mean(s[self.y == 1] > thr))


class TimeBudget:
    """Logs each epoch and stops training once ``max_minutes`` have passed since ``t0``.

    Args:
        model: the model being trained (its ``stop_training`` is set).
        max_minutes: the budget.
        t0: when training started (``time.time()``).
    """

    def __init__(self, model: Any, max_minutes: float, t0: float) -> None:
        self.model, self.max_minutes, self.t0 = model, max_minutes, t0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        log(f"epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} val_sens@99.8%spec {logs.get('val_sens', 0):.4f} ({time.time() - self.t0:.0f} s)")
        if time.time() - self.t0 > self.max_minutes * 60:
            log(f"time budget of {self.max_minutes} min reached: stopping")
            self.model.stop_training = True


class HardNegatives:
    """After each epoch, half of the next epoch's negatives are those the model now scores highest.

    Random negatives are mostly background the model already rejects; the false accepts come
    from a few confusable words ("activating", "activist") that random sampling rarely shows.

    Args:
        scores: scores the model's windows.
        train_w: the training windows.
        batches: the training batches (:func:`_batches`), whose ``hard`` negatives this sets.
    """

    def __init__(self, scores: WindowScores, train_w: Any, batches: Any) -> None:
        self.scores, self.train_w, self.batches = scores, train_w, batches

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        b = self.batches
        s = self.scores(self.train_w, b.neg)
        order = np.argsort(-s)[: b.n_neg // 2]
        b.hard = b.neg[order]
        b.on_epoch_end()
        log(f"hard negatives: {order.shape[0]} of {s.shape[0]}, scores {s[order[-1]]:.3f}..{s[order[0]]:.3f}")


def branch_loss(y: Any, logits: Any) -> Any:
    """Each branch its own cross-entropy on its logit: an ensemble, not one wide model."""
    import keras

    y = keras.ops.broadcast_to(keras.ops.cast(y, logits.dtype), keras.ops.shape(logits))
    return keras.ops.mean(keras.ops.binary_crossentropy(y, logits, from_logits=True), axis=-1)


def _keras(threads: int) -> Any:
    """Keras, with TensorFlow's thread pools set first (``threads`` for its ops; the numerics depend on it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process: its thread pools stay as they are
        log("TensorFlow already initialised: --threads not applied")
    import keras

    return keras


def fit(cfg: FitOptions, train_w: Any, val_w: Any, frames: int, n_features: int) -> Any:
    """Train ``cfg.arch`` on the windows.

    Args:
        cfg: the recipe's options (architecture, seed, batch, epochs, threads, budget...).
        train_w: training windows (:class:`apps.trigger_word.dataset.Windows`).
        val_w: validation windows, for early stopping.
        frames: feature frames per window.
        n_features: features per frame.

    Returns:
        The Keras model with the best validation weights.
    """
    keras = _keras(cfg.threads)
    from apps.trigger_word.model import branch_logits, build

    keras.utils.set_random_seed(cfg.seed)
    model = build(cfg.arch, frames, n_features, **({"heads": cfg.heads, "l2": cfg.l2} if cfg.arch == "embedding" else {}))
    branches = branch_logits(model)  # embedding heads train on logits, one cross-entropy per branch
    trainee = model if branches is None else branches
    trainee.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy" if branches is None else branch_loss)
    seq = cfg.arch == "course"
    batches = _batches(keras, train_w, frames, cfg.batch, cfg.seed, 3.0, seq)
    log(f"training {cfg.arch} ({model.count_params()} parameters): {batches.pos.shape[0]} positive + {batches.n_neg} negative windows per epoch")
    t0 = time.time()
    scores = WindowScores(trainee, branches is not None, frames)

    def epoch_end(c: Any) -> Any:  # ours need only this hook: Keras calls it in list order
        return keras.callbacks.LambdaCallback(on_epoch_end=c.on_epoch_end)

    stop = keras.callbacks.EarlyStopping(monitor="val_sens", mode="max", patience=2, restore_best_weights=True)
    callbacks = [epoch_end(ValidationSensitivity(scores, val_w, seq)), stop, epoch_end(TimeBudget(trainee, cfg.max_train_minutes, t0))]
    if cfg.hard_negatives and not seq:
        callbacks.append(epoch_end(HardNegatives(scores, train_w, batches)))
    trainee.fit(batches, epochs=cfg.epochs, callbacks=callbacks, verbose=0)
    return model
