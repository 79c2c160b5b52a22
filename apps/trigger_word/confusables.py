"""Adversarial negatives for any trigger word, found by espeak-ng phonemes in a dictionary.

The dictionary is the Debian package ``wamerican`` (``/usr/share/dict/american-english``,
SCOWL size 50, a permissive licence). Every word of it is turned into phonemes once by
espeak-ng (``en-us``) and cached; a trigger then gets

* ``near``: single words whose phonemes are closest to the trigger's ("captivate"),
* ``phrases``: two or three words whose phonemes, run together, are close to the trigger's
  ("act of eight", "say nova"), built from words that match a piece of the trigger at every
  split point,
* ``inside``: the trigger inside longer words ("reactivated"); for a trigger of several
  words, its last word lengthened or its first word lengthened in front ("hey novas").

Distance is the edit distance between phoneme sequences (espeak-ng's phoneme names, so "eI"
or "tS" is one phoneme), divided by the longer length. Substituting phonemes that share
their first letter ("I" and "I#", "3" and "3:") costs half. Stress marks are dropped: a TTS
voice varies stress anyway, and a word stressed differently still sounds like the trigger.
A word or phrase with the trigger's exact phonemes is the trigger spoken, so it is never a
negative; neither is anything whose letters contain the trigger's (the rule of
``apps.trigger_word.data.contains_word``), except in ``inside``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import itertools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apps.trigger_word.jobs import log
from sdk.errors import ConfigError

DEFAULT_WORDS = Path("/usr/share/dict/american-english")
VOICE = "en-us"
_SEP = "|"  # espeak-ng writes it between phonemes (``--sep``), so multi-letter phonemes stay one
_CACHE_FORMAT = 1  # bump when what the cache holds changes
_CLI_CHUNK = 4000  # words per espeak-ng process when the library cannot be loaded
_PIECE_TOP = 6  # words kept per piece of the trigger's phonemes when building phrases
_PHRASE_REUSE = 2  # phrases a word may appear in, so they are not all "act of ..."
# closer than this (phoneme edits per phoneme) a negative is the word said another way: "active
# eight" (0.07) or "act evade" (0.21) for "activate" are what a listener hears as "activate", and
# training on them as negatives taught a model to reject positives of engines it never heard
# (flite: 63 of 100 clean positives detected before, 18 after); "captivate" is 0.25
MIN_DISTANCE = 0.25
# phrases are said as one stream of sounds ("pact of ate" is heard as "pactivate"): they keep a
# wider margin (at 0.25, the model trained with them detected 41 of flite's 100 clean positives)
PHRASE_MIN_DISTANCE = 0.34
_LOCK = threading.Lock()  # the espeak-ng library has global state


@dataclass(frozen=True)
class Adversarial:
    """Negatives for one trigger, best first.

    Attributes:
        near: single words that sound close to the trigger and do not contain it.
        phrases: phrases of 2 or 3 words that sound close to the trigger and do not contain it.
        inside: words (or, for a trigger of several words, phrases) that contain the trigger.
    """

    near: tuple[str, ...]
    phrases: tuple[str, ...]
    inside: tuple[str, ...]


def _require(path: Path) -> None:
    if not path.is_file():
        hint = "install wamerican: sudo apt-get install wamerican" if path == DEFAULT_WORDS else "pass a word list, one word a line"
        raise ConfigError(f"path: word list {str(path)!r} does not exist; {hint}", param="path")


def word_list(path: str | Path = DEFAULT_WORDS) -> list[str]:
    """The words of a dictionary file (one a line), lowercase, deduplicated and sorted.

    Kept: words of lowercase letters. Dropped: proper nouns and acronyms ("Nevada", "AAA":
    odd as negatives, and a TTS voice may spell or say them its own way), possessives
    ("cat's"), words with accents, words without a vowel ("hmm", "ft", "yr"; "y" counts but
    not first) and single letters but "a" and "i" (a TTS voice spells them, so their text and
    sound disagree).

    Args:
        path: the file; by default ``wamerican``'s list.

    Raises:
        ConfigError: the file does not exist.
    """
    path = Path(path)
    _require(path)
    words = set(path.read_text(encoding="utf-8", errors="replace").split())
    return sorted(w for w in words if re.fullmatch(r"[a-z]+", w) and re.search(r"[aeiou]|.y", w) and (len(w) > 1 or w in ("a", "i")))


# ---------------------------------------------------------------- espeak-ng


@functools.cache
def _library() -> ctypes.CDLL | None:
    """espeak-ng's shared library, initialised with the voice, or None where it cannot be loaded."""
    name = ctypes.util.find_library("espeak-ng")
    try:
        lib = ctypes.CDLL(name or "libespeak-ng.so.1")
    except OSError as e:
        log(f"confusables: espeak-ng's library cannot be loaded ({e}); running the espeak-ng command instead (slower)")
        return None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    # synchronous output (2), no audio buffer, default data folder, don't exit on error (0x8000)
    if lib.espeak_Initialize(2, 0, None, 0x8000) < 0 or lib.espeak_SetVoiceByName(VOICE.encode()) != 0:
        log(f"confusables: espeak-ng's library did not start with voice {VOICE!r}; running the espeak-ng command instead (slower)")
        return None
    return lib


def espeak_version() -> str:
    """The espeak-ng version, from its library or else its command.

    Raises:
        ConfigError: espeak-ng is not installed.
    """
    lib = _library()
    if lib is not None:
        return lib.espeak_Info(None).decode()
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ConfigError("espeak-ng is required for phonemes; install it: sudo apt-get install espeak-ng") from e
    return out.split("text-to-speech:")[-1].split()[0]


def _library_phonemes(lib: ctypes.CDLL, words: Sequence[str]) -> list[str]:
    out = []
    with _LOCK:
        for w in words:
            data = w.encode()  # espeak-ng advances a pointer into these bytes, clause by clause
            ptr = ctypes.c_char_p(data)
            parts = []
            while ptr.value:
                parts.append(lib.espeak_TextToPhonemes(ctypes.byref(ptr), 1, ord(_SEP) << 8).decode())  # 1: UTF-8 text
            out.append(" ".join(parts))
    return out


def _cli_chunk(words: Sequence[str]) -> list[str]:
    """One espeak-ng process for many words: one a line, each ended by a full stop, so each is a clause
    and comes back on a line of its own. Where the line count disagrees (a word read as two
    sentences, or none), the chunk is halved until every word is alone."""
    text = "".join(f"{w}.\n" for w in words)
    cmd = ["espeak-ng", "-q", "-x", f"--sep={_SEP}", "-v", VOICE]
    lines = [ln for ln in subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout.splitlines() if ln.strip()]
    if len(lines) == len(words):
        return lines
    if len(words) == 1:
        return [" ".join(lines)]
    mid = len(words) // 2
    return _cli_chunk(words[:mid]) + _cli_chunk(words[mid:])


def _phonemise(words: Sequence[str]) -> list[str]:
    """espeak-ng's phonemes for each word: phonemes separated by ``|``, words by spaces, stress kept.

    In process through the shared library (about 40 000 words a second); where it cannot be
    loaded, through the ``espeak-ng`` command, in chunks, one process per CPU at a time.
    """
    lib = _library()
    if lib is not None:
        return _library_phonemes(lib, words)
    chunks = [words[i : i + _CLI_CHUNK] for i in range(0, len(words), _CLI_CHUNK)]
    try:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            return [p for part in pool.map(_cli_chunk, chunks) for p in part]
    except (OSError, subprocess.CalledProcessError) as e:
        raise ConfigError("espeak-ng is required for phonemes; install it: sudo apt-get install espeak-ng") from e


def _tokens(phonemes: str) -> list[str]:
    """Phoneme names without stress marks, pauses or linking marks."""
    return [t for t in (t.lstrip("',%=") for t in re.split(r"[| ]", phonemes)) if t and t not in ("_", ";")]


# ---------------------------------------------------------------- the phonemised dictionary


@dataclass(frozen=True)
class Lexicon:
    """A dictionary with each word's phonemes (stress dropped).

    Attributes:
        words: the words, sorted.
        phonemes: for each word, its phoneme names (a word espeak-ng reads as several is left out).
        source: where the words came from, for log lines.
    """

    words: tuple[str, ...]
    phonemes: tuple[tuple[str, ...], ...]
    source: str

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Position of each word."""
        return {w: i for i, w in enumerate(self.words)}

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Number of phonemes of each word."""
        return np.array([len(p) for p in self.phonemes], dtype=np.int64)

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """Every phoneme name used, sorted; name ``k`` has code ``k + 1`` in :attr:`codes`."""
        return tuple(sorted({t for p in self.phonemes for t in p}))

    @functools.cached_property
    def codes(self) -> np.ndarray:
        """Phoneme codes of each word, one row each, padded with 0."""
        return _Coder(self.names).matrix(self.phonemes)[0]

    @functools.cached_property
    def runs(self) -> tuple[str, ...]:
        """Each word's phonemes as ``|a|k|t|``, to find a run of phonemes with ``in`` (see :func:`_run`)."""
        return tuple(_run(p) for p in self.phonemes)


def lexicon(cache: str | Path, path: str | Path = DEFAULT_WORDS) -> Lexicon:
    """The words of ``path`` (see :func:`word_list`) with their phonemes, from ``cache`` or made and cached there.

    The cache file's name holds a hash of the word file, the espeak-ng version and the voice,
    so a new list or a new espeak-ng makes a new one. It is written to a temporary file and
    renamed, so a crash never leaves half a cache.

    Args:
        cache: a folder for the cache (created if missing).
        path: the word list, one word a line.

    Raises:
        ConfigError: the word list is missing, or espeak-ng is.
    """
    path, cache = Path(path), Path(cache)
    _require(path)
    key = hashlib.sha256(path.read_bytes() + f"\0{espeak_version()}\0{VOICE}\0{_CACHE_FORMAT}".encode()).hexdigest()
    file = cache / f"phonemes-{key[:20]}.json"
    source = f"wamerican's {path}" if path == DEFAULT_WORDS else str(path)
    if file.is_file():
        data = json.loads(file.read_text())
        return Lexicon(tuple(data["words"]), tuple(tuple(p.split(_SEP)) for p in data["phonemes"]), source)
    start = time.monotonic()
    words = word_list(path)
    raw = _phonemise(words)
    kept = [(w, _tokens(p)) for w, p in zip(words, raw) if p.strip() and " " not in p.strip()]  # " ": read as several words ("xiv")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"words": [w for w, _ in kept], "phonemes": [_SEP.join(p) for _, p in kept]}))
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"confusables: phonemised {len(words):,} words of {path} with espeak-ng in {time.monotonic() - start:.1f} s, cached in {file}")
    return Lexicon(tuple(w for w, _ in kept), tuple(tuple(p) for _, p in kept), source)


# ---------------------------------------------------------------- distances


class _Coder:
    """Phoneme names as small integers (0 pads), and the substitution cost between any two."""

    def __init__(self, names: Sequence[str]) -> None:
        self.code = {t: i + 1 for i, t in enumerate(names)}
        first = np.array([0] + [ord(t[0]) for t in names])
        self.cost = np.where(first[:, None] == first[None, :], 0.5, 1.0).astype(np.float32)
        np.fill_diagonal(self.cost, 0.0)

    def matrix(self, seqs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(codes padded to the longest, lengths) of phoneme sequences."""
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        out = np.zeros((len(seqs), max(lens.max(initial=0), 1)), dtype=np.int16)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = [self.code[t] for t in s]
        return out, lens

    def distance(self, target: Sequence[str], cands: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Weighted edit distance from ``target`` to each row of ``cands``, all rows at once.

        The usual table, one row of it per phoneme of ``target``, each cell a vector over the
        candidates (stored position-major so that each step reads contiguous memory).
        """
        n, width = cands.shape
        cols = np.ascontiguousarray(cands.T)
        prev = np.repeat(np.arange(width + 1, dtype=np.float32)[:, None], n, axis=1)
        cur = np.empty_like(prev)
        for i, t in enumerate(target, 1):
            cur[0] = i
            np.minimum(prev[1:] + 1, prev[:-1] + self.cost[self.code[t]][cols], out=cur[1:])
            for j in range(1, width + 1):  # insertions, left to right
                np.minimum(cur[j], cur[j - 1] + 1, out=cur[j])
            prev, cur = cur, prev
        return prev[lens, np.arange(n)]


class _Pool:
    """The words a negative may use, sorted by phoneme count (ties in the seeded order), for fast nearest-word search."""

    def __init__(self, lex: Lexicon, coder: _Coder, members: np.ndarray) -> None:
        self.idx = members[np.argsort(lex.lengths[members], kind="stable")]
        self.lens = lex.lengths[self.idx]
        self.codes = lex.codes[self.idx]
        self.coder = coder

    def nearest(self, target: Sequence[str], k: int, slack: int) -> tuple[np.ndarray, np.ndarray]:
        """(lexicon indices, normalised distances) of the ``k`` words nearest to ``target``.

        Only words within ``slack`` phonemes of the target's length are scored: any other is
        that far already.
        """
        lo = int(np.searchsorted(self.lens, len(target) - slack, side="left"))
        hi = int(np.searchsorted(self.lens, len(target) + slack, side="right"))
        lens = self.lens[lo:hi]
        codes = self.codes[lo:hi, : max(int(lens.max(initial=0)), 1)]
        dist = self.coder.distance(target, codes, lens) / np.maximum(lens, len(target))
        order = np.argsort(dist, kind="stable")[:k]
        return self.idx[lo:hi][order], dist[order]


def _letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _run(seq: Sequence[str]) -> str:
    """``|a|k|t|``: one phoneme sequence contains another as a run when this string of it holds the other's."""
    return f"|{_SEP.join(seq)}|"


# ---------------------------------------------------------------- negatives


def check_word(word: str) -> str:
    """Normalise and validate a trigger word (letters, spaces, apostrophes, hyphens)."""
    w = " ".join(word.strip().lower().split())
    if not re.fullmatch(r"[a-z][a-z' -]*", w):
        raise ConfigError(f"word: expected English letters (e.g. 'activate'), got {word!r}", param="word")
    return w


def contains_word(text: str, word: str) -> bool:
    """Whether ``text`` contains ``word``'s letters (also inside longer words: 'reactivated')."""
    return _letters(word) in _letters(text)


def _trigger_phonemes(lex: Lexicon, parts: Sequence[str]) -> list[tuple[str, ...]]:
    """Phonemes of each word of the trigger: from the lexicon where it has them (no espeak-ng run)."""
    missing = [p for p in parts if p not in lex.index]
    made = dict(zip(missing, (tuple(_tokens(p)) for p in _phonemise(missing)))) if missing else {}
    return [lex.phonemes[lex.index[p]] if p in lex.index else made[p] for p in parts]


def _inside(lex: Lexicon, parts: Sequence[str], per_part: Sequence[tuple[str, ...]], order: np.ndarray, n: int) -> list[str]:
    """Words containing the trigger, by letters ("reactivated") or by phonemes, fewest phonemes first.

    For a trigger of several words, also the trigger with its last word lengthened ("hey
    novas") or its first lengthened in front, where the result still holds its phonemes
    (not "they nova": its letters hold "hey nova", its sounds do not).
    """
    target = tuple(t for p in per_part for t in p)
    run, squash = _run(target), "".join(_letters(p) for p in parts)
    head, tail = sum(per_part[:-1], ()), sum(per_part[1:], ())
    found: list[tuple[str, int]] = []
    for i in order:
        w, ph = lex.words[i], lex.phonemes[i]
        if w != squash and ph != target and (squash in w or run in lex.runs[i]):
            found.append((w, len(ph)))
        if len(parts) > 1 and w != parts[-1] and w.startswith(parts[-1]) and run in _run(head + ph):
            found.append((" ".join([*parts[:-1], w]), len(head) + len(ph)))
        if len(parts) > 1 and w != parts[0] and w.endswith(parts[0]) and run in _run(ph + tail):
            found.append((" ".join([w, *parts[1:]]), len(ph) + len(tail)))
    found.sort(key=lambda f: f[1])  # stable: equal lengths stay in the seeded order
    return [text for text, _ in found[:n]]


def _phrases(lex: Lexicon, pool: _Pool, target: tuple[str, ...], squash: str, n: int, min_distance: float) -> list[str]:
    """Phrases of 2 or 3 words whose phonemes together are close to ``target``.

    At every way of cutting the target's phonemes in two or three pieces, the words nearest
    each piece are combined; the combinations are then scored as a whole, and a word may
    appear in only a few of the phrases kept.
    """
    size = len(target)
    best = {(a, b): pool.nearest(target[a:b], _PIECE_TOP, slack=1)[0] for a in range(size) for b in range(a + 1, size + 1) if b - a < size}
    cuts = [(0, k, size) for k in range(1, size)] + [(0, i, j, size) for i in range(1, size) for j in range(i + 1, size)]
    combos = list(dict.fromkeys(c for cut in cuts for c in itertools.product(*(best[a, b] for a, b in zip(cut, cut[1:])))))
    if not combos:
        return []
    seqs = [sum((lex.phonemes[i] for i in c), ()) for c in combos]
    codes, lens = pool.coder.matrix(seqs)
    dist = pool.coder.distance(target, codes, lens) / np.maximum(lens, size)
    run = _run(target)
    chosen: list[str] = []
    uses: dict[str, int] = {}
    for k in np.argsort(dist, kind="stable"):
        words = [lex.words[i] for i in combos[k]]
        text = " ".join(words)
        if dist[k] < min_distance or squash in _letters(text) or run in _run(seqs[k]) or text in chosen:
            continue  # the trigger's own sounds or letters, or as good as
        if any(uses.get(w, 0) >= _PHRASE_REUSE for w in words):
            continue
        chosen.append(text)
        for w in set(words):
            uses[w] = uses.get(w, 0) + 1
        if len(chosen) == n:
            break
    return chosen


def adversarial(
    word: str,
    cache: str | Path,
    n_near: int = 60,
    n_phrases: int = 30,
    n_inside: int = 20,
    seed: int = 0,
    path: str | Path = DEFAULT_WORDS,
    min_distance: float = MIN_DISTANCE,
) -> Adversarial:
    """Words and phrases that sound like ``word`` but are not it, and words that contain it.

    The same (word, seed, word list, espeak-ng version) always gives the same result; the
    seed only breaks ties between equally close candidates. One stderr line names the source.

    Args:
        word: the trigger, one or more words ("activate", "hey nova").
        cache: a folder for the phonemised word list (see :func:`lexicon`).
        n_near: how many single words to return.
        n_phrases: how many phrases of 2 or 3 words to return (fewer for a very short trigger).
        n_inside: at most how many words containing the trigger to return.
        seed: breaks ties.
        path: the word list, one word a line; by default ``wamerican``'s.
        min_distance: words closer than this to the trigger (normalised phoneme edit distance)
            are left out: they sound like the trigger itself (:data:`MIN_DISTANCE`); phrases keep
            at least :data:`PHRASE_MIN_DISTANCE`.

    Returns:
        The negatives, closest (``inside``: shortest) first.

    Raises:
        ConfigError: ``word`` is not English letters, a count is negative, or the word list
            or espeak-ng is missing.
    """
    trigger = check_word(word)
    for name, value in (("n_near", n_near), ("n_phrases", n_phrases), ("n_inside", n_inside)):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}", param=name)
    lex = lexicon(cache, path)
    parts = trigger.split()
    per_part = _trigger_phonemes(lex, parts)
    target = tuple(t for p in per_part for t in p)
    run, squash = _run(target), _letters(trigger)
    coder = _Coder([*lex.names, *sorted(set(target) - set(lex.names))])  # the lexicon's codes stay valid
    order = np.random.default_rng(seed).permutation(len(lex.words))
    pool = _Pool(lex, coder, np.array([i for i in order if squash not in lex.words[i] and run not in lex.runs[i]], dtype=np.int64))
    idx, dist = pool.nearest(target, 3 * n_near + 20, slack=max(2, len(target) // 2))
    near = [lex.words[i] for i, d in zip(idx, dist) if d >= min_distance][:n_near]
    phrases = _phrases(lex, pool, target, squash, n_phrases, max(min_distance, PHRASE_MIN_DISTANCE)) if n_phrases else []
    inside = _inside(lex, parts, per_part, order, n_inside)
    log(
        f"confusables for {trigger!r}: {len(near)} words and {len(phrases)} phrases by espeak-ng phoneme distance (>= {min_distance:g}, phrases >= {max(min_distance, PHRASE_MIN_DISTANCE):g}) "
        f"over {lex.source} ({len(lex.words):,} words), {len(inside)} containing it"
    )
    return Adversarial(tuple(near), tuple(phrases), tuple(inside))
