"""Streaming trigger-word detector, CLI and evaluation, with real TFLite tone-detector models."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apps.trigger_word.app import TriggerLogic, TriggerWordDetector
from apps.trigger_word.eval import evaluate, event_times, smoothed, word_span
from cli import main
from sdk.card import ModelCard, embed_card
from sdk.errors import ModelFormatError
from sdk.sources.audio import write_wav
from tests.test_audio_tone_model import SR, tone_model, tone_stream

pytestmark = pytest.mark.tensorflow
EDGESDK = str(Path(sys.executable).parent / "edgesdk")
BURSTS = [(1.0, 0.3), (1.6, 0.2), (4.0, 0.25)]  # the second is 0.6 s after the first


@pytest.fixture(autouse=True)
def _restore_logging():
    """``main()`` binds logging to the captured stderr of the test that called it; undo that afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tw")
    return {"score": tone_model(d / "score.tflite"), "sequence": tone_model(d / "seq.tflite", sequence=True, word="beep", refractory_s=0.5)}


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return tone_stream(BURSTS, 6.0, seed=3)


def _events(model: Path, x: np.ndarray, chunk: int, **kw) -> list[dict]:
    det = TriggerWordDetector(model, **kw)
    out = []
    for i in range(0, len(x), chunk):
        out += det.process(x[i : i + chunk])
    return out


@pytest.mark.parametrize("kind", ["score", "sequence"])
def test_chunk_size_does_not_change_events(models, stream, kind):
    ref = _events(models[kind], stream, 1280)
    assert ref, "the tone model must fire on this stream"
    for chunk in (4000, 1, 333, len(stream)):
        assert _events(models[kind], stream, chunk) == ref


def test_incremental_features_equal_full_window(models, stream):
    det = TriggerWordDetector(models["score"])
    assert det._new_frames == 5  # 50 ms hop / 10 ms frames
    det.process(stream[:40000])
    np.testing.assert_allclose(det._feats, det.features(det._ring.window()), rtol=1e-5, atol=1e-5)


def test_refractory_period(models, stream):
    long = _events(models["score"], stream, 1280, refractory_s=1.0)
    short = _events(models["score"], stream, 1280, refractory_s=0.3)
    assert [round(e["time"]) for e in long] == [1, 4]
    assert len(short) == 3 and 1.6 < short[1]["time"] < 1.9
    assert all(e.keys() == {"event", "word", "time", "score"} and e["word"] == "tone" for e in long)


def test_card_defaults_threshold_and_smoothing(models, stream):
    det = TriggerWordDetector(models["sequence"])
    assert (det.word, det.logic.refractory_s, det.hop_s) == ("beep", 0.5, 0.05)
    assert _events(models["score"], stream, 1280, threshold=1.01) == []
    blip = tone_stream([(1.0, 0.06)], 3.0)  # one hop's worth of tone
    assert len(_events(models["sequence"], blip, 1280)) == 1
    assert _events(models["sequence"], blip, 1280, smoothing=6) == []


def test_eval_helpers_agree_with_detector_logic(rng):
    scores = rng.random(300)
    times = np.arange(300) * 0.1
    for k, thr, refr in [(1, 0.9, 1.0), (3, 0.7, 0.5), (5, 0.6, 0.0)]:
        logic = TriggerLogic(thr, k, refr)
        ref = [t for t, s in zip(times, scores) if logic.update(t, s) is not None]
        assert event_times(times, smoothed(scores, k), thr, refr) == pytest.approx(ref)


def test_word_span_of_clip_with_noise():
    x = tone_stream([(0.5, 0.4)], 1.5)
    start, end = word_span(x, SR)
    assert abs(start - 0.5) <= 0.02 and abs(end - 0.9) <= 0.02
    for n in (1, 159, 160, 161, 16001):  # lengths that are not a whole number of 10 ms frames
        assert word_span(x[:n], SR)[1] <= n / SR + 0.01


def test_models_without_trigger_card_are_rejected(tmp_path, models):
    data = models["score"].read_bytes()
    (tmp_path / "gen.tflite").write_bytes(embed_card(data, ModelCard(task="generic")))
    with pytest.raises(ModelFormatError, match="trigger-word model card"):
        TriggerWordDetector(tmp_path / "gen.tflite")
    bad = ModelCard(task="trigger-word", input={"features": {"n_mels": 20}, "window_s": 0.5, "hop_s": 0.05}, output={"word": "x"})
    (tmp_path / "shape.tflite").write_bytes(embed_card(data, bad))
    with pytest.raises(ModelFormatError, match="48 frames x 20 features"):
        TriggerWordDetector(tmp_path / "shape.tflite")


def test_cli_json_and_resampled_stereo_input(tmp_path, models, stream, capsys):
    write_wav(tmp_path / "mono16k.wav", stream, SR)
    from sdk.audio import resample

    up = resample(stream, SR, 44100)
    write_wav(tmp_path / "stereo44k.wav", np.stack([up, up], axis=1), 44100)
    results = []
    for name in ("mono16k.wav", "stereo44k.wav"):
        assert main(["trigger-word", "--model", str(models["score"]), "--input", str(tmp_path / name), "--json"]) == 0
        results.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    assert [round(e["time"]) for e in results[0]] == [1, 4]
    assert [e["time"] for e in results[1]] == [e["time"] for e in results[0]]
    assert main(["trigger-word", "-m", str(models["score"]), "-i", str(tmp_path / name), "--duration", "2.0", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_cli_exec_runs_command_without_shell(tmp_path, models, stream):
    write_wav(tmp_path / "s.wav", stream, SR)
    log = tmp_path / "log.txt"
    code = f"import os,sys; open({str(log)!r},'a').write(' '.join([os.environ['EDGESDK_WORD'], os.environ['EDGESDK_TIME'], os.environ['EDGESDK_SCORE'], sys.argv[1]]) + chr(10))"
    cmd = f"{sys.executable} -c \"{code}\" '$HOME;x'"
    r = subprocess.run([EDGESDK, "trigger-word", "-m", str(models["score"]), "-i", str(tmp_path / "s.wav"), "--exec", cmd, "--json", "-q"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    events = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(events) == 2
    word, t, score, arg = lines[0].split(" ")
    assert (word, float(t), float(score), arg) == ("tone", events[0]["time"], events[0]["score"], "$HOME;x")


@pytest.mark.parametrize("content", [b"", b"not audio at all" * 20, b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage"])
def test_cli_bad_audio_exit_2(tmp_path, models, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    r = subprocess.run([EDGESDK, "trigger-word", "-m", str(models["score"]), "-i", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("edgesdk: error:") and "bad.wav" in r.stderr and r.stderr.count("\n") == 1


def test_cli_missing_exec_and_model(tmp_path, models, stream, capsys):
    write_wav(tmp_path / "s.wav", stream, SR)
    assert main(["trigger-word", "-m", str(models["score"]), "-i", str(tmp_path / "s.wav"), "--exec", "no-such-cmd-xyz"]) == 2
    assert "no-such-cmd-xyz" in capsys.readouterr().err
    assert main(["trigger-word", "-m", str(tmp_path / "nope.tflite"), "-i", str(tmp_path / "s.wav")]) == 2


def _eval_sets(tmp_path: Path) -> tuple[Path, Path]:
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir()
    neg.mkdir()
    for i in range(4):  # three tone "words" and one at the wrong pitch (a miss)
        freq = 3000.0 if i == 3 else 1000.0
        write_wav(pos / f"p{i}.wav", tone_stream([(0.4, 0.3)], 1.2, seed=i, freq=freq), SR)
    for i in range(3):  # one confusable 1 kHz burst inside 30 s of negatives
        write_wav(
            neg / f"n{i}.wav",
            tone_stream([(5.0, 0.3)] if i == 1 else [(5.0, 0.3)], 10.0, seed=10 + i, freq=1000.0 if i == 1 else 2500.0),
            SR,
        )
    return pos, neg


def test_evaluate_rates_delay_and_sweep(tmp_path, models):
    pos, neg = _eval_sets(tmp_path)
    res = evaluate(models["score"], pos, neg, progress=False)
    assert res["positives"] == 4 and res["frr"] == 0.25 and res["missed"] == [str(pos / "p3.wav")]
    assert res["false_accepts"] == 1 and res["fa_per_hour"] == pytest.approx(3600 / 30, rel=1e-3)
    assert -0.3 <= res["delay_ms_median"] / 1000 <= 0.2
    assert [r["threshold"] for r in res["sweep"]] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert len(res["det"]) == 118 and res["det"][-1][0] == 0.9999 and res["det"][-1][1] >= res["det"][0][1]  # misses grow with the threshold
    # other operating points come from the same scores and equal evaluating with them in the card
    from apps.trigger_word.eval import report, score
    from apps.trigger_word.operating_point import set_operating_point

    scores = score(models["score"], pos, neg, progress=False)
    assert report(scores)["det"] == res["det"] and report(scores)["frr"] == res["frr"]
    set_operating_point(models["score"], 0.7, 3, tmp_path / "smooth3.tflite")
    other = {k: v for k, v in evaluate(tmp_path / "smooth3.tflite", pos, neg, progress=False).items() if k not in ("model", "speed_x_realtime")}
    assert other == {k: v for k, v in report(scores, 0.7, 3).items() if k not in ("model", "speed_x_realtime")}
    assert other["det"] != res["det"] and other["smoothing"] == 3
    # the recipe's operating point: chosen on one scoring, its rates equal evaluating the model set to it
    from apps.trigger_word.operating_point import choose_operating_point

    thr, k, rates = choose_operating_point(scores)
    set_operating_point(models["score"], thr, k, tmp_path / "chosen.tflite")
    again = evaluate(tmp_path / "chosen.tflite", pos, neg, progress=False)
    assert k in (1, 2, 3) and rates["threshold"] == again["threshold"] == round(thr, 4)
    assert (rates["frr"], rates["false_accepts"]) == (again["frr"], again["false_accepts"]) and rates["frr"] <= res["frr"]
    arrays = evaluate(models["score"], [tone_stream([(0.4, 0.3)], 1.2, seed=0)], [np.zeros(SR * 5, np.float32)], progress=False)
    assert arrays["frr"] == 0.0 and arrays["false_accepts"] == 0
    known = evaluate(
        models["score"], [(tone_stream([(0.4, 0.3)], 1.2, seed=0), (0.4, 0.5))], [np.zeros(SR * 5, np.float32)], progress=False
    )
    assert known["delay_ms_median"] == pytest.approx(arrays["delay_ms_median"] + 200, abs=1)  # the word "ended" 0.2 s earlier


def test_sets_scored_in_workers_equal_scored_here(tmp_path, models):
    """The recipe scores its evaluation sets two at a time, one thread each: the same scores, bit for bit."""
    from apps.trigger_word.jobs import run_jobs
    from apps.trigger_word.operating_point import _score_set

    pos, neg = _eval_sets(tmp_path)
    sets = [(models["score"], sorted(pos.glob("*.wav")), sorted(neg.glob("*.wav"))), (models["sequence"], sorted(pos.glob("*.wav")), [])]
    here = run_jobs(_score_set, [(*a, None) for a in sets], 1)
    workers = run_jobs(_score_set, [(*a, 1) for a in sets], 2)
    for a, b in zip(here, workers):
        assert [p["name"] for p in a.pos] == [p["name"] for p in b.pos] and a.hours == b.hours
        for pa, pb in zip(a.pos, b.pos):
            np.testing.assert_array_equal(pa["raw"], pb["raw"])
        np.testing.assert_array_equal(a.neg[1], b.neg[1])
    assert here[0].neg[1].size > 0 and here[0].model != here[1].model


def test_eval_cli_compare_and_plot(tmp_path, models, capsys):
    pos, neg = _eval_sets(tmp_path)
    argv = ["eval", "trigger-word", "-m", str(models["score"]), "--compare", str(models["sequence"]), "--positives", str(pos)]
    assert main([*argv, "--negatives", str(neg), "--json", "--plot", str(tmp_path / "det.png")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x.get("word") for x in lines[:2]] == ["tone", "beep"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # said on stderr; nothing on stdout, no file
        assert len(lines) == 2 and not (tmp_path / "det.png").exists()
    else:
        assert lines[2]["plot"] == str(tmp_path / "det.png") and (tmp_path / "det.png").stat().st_size > 0
    assert main(["eval", "trigger-word", "-m", str(models["score"]), "--positives", str(pos), "--negatives", str(neg)]) == 0
    assert "false accepts" in capsys.readouterr().out
    assert main(["eval", "trigger-word", "-m", str(models["score"]), "--positives", str(tmp_path / "x"), "--negatives", str(neg)]) == 2


def test_file_speed_table(tmp_path, models):
    """Prints the file real-time factor with the tiny model (no assertion on time)."""
    x = tone_stream([(3.0, 0.3)], 60.0)
    write_wav(tmp_path / "long.wav", x, SR)
    from sdk.sources.audio import WavFileSource

    for kind in ("score", "sequence"):
        det = TriggerWordDetector(models[kind], runner_kwargs={"threads": 1})
        t, cpu = time.perf_counter(), time.process_time()
        with WavFileSource(tmp_path / "long.wav", SR) as src:
            n = len(list(det.run(src)))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        # CPU time is what one core would need; wall time also counts waiting on this shared machine
        print(
            f"\n{kind} model, hop {det.hop_s * 1000:.0f} ms, 60 s file: {60 / cpu:.0f}x real time by CPU time, {60 / wall:.0f}x by wall time ({n} events)"
        )
    assert os.path.getsize(tmp_path / "long.wav") > 0


def test_demo_on_bundled_samples(capsys):
    from apps.trigger_word.app import DEFAULT_MODEL
    from apps.trigger_word.demo import demo
    from sdk.console import Output

    demo(Output(json_mode=True))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    if not DEFAULT_MODEL.is_file():
        assert lines == [{"app": "trigger-word", "status": "default model missing", "model": str(DEFAULT_MODEL)}]
        return
    by = {x["sample"]: x for x in lines}
    assert by["other.wav"]["events"] == [] and by["other.wav"]["peak_score"] < 0.5
    # the sample says the word once, ending ~2.3 s in: at most one event, then at that moment
    assert len(by["activate.wav"]["events"]) <= 1 and all(2.0 < e["time"] < 3.5 for e in by["activate.wav"]["events"])
    assert by["activate.wav"]["peak_score"] > by["other.wav"]["peak_score"] + 0.3
