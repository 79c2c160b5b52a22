"""Adversarial negatives for any trigger word: dictionary words by espeak-ng phoneme distance.

Real espeak-ng on a small word list written by each test; one test uses the whole Debian list.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest

from apps.trigger_word import confusables as C
from apps.trigger_word.confusables import contains_word
from apps.trigger_word.texts import COMMON_WORDS
from sdk.errors import ConfigError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/system-deps.sh)")

WORDS = (
    "activate activated activates reactivate deactivate activating captivate cultivate activity active actively "
    "motivate act acted actor of eight ate elate gate hate evade tea at "
    "hey hay hair say nova novas novae no know over oval ova hare okay oak care commuter computer computers xiv"
).split()


@pytest.fixture
def words(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join([*WORDS, *COMMON_WORDS, "Nevada", "AAA", "cat's", "hmm", "b", "Zoë"]) + "\n")
    return path


def test_word_list_keeps_lowercase_words_with_a_vowel(tmp_path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("zebra\nA\na\nI\ni\nb\nNevada\nAAA\ncat's\ncat\nhmm\nyr\nmy\ncat\nZoë\nnaïve\n")
    assert C.word_list(path) == ["a", "cat", "i", "my", "zebra"]


def test_missing_word_list_names_it_and_the_package(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "none.txt"
    with pytest.raises(ConfigError, match="none.txt") as err:
        C.adversarial("activate", tmp_path / "cache", path=missing)
    assert err.value.param == "path"
    monkeypatch.setattr(C, "DEFAULT_WORDS", missing)
    with pytest.raises(ConfigError, match="sudo apt-get install wamerican"):
        C.word_list(missing)


def test_bad_arguments_name_the_parameter(words, tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        C.adversarial("activate!", tmp_path, path=words)
    assert err.value.param == "word"
    with pytest.raises(ConfigError, match="n_near must be >= 0, got -1") as err:
        C.adversarial("activate", tmp_path, n_near=-1, path=words)
    assert err.value.param == "n_near"


def _edit_distance(a: str, b: str) -> int:
    """The textbook Levenshtein distance, the reference for the vectorised one."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def test_edit_distance_matches_the_plain_one() -> None:
    letters = "abcdefg"  # one-letter names: every substitution costs 1, as in the plain Levenshtein distance
    coder = C._Coder(letters)
    rng = random.Random(0)
    target = "abcde"
    cands = ["".join(rng.choice(letters) for _ in range(rng.randint(0, 8))) for _ in range(200)]
    codes, lens = coder.matrix(cands)
    got = coder.distance(target, codes, lens)
    assert got.tolist() == [_edit_distance(target, c) for c in cands]
    half = C._Coder(["I", "I#", "a"])
    assert half.distance(["a", "I"], *half.matrix([["a", "I#"], ["a", "a"]])).tolist() == [0.5, 1.0]


@needs_espeak
def test_activate_gets_near_words_phrases_and_words_containing_it(words, tmp_path, capsys) -> None:
    adv = C.adversarial("activate", tmp_path, n_near=10, n_phrases=8, path=words)
    assert {"captivate", "cultivate", "activity"} & set(adv.near)
    assert len(adv.near) == 10 and len(adv.phrases) == 8
    assert not any(contains_word(t, "activate") for t in adv.near + adv.phrases)
    assert all(len(p.split()) in (2, 3) for p in adv.phrases)
    assert "activated" in adv.inside and {"reactivate", "deactivate"} <= set(adv.inside)
    assert all(contains_word(t, "activate") for t in adv.inside) and "activate" not in adv.inside
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"confusables for 'activate': 10 words and 8 phrases by espeak-ng phoneme distance (>= 0.25, phrases >= 0.34) over {words}" in line
    assert "containing it" in line


@needs_espeak
def test_a_trigger_of_two_words_works(words, tmp_path) -> None:
    adv = C.adversarial("Hey  Nova", tmp_path, n_near=10, n_phrases=8, path=words)
    assert len(adv.near) == 10 and adv.phrases
    assert not any(contains_word(t, "hey nova") for t in adv.near + adv.phrases)
    assert "hay nova" not in adv.phrases  # the trigger's exact sounds are never a negative
    assert {"hey novas", "hey novae"} <= set(adv.inside)
    assert "nova" in adv.near  # half the trigger is a fine negative


@needs_espeak
def test_same_seed_same_negatives(words, tmp_path) -> None:
    a = C.adversarial("activate", tmp_path, seed=3, path=words)
    assert a == C.adversarial("activate", tmp_path, seed=3, path=words)
    assert isinstance(a, C.Adversarial)


@needs_espeak
def test_cache_is_renamed_into_place_and_reused(words, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    renames = []
    replace = os.replace

    def spy(src, dst):
        assert os.path.exists(src) and not os.path.exists(dst)  # complete before it gets the cache's name
        renames.append((os.fspath(src), os.fspath(dst)))
        replace(src, dst)

    monkeypatch.setattr(C.os, "replace", spy)
    first = C.adversarial("activate", cache, path=words)
    [(src, dst)] = renames
    assert src.endswith(".tmp") and [str(p) for p in cache.iterdir()] == [dst]
    data = json.loads((cache / dst).read_text())
    assert "activate" in data["words"] and len(data["words"]) == len(data["phonemes"])

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran on a warm cache")

    monkeypatch.setattr(C, "_phonemise", no_espeak)  # all phonemes, by library or command, come through it
    assert C.adversarial("activate", cache, path=words) == first
    assert len(renames) == 1


@needs_espeak
def test_the_espeak_command_gives_the_library_s_phonemes(words, tmp_path, monkeypatch) -> None:
    by_library = C.lexicon(tmp_path / "a", words)
    monkeypatch.setattr(C, "_library", lambda: None)
    by_command = C.lexicon(tmp_path / "b", words)
    assert by_command.words == by_library.words and by_command.phonemes == by_library.phonemes
    assert "xiv" not in by_library.words  # espeak-ng reads it as "roman fourteen"
    assert by_library.phonemes[by_library.index["activate"]] == ("a", "k", "t", "I#", "v", "eI", "t")


@needs_espeak
@pytest.mark.skipif(not C.DEFAULT_WORDS.is_file(), reason="needs wamerican (sudo apt-get install wamerican)")
def test_the_debian_word_list(tmp_path) -> None:
    adv = C.adversarial("activate", tmp_path)
    assert len(adv.near) == 60 and len(adv.phrases) == 30 and len(adv.inside) >= 6
    assert {"captivate", "cultivate", "motivate"} <= set(adv.near)
    assert {"activated", "reactivate", "deactivate", "activates"} <= set(adv.inside)
    assert not any(contains_word(t, "activate") for t in adv.near + adv.phrases)
    assert np.unique(adv.phrases).size == 30
