"""Trigger-word training side: synthesis, splits, mixing and labels, models and int8 conversion.

Real espeak-ng and a real converter child process; models are tiny and train a few steps.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from apps.trigger_word import augment as A
from apps.trigger_word import data as D
from apps.trigger_word import dataset as S
from sdk.audio import LogMel
from sdk.errors import ConfigError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/system-deps.sh)")


@needs_espeak
def test_splits_hold_out_whole_voices_and_plan_is_deterministic(tmp_path) -> None:
    cfg = D.CorpusConfig(seed=3, max_variants=20)
    a, b = D.plan(cfg, tmp_path), D.plan(cfg, tmp_path)
    assert a == b
    by_split: dict[str, set[str]] = {s: set() for s in D.SPLITS}
    variants: dict[str, set[str]] = {s: set() for s in D.SPLITS}
    for voice, utts in a:
        by_split[voice.split].add(voice.key)
        if voice.engine == "espeak-ng":
            variants[voice.split].add(voice.name.split("+")[1])
        assert any(u.positive for u in utts) and any(not u.positive for u in utts)
        assert all(not D.says_word(u.text, "activate") for u in utts if not u.positive)
    for s1 in D.SPLITS:
        for s2 in D.SPLITS:
            if s1 < s2:
                assert not by_split[s1] & by_split[s2]
                assert not variants[s1] & variants[s2]  # a variant never appears in two splits
    assert all(by_split[s] for s in D.SPLITS)
    assert {v.split for v, _ in a if v.engine == "flite"} <= {"test"}  # the held-out engine only tests
    assert {v.split for v, _ in a if v.engine == "kokoro"} <= {"train", "val"}  # Kokoro never tests
    negatives = {u.text for _, utts in a for u in utts if not u.positive}
    assert {"captivate", "deactivate"} <= negatives  # a phonetic neighbour and the word inside a longer one, said by the voices
    other = D.plan(D.CorpusConfig(seed=4, max_variants=20), tmp_path)
    assert [v for v, _ in other] != [v for v, _ in a]


@needs_espeak
def test_synthesis_is_deterministic_and_cached(tmp_path) -> None:
    voice = D.Voice("espeak-ng", "en-us+f3", "train")
    conf, sents = ["captivate", "activity"], D.sentences("activate")
    utts = D.plan_voice(voice, "activate", conf, sents, 2, 2, seed=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = D._synth_cached(voice, utts, tmp_path / "a")
    second = D._synth_cached(voice, utts, tmp_path / "b")
    assert len(first) == 4 and all(x.dtype == np.float32 and x.shape[0] > 1600 for x in first)
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert len(list((tmp_path / "a").glob("*.npz"))) == 1
    again = D._synth_cached(voice, utts, tmp_path / "a")
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    # a positive of "activate" lasts roughly half a second to a second once trimmed
    assert 0.3 < first[0].shape[0] / D.SR < 1.5


@needs_espeak
def test_mixed_variants_recombine_training_variants_only_and_sound_different(tmp_path) -> None:
    voices = D.espeak_voices(0)
    mixed = D.mixed_variants(voices, 12, seed=0)
    assert mixed == D.mixed_variants(voices, 12, seed=0) and mixed != D.mixed_variants(voices, 12, seed=1)
    assert len({v.variant for v in mixed}) == 12 and all(v.split == "train" and v.engine == "espeak-ng" for v in mixed)
    # every setting line comes from a training variant (formant frequencies scaled), never from a held-out one
    vdir = D.espeak_data_dir() / "voices" / "!v"
    train = {v.name.split("+")[1] for v in voices if v.split == "train"}
    held_out = {v.name.split("+")[1] for v in voices if v.split != "train"}
    allowed = {line for name in train if (vdir / name).is_file() for lines in D.variant_settings((vdir / name).read_text(errors="replace")).values()
               for line in lines}
    for v in mixed:
        settings = D.variant_settings(v.variant)
        assert settings["formant"]  # always set: a scaled vocal tract
        assert all(line in allowed for k, lines in settings.items() if k != "formant" for line in lines)
    assert not {v.name.split("+")[1] for v in mixed} & (train | held_out)
    # the generated variant is really used: its speech differs from the accent's default voice, and is cached apart
    utt = [D.Utterance("activate", True)]
    own = D._synth_cached(mixed[0], utt, tmp_path)[0]
    plain = D.synth_espeak(mixed[0].name.split("+")[0], utt)[0]
    assert own.shape[0] > 1600 and not (own.shape == plain.shape and np.allclose(own, plain))
    other = D.Voice("espeak-ng", mixed[0].name, "train", mixed[1].variant)
    D._synth_cached(other, utt, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert D.mixed_variants(voices, 0, seed=0) == []


@needs_espeak
def test_confusables_for_any_word_exclude_the_word(tmp_path) -> None:
    near = D.confusables("computer", tmp_path)
    assert len(near) > 50 and "computer" not in near and not any(D.says_word(w, "computer") for w in near)
    conf = D.confusables("activate", tmp_path)
    assert {"captivate", "activated", "deactivate"} <= set(conf) and not any(D.says_word(w, "activate") for w in conf)
    with pytest.raises(ConfigError, match="word: expected English letters"):
        D.confusables("act1vate!", tmp_path)


def test_mix_inserts_without_overlap_and_labels_follow_positive_ends() -> None:
    rng = np.random.default_rng(0)
    word = (0.5 * np.sin(np.arange(int(0.6 * D.SR)) * 0.3)).astype(np.float32)
    bg = A.background(rng, 6 * D.SR, [word])
    x, events = A.mix(rng, bg, [(word, True), (word, False), (word, True)])
    assert x.shape == bg.shape and np.abs(x).max() <= 0.99 and len(events) == 3
    for e1, e2 in zip(events, events[1:]):
        assert e1.end <= e2.start
    ends = np.arange(1.2, 6.0, 0.1)
    lab = A.window_labels(events, ends, 1.2, after_s=0.5)
    for e in (e for e in events if e.positive):
        after = (ends >= e.end - 0.02) & (ends <= e.end + 0.5)
        assert (lab[after & (ends - 1.2 <= e.start)] == 1).all() and after.any()
        before = (ends < e.end - 0.15) & (ends > e.start + 0.05)
        assert (lab[before] <= 0).all()  # never positive before the word has ended
    neg = [e for e in events if not e.positive][0]
    far = np.array([min(abs(t - p.end) for p in events if p.positive) > 1.3 for t in ends])
    assert (lab[far] == 0).all() and neg.end > 0
    steps = A.frame_labels(events, ends, after_s=0.5)
    for e in (e for e in events if e.positive):
        assert steps[(ends > e.end) & (ends <= e.end + 0.5)].all()
    assert steps.sum() > 0 and not steps[ends < events[0].end].any()


def test_windows_from_streams_deterministic_and_aligned() -> None:
    clips = [D.Clip(np.sin(np.arange(8000) * f).astype(np.float32) * 0.3, "w", i % 2 == 0, f"espeak-ng:v{i}", "train")
             for i, f in enumerate((0.1, 0.2, 0.15, 0.05))]
    lm = LogMel()
    w1 = S.make_windows(clips, 7, 1.2, 0.3, lm, course_steps=26)
    w2 = S.make_windows(clips, 7, 1.2, 0.3, lm, course_steps=26)
    assert np.array_equal(w1.feats, w2.feats) and np.array_equal(w1.labels, w2.labels)
    assert (w1.labels == 1).sum() >= 2 and (w1.labels == 0).sum() > 0
    assert w1.seq_labels.shape == (w1.labels.shape[0], 26)
    b = w1.batch(np.arange(3), lm.frames_for(int(1.2 * 16000)))
    assert b.shape == (3, 118, 40)
    assert np.array_equal(b[1], w1.feats[w1.starts[1] : w1.starts[1] + 118])


@pytest.mark.tensorflow
def test_course_architecture_trains_and_converts_to_int8(tmp_path) -> None:
    import keras

    from apps.trigger_word.app import TriggerWordDetector, card_fields
    from apps.trigger_word.model import build_course, build_dscnn, course_steps
    from converters.convert import convert
    from sdk.audio import FeatureParams
    from sdk.card import ModelCard

    rng = np.random.default_rng(0)
    frames = 38  # 0.4 s windows keep the unrolled GRUs small
    x = rng.normal(-6, 3, (48, frames, 40)).astype(np.float32)
    steps = course_steps(frames)
    y = np.zeros((48, steps, 1), np.float32)
    y[::2, -3:] = 1
    x[::2, -10:, :] += 4.0  # a learnable "word" near the end
    keras.utils.set_random_seed(0)
    m = build_course(frames, 40, conv_filters=16, units=8)
    m.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    before = m.evaluate(x, y, verbose=0)
    m.fit(x, y, epochs=4, batch_size=16, verbose=0)
    assert m.evaluate(x, y, verbose=0) < before
    assert build_dscnn(118, 40).output_shape == (None, 1)

    card = ModelCard(**card_fields("activate", FeatureParams(), 0.4, 0.1, 0.5))
    res = convert(m, "int8", output=tmp_path / "course_int8.tflite", calibration=x, card=card, progress=False)
    assert res.report["full_integer"] and not res.report["while_loop"]
    assert res.report["accuracy"]["outputs"][0]["max_abs_err"] < 0.1
    det = TriggerWordDetector(res.path)  # the device detector reads the card and the per-step output
    times, scores = det.scores(rng.normal(0, 0.05, 16000).astype(np.float32))
    assert times.shape[0] == scores.shape[0] > 0 and ((scores >= 0) & (scores <= 1)).all()


def test_threshold_is_chosen_for_the_false_accept_target() -> None:
    from apps.trigger_word.operating_point import pick_threshold

    det = [[0.1, 0.0, 9.0], [0.3, 0.02, 1.0], [0.5, 0.03, 0.4], [0.7, 0.03, 0.0], [0.9, 0.2, 0.0]]
    assert pick_threshold(det, 0.5) == 0.6  # lowest FRR (3%) at <= 0.5 FA/h, middle of that plateau
    assert pick_threshold([[0.5, 0.0, 5.0], [0.9, 0.1, 2.0]], 0.5) == 0.9  # unreachable: fewest false accepts
    # never firing has no false accepts but is not an operating point: fewest FA/h among usable miss rates
    assert pick_threshold([[0.5, 0.0, 5.0], [0.9, 0.1, 2.0], [0.99, 1.0, 0.0]], 0.5) == 0.9


@pytest.mark.tensorflow
def test_recipe_fit_trains_both_architectures_on_windows() -> None:
    from apps.trigger_word import train as T
    from apps.trigger_word.model import course_steps

    clips = [D.Clip(np.sin(np.arange(8000) * f).astype(np.float32) * 0.3, "w", i % 2 == 0, f"espeak-ng:v{i}", "train")
             for i, f in enumerate((0.1, 0.2, 0.15, 0.05))]
    w = S.make_windows(clips, 7, 1.2, 0.3, LogMel(), course_steps=course_steps(118))
    for arch, shape in (("course", (None, course_steps(118), 1)), ("dscnn", (None, 1))):
        m = T.fit(T.TrainConfig(arch=arch, epochs=1, batch=8), w, w, 118, 40)
        assert m.output_shape == shape
    # the embedding head as an ensemble in one model: the logit it converts with is the mean of its branches
    from apps.trigger_word.model import branch_logits, logit_model

    m = T.fit(T.TrainConfig(arch="embedding", heads=3, l2=1e-4, epochs=2, batch=8), w, w, 118, 40)
    x = w.batch(np.arange(16), 118)
    per_branch = np.asarray(branch_logits(m)(x))
    assert per_branch.shape == (16, 3) and np.ptp(per_branch, axis=1).max() > 1e-3  # the branches differ
    np.testing.assert_allclose(np.asarray(logit_model(m)(x))[:, 0], per_branch.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m(x))[:, 0], 1 / (1 + np.exp(-per_branch.mean(axis=1))), rtol=1e-5, atol=1e-6)
    # separately trained members averaged into one model: its logit is their mean, and it converts to int8
    from apps.trigger_word.model import average_members

    other = T.fit(T.TrainConfig(arch="embedding", heads=2, seed=1, epochs=1, batch=8), w, w, 118, 40)
    ens = average_members([m, other])
    assert average_members([m]) is m and ens.count_params() == m.count_params() + other.count_params()
    want = (np.asarray(logit_model(m)(x)) + np.asarray(logit_model(other)(x))) / 2
    np.testing.assert_allclose(np.asarray(logit_model(ens)(x)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ens(x)), 1 / (1 + np.exp(-want)), rtol=1e-5, atol=1e-6)


def test_ensemble_members_differ_only_by_their_babble_weight(tmp_path) -> None:
    from dataclasses import replace

    from apps.trigger_word.train import TrainConfig, _windows_path, member_configs

    cfg = TrainConfig(babble_weights=(1, 3))
    a, b = member_configs(cfg)
    assert (a.babble_weights, b.babble_weights) == ((1,), (3,))
    assert replace(a, babble_weights=cfg.babble_weights) == cfg == replace(b, babble_weights=cfg.babble_weights)
    assert _windows_path(tmp_path, a, "train") != _windows_path(tmp_path, b, "train")  # each mixes (and caches) its own streams
    one = TrainConfig(babble_weights=(3,))
    assert member_configs(one) == [one]
    (mel,) = member_configs(TrainConfig(arch="dscnn", babble_weights=(1, 3)))  # no logit layer to average: one model
    assert mel.babble_weights == (1,) and mel.arch == "dscnn"


def test_members_trained_side_by_side_equal_members_trained_in_turn(tmp_path, rng, capsys) -> None:
    """Worker processes (``--jobs 2``) give the very same members, bit for bit, and the same calibration windows."""
    import keras

    from apps.trigger_word.jobs import run_jobs
    from apps.trigger_word.train import TrainConfig, _train_member, _windows_path, member_configs, with_features

    cfg, _ = with_features(TrainConfig(work=str(tmp_path), heads=1, epochs=2, batch=16))
    n = 1200
    starts = np.arange(0, n - 16, 2)
    for mcfg in member_configs(cfg):  # each member's own (cached) windows: no mixing here
        labels = (rng.random(starts.shape[0]) < 0.3).astype(np.int8)
        np.savez(_windows_path(tmp_path, mcfg, "train"), feats=rng.standard_normal((n, 96)).astype(np.float32), starts=starts, labels=labels)
    val = tmp_path / "val.npz"
    np.savez(val, feats=rng.standard_normal((n, 96)).astype(np.float32), starts=starts, labels=(rng.random(starts.shape[0]) < 0.3).astype(np.int8))
    args = [(mcfg, m, 2, val) for m, mcfg in enumerate(member_configs(cfg))]
    runs = []
    for jobs in (2, 1):
        out = run_jobs(_train_member, args, jobs)
        runs.append([([w.copy() for w in keras.models.load_model(path).get_weights()], calib) for path, calib in out])
    for (w_par, c_par), (w_seq, c_seq) in zip(*runs):
        assert len(w_par) == len(w_seq) and all(np.array_equal(a, b) for a, b in zip(w_par, w_seq))
        np.testing.assert_array_equal(c_par, c_seq)
        assert c_par.shape == (50 + 100, 16, 96)  # half of the 300 calibration windows from each member
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0][0][0], runs[0][1][0]))  # the two members differ
    err = capsys.readouterr().err
    assert "member 1/2 (babble weight 1): training" in err and "member 2/2 (babble weight 3): training" in err


def test_run_jobs_keeps_order_and_raises_a_workers_error() -> None:
    from apps.trigger_word.jobs import run_jobs

    assert run_jobs(divmod, [(7, 2), (9, 4), (1, 1)], 2) == [(3, 1), (2, 1), (1, 0)]
    with pytest.raises(ZeroDivisionError):
        run_jobs(divmod, [(1, 0), (2, 1)], 2)


def test_windows_are_cached_by_data_options(tmp_path, rng):
    from dataclasses import replace

    from apps.trigger_word.dataset import Windows
    from apps.trigger_word.train import TrainConfig, _cached_windows

    calls = []

    def make():
        calls.append(1)
        return Windows(rng.standard_normal((50, 4)).astype(np.float32), np.arange(10), np.zeros(10, np.float32))

    cfg = TrainConfig(arch="dscnn", window_s=1.2, hop_s=0.1, work=str(tmp_path))
    a, path = _cached_windows(tmp_path, cfg, "train", make)
    b, again = _cached_windows(tmp_path, replace(cfg, epochs=3, jobs=1), "train", make)  # training options: same windows
    np.testing.assert_array_equal(a.feats, b.feats)
    assert path == again and path.is_file()
    assert len(calls) == 1 and b.seq_labels is None
    _cached_windows(tmp_path, replace(cfg, minutes=5.0), "train", make)  # a data option: new windows
    assert len(calls) == 2 and not list(tmp_path.glob("*.tmp.npz"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.wav").write_bytes(b"one")
    _cached_windows(tmp_path, replace(cfg, positives=str(mine)), "train", make)
    _cached_windows(tmp_path, replace(cfg, positives=str(mine)), "train", make)
    assert len(calls) == 3
    (mine / "a.wav").write_bytes(b"two")  # the same folder with an edited recording: new windows
    _cached_windows(tmp_path, replace(cfg, positives=str(mine)), "train", make)
    assert len(calls) == 4


def test_your_own_recordings_become_training_clips(tmp_path, rng) -> None:
    from sdk.sources.audio import write_wav

    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir()
    neg.mkdir()
    t = np.arange(int(0.5 * 8000)) / 8000
    word = np.concatenate([np.zeros(2400), 0.4 * np.sin(2 * np.pi * 300 * t), np.zeros(2400)]).astype(np.float32)
    write_wav(pos / "me1.wav", np.stack([word, 0.5 * word], axis=1), 8000)  # 8 kHz stereo: downmixed, resampled
    write_wav(neg / "room.wav", (0.1 * rng.standard_normal(7 * 16000)).astype(np.float32), 16000)
    clips = D.user_clips(pos, True, "activate")
    assert [(c.positive, c.split, c.voice, c.text) for c in clips] == [(True, "train", "user:me1.wav", "activate")]
    assert abs(clips[0].audio.shape[0] - 0.54 * D.SR) < 0.03 * D.SR  # the silence around the word is trimmed
    pieces = D.user_clips(neg, False, "activate")
    assert len(pieces) == 3 and not any(c.positive for c in pieces) and all(c.audio.shape[0] <= 3 * D.SR for c in pieces)
    # as training data, user positives weigh like the other natural voices
    w = S.make_windows(clips + pieces, 0, 1.2, 0.2, LogMel(), natural_boost=3)
    assert (w.labels == 1).any()

    write_wav(pos / "long.wav", (0.3 * rng.standard_normal(3 * 16000)).astype(np.float32), 16000)
    with pytest.raises(ConfigError, match=r"long\.wav: 3\.0 s of sound.*at most 1\.9 s"):
        D.user_clips(pos, True, "activate")
    (pos / "long.wav").unlink()
    write_wav(pos / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(ConfigError, match=r"silent\.wav: no sound"):
        D.user_clips(pos, True, "activate")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="negatives .*no .wav files"):
        D.user_clips(tmp_path / "empty", False, "activate")
    with pytest.raises(ConfigError, match="positives .*not a folder"):
        D.user_clips(tmp_path / "nope", True, "activate")


def test_background_folder_is_checked(tmp_path, rng) -> None:
    from sdk.sources.audio import write_wav

    bg = tmp_path / "bg"
    bg.mkdir()
    write_wav(bg / "fan.wav", (0.1 * rng.standard_normal((2 * 8000, 2))).astype(np.float32), 8000)
    write_wav(bg / "click.wav", (0.1 * rng.standard_normal(1000)).astype(np.float32), 16000)
    (got,) = A.load_backgrounds(bg)  # the 2 s fan (8 kHz stereo) at 16 kHz mono; the click is too short to be a background
    assert got.ndim == 1 and abs(got.shape[0] - 2 * D.SR) <= 2
    with pytest.raises(ConfigError, match="backgrounds .*not a folder"):
        A.load_backgrounds(tmp_path / "nope")
    (bg / "fan.wav").unlink()
    with pytest.raises(ConfigError, match=r"backgrounds .*shorter than 0\.5 s"):
        A.load_backgrounds(bg)


def test_babble_weight_draws_babble_that_much_more_often() -> None:
    talk = [np.ones(800, np.float32)]  # babble of non-negative "speech" never goes below 0; every other background does

    def babble_share(weight: int) -> float:
        rng = np.random.default_rng(0)
        return float(np.mean([A.background(rng, 1600, talk, babble_weight=weight).min() >= 0 for _ in range(700)]))

    assert 0.08 < babble_share(1) < 0.22  # 1 of the 7 kinds
    assert 0.3 < babble_share(4) < 0.5  # 4 of 10


def test_echo_repeats_the_word_every_delay_each_quieter() -> None:
    x = np.zeros(4000, np.float32)
    x[0] = 1.0  # a click: its echo is the impulse response
    y = A.echo(np.random.default_rng(3), x)
    peaks = np.flatnonzero(np.abs(y) > 1e-6)
    d = int(peaks[1])
    assert 0.06 * D.SR <= d <= 0.25 * D.SR and y.shape[0] == x.shape[0] + d  # the word now ends one delay later
    np.testing.assert_array_equal(peaks, np.arange(peaks.shape[0]) * d)
    g = float(y[d])
    assert 0.3 <= g <= 0.7 and peaks.shape[0] >= 4
    np.testing.assert_allclose(y[peaks], g ** np.arange(peaks.shape[0]), rtol=1e-5)


@pytest.mark.parametrize("option", [["--heads", "0"], ["--jobs", "0"], ["--mixed-voices", "-1"], ["--babble-weights", "1,0"], ["--babble-weights", "1,x"], ["--babble-weights", "2,2"]])
def test_train_rejects_bad_counts_before_any_work(tmp_path, capsys, option) -> None:
    from cli import main

    assert main(["train", "trigger-word", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), *option]) == 2
    err = capsys.readouterr().err
    assert option[0] in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_the_recipe(tmp_path) -> None:
    """A killed ``edgesdk train`` leaves no worker training on (they were orphaned and ran for minutes)."""
    import os
    import signal
    import subprocess
    import time

    pids = tmp_path / "pids"
    code = ("import os, sys, time; sys.path.insert(0, '.'); from apps.trigger_word.jobs import run_jobs; "
            f"run_jobs(os.system, [('echo $PPID >> {pids}; sleep 20',), ('echo $PPID >> {pids}; sleep 20',)], 2)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.is_file() or len(pids.read_text().split()) < 2):
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2 and parent.pid not in workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2] for w in workers):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2] for w in workers)
