"""Audio features and resampling, NumPy only, shared by training (host) and the device.

There is exactly one implementation of the spectrogram: training calls :class:`LogMel` on
its synthetic clips and the streaming detector calls the same object on the microphone
ring buffer, so the two cannot drift. The parameters travel inside the model card
(``input.features``) via :meth:`FeatureParams.to_dict` / :meth:`FeatureParams.from_dict`.

Conventions (fixed, documented here because a model is trained against them):

* Samples are mono float32 in [-1, 1] at ``sample_rate``.
* Frames are not centred and not padded: frame ``i`` covers samples
  ``[i * hop, i * hop + win)`` with ``win = window_ms`` and ``hop = hop_ms`` in samples, so
  ``n`` samples give ``1 + (n - win) // hop`` frames (0 when ``n < win``). This makes a
  streaming window and an offline clip of the same samples give identical features.
* Each frame is multiplied by a periodic Hann window of ``win`` samples, zero-padded to
  ``n_fft``, and its power spectrum ``|rfft|**2`` is summed by a triangular HTK-mel
  filterbank of ``n_mels`` bands between ``fmin`` and ``fmax``.
* ``kind="logmel"``: natural log of ``max(mel_power, log_floor)``.
  ``kind="mfcc"``: the first ``n_mfcc`` coefficients of the orthonormal DCT-II of that.

:class:`CourseSpectrogram` (``kind: course-spectrogram``) is the other family: the linear
power spectrogram the Deep Learning Specialization's trigger-word assignment feeds its model,
computed there with matplotlib's ``specgram(data, 200, 8000, noverlap=120)`` on int16 samples.
It is reimplemented here with NumPy (no matplotlib on the device) and follows the same framing
convention as :class:`LogMel`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sdk.errors import ConfigError

FEATURE_KINDS = ("logmel", "mfcc")
COURSE_KIND = "course-spectrogram"


@dataclass(frozen=True)
class FeatureParams:
    """Spectrogram parameters; stored in the model card as ``input.features``."""

    sample_rate: int = 16000
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    kind: str = "logmel"
    n_mfcc: int = 13
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ConfigError(f"features.kind: expected one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.sample_rate <= 0 or self.hop_ms <= 0 or self.window_ms <= 0:
            raise ConfigError(f"features: sample_rate, window_ms and hop_ms must be positive, got {self}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"features: window of {self.win_length} samples is longer than n_fft={self.n_fft}; raise n_fft")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"features: need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}")
        if self.kind == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            raise ConfigError(f"features.n_mfcc: expected 1..n_mels ({self.n_mels}), got {self.n_mfcc}")

    @property
    def win_length(self) -> int:
        """Analysis window in samples."""
        return int(round(self.window_ms * self.sample_rate / 1000))

    @property
    def hop_length(self) -> int:
        """Frame hop in samples."""
        return int(round(self.hop_ms * self.sample_rate / 1000))

    @property
    def n_features(self) -> int:
        """Values per frame (``n_mels`` or ``n_mfcc``)."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for the model card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureParams:
        """Build from a card mapping; unknown keys are an error (missing keys take defaults).

        Raises:
            ConfigError: On unknown keys or invalid values.
        """
        from sdk.config import from_dict

        return from_dict(cls, data, "input.features")


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(p: FeatureParams) -> np.ndarray:
    """Triangular mel filters, float32 ``[n_mels, n_fft // 2 + 1]``."""
    edges = mel_to_hz(np.linspace(hz_to_mel(p.fmin), hz_to_mel(p.fmax), p.n_mels + 2))
    bins = np.linspace(0.0, p.sample_rate / 2, p.n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lo) / (mid - lo)
    falling = (hi - bins[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, float32 ``[n_out, n_in]``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float32)


class LogMel:
    """Log-mel (or MFCC) spectrogram with the window and filterbank computed once.

    Args:
        params: Feature parameters (default: :class:`FeatureParams` defaults).
    """

    def __init__(self, params: FeatureParams | None = None) -> None:
        self.params = params or FeatureParams()
        p = self.params
        n = np.arange(p.win_length)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / p.win_length)).astype(np.float32)  # periodic Hann
        self.filterbank_t = np.ascontiguousarray(mel_filterbank(p).T)  # [bins, mels] for frames @ fb
        self.dct_t = np.ascontiguousarray(dct_matrix(p.n_mfcc, p.n_mels).T) if p.kind == "mfcc" else None
        self._win, self._hop = p.win_length, p.hop_length  # hot path: no property calls per frame batch

    def frames_for(self, n_samples: int) -> int:
        """Number of frames ``n_samples`` samples give (no padding)."""
        return 0 if n_samples < self._win else 1 + (n_samples - self._win) // self._hop

    def samples_for(self, n_frames: int) -> int:
        """Fewest samples that give ``n_frames`` frames."""
        return 0 if n_frames <= 0 else self._win + (n_frames - 1) * self._hop

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Features of mono samples.

        Args:
            samples: float array ``[N]`` in [-1, 1].

        Returns:
            float32 ``[frames, n_features]`` (``frames = frames_for(N)``, possibly 0).
        """
        p = self.params
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        n_frames = self.frames_for(x.shape[0])
        if n_frames == 0:
            return np.zeros((0, p.n_features), dtype=np.float32)
        # a strided view of the frames (no copy); rfft zero-pads each windowed frame to n_fft
        step = x.strides[0]
        frames = np.lib.stride_tricks.as_strided(x, (n_frames, self._win), (self._hop * step, step), writeable=False)
        spec = np.fft.rfft(frames * self.window, n=p.n_fft, axis=1)
        power = (spec.real**2 + spec.imag**2).astype(np.float32)
        feats = np.log(np.maximum(power @ self.filterbank_t, p.log_floor))
        if self.dct_t is not None:
            feats = feats @ self.dct_t
        return feats.astype(np.float32, copy=False)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: ``[N]`` stays, ``[N, C]`` becomes ``[N]`` float32."""
    a = np.asarray(x)
    if a.ndim == 1:
        return a.astype(np.float32, copy=False)
    if a.ndim != 2:
        raise ValueError(f"to_mono: expected [N] or [N, channels], got shape {a.shape}")
    return a.astype(np.float32, copy=False).mean(axis=1, dtype=np.float32)


class Resampler:
    """Streaming rational-ratio resampler (polyphase windowed-sinc, Kaiser window).

    Feed chunks with :meth:`process` and finish with :meth:`flush`; the concatenated output
    is identical whatever the chunk sizes. Output sample ``n`` sits at input position
    ``n * from_rate / to_rate`` (linear phase, no delay).

    Args:
        from_rate: Input sample rate (Hz).
        to_rate: Output sample rate (Hz).
        zeros: Sinc zero crossings on each side (quality vs cost).
        rolloff: Cut-off as a fraction of the lower Nyquist frequency.
        beta: Kaiser window shape.
    """

    _BLOCK = 16384  # outputs per vectorised block: bounds the gather matrix to a few MB

    def __init__(self, from_rate: int, to_rate: int, zeros: int = 16, rolloff: float = 0.945, beta: float = 8.6) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"resample: rates must be positive, got {from_rate} -> {to_rate}")
        g = math.gcd(int(from_rate), int(to_rate))
        self.up, self.down = int(to_rate) // g, int(from_rate) // g
        cutoff = rolloff * min(1.0, self.up / self.down)  # relative to the input Nyquist
        self.half = int(math.ceil(zeros / cutoff))
        offsets = np.arange(-self.half + 1, self.half + 1)  # input taps k = base + offset
        t = np.arange(self.up)[:, None] / self.up - offsets[None]  # distance output -> tap, in input samples
        kaiser = np.i0(beta * np.sqrt(np.clip(1.0 - (t / self.half) ** 2, 0.0, None))) / np.i0(beta)
        self.table = (cutoff * np.sinc(cutoff * t) * kaiser).astype(np.float32)  # [up, taps]
        self.offsets = offsets
        self._buf = np.zeros(self.half, dtype=np.float32)  # input history; starts with silence before sample 0
        self._buf_start = -self.half  # absolute input index of _buf[0]
        self._received = 0
        self._next = 0  # next output index

    def _produce(self, n_end: int) -> np.ndarray:
        n = np.arange(self._next, max(self._next, n_end), dtype=np.int64)
        out = np.empty(n.shape[0], dtype=np.float32)
        for s in range(0, n.shape[0], self._BLOCK):
            nb = n[s : s + self._BLOCK]
            base, phase = (nb * self.down) // self.up, (nb * self.down) % self.up
            idx = base[:, None] + self.offsets[None] - self._buf_start
            out[s : s + nb.shape[0]] = np.einsum("ij,ij->i", self._buf[idx], self.table[phase])
        self._next = max(self._next, n_end)
        # drop input no future output can reach
        keep_from = (self._next * self.down) // self.up - self.half + 1
        drop = max(0, keep_from - self._buf_start)
        if drop:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns every output sample now fully determined."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        if self.up == self.down:  # equal rates: exact pass-through
            self._received += x.shape[0]
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        self._received += x.shape[0]
        # output n needs input up to base(n) + half, which must have arrived
        avail = self._received - self.half
        n_end = -(-(avail * self.up) // self.down) if avail > 0 else 0
        return self._produce(n_end)

    def flush(self) -> np.ndarray:
        """Outputs left after the input ends (the input is continued with silence)."""
        if self.up == self.down:
            return np.zeros(0, dtype=np.float32)
        total = -(-(self._received * self.up) // self.down)
        self._buf = np.concatenate([self._buf, np.zeros(2 * self.half, dtype=np.float32)])
        return self._produce(total)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono ``x`` from ``from_rate`` to ``to_rate`` (windowed-sinc, linear phase).

    Returns ``ceil(len(x) * to_rate / from_rate)`` float32 samples; an exact copy when the
    rates are equal.
    """
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if int(from_rate) == int(to_rate):
        return x.copy()
    r = Resampler(from_rate, to_rate)
    return np.concatenate([r.process(x), r.flush()])


@dataclass(frozen=True)
class CourseParams:
    """The course's spectrogram parameters; stored in the model card as ``input.features``.

    ``nfft``-sample frames every ``nfft - noverlap`` samples; ``fs`` is the ``Fs`` the course
    passes to ``specgram`` (it only scales the density); ``pcm_scale`` turns [-1, 1] samples
    back into the int16 values the course read with ``scipy.io.wavfile``.
    """

    kind: str = COURSE_KIND
    sample_rate: int = 44100
    nfft: int = 200
    noverlap: int = 120
    fs: float = 8000.0
    pcm_scale: float = 32768.0

    def __post_init__(self) -> None:
        if self.kind != COURSE_KIND:
            raise ConfigError(f"features.kind: expected {COURSE_KIND!r}, got {self.kind!r}")
        if self.sample_rate <= 0 or self.fs <= 0 or self.pcm_scale <= 0:
            raise ConfigError(f"features: sample_rate, fs and pcm_scale must be positive, got {self}")
        if not 0 <= self.noverlap < self.nfft:
            raise ConfigError(f"features: need 0 <= noverlap < nfft, got noverlap={self.noverlap} nfft={self.nfft}")

    @property
    def win_length(self) -> int:
        return self.nfft

    @property
    def hop_length(self) -> int:
        return self.nfft - self.noverlap

    @property
    def n_features(self) -> int:
        """Frequency bins per frame (``nfft // 2 + 1``)."""
        return self.nfft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CourseParams:
        """Build from a card mapping; unknown keys are an error.

        Raises:
            ConfigError: On unknown keys or invalid values.
        """
        from sdk.config import from_dict

        return from_dict(cls, data, "input.features")


class CourseSpectrogram:
    """matplotlib ``specgram``'s default one-sided PSD, frames as rows, in NumPy.

    Per frame: the samples (times ``pcm_scale``) times a symmetric Hann window
    (``np.hanning``), ``|rfft|**2``, every bin but DC and Nyquist doubled, divided by ``fs``
    and by the window's energy ``sum(w**2)``. No detrending, no padding (frames as in
    :class:`LogMel`). Returns ``[frames, nfft // 2 + 1]``, the transpose of ``specgram``'s ``Pxx``.
    """

    def __init__(self, params: CourseParams | None = None) -> None:
        self.params = params or CourseParams()
        p = self.params
        self.window = np.hanning(p.nfft)
        doubled = np.full(p.n_features, 2.0)
        doubled[0] = 1.0
        if p.nfft % 2 == 0:
            doubled[-1] = 1.0  # the Nyquist bin exists only for an even nfft
        self._scale = doubled / (p.fs * float(np.sum(self.window**2)))

    def frames_for(self, n_samples: int) -> int:
        p = self.params
        return 0 if n_samples < p.nfft else 1 + (n_samples - p.nfft) // p.hop_length

    def samples_for(self, n_frames: int) -> int:
        p = self.params
        return 0 if n_frames <= 0 else p.nfft + (n_frames - 1) * p.hop_length

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Spectrogram of mono samples in [-1, 1]: float32 ``[frames, n_features]``."""
        p = self.params
        x = np.ascontiguousarray(samples, dtype=np.float64).reshape(-1) * p.pcm_scale
        n = self.frames_for(x.shape[0])
        if n == 0:
            return np.zeros((0, p.n_features), dtype=np.float32)
        step = x.strides[0]
        frames = np.lib.stride_tricks.as_strided(x, (n, p.nfft), (p.hop_length * step, step), writeable=False)
        spec = np.fft.rfft(frames * self.window, n=p.nfft, axis=1)
        return ((spec.real**2 + spec.imag**2) * self._scale).astype(np.float32)


def features_from_dict(data: dict[str, Any]) -> LogMel | CourseSpectrogram:
    """The feature extractor a card's ``input.features`` names (log-mel/MFCC or the course's spectrogram).

    Raises:
        ConfigError: On unknown keys or invalid values.
    """
    if data.get("kind") == COURSE_KIND:
        return CourseSpectrogram(CourseParams.from_dict(data))
    return LogMel(FeatureParams.from_dict(data))
