"""The course's spectrogram (matplotlib ``specgram(data, 200, 8000, noverlap=120)``), in NumPy, against its formula."""

from __future__ import annotations

import numpy as np
import pytest

from sdk.audio import COURSE_KIND, CourseParams, CourseSpectrogram, LogMel, features_from_dict
from sdk.errors import ConfigError


def _formula(samples: np.ndarray, nfft: int = 200, noverlap: int = 120, fs: float = 8000.0, pcm: float = 32768.0) -> np.ndarray:
    """matplotlib's one-sided PSD written out: symmetric Hann, explicit DFT, doubled inner bins, / (Fs * sum(w^2))."""
    hop = nfft - noverlap
    n = np.arange(nfft)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / (nfft - 1))  # np.hanning
    k = np.arange(nfft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, n) / nfft)
    x = samples.astype(np.float64) * pcm
    rows = []
    for start in range(0, len(x) - nfft + 1, hop):
        p = np.abs(dft @ (x[start : start + nfft] * w)) ** 2
        p[1:-1] *= 2.0
        rows.append(p / (fs * np.sum(w**2)))
    return np.array(rows)


def test_matches_the_specgram_formula():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 4410)
    got = CourseSpectrogram()(x)
    want = _formula(x)
    assert got.shape == want.shape == (1 + (4410 - 200) // 80, 101)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * want.max())


def test_ten_seconds_give_the_course_input_shape():
    f = CourseSpectrogram()
    assert f.frames_for(441000) == 5511 and f.samples_for(5511) == 441000
    assert f(np.zeros(441000, np.float32)).shape == (5511, 101)
    assert f(np.zeros(199)).shape == (0, 101)


def test_a_tone_lands_in_its_bin():
    rate = 44100
    t = np.arange(rate) / rate
    spec = CourseSpectrogram()(0.5 * np.sin(2 * np.pi * 2205.0 * t))  # bin spacing 44100 / 200 = 220.5 Hz
    assert np.all(np.argmax(spec, axis=1) == 10)


def test_frames_are_independent_of_the_rest_of_the_signal():
    x = np.random.default_rng(1).uniform(-1, 1, 20000)
    f = CourseSpectrogram()
    whole = f(x)
    np.testing.assert_array_equal(f(x[80 * 7 : 80 * 7 + f.samples_for(30)]), whole[7:37])


def test_params_round_trip_and_validation():
    p = CourseParams()
    assert CourseParams.from_dict(p.to_dict()) == p and p.hop_length == 80 and p.n_features == 101
    assert isinstance(features_from_dict({"kind": COURSE_KIND}), CourseSpectrogram)
    assert isinstance(features_from_dict({"kind": "logmel"}), LogMel)
    with pytest.raises(ConfigError, match="input.features"):
        CourseParams.from_dict({"kind": COURSE_KIND, "nfft_size": 200})
    with pytest.raises(ConfigError, match="noverlap"):
        CourseParams(noverlap=200)
