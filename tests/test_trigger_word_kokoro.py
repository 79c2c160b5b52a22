"""Kokoro-82M as a training-speech engine: the real model from its PyPI parts, voices, phonemes, the cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from apps.trigger_word import data as D
from apps.trigger_word import kokoro as K
from sdk.errors import ConfigError

pytestmark = [
    pytest.mark.skipif(K.available() is not None, reason=f"Kokoro not installed: {K.available()}"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/system-deps.sh)"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kokoro")


def test_ipa_is_mapped_to_kokoros_symbols() -> None:
    assert K.ipa_to_kokoro("hˈe^ɪ nˈo^ʊvə") == "hˈA nˈOvə"
    assert K.ipa_to_kokoro("d^ʒˈʌmp t^ʃˈɜːɹt^ʃ rˈa^ɪt") == "ʤˈʌmp ʧˈɜɹʧ ɹˈIt"
    vocab, packs = K._data()
    assert packs.shape == (5, 510, 256)
    for text in ("activate", "hey nova", "the quick brown fox jumps over the lazy dog"):
        assert all(c in vocab for c in K.phonemes(text)), K.phonemes(text)  # every symbol is a Kokoro token


def test_model_is_assembled_once_and_checked(cache, monkeypatch) -> None:
    import hashlib

    path = K.model_file(cache)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == K.MODEL_SHA256
    assert not list(cache.glob("*.tmp"))
    assert K.model_file(cache) == path  # the second call finds it
    # parts that do not give the pinned file: refused, nothing left behind
    other = cache / "other"
    monkeypatch.setattr(K, "MODEL_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match="SHA-256"):
        K.model_file(other)
    assert not any(other.iterdir())


def test_voices_are_deterministic_blends_and_splits_differ() -> None:
    a, b = K.random_voices(20, 0, 0), K.random_voices(20, 0, 0)
    assert a == b and len(set(a)) == 20
    assert all(abs(sum(v.weights) - 1) < 1e-3 and min(v.weights) >= 0 for v in a)
    assert not set(a) & set(K.random_voices(20, 0, 1))  # validation blends are drawn apart
    assert K.KokoroVoice.from_json(a[3].to_json()) == a[3]
    s = K.style(a[0], 12)
    assert s.shape == (1, 256) and s.dtype == np.float32


def test_speech_is_synthesised_per_voice_and_cached(cache, monkeypatch) -> None:
    voices = [D.Voice("kokoro", f"t{i}", "train", v.to_json()) for i, v in enumerate(K.random_voices(2, 5, 0))]
    utts = [D.Utterance("activate", True, speed=1.0), D.Utterance("captivate the cat", False, speed=1.2, gain=0.5)]
    first = [D._synth_cached(v, utts, cache) for v in voices]
    for clips in first:
        assert len(clips) == 2 and all(x.dtype == np.float32 for x in clips)
        assert 0.3 * D.SR < clips[0].shape[0] < 1.5 * D.SR  # one word, trimmed
        assert clips[1].shape[0] > clips[0].shape[0]
    assert not np.array_equal(first[0][0][:4000], first[1][0][:4000])  # two speakers, two sounds
    assert len(list((cache / "kokoro").rglob("*.npy"))) == 4 and not list(cache.rglob("*.tmp.npy"))  # one file per clip

    def no_synthesis(*a, **k):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(K, "_session", no_synthesis)
    again = D._synth_cached(voices[0], utts, cache)  # from the cache, keyed by the voice's parameters and the texts
    assert all(np.array_equal(x, y) for x, y in zip(first[0], again))
    with pytest.raises(AssertionError, match="synthesised again"):  # another text: a new entry
        D._synth_cached(voices[0], [D.Utterance("activity", False)], cache)


def test_kokoro_voices_are_planned_for_training_and_validation_only() -> None:
    jobs = D.kokoro_jobs(D.CorpusConfig(kokoro_voices=6, kokoro_val_voices=2), ["captivate"], ["a whole sentence here"])
    assert sorted(v.split for v, _ in jobs) == ["train"] * 6 + ["val"] * 2
    assert all(any(u.positive for u in utts) and any(not u.positive for u in utts) for _, utts in jobs)
    assert D.kokoro_jobs(D.CorpusConfig(kokoro_voices=0, kokoro_val_voices=0), [], []) == []
