"""Streaming trigger-word detector (device side; never imports TensorFlow).

Model card contract, written by the training recipe through :func:`card_fields` and read
here, so a ``.tflite`` carries everything the detector needs::

    task: trigger-word
    input:
      features: {sample_rate: 16000, window_ms: 25, hop_ms: 10, n_fft: 512, n_mels: 40,
                 fmin: 20, fmax: 7600, kind: logmel, n_mfcc: 13, log_floor: 1.0e-06}
      window_s: 1.0     # seconds of audio the model sees per inference
      hop_s: 0.1        # seconds between inferences
    output:
      word: activate
      threshold: 0.5    # default detection threshold (chosen on validation)
      smoothing: 1      # optional: mean of the last k scores is compared to the threshold
      refractory_s: 1.0 # optional: no second event within this many seconds
      score: logit      # optional: the model outputs logits (the detector applies the sigmoid)

With ``features.kind: speech-embedding`` the features are embeddings of the pretrained front
end (:mod:`sdk.speech_embedding`), which the model carries in its ``edgesdk.frontend``
metadata, so one file holds everything.

Model input: ``sdk.audio.LogMel(FeatureParams.from_dict(input.features))`` applied to the
last ``round(window_s * sample_rate)`` samples, giving ``[frames, n_features]``; it is
reshaped to the model's input shape (``[1, frames, n]``, ``[1, frames, n, 1]``... any shape
with the same number of values). Model output: a single score (``[1, 1]``) or a per-time-step
sequence (``[1, T, 1]`` or ``[1, T]``, the course architecture); for a sequence the score of an
inference is the maximum over the steps that cover the newest ``hop_s`` of audio.

With ``features.kind: course-spectrogram`` the features are the Deep Learning Specialization's
power spectrogram (:class:`sdk.audio.CourseSpectrogram`). A card with ``input.stream`` (a
streaming step model from ``edgesdk convert``) is run window by window, ``stream.frames`` frames
every ``stream.hop_frames``, with the recurrent state carried between invokes by
:class:`sdk.runner.StreamState`; each output step is one score, at the time its last sample
arrived, fed to the same threshold/smoothing/refractory logic.

Inference happens when the absolute sample count reaches a multiple of the hop (once the
first full window has arrived), so chunk sizes never change the events. An event's ``time``
is the stream time of that hop boundary: seconds of audio since the stream began.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from apps.registry import APPS
from sdk import speech_embedding
from sdk.audio import FeatureParams, features_from_dict
from sdk.card import ModelCard
from sdk.errors import ConfigError, ModelFormatError
from sdk.runner import Runner, StreamState, TensorSpec
from sdk.types import AudioChunk

log = logging.getLogger("edgesdk.trigger_word")

DEFAULT_MODEL = APPS["trigger-word"].default_model_path
DEFAULT_SMOOTHING = 1
DEFAULT_REFRACTORY_S = 1.0


def default_model() -> Path:
    """The shipped default model, or an error saying it is missing."""
    if not DEFAULT_MODEL.is_file():
        raise ModelFormatError(f"the default trigger-word model {DEFAULT_MODEL} is missing from this installation; "
                               f"give a model explicitly or build it with `{APPS['trigger-word'].rebuild}`")
    return DEFAULT_MODEL


def card_fields(word: str, params: FeatureParams, window_s: float, hop_s: float, threshold: float, **output: Any) -> dict[str, Any]:
    """Task-specific card fields for a trigger-word model.

    Use as ``ModelCard(**card_fields(...), license=..., notes=...)``.

    Args:
        word: The trigger word.
        params: Feature parameters used in training.
        window_s: Seconds of audio per model input.
        hop_s: Seconds between inferences.
        threshold: Default detection threshold.
        **output: Extra ``output`` keys (``smoothing``, ``refractory_s``...).

    Returns:
        ``{"task": "trigger-word", "input": {...}, "output": {...}}``.
    """
    return {
        "task": "trigger-word",
        "input": {"features": params.to_dict(), "window_s": float(window_s), "hop_s": float(hop_s)},
        "output": {"word": str(word), "threshold": float(threshold), **output},
    }


def _passes_through(out: TensorSpec, inp: TensorSpec) -> bool:
    """Whether every stored value of ``out``, dequantized and quantized for ``inp``, comes back unchanged.

    Then ``out``'s integers can be given to ``inp`` as they are: the same numbers without the
    float round trip.
    """
    if not (out.quantized and inp.quantized and out.dtype == inp.dtype):
        return False
    info = np.iinfo(out.dtype)
    q = np.arange(info.min, info.max + 1).astype(out.dtype)
    return bool(np.array_equal(inp.quantize(out.dequantize(q)), q))


class _Ring:
    """Fixed-size sample history with a contiguous view of the newest ``size`` samples.

    Every sample is stored twice (at ``i`` and ``i + size``), so the window is always one
    slice, never a copy or a roll.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = np.zeros(2 * size, dtype=np.float32)
        self.pos = 0

    def write(self, x: np.ndarray) -> None:
        n = x.shape[0]
        if n >= self.size:
            x, n = x[-self.size :], self.size
        first = min(n, self.size - self.pos)
        for off in (0, self.size):
            self.buf[self.pos + off : self.pos + off + first] = x[:first]
            self.buf[off : off + n - first] = x[first:]
        self.pos = (self.pos + n) % self.size

    def window(self) -> np.ndarray:
        return self.buf[self.pos : self.pos + self.size]


class TriggerLogic:
    """Threshold, smoothing and refractory period over a stream of raw scores.

    Shared by the detector and the evaluation's threshold sweep, so both decide alike.
    """

    def __init__(self, threshold: float, smoothing: int = DEFAULT_SMOOTHING, refractory_s: float = DEFAULT_REFRACTORY_S) -> None:
        if smoothing < 1:
            raise ConfigError(f"smoothing: expected an integer >= 1, got {smoothing}")
        if refractory_s < 0:
            raise ConfigError(f"refractory_s: expected >= 0 seconds, got {refractory_s}")
        self.threshold = float(threshold)
        self.smoothing = int(smoothing)
        self.refractory_s = float(refractory_s)
        self.reset()

    def reset(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.smoothing)
        self._last_event = -math.inf
        self.peak = 0.0  # highest smoothed score since the reset: says how close a miss was

    def update(self, time: float, score: float) -> float | None:
        """Add one raw score; returns the smoothed score when it triggers, else ``None``."""
        self._recent.append(float(score))
        smoothed = sum(self._recent) / len(self._recent)
        self.peak = max(self.peak, smoothed)
        if smoothed >= self.threshold and time - self._last_event >= self.refractory_s:
            self._last_event = time
            return smoothed
        return None


class TriggerWordDetector:
    """Streams audio through a trigger-word model and yields detection events.

    Args:
        model: A :class:`Runner`, or a ``.tflite`` path/bytes (then ``runner_kwargs`` apply).
        threshold: Detection threshold (default: the card's ``output.threshold``).
        smoothing: Scores averaged before thresholding (default: card, else 1).
        refractory_s: Minimum seconds between events (default: card, else 1.0).
        word: Word reported in events (default: the card's ``output.word``).
        runner_kwargs: Passed to :class:`Runner` when ``model`` is a path.

    Raises:
        ModelFormatError: When the model has no trigger-word card or its shapes disagree.
    """

    def __init__(
        self,
        model: Runner | str | Path | bytes,
        threshold: float | None = None,
        smoothing: int | None = None,
        refractory_s: float | None = None,
        word: str | None = None,
        runner_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.runner = model if isinstance(model, Runner) else Runner(model, **(runner_kwargs or {}))
        card = self.runner.card
        name = self.runner.name
        if card is None or card.task != "trigger-word":
            got = "no model card" if card is None else f"task {card.task!r}"
            raise ModelFormatError(
                f"{name}: expected a trigger-word model card (task: trigger-word, input.features, window_s, hop_s), got {got}; "
                "train one with `edgesdk train trigger-word` or embed a card built with apps.trigger_word.app.card_fields"
            )
        self.card: ModelCard = card
        self._read_input(card, name)
        self._logit = card.output.get("score") == "logit"  # the model outputs logits; scores are their sigmoid
        out = card.output
        self.word = word or str(out.get("word", "trigger"))
        thr = threshold if threshold is not None else out.get("threshold", 0.5)
        self.logic = TriggerLogic(
            float(thr),
            int(smoothing if smoothing is not None else out.get("smoothing", DEFAULT_SMOOTHING)),
            float(refractory_s if refractory_s is not None else out.get("refractory_s", DEFAULT_REFRACTORY_S)),
        )
        self._ring = _Ring(self.window_samples)
        self._table = self._score_table() if self._stream is None else None  # indexed by stored value - _table_min
        self.reset()

    def _read_input(self, card: ModelCard, name: str) -> None:
        inp = card.input
        try:
            feats = dict(inp["features"])
            window_s, hop_s = float(inp["window_s"]), float(inp["hop_s"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"{name}: card input needs features, window_s and hop_s ({e}); got {sorted(inp)}") from e
        if feats.get("kind") == speech_embedding.KIND:
            # the front end runs where the head runs (same backend and threads; delegates are the head's own)
            front = Runner(speech_embedding.frontend_bytes(self.runner.file, name), backend=self.runner.backend.name, threads=self.runner.threads)
            self.features: Any = speech_embedding.SpeechEmbedding(front)
        else:  # log-mel/MFCC, or the course's spectrogram (kind: course-spectrogram)
            self.features = features_from_dict(feats)
        # the embedding keeps its mel frames by stream position: each is computed once, whatever the chunks
        self._positional = isinstance(self.features, speech_embedding.SpeechEmbedding)
        # and its stored integers are the head's input as they are when both tensors share one quantization
        self._raw = self._positional and _passes_through(self.features.runner.outputs[0], self.runner.inputs[0])
        self.params = self.features.params
        self.sample_rate = self.params.sample_rate
        self.window_samples = int(round(window_s * self.sample_rate))
        self.hop_samples = int(round(hop_s * self.sample_rate))
        if self.hop_samples <= 0 or self.window_samples < self.params.win_length:
            raise ModelFormatError(f"{name}: card window_s={window_s} / hop_s={hop_s} too small for the features")
        self._stream: StreamState | None = None
        if "stream" in inp:
            self._read_stream()
            return
        self.n_frames = self.features.frames_for(self.window_samples)
        spec = self.runner.inputs[0]
        want = self.n_frames * self.params.n_features
        if int(np.prod(spec.shape)) != want:
            raise ModelFormatError(
                f"{name}: input {spec.name!r} has shape {list(spec.shape)} but the card's window gives "
                f"{self.n_frames} frames x {self.params.n_features} features = {want} values"
            )
        self._input_shape = spec.shape
        # consecutive windows share all but hop/frame-hop frames: compute only the new ones when the grids align,
        # for up to n_frames // m hops in one call (their new frames all lie in the newest window)
        m, rem = divmod(self.hop_samples, self.params.hop_length)
        self._new_frames = m if rem == 0 and 0 < m < self.n_frames else 0
        self._max_batch = self.n_frames // m if self._new_frames else 1
        self._feats = np.zeros((self.n_frames, self.params.n_features), dtype=spec.dtype if self._raw else np.float32)

    def _read_stream(self) -> None:
        """A streaming step model: windows of ``stream.frames`` frames every ``hop_frames``, state carried by the runtime."""
        st = self._stream = StreamState(self.runner)
        fh = self.params.hop_length
        self.n_frames = st.frames
        self.window_samples = self.features.samples_for(st.frames)
        self.hop_samples = st.hop_frames * fh
        # output step i of an invoke has seen the frames up to i * stride + receptive - 1 of its window
        self._step_ends = np.array([(i * st.stride + st.receptive - 1) * fh + self.params.win_length for i in range(st.steps)])
        self._pending = np.zeros(0, dtype=np.float32)
        self._consumed = 0

    @property
    def threshold(self) -> float:
        return self.logic.threshold

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.sample_rate

    def reset(self) -> None:
        """Forget the stream: time restarts at 0."""
        self._total = 0
        self._ring.buf[:] = 0.0
        self._ring.pos = 0
        self._have_feats = False
        if self._positional:
            self.features.reset()
        self.logic.reset()
        if getattr(self, "_stream", None) is not None:
            self._stream.reset()
            self._pending = np.zeros(0, dtype=np.float32)
            self._consumed = 0

    def _features(self, x: np.ndarray) -> np.ndarray:
        """Features of the newest samples ``x`` (those up to the stream's current end)."""
        if self._positional:
            return self.features(x, start=self._total - x.shape[0], raw=self._raw)
        return self.features(x)

    def _new_features(self, hops: int) -> np.ndarray:
        """Features of the newest ``hops`` hops (``hops * m`` frames), from the ring's window."""
        window, m = self._ring.window(), self._new_frames
        return self._features(window[(self.n_frames - hops * m) * self.params.hop_length :])

    def _score_table(self) -> list[float] | None:
        """The score of every value a single 8-bit output can store, or ``None`` for other outputs.

        Each is computed as a hop's would be (:meth:`_score`), so looking up a hop's stored value
        gives the same float without the per-hop dequantize and sigmoid.
        """
        out = self.runner.outputs[0]
        if not out.quantized or out.dtype.itemsize != 1 or int(np.prod(out.shape)) != 1:
            return None
        info = np.iinfo(out.dtype)
        self._table_min = info.min
        return [self._score(out.dequantize(np.full(out.shape, v, out.dtype))) for v in range(info.min, info.max + 1)]

    def score_features(self, feats: np.ndarray) -> float:
        """Raw model score of one window's features ``[frames, n_features]``."""
        if self._table is not None:
            stored = self.runner.run(feats.reshape(self._input_shape), raw=True)[0]
            return self._table[int(stored.flat[0]) - self._table_min]
        return self._score(self.runner.run(feats.reshape(self._input_shape))[0])

    def _score(self, out: np.ndarray) -> float:
        """The raw score of one model output (dequantized)."""
        seq = np.asarray(out, dtype=np.float32).reshape(-1)
        if self._logit:
            seq = 0.5 * (1.0 + np.tanh(0.5 * seq))  # the sigmoid, without overflow for large logits
        if seq.shape[0] == 1:
            return float(seq[0])
        # a per-time-step output: the steps covering the newest hop are what is new
        k = max(1, int(math.ceil(seq.shape[0] * self.hop_samples / self.window_samples)))
        return float(seq[-k:].max())

    def _steps(self, samples: np.ndarray) -> Iterator[tuple[float, float]]:
        """Feed samples; yield ``(time, raw score)`` at each hop boundary reached.

        Once the first window is full, up to ``_max_batch`` hops that this call completes are
        featurised together (one front end call), then scored one by one: the same numbers as
        hop by hop, whatever the chunk size.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._stream is not None:
            yield from self._stream_steps(x)
            return
        i, n, hop = 0, x.shape[0], self.hop_samples
        while i < n:
            to_hop = hop - self._total % hop
            if i + to_hop > n:  # no boundary in the rest
                self._ring.write(x[i:])
                self._total += n - i
                return
            k = 1 + (n - i - to_hop) // hop if self._have_feats else 1
            k = min(k, self._max_batch)
            end = i + to_hop + (k - 1) * hop
            self._ring.write(x[i:end])
            self._total += end - i
            i = end
            if self._total < self.window_samples:
                continue
            if not self._have_feats or not self._new_frames:
                self._feats[:] = self._features(self._ring.window())
                self._have_feats = True
                yield self._total / self.sample_rate, self.score_features(self._feats)
                continue
            m, new = self._new_frames, self._new_features(k)
            for j in range(k):
                self._feats[:-m] = self._feats[m:]
                self._feats[-m:] = new[j * m : (j + 1) * m]
                yield (self._total - (k - 1 - j) * hop) / self.sample_rate, self.score_features(self._feats)

    def _stream_steps(self, x: np.ndarray) -> Iterator[tuple[float, float]]:
        """Streaming model: one invoke per full window, one ``(time, score)`` per output step, at the
        stream time when that step's last sample arrived."""
        self._pending = np.concatenate([self._pending, x])
        while self._pending.shape[0] >= self.window_samples:
            feats = self.features(self._pending[: self.window_samples])
            seq = np.asarray(self._stream.step(feats)[0], dtype=np.float32).reshape(-1)
            if self._logit:
                seq = 0.5 * (1.0 + np.tanh(0.5 * seq))
            for end, score in zip(self._step_ends, seq):
                yield (self._consumed + int(end)) / self.sample_rate, float(score)
            self._pending = self._pending[self.hop_samples :]
            self._consumed += self.hop_samples
        self._total = self._consumed + self._pending.shape[0]

    def scores(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores (no smoothing, no events) at each hop boundary in ``samples``.

        Returns:
            ``(times, scores)`` float64 arrays; continues the current stream.
        """
        pairs = list(self._steps(samples))
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def process(self, samples: np.ndarray | AudioChunk) -> list[dict[str, Any]]:
        """Feed any number of samples (at ``sample_rate``); returns the events they complete."""
        if isinstance(samples, AudioChunk):
            if samples.sample_rate != self.sample_rate:
                raise ConfigError(f"audio chunk at {samples.sample_rate} Hz, model expects {self.sample_rate} Hz; resample the source")
            samples = samples.samples
        events = []
        for t, score in self._steps(samples):
            fired = self.logic.update(t, score)
            if fired is not None:
                events.append({"event": "trigger", "word": self.word, "time": round(t, 3), "score": round(fired, 4)})
        return events

    def run(self, chunks: Iterable[AudioChunk | np.ndarray]) -> Iterator[dict[str, Any]]:
        """Events from a source (an iterable of chunks), as they happen."""
        for chunk in chunks:
            yield from self.process(chunk)
