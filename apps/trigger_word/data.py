"""Speech for trigger-word training: synthesis, real recordings, voice-disjoint splits, caching.

Host side. Every clip is mono float32 at 16 kHz, trimmed to its speech, and tagged with
its voice and split. Sources (all installable from Debian, see ``scripts/system-deps.sh``):

* ``espeak-ng`` (GPL-3.0): its English accents x voice variants, each a "voice". Whole
  variants are held out for validation and test, so no test voice was ever trained on.
* Kokoro-82M (Apache-2.0, :mod:`apps.trigger_word.kokoro`): a neural multi-speaker model;
  its voices are random blends of five style packs, held out whole for validation.
* ``festival`` with ``festvox-kdlpc16k``, ``festvox-us-slt-hts`` (training) and
  ``festvox-kallpc16k`` (validation): a second, more natural-sounding engine for positives.
* ``flite`` (BSD-style): a held-out engine, used only for testing (its ``awb`` and ``rms``
  speakers are in no other engine; ``slt`` and ``kal`` share a speaker with festival voices).
* ``asterisk-core-sounds-en-wav`` (CC-BY-SA-3.0, recorded by Allison Smith): real human
  speech, negatives split by prompt; its prompts containing the word are test positives.

Everything is deterministic from the seed; synthesised voices are cached as ``.npz`` in the
work directory (keyed by a hash of the voice's parameters and its utterances' texts and
prosody), so a second run is fast.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from apps.trigger_word.confusables import adversarial, contains_word
from apps.trigger_word.texts import ACTIVATE_CONFUSABLES, COMMON_WORDS, SENTENCES
from sdk.audio import resample
from sdk.errors import ConfigError
from sdk.sources.audio import read_wav, wav_files

SR = 16000
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
FESTIVAL_VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
FESTIVAL_SPLIT = {"kal": "val", "ked": "train", "slt": "train"}
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
# real recordings of a trigger word cut from a longer one: (prompt, seconds kept). Allison's
# "activated" up to the release of its last /t/ (energy: "-ted" starts at 0.74 s) is "activate"
REAL_CUTS = {"activate": (("activated", 0.74),)}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Utterance:
    """One thing to say: text, whether it is the trigger word, and prosody."""

    text: str
    positive: bool
    speed: float = 1.0  # relative speaking rate
    pitch: float = 0.5  # 0..1 of the engine's pitch range
    gain: float = 1.0


@dataclass(frozen=True)
class Voice:
    """A speaker: ``engine`` + ``name`` (espeak ``en-us+f3``, festival ``slt``...) and its split."""

    engine: str
    name: str
    split: str
    variant: str = ""  # espeak-ng: a generated variant file's text (see mixed_variants), kokoro: KokoroVoice JSON; "" for a stock voice

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass
class Clip:
    """Speech of one utterance, 16 kHz mono float32, trimmed to the voiced part."""

    audio: np.ndarray
    text: str
    positive: bool
    voice: str
    split: str


@dataclass
class Corpus:
    """All clips, with helpers to select by split and label."""

    clips: list[Clip] = field(default_factory=list)

    def select(self, split: str, positive: bool | None = None, engine: str | None = None) -> list[Clip]:
        return [
            c for c in self.clips
            if c.split == split and (positive is None or c.positive == positive) and (engine is None or c.voice.startswith(engine + ":"))
        ]

    def voices(self, split: str) -> set[str]:
        return {c.voice for c in self.clips if c.split == split}


def _progress(msg: str) -> None:
    print(f"[trigger-word] {msg}", file=sys.stderr, flush=True)


def says_word(text: str, word: str) -> bool:
    """Whether ``text`` says ``word`` as whole words ("activate the lights", not "activated")."""
    return re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", " ".join(re.sub(r"[^a-z']+", " ", text.lower()).split())) is not None


def confusables(word: str, cache: Path) -> list[str]:
    """Negatives that sound like ``word``, spoken by every engine.

    :func:`apps.trigger_word.confusables.adversarial` (phonetic neighbours and phrases from
    Debian's wamerican word list, words containing the trigger), and for "activate" also the
    hand-picked :data:`ACTIVATE_CONFUSABLES`. ``cache`` keeps the phonemised word list.
    """
    adv = adversarial(word, cache)
    hand = [w for w in ACTIVATE_CONFUSABLES if not says_word(w, word)] if word == "activate" else []
    return list(dict.fromkeys([*hand, *adv.near, *adv.phrases, *adv.inside]))


def sentences(word: str) -> list[str]:
    """:data:`SENTENCES` that do not contain ``word``."""
    return [s for s in SENTENCES if not contains_word(s, word)]


# ---------------------------------------------------------------- engines


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """PCM16 mono WAV bytes -> float32 samples, rate. Tolerates espeak's streaming header sizes."""
    pos = data.find(b"fmt ")
    rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
    d = data.find(b"data", pos)
    pcm = data[d + 8 :]
    pcm = pcm[: len(pcm) // 2 * 2]
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, rate


def trim(x: np.ndarray, rel_db: float = -35.0, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence (10 ms frames below ``rel_db`` of the loudest)."""
    n = x.shape[0] // 160
    if n == 0:
        return x
    e = (x[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    on = np.flatnonzero(e > e.max() * 10 ** (rel_db / 10))
    if on.shape[0] == 0:  # digital silence
        return x[:0]
    pad = int(pad_s * SR)
    return x[max(0, on[0] * 160 - pad) : min(x.shape[0], (on[-1] + 1) * 160 + pad)]


@functools.cache
def espeak_data_dir() -> Path:
    """espeak-ng's data folder (``espeak-ng-data``), as the program reports it (asked once per process)."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Data at:\s*(.+)", out)
    if not m:
        raise ConfigError(f"espeak-ng --version did not say where its data is ({out.strip()!r}); reinstall espeak-ng")
    return Path(m.group(1).strip())


def synth_espeak(voice: str, utts: Sequence[Utterance], variant: str = "") -> list[np.ndarray]:
    """Synthesise ``utts`` with espeak-ng voice ``voice`` (e.g. ``en-us+f3``).

    With ``variant`` (a variant file's text), ``voice``'s variant name is that file: it is put
    in a private copy of espeak-ng's data folder (links to the real one) read with ``--path``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path: list[str] = []
        if variant:
            data, own = espeak_data_dir(), Path(tmp) / "espeak-ng-data"
            (own / "voices" / "!v").mkdir(parents=True)
            for e in data.iterdir():
                if e.name != "voices":
                    (own / e.name).symlink_to(e)
            for e in (data / "voices").iterdir():
                if e.name != "!v":
                    (own / "voices" / e.name).symlink_to(e)
            (own / "voices" / "!v" / voice.split("+")[-1]).write_text(variant)
            path = [f"--path={tmp}"]
        out = []
        for u in utts:
            cmd = ["espeak-ng", *path, "-v", voice, "-s", str(int(165 * u.speed)), "-p", str(int(20 + 60 * u.pitch)), "-a", str(int(100 * u.gain)),
                   "--stdout", u.text]
            x, rate = _read_wav_bytes(subprocess.run(cmd, capture_output=True, check=True).stdout)
            out.append(resample(x, rate, SR))
    return out


def synth_flite(voice: str, utts: Sequence[Utterance]) -> list[np.ndarray]:
    """Synthesise ``utts`` with flite's built-in voice ``voice``."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "u.wav"
        for u in utts:
            cmd = ["flite", "-voice", voice, "-t", u.text, "-o", str(f), "--setf", f"duration_stretch={1 / u.speed:.3f}",
                   "--setf", f"int_f0_target_mean={90 + 90 * u.pitch:.0f}"]
            subprocess.run(cmd, capture_output=True, check=True)
            x, rate = read_wav(f)
            out.append(resample(x * u.gain, rate, SR))
    return out


def synth_festival(voice: str, utts: Sequence[Utterance]) -> list[np.ndarray]:
    """Synthesise ``utts`` with festival voice ``voice`` (one festival process per call)."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = [f"({FESTIVAL_VOICES[voice]})"]
        for i, u in enumerate(utts):
            text = u.text.replace('"', "")
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / u.speed:.3f})")
            lines.append(f'(set! u (Utterance Text "{text}")) (utt.synth u) (utt.save.wave u "{tmp}/{i}.wav" \'riff)')
        script = Path(tmp) / "s.scm"
        script.write_text("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", str(script)], capture_output=True, check=True)
        out = []
        for i, u in enumerate(utts):
            x, rate = read_wav(Path(tmp) / f"{i}.wav")
            out.append(resample(x * u.gain, rate, SR))
    return out


ENGINES: dict[str, Callable[[str, Sequence[Utterance]], list[np.ndarray]]] = {
    "espeak-ng": synth_espeak, "flite": synth_flite, "festival": synth_festival,
}
ENGINE_BINARIES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}


# ---------------------------------------------------------------- plan


def espeak_voices(seed: int, max_variants: int | None = None) -> list[Voice]:
    """espeak-ng English accents x variants; variants are split 80/10/10 (whole variants held out)."""
    acc = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    # mbrola voices (mb/...) need the non-free mbrola program; only the built-in gmw voices are used
    accents = sorted({ln.split()[1] for ln in acc if len(ln.split()) > 4 and ln.split()[4].startswith("gmw/")})
    var = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    variants = sorted({ln.split()[4].split("/")[-1] for ln in var if len(ln.split()) > 4})
    rng = np.random.default_rng([seed, 1])
    variants = [variants[i] for i in rng.permutation(len(variants))]
    if max_variants:
        variants = variants[:max_variants]
    n = len(variants)
    n_val = n_test = max(1, n // 10)
    split_of = {v: ("val" if i < n_val else "test" if i < n_val + n_test else "train") for i, v in enumerate(variants)}
    return [Voice("espeak-ng", f"{a}+{v}", split_of[v]) for v in variants for a in accents]


def variant_settings(text: str) -> dict[str, list[str]]:
    """A variant file's setting lines grouped by keyword (``formant`` lines together); comments dropped."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if not line or line.startswith("#"):
            continue
        key = line.split()[0]
        if key not in ("language", "name", "gender"):
            out.setdefault(key, []).append(line)
    return out


def mixed_variants(voices: Sequence[Voice], n: int, seed: int) -> list[Voice]:
    """``n`` new training voices: variant files recombined from the training voices' variants.

    Each setting (formants, pitch, echo, roughness, voicing, tone, klatt...) of a new variant
    is drawn on its own from a random training variant (left at espeak-ng's default when that
    variant does not set it), and its formant frequencies are scaled by one factor of 0.9-1.1:
    vocal tracts, pitch ranges and effects in combinations no stock variant has, so the model
    meets many more voices. Only training variants are read, so the validation and
    test variants stay unseen; each new voice gets a random accent of ``voices``.
    """
    if n <= 0:
        return []
    vdir = espeak_data_dir() / "voices" / "!v"
    train = sorted({v.name.split("+")[1] for v in voices if v.split == "train"})
    accents = sorted({v.name.split("+")[0] for v in voices})
    donors = [variant_settings((vdir / name).read_text(errors="replace")) for name in train if (vdir / name).is_file()]
    keys = sorted({k for d in donors for k in d} | {"formant"})
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 3, i])
        lines = ["language variant", f"name mix{i:03d}"]
        for k in keys:
            got = donors[int(rng.integers(len(donors)))].get(k, [])
            if k == "formant":  # espeak-ng's default formants are "formant N 100 100 100" (percentages)
                scale = rng.uniform(0.9, 1.1)
                got = [" ".join([*f[:2], str(int(round(int(f[2]) * scale))), *f[3:]]) if len(f) > 2 and f[2].isdigit() else " ".join(f)
                       for f in (g.split() for g in got or [f"formant {j} 100 100 100" for j in range(9)])]
            lines += got
        out.append(Voice("espeak-ng", f"{accents[int(rng.integers(len(accents)))]}+mix{i:03d}", "train", "\n".join(lines) + "\n"))
    return out


def plan_voice(voice: Voice, word: str, conf: Sequence[str], sents: Sequence[str], n_pos: int, n_neg: int, seed: int) -> list[Utterance]:
    """What ``voice`` says: ``n_pos`` positives and ``n_neg`` negatives with random prosody.

    Seeded by (seed, voice), so adding or removing other voices never changes this voice's clips.
    """
    h = int.from_bytes(hashlib.sha256(voice.key.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, h])

    def prosody() -> dict[str, float]:
        return {"speed": float(rng.uniform(0.8, 1.25)), "pitch": float(rng.uniform(0, 1)), "gain": float(rng.uniform(0.6, 1.0))}

    utts = [Utterance(word, True, **prosody()) for _ in range(n_pos)]
    for i in range(n_neg):
        kind = i % 4
        if kind in (0, 1):
            text = str(rng.choice(conf))
        elif kind == 2:
            text = str(rng.choice(sents))
        else:  # a short phrase of common words, sometimes around a confusable
            words = list(rng.choice([w for w in COMMON_WORDS if not contains_word(w, word)], size=int(rng.integers(2, 6))))
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(conf)))
            text = " ".join(words)
        utts.append(Utterance(text, False, **prosody()))
    return utts


def cached_clips(path: Path, make: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """``make()``'s clips, stored once in ``path`` (``.npz``: concatenated audio + offsets)."""
    if path.exists():
        with np.load(path) as z:
            audio, offsets = z["audio"], z["offsets"]
        return [audio[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    clips = make()
    offsets = np.cumsum([0] + [c.shape[0] for c in clips])
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, audio=np.concatenate(clips).astype(np.float32) if clips else np.zeros(0, np.float32), offsets=offsets)
    tmp.replace(path)  # never a half-written cache entry
    return clips


def _kokoro_cached(voice: Voice, utts: list[Utterance], cache: Path) -> list[np.ndarray]:
    """Kokoro clips cached one by one, by (voice parameters, text, prosody): a new plan re-synthesises only new utterances.

    Kokoro is the slow engine (~0.35 s a word on one thread); a retraining with another seed
    or word list shares most of its voices' sentences with the last.
    """
    from apps.trigger_word import kokoro

    folder = cache / "kokoro" / hashlib.sha256(voice.variant.encode()).hexdigest()[:16]
    paths = [folder / f"{hashlib.sha256(repr(u).encode()).hexdigest()[:16]}.npy" for u in utts]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        for i, x in zip(todo, kokoro.synth(voice.variant, [utts[i] for i in todo], cache)):
            tmp = paths[i].with_name(paths[i].stem + ".tmp.npy")
            np.save(tmp, trim(x).astype(np.float32))
            tmp.replace(paths[i])  # never a half-written cache entry
    return [np.load(p) for p in paths]


def _synth_cached(voice: Voice, utts: list[Utterance], cache: Path) -> list[np.ndarray]:
    key = hashlib.sha256(repr((voice.engine, voice.name, utts) + ((voice.variant,) if voice.variant else ())).encode()).hexdigest()[:16]
    path = cache / f"{voice.engine}_{re.sub(r'[^A-Za-z0-9+_-]', '_', voice.name)}_{key}.npz"
    if voice.engine == "kokoro":
        return _kokoro_cached(voice, utts, cache)
    synth = functools.partial(synth_espeak, variant=voice.variant) if voice.variant else ENGINES[voice.engine]
    return cached_clips(path, lambda: [trim(x) for x in synth(voice.name, utts)])


@dataclass(frozen=True)
class CorpusConfig:
    """How much speech to synthesise. Defaults give ~9,000 clips (a few minutes on 2 cores)."""

    word: str = "activate"
    seed: int = 0
    espeak_pos: int = 4  # per espeak validation/test voice (accent x variant)
    espeak_train_pos: int = 4  # per espeak training voice: more prosody per voice, the test sets stay the same
    espeak_neg: int = 6
    festival_pos: int = 60  # per festival voice
    festival_neg: int = 60
    flite_pos: int = 25  # per flite voice (held-out engine, test only)
    flite_neg: int = 80
    kokoro_voices: int = 120  # Kokoro training voices (random blends of its style packs)
    kokoro_val_voices: int = 24  # Kokoro validation voices (blends drawn apart from the training ones)
    kokoro_pos: int = 8  # per Kokoro voice: the most natural-sounding positives
    kokoro_neg: int = 6
    max_variants: int | None = None
    mixed_variants: int = 0  # extra training voices with generated variants (see mixed_variants)
    workers: int = 2


def plan(cfg: CorpusConfig, cache: Path) -> list[tuple[Voice, list[Utterance]]]:
    """Every voice with its utterances (deterministic from ``cfg``); ``cache`` keeps the phonemised word list."""
    missing = [b for b in ENGINE_BINARIES.values() if shutil.which(b) is None]
    if "espeak-ng" in missing:
        raise ConfigError("trigger-word training needs espeak-ng; install it: sudo apt-get install espeak-ng (or run scripts/system-deps.sh)")
    conf, sents = confusables(cfg.word, cache), sentences(cfg.word)
    espeak = espeak_voices(cfg.seed, cfg.max_variants)
    espeak += mixed_variants(espeak, cfg.mixed_variants, cfg.seed)
    jobs = [(v, plan_voice(v, cfg.word, conf, sents, cfg.espeak_train_pos if v.split == "train" else cfg.espeak_pos, cfg.espeak_neg, cfg.seed))
            for v in espeak]
    if "festival" not in missing:
        jobs += [(v, plan_voice(v, cfg.word, conf, sents, cfg.festival_pos, cfg.festival_neg, cfg.seed))
                 for v in (Voice("festival", n, s) for n, s in FESTIVAL_SPLIT.items())]
    if "flite" not in missing:
        jobs += [(v, plan_voice(v, cfg.word, conf, sents, cfg.flite_pos, cfg.flite_neg, cfg.seed)) for v in (Voice("flite", n, "test") for n in FLITE_VOICES)]
    jobs = kokoro_jobs(cfg, conf, sents) + jobs  # the slowest voices first: the workers finish together
    for name in sorted(set(ENGINE_BINARIES) & set(missing)):
        _progress(f"{name} not installed: skipping its voices (scripts/system-deps.sh installs it)")
    return jobs


def kokoro_jobs(cfg: CorpusConfig, conf: Sequence[str], sents: Sequence[str]) -> list[tuple[Voice, list[Utterance]]]:
    """Kokoro voices (training and validation blends) with their utterances; none, said once, when Kokoro is not installed."""
    from apps.trigger_word import kokoro

    if cfg.kokoro_voices + cfg.kokoro_val_voices <= 0:
        return []
    why = kokoro.available()
    if why:
        _progress(f"no Kokoro voices: {why}")
        return []
    voices = [Voice("kokoro", f"t{i:03d}", "train", v.to_json()) for i, v in enumerate(kokoro.random_voices(cfg.kokoro_voices, cfg.seed, 0))]
    voices += [Voice("kokoro", f"v{i:03d}", "val", v.to_json()) for i, v in enumerate(kokoro.random_voices(cfg.kokoro_val_voices, cfg.seed, 1))]
    return [(v, plan_voice(v, cfg.word, conf, sents, cfg.kokoro_pos, cfg.kokoro_neg, cfg.seed)) for v in voices]


def synthesize(cfg: CorpusConfig, cache_dir: str | Path, progress: bool = True) -> Corpus:
    """Synthesise (or load from cache) all planned clips, plus the real Asterisk recordings (``progress``: on stderr)."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = plan(cfg, cache)
    corpus = Corpus()
    done = 0
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        for (voice, utts), clips in zip(jobs, pool.map(lambda j: _synth_cached(j[0], j[1], cache), jobs)):
            corpus.clips += [Clip(x, u.text, u.positive, voice.key, voice.split) for u, x in zip(utts, clips) if x.shape[0] > 0]
            done += 1
            if progress and (done % 50 == 0 or done == len(jobs)):
                _progress(f"speech: {done}/{len(jobs)} voices, {len(corpus.clips)} clips")
    corpus.clips += asterisk_clips(cfg.word, cfg.seed, cache)
    return corpus


MAX_USER_WORD_S = 1.9  # a recorded positive must fit, whole, in the ~2 s window
USER_PIECE_S = 3.0  # recorded negatives are used in pieces of at most this long


def user_clips(folder: str | Path, positive: bool, word: str) -> list[Clip]:
    """Your own recordings as training clips: every ``.wav`` under ``folder`` (any rate, channels) is one utterance.

    Positives each hold the word once (silence around it is trimmed); negatives are anything
    else said in the room. They are training data only (weighted like the other natural
    voices), so the validation and test sets stay comparable between runs.

    Raises:
        ConfigError: When ``folder`` is not a folder, holds no ``.wav`` file, or a positive is
            longer than the window.
        SourceError: When a file is not a readable WAV.
    """
    out = []
    for f in wav_files(folder, "positives" if positive else "negatives"):
        x = trim(read_wav(f, SR)[0])
        if x.shape[0] < SR // 10:
            raise ConfigError(f"{f}: no sound in it (under 0.1 s after trimming silence); re-record it or remove it")
        if positive and x.shape[0] > MAX_USER_WORD_S * SR:
            raise ConfigError(f"{f}: {x.shape[0] / SR:.1f} s of sound after trimming silence; a positive must hold just "
                              f"{word!r} (at most {MAX_USER_WORD_S} s): cut it or remove it")
        if positive:
            out.append(Clip(x, word, True, f"user:{f.name}", "train"))
            continue
        # a long recording is cut into pieces that fit between other words in the 8 s training streams
        n = max(1, int(np.ceil(x.shape[0] / (USER_PIECE_S * SR))))
        out += [Clip(p, f.stem, False, f"user:{f.name}", "train") for p in np.array_split(x, n) if p.shape[0] >= SR // 10]
    return out


def asterisk_clips(word: str, seed: int, cache: Path, root: Path = ASTERISK_DIR) -> list[Clip]:
    """Real recorded prompts (one speaker): negatives split by prompt 70/15/15; prompts containing the word are test clips."""
    files = sorted(root.rglob("*.wav")) if root.is_dir() else []
    if not files:
        _progress(f"no real speech at {root}: install asterisk-core-sounds-en-wav for real-speech negatives")
        return []

    def load() -> list[np.ndarray]:
        out = []
        for f in files:
            x, rate = read_wav(f)
            out.append(trim(resample(x, rate, SR)))
        return out

    key = hashlib.sha256(repr([str(f) for f in files]).encode()).hexdigest()[:16]
    audio = cached_clips(cache / f"asterisk_{key}.npz", load)
    rank = np.empty(len(files), dtype=int)
    rank[np.random.default_rng([seed, 2]).permutation(len(files))] = np.arange(len(files))
    out = []
    for f, x, r in zip(files, audio, rank):
        if x.shape[0] < SR // 5:
            continue
        # the word itself is a positive; a prompt with it inside a longer word ("activated") is a
        # hard real negative, kept for the test set so that the test hears a real voice say it
        positive = says_word(f.stem, word)
        split = "test" if contains_word(f.stem, word) else ("val" if r % 20 < 3 else "test" if r % 20 < 6 else "train")
        out.append(Clip(x, f.stem, positive, "asterisk:allison", split))
    for stem, seconds in REAL_CUTS.get(word, ()):
        if (root / f"{stem}.wav").is_file():
            x, rate = read_wav(root / f"{stem}.wav")
            x = resample(x, rate, SR)[: int(seconds * SR)]
            out.append(Clip(trim(x * np.minimum(1.0, np.linspace(50, 0, x.shape[0]))), word, True, "asterisk:allison", "test"))  # 20 ms fade
    return out
