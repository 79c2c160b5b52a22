"""From a speech corpus to training windows and evaluation sets (NumPy only).

* Training/validation **streams**: short word streams (one augmented word in a 2 s
  background, placed so the windows around its end are all seen; every positive, and every
  negative word placed the same way so confusables meet the model exactly where positives
  do) and longer negative streams (confusables, sentences, cut-off positives and real speech
  over backgrounds, words inserted without overlap as in the course). Features of every stream are computed once
  (:class:`sdk.audio.LogMel` or :class:`sdk.speech_embedding.SpeechEmbedding`); windows are index ranges into them, labelled with
  :func:`apps.trigger_word.augment.window_labels`.
* **Evaluation sets** for :func:`apps.trigger_word.eval.evaluate`: positive clips (one word
  in a background) and continuous negative audio.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.trigger_word import augment as A
from apps.trigger_word.data import SR, Clip
from sdk.audio import LogMel


@dataclass
class Windows:
    """Concatenated stream features and the windows cut from them.

    Attributes:
        feats: ``[total_frames, n_features]`` float32.
        starts: First frame of each window.
        labels: 1 / 0 / -1 (ambiguous) per window (dscnn).
        seq_labels: ``[windows, steps]`` per-step labels (course architecture) or ``None``.
    """

    feats: np.ndarray
    starts: np.ndarray
    labels: np.ndarray
    seq_labels: np.ndarray | None = None

    def batch(self, idx: np.ndarray, frames: int) -> np.ndarray:
        """Windows ``idx`` as ``[len(idx), frames, n_features]``."""
        return self.feats[self.starts[idx, None] + np.arange(frames)[None]]


def partial(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """The first 35-75% of a positive: the word cut off, a hard negative against early firing."""
    return x[: int(x.shape[0] * rng.uniform(0.35, 0.75))]


def word_stream(
    rng: np.random.Generator, word: np.ndarray, window_s: float, babble: Sequence[np.ndarray], user: Sequence[np.ndarray], positive: bool = True,
    context: Sequence[np.ndarray] = (), babble_weight: int = 1,
) -> tuple[np.ndarray, list[A.Event]]:
    """One augmented word in a background of ``window_s + 0.8`` s, ending 0.3-0.8 s before the end.

    Used for positives and, identically placed, for confusable negatives: the model sees both
    at the same position and must tell them apart by the word itself. With ``context``
    (negative speech), half of the streams get speech just before and half just after the word.
    ``babble_weight``: see :func:`apps.trigger_word.augment.background`.
    """
    n = int((window_s + 0.8) * SR)
    w = A.augment(rng, word)[: int(window_s * SR) - SR // 10]
    end = n - int(rng.uniform(0.3, 0.8) * SR)
    start = max(0, end - w.shape[0])
    bg = A.background(rng, n, babble, user, babble_weight)
    level = 10 ** (rng.uniform(-30, -12) / 20)
    out = bg * (level / 10 ** (rng.uniform(0, 30) / 20) / A._rms(bg))
    out[start : start + w.shape[0]] += w * (level / A._rms(w))
    # words are rarely said alone ("okay, activate the lights"): other speech right before/after
    if context and rng.random() < 0.5 and start > SR // 5:
        c = context[int(rng.integers(len(context)))]
        b = start - int(rng.uniform(0.05, 0.3) * SR)
        c = c[-b:] if b > 0 else c[:0]
        gain = level * rng.uniform(0.5, 1.0)
        if c.shape[0]:  # the word starts at the stream's start: no room for context
            out[b - c.shape[0] : b] += c * (gain / A._rms(c))
    if context and rng.random() < 0.5:
        c = context[int(rng.integers(len(context)))]
        a = end + int(rng.uniform(0.05, 0.3) * SR)
        c = c[: max(0, n - a)]
        if c.shape[0] > SR // 50:
            out[a : a + c.shape[0]] += c * (level * rng.uniform(0.5, 1.0) / A._rms(c))
    out *= min(10 ** (rng.uniform(-6, 6) / 20), 0.99 / (float(np.abs(out).max()) + 1e-9))
    return out.astype(np.float32), [A.Event(start / SR, (start + w.shape[0]) / SR, positive)]


def negative_stream(
    rng: np.random.Generator, seconds: float, negs: Sequence[np.ndarray], real: Sequence[np.ndarray], pos: Sequence[np.ndarray],
    babble: Sequence[np.ndarray], user: Sequence[np.ndarray], babble_weight: int = 1,
) -> tuple[np.ndarray, list[A.Event]]:
    """``seconds`` of background with 1-5 negative words (synthetic, real, cut-off positives)."""
    words = []
    for _ in range(int(rng.integers(1, 6))):
        r = rng.random()
        if r < 0.3 and real:
            x = real[int(rng.integers(len(real)))]
            words.append((A.random_eq(rng, x) if rng.random() < 0.3 else x, False))
        elif r < 0.4 and pos:
            words.append((partial(rng, A.augment(rng, pos[int(rng.integers(len(pos)))])), False))
        else:
            words.append((A.augment(rng, negs[int(rng.integers(len(negs)))]), False))
    return A.mix(rng, A.background(rng, int(seconds * SR), babble, user, babble_weight), words)


def split_pools(clips: Sequence[Clip]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(positives, synthetic negatives, real negatives) audio of ``clips``."""
    pos = [c.audio for c in clips if c.positive]
    negs = [c.audio for c in clips if not c.positive and not c.voice.startswith("asterisk:")]
    real = [c.audio for c in clips if not c.positive and c.voice.startswith("asterisk:")]
    return pos, negs, real


def babble_pool(clips: Sequence[Clip]) -> list[np.ndarray]:
    """Speech for babble backgrounds and context: sentences and real prompts, not the single confusable words.

    Babble made of confusables alone ("captivate", "activity"...) overlapping is an
    adversarial sound no room produces, and it would dominate the false accepts.
    """
    return [c.audio for c in clips if not c.positive and (c.voice.startswith("asterisk:") or len(c.text.split()) >= 3)]


def make_windows(
    clips: Sequence[Clip], seed: int, window_s: float, neg_minutes: float, lm: LogMel, copies: int = 1,
    user: Sequence[np.ndarray] = (), course_steps: int | None = None, progress=None, natural_boost: int = 1, hop_s: float = 0.1,
    neg_copies: int = 1, delay_s: float = 0.0, babble_weight: int = 1,
) -> Windows:
    """Streams from ``clips`` (one split), their features and labelled windows.

    ``lm`` is the feature extractor (:class:`sdk.audio.LogMel` or
    :class:`sdk.speech_embedding.SpeechEmbedding`). Windows are cut every ``hop_s`` (the
    device's hop); each positive stream ends at a random
    offset after its word, so the word end falls at every position relative to the hop grid.
    Positives of engines other than espeak-ng appear ``natural_boost`` times per copy; every
    negative word is placed like a positive ``neg_copies`` times (differently augmented).
    Windows are positive from ``delay_s`` after a positive word ends (see
    :func:`apps.trigger_word.augment.window_labels`). Babble backgrounds are drawn
    ``babble_weight`` times as often as each other kind (overlapping talkers are the hardest).
    """
    rng = np.random.default_rng(seed)
    step = max(1, int(round(hop_s * SR / lm.params.hop_length)))
    pos, negs, real = split_pools(clips)
    babble = babble_pool(clips)
    # the few natural-sounding (non-espeak) positives are repeated so they weigh like a real share
    boosted = pos + [c.audio for c in clips if c.positive and not c.voice.startswith("espeak-ng:")] * (natural_boost - 1)

    def mixed() -> Iterator[tuple[np.ndarray, list[A.Event]]]:
        for c in range(copies):
            for i in rng.permutation(len(boosted)):
                yield word_stream(rng, boosted[i], window_s, babble, user, context=babble, babble_weight=babble_weight)
            if progress:
                progress(f"positive streams: {(c + 1) * len(boosted)}")
        # every negative word (synthetic confusables, sentences, real prompts) neg_copies times, placed like a positive
        for _ in range(neg_copies):
            for x in negs + real:
                yield word_stream(rng, x, window_s, babble, user, positive=False, context=babble, babble_weight=babble_weight)
        for _ in range(int(neg_minutes * 60 / 8)):
            yield negative_stream(rng, 8.0, negs, real, pos, babble, user, babble_weight)

    def streams() -> Iterator[tuple[np.ndarray, list[A.Event], int]]:
        # a generator: each stream's features are computed as it is mixed, so the hours of mixed
        # audio are never all in memory (the random draws, and so the streams, are the same)
        n = samples = 0
        for audio, events in mixed():
            n, samples = n + 1, samples + audio.shape[0]
            yield audio, events, step
        if progress:
            progress(f"streams: {n} ({samples / SR / 60:.1f} min), features computed")

    return windows_from_streams(streams(), window_s, lm, course_steps, delay_s)


def windows_from_streams(
    streams: Iterable[tuple[np.ndarray, list[A.Event], int]], window_s: float, lm: LogMel, course_steps: int | None = None, delay_s: float = 0.0
) -> Windows:
    """Features of each ``(audio, events, step_frames)`` stream and its labelled windows."""
    p = lm.params
    frames = lm.frames_for(int(round(window_s * SR)))
    feats, starts, labels, seq = [], [], [], []
    offset = 0
    for audio, events, step in streams:
        f = lm(audio)
        a = np.arange(0, f.shape[0] - frames + 1, step)
        ends = (a * p.hop_length + window_s * SR) / SR
        feats.append(f)
        starts.append(a + offset)
        labels.append(A.window_labels(events, ends, window_s, delay_s=delay_s))
        if course_steps:
            # step j of the course model covers the window up to (j + 1) / steps of its length
            t = ends[:, None] - window_s + window_s * (np.arange(course_steps)[None] + 1) / course_steps
            seq.append(np.stack([A.frame_labels(events, row) for row in t]))
        offset += f.shape[0]
    return Windows(np.concatenate(feats), np.concatenate(starts), np.concatenate(labels), np.concatenate(seq) if seq else None)


def eval_set(clips: Sequence[Clip], seed: int, neg_minutes: float, user: Sequence[np.ndarray] = (), max_pos: int | None = None) -> tuple[list, list[np.ndarray]]:
    """(positives as ``(clip, (word_start_s, word_end_s))``, negative streams) for :func:`apps.trigger_word.eval.evaluate`.

    Positives: each word alone (not augmented) in 0.5 s + word + 0.5 s of a random background
    at 5-30 dB SNR. Negatives: 8 s streams of 1-5 negative words (no cut-off positives).
    """
    rng = np.random.default_rng(seed)
    pos, negs, real = split_pools(clips)
    if max_pos and len(pos) > max_pos:
        pos = [pos[i] for i in sorted(rng.choice(len(pos), max_pos, replace=False))]
    babble = babble_pool(clips)
    pos_out = []
    for w in pos:
        bg = A.background(rng, w.shape[0] + SR, babble, user)
        x, ev = A.mix(rng, bg, [(w, True)], snr_db=(5.0, 30.0))
        pos_out.append((x, (ev[0].start, ev[0].end)))  # the known word span: no guessing under noise
    neg_out = []
    pool = [(x, False) for x in negs + real]
    for _ in range(int(neg_minutes * 60 / 8)):
        words = [pool[int(rng.integers(len(pool)))] for _ in range(int(rng.integers(1, 6)))]
        neg_out.append(A.mix(rng, A.background(rng, 8 * SR, babble, user), words)[0])
    return pos_out, neg_out


def general_speech(clips: Sequence[Clip], word: str) -> list[Clip]:
    """``clips`` without the confusable words: positives, whole sentences and real recorded prompts (a room's talk)."""
    from apps.trigger_word.data import sentences

    said = set(sentences(word))
    return [c for c in clips if c.positive or c.text in said or c.voice.startswith("asterisk:")]


def validation_sets(corpus: Any, word: str, seed: int, minutes: float) -> dict[str, tuple[list, list[np.ndarray]]]:
    """The recipe's validation sets, where the operating point is chosen (``edgesdk train`` and ``benchmarks/trigger_word_eval.py``).

    Validation voices: espeak-ng's held-out variants, festival's kal, Kokoro's validation blends
    and the validation share of the real prompts (flite is never used: it only tests).

    * ``confusable``: negatives rich in confusable words (3 of 4 negative utterances hold one),
      4x ``minutes`` so that 0.5 FA/h is one false accept: the threshold is chosen here;
    * ``general_speech``: the same positives; negatives whole sentences and real prompts only.
    """
    val = corpus.select("val")
    return {"confusable": eval_set(val, seed + 2, 4 * minutes), "general_speech": eval_set(general_speech(val, word), seed + 8, 4 * minutes)}


def test_sets(corpus: Any, word: str, seed: int, minutes: float) -> dict[str, tuple[list, list[np.ndarray]]]:
    """The recipe's test sets (the same for ``edgesdk train`` and ``benchmarks/trigger_word_eval.py``).

    * ``espeak_test_voices``: espeak-ng voices never seen in training; negatives are mostly
      confusable words (3 of 4 negative utterances hold one), a stress test;
    * ``espeak_test_voices_general_speech``: the same positives; negatives only whole
      sentences (espeak-ng and flite test voices) and real recorded prompts (no confusable
      words), closer to a room's talk, and 4x ``minutes`` of them so that 0.5 false accepts
      per hour is resolvable (one false accept in 2 h);
    * ``flite_heldout_engine``: flite, an engine never used in training or validation, its
      negatives as rich in confusable words as the stress test, 4x ``minutes`` (0.5 FA/h resolved);
    * ``real_speech_asterisk``: real recorded prompts as negatives (among them "activated" and
      "de-activated", the trigger inside longer words), real cuts of the word
      (:data:`apps.trigger_word.data.REAL_CUTS`) as positives;
    * ``flite_awb_rms_only``: the flite speakers that no training engine shares, 2x ``minutes``.
    """
    espeak = corpus.select("test", engine="espeak-ng")
    flite = corpus.select("test", engine="flite")
    general = general_speech(espeak + corpus.select("test", positive=False, engine="flite") + corpus.select("test", positive=False, engine="asterisk"), word)
    return {
        "espeak_test_voices": eval_set(espeak, seed + 3, minutes),
        "espeak_test_voices_general_speech": eval_set(general, seed + 7, 4 * minutes),
        "flite_heldout_engine": eval_set(flite, seed + 4, 4 * minutes),
        "real_speech_asterisk": eval_set(corpus.select("test", engine="asterisk"), seed + 5, minutes / 3),
        "flite_awb_rms_only": eval_set([c for c in flite if c.voice in ("flite:awb", "flite:rms")], seed + 6, 2 * minutes),
    }
