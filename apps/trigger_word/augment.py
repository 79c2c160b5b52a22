"""Backgrounds, augmentation and course-style mixing for trigger-word training (NumPy only).

A training stream is a background clip into which words are inserted without overlap at a
random signal-to-noise ratio; each inserted word becomes an :class:`Event`. Labels are made
from events: a window (or an output step) is positive right after a positive word ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdk.audio import resample

SR = 16000
BACKGROUNDS = ("white", "pink", "brown", "hum", "babble", "music", "quiet")


@dataclass(frozen=True)
class Event:
    """A word inside a stream, in seconds."""

    start: float
    end: float
    positive: bool


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (x / _rms(x)).astype(np.float32)


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics) with a little hiss, unit RMS."""
    t = np.arange(n) / SR
    f0 = float(rng.choice([50.0, 60.0])) * rng.uniform(0.99, 1.01)
    x = sum(rng.uniform(0, 1) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) for k in range(1, 8))
    x = x + 0.05 * rng.standard_normal(n)
    return (x / _rms(x)).astype(np.float32)


def music(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tonal, music-like sound: a sequence of chords of harmonic tones with decaying envelopes."""
    x = np.zeros(n, dtype=np.float64)
    base = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19])  # pentatonic: always consonant
    pos = 0
    while pos < n:
        dur = int(SR * rng.uniform(0.15, 0.8))
        t = np.arange(min(dur, n - pos)) / SR
        env = np.exp(-t * rng.uniform(1.0, 8.0)) * np.minimum(1.0, t / 0.01)
        for semis in rng.choice(scale, size=int(rng.integers(1, 4)), replace=False):
            f = base * 2 ** (semis / 12)
            x[pos : pos + t.shape[0]] += env * sum(np.sin(2 * np.pi * f * h * t) / h**1.5 for h in range(1, 5))
        pos += dur
    return (x / _rms(x)).astype(np.float32)


def babble(rng: np.random.Generator, n: int, speech: Sequence[np.ndarray]) -> np.ndarray:
    """Overlapping speech of 3-7 talkers (from ``speech``), unit RMS."""
    x = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(3, 8))):
        pos = int(rng.integers(-SR // 2, SR // 2))
        gain = rng.uniform(0.3, 1.0)
        while pos < n:
            c = speech[int(rng.integers(len(speech)))]
            a, b = max(pos, 0), min(pos + c.shape[0], n)
            if b > a:
                x[a:b] += gain * c[a - pos : b - pos] / _rms(c)
            pos += c.shape[0] + int(rng.integers(0, SR // 4))
    return x / _rms(x)


def load_backgrounds(folder: str | Path | None) -> list[np.ndarray]:
    """User background ``.wav`` files (any rate, channels), as 16 kHz mono float32.

    Raises:
        ConfigError: When ``folder`` is not a folder, holds no ``.wav`` file, or only files under 0.5 s.
        SourceError: When a file is not a readable WAV.
    """
    if not folder:
        return []
    from sdk.errors import ConfigError
    from sdk.sources.audio import read_wav, wav_files

    out = [read_wav(f, SR)[0] for f in wav_files(folder, "backgrounds")]
    out = [x for x in out if x.shape[0] > SR // 2]
    if not out:
        raise ConfigError(f"backgrounds {folder}: every .wav in it is shorter than 0.5 s; give longer recordings of the room", param="backgrounds")
    return out


def background(rng: np.random.Generator, n: int, speech: Sequence[np.ndarray], user: Sequence[np.ndarray] = (), babble_weight: int = 1) -> np.ndarray:
    """``n`` samples of a random background kind, unit RMS; babble is drawn ``babble_weight`` times as often as each other kind."""
    kinds = BACKGROUNDS + ("babble",) * (babble_weight - 1) + (("user",) * 3 if user else ())
    kind = str(rng.choice(kinds))
    if kind in ("white", "pink", "brown"):
        x = colored_noise(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    elif kind == "hum":
        x = hum(rng, n)
    elif kind == "music":
        x = music(rng, n)
    elif kind == "babble" and speech:
        x = babble(rng, n, speech)
    elif kind == "user":
        u = user[int(rng.integers(len(user)))]
        start = int(rng.integers(0, max(1, u.shape[0] - n)))
        x = np.resize(u[start:], n)
        x = x / _rms(x)
    else:  # a quiet room: faint pink noise, scaled down again at mixing time
        x = 0.05 * colored_noise(rng, n, 1.0)
    return x.astype(np.float32, copy=False)


# ---------------------------------------------------------------- word augmentation


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (tempo and pitch, like a tape)."""
    src = int(round(SR * factor / 100.0)) * 100  # rates in 100 Hz steps keep the resampler's tables small
    return resample(x, src, SR)


def random_eq(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A smooth random gain curve (+-9 dB over log frequency) and an optional band limit."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.shape[0], 1 / SR)
    knots = np.geomspace(60, 8000, 8)
    gains_db = rng.uniform(-9, 9, size=knots.shape[0])
    g = 10 ** (np.interp(np.log(np.maximum(f, 60)), np.log(knots), gains_db) / 20)
    if rng.random() < 0.4:  # telephone / cheap microphone: low-pass 3.4-7 kHz, often a high-pass too
        cut = rng.uniform(3400, 7000)
        g *= 1 / (1 + (f / cut) ** 8)
        if rng.random() < 0.5:
            g *= 1 / (1 + (rng.uniform(150, 400) / np.maximum(f, 1)) ** 4)
    return np.fft.irfft(spec * g, x.shape[0]).astype(np.float32)


def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Synthetic room: exponentially decaying noise impulse response (RT60 0.1-0.8 s), wet/dry mix."""
    rt60 = rng.uniform(0.1, 0.8)
    n_ir = int(rt60 * SR)
    t = np.arange(n_ir) / SR
    ir = rng.standard_normal(n_ir) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir**2))
    n = x.shape[0] + n_ir
    wet = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(ir, n), n)[: x.shape[0]]  # tail cut: word end stays put
    mix = rng.uniform(0.2, 0.7)
    return ((1 - mix) * x + mix * wet * _rms(x) / max(_rms(wet), 1e-9)).astype(np.float32)


def echo(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A distinct echo: the word repeated every 60-250 ms, each repeat 0.3-0.7 x the one before.

    A hard wall, a hall, a loudspeaker's echo effect; espeak-ng's echo voices (RicishayMax...)
    sound like this, and a diffuse reverb does not teach it. The word's end moves out by one
    delay, so the label follows the first repeat.
    """
    d = int(rng.uniform(0.06, 0.25) * SR)
    g = rng.uniform(0.3, 0.7)
    y = np.zeros(x.shape[0] + 4 * d, np.float64)
    for i in range(5):
        y[i * d : i * d + x.shape[0]] += g**i * x
    return y[: x.shape[0] + d].astype(np.float32)


def augment(rng: np.random.Generator, x: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Speed x0.85-1.15, random EQ/band limit, reverb and echo, each applied with probability ~``strength``."""
    if rng.random() < 0.8 * strength:
        x = speed(x, rng.uniform(0.85, 1.15))
    if rng.random() < 0.6 * strength:
        x = random_eq(rng, x)
    if rng.random() < 0.5 * strength:
        x = reverb(rng, x)
    if rng.random() < 0.2 * strength:
        x = echo(rng, x)
    return x


# ---------------------------------------------------------------- mixing and labels


def mix(rng: np.random.Generator, bg: np.ndarray, words: Sequence[tuple[np.ndarray, bool]], snr_db: tuple[float, float] = (0.0, 30.0)) -> tuple[np.ndarray, list[Event]]:
    """Insert ``words`` into background ``bg`` without overlap, each at a random SNR.

    Words are placed in random order at random non-overlapping positions (those that do not
    fit are dropped). The speech level is random; the background is scaled to the SNR of the
    loudest word, then the whole stream gets a random gain (peak at most 0.99).

    Returns:
        The mixed stream and the inserted words as events sorted by start.
    """
    n = bg.shape[0]
    out = np.zeros(n, dtype=np.float32)
    events: list[Event] = []
    busy = np.zeros(n, dtype=bool)
    level = 10 ** (rng.uniform(-30, -12) / 20)
    snr = rng.uniform(*snr_db)
    for i in rng.permutation(len(words)):
        w, positive = words[i]
        if w.shape[0] + SR // 10 >= n:
            continue
        for _ in range(10):
            s = int(rng.integers(0, n - w.shape[0]))
            if not busy[max(0, s - SR // 10) : s + w.shape[0] + SR // 10].any():
                break
        else:
            continue
        out[s : s + w.shape[0]] += w * (level * rng.uniform(0.6, 1.0) / _rms(w))
        busy[s : s + w.shape[0]] = True
        events.append(Event(s / SR, (s + w.shape[0]) / SR, bool(positive)))
    out += bg * (level / 10 ** (snr / 20) / _rms(bg))
    peak = float(np.abs(out).max()) + 1e-9
    out *= min(10 ** (rng.uniform(-6, 6) / 20), 0.99 / peak)
    return out, sorted(events, key=lambda e: e.start)


def window_labels(events: Sequence[Event], ends: np.ndarray, window_s: float, after_s: float = 0.5, delay_s: float = 0.0) -> np.ndarray:
    """Labels for windows ending at ``ends`` (seconds): 1, 0, or -1 (ambiguous, not trained on).

    A window is positive when a positive word ended between ``delay_s`` and ``after_s``
    seconds before its end and the whole word is inside the window; ambiguous when a
    positive word is cut by the window's start, ends just after it (the detector may fire a
    hop early or late), or ended less than ``delay_s`` ago. A delay teaches the model to
    hear what follows the word: "activate" then a pause fires, "activat-ing" does not.
    """
    lab = np.zeros(ends.shape[0], dtype=np.float32)
    starts = ends - window_s
    for e in (e for e in events if e.positive):
        overlap = (e.end > starts) & (e.start < ends)
        full = (e.start >= starts - 0.05) & (e.end <= ends + 0.02)
        pos = full & (ends - e.end <= after_s) & (ends - e.end >= delay_s)
        cut_start = e.start < starts - 0.05
        almost_done = (e.end > ends + 0.02) & (e.end < ends + 0.15)
        lab[overlap & ~pos & (cut_start | full | almost_done) & (lab == 0)] = -1
        lab[pos] = 1
    return lab


def frame_labels(events: Sequence[Event], times: np.ndarray, after_s: float = 0.5) -> np.ndarray:
    """Course-style labels per output step (at ``times`` seconds): 1 for ``after_s`` after each positive word ends."""
    lab = np.zeros(times.shape[0], dtype=np.float32)
    for e in (e for e in events if e.positive):
        lab[(times > e.end) & (times <= e.end + after_s)] = 1
    return lab
