"""``edgesdk trigger-word`` (stream and detect) and ``edgesdk eval trigger-word``.

Heavy imports (the interpreter, sounddevice) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from apps.registry import APPS
from sdk.console import Output, add_command, add_runner_args, number, runner_kwargs
from sdk.errors import ConfigError
from sdk.web.serve import add_serve_args

log = logging.getLogger("edgesdk.trigger_word")

def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "trigger-word", common, help="detect a spoken trigger word in a WAV file or live from a microphone")
    p.add_argument("-m", "--model", default=None, help=f"trigger-word .tflite with a card; None: the shipped {APPS['trigger-word'].default_model_path.name}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-i", "--input", metavar="FILE.wav", help="a WAV file (any rate, channels, 8-32-bit PCM or float)")
    src.add_argument(
        "--mic", nargs="?", const="", metavar="DEVICE", help="record from a microphone: the default one, or an index or part of a name"
    )
    p.add_argument("--threshold", type=number(float, 0, 1), default=None, help="detection threshold; None: the model card's")
    p.add_argument("--smoothing", type=number(int, 1), default=None, help="average this many scores; None: the card's, else 1")
    p.add_argument("--refractory", type=number(float, 0), default=None, help="seconds without a second event; None: the card's, else 1.0")
    p.add_argument("--duration", type=number(float, 0, low_open=True), default=None, help="stop after this many seconds of audio")
    p.add_argument("--chunk", type=number(int, 1), default=1280, help="samples per audio chunk read from the source")
    p.add_argument("--chime", action="store_true", help="play a short tone on each detection")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD", help="run CMD per detection (no shell); EDGESDK_WORD/TIME/SCORE in its env")
    add_runner_args(p)
    add_serve_args(p)
    p.set_defaults(func=run)


def register_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, "trigger-word", common, help="false rejects, false accepts per hour, detection delay and a threshold sweep")
    p.add_argument("-m", "--model", default=None, help=f"model to evaluate; None: the shipped {APPS['trigger-word'].default_model_path.name}")
    p.add_argument("--compare", metavar="M2", help="a second model evaluated on the same audio")
    p.add_argument("--positives", required=True, metavar="DIR", help="folder of .wav clips, each holding the word once")
    p.add_argument("--negatives", required=True, metavar="DIR", help="folder of .wav files without the word (concatenated)")
    p.add_argument("--threshold", type=number(float, 0, 1), default=None, help="operating threshold; None: the card's")
    p.add_argument("--max-delay", type=number(float, 0), default=1.0, help="an event up to this many seconds after the word end counts")
    p.add_argument("--plot", metavar="OUT.png", help="write a DET curve (needs matplotlib)")
    add_runner_args(p)
    p.set_defaults(func=run_eval)


class _Actions:
    """Side effects per detection: ``--exec`` (a child process, no shell) and ``--chime``."""

    def __init__(self, exec_cmd: str | None, chime: bool) -> None:
        self.argv: list[str] | None = None
        if exec_cmd:
            try:
                self.argv = shlex.split(exec_cmd)
            except ValueError as e:
                raise ConfigError(f"--exec: cannot parse {exec_cmd!r}: {e}") from e
            if not self.argv or not shutil.which(self.argv[0]):
                raise ConfigError(f"--exec: command {self.argv[0] if self.argv else exec_cmd!r} not found on PATH")
        self.children: list[subprocess.Popen] = []
        self.chime = _Chime() if chime else None

    def __call__(self, event: dict[str, Any]) -> None:
        self.children = [c for c in self.children if c.poll() is None]  # reap finished ones
        if self.argv:
            env = dict(os.environ, EDGESDK_WORD=str(event["word"]), EDGESDK_TIME=str(event["time"]), EDGESDK_SCORE=str(event["score"]))
            try:
                self.children.append(subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL))
            except OSError as e:  # keep listening: one failed action must not stop detection
                log.warning("--exec: cannot run %s: %s", self.argv[0], e)
        if self.chime:
            self.chime()

    def close(self) -> None:
        for c in self.children:
            c.wait()
        if self.chime:
            self.chime.close()


class _Chime:
    """Plays a 150 ms 880 Hz tone without blocking; warns once if there is no audio output."""

    RATE = 16000

    def __init__(self) -> None:
        import numpy as np

        from sdk.lazy import require

        self.sd = require("sounddevice", "--chime")
        t = np.arange(int(0.15 * self.RATE)) / self.RATE
        tone = 0.3 * np.sin(2 * np.pi * 880 * t) * np.minimum(1.0, (0.15 - t) / 0.03)
        # silence around it: output streams may lose their first few ms, and the last part when the process exits
        pad = np.zeros(int(0.1 * self.RATE))
        self.tone = np.concatenate([pad, tone, pad, pad]).astype(np.float32)
        self.failed = False
        self.played = False

    def __call__(self) -> None:
        if self.failed:
            return
        try:
            self.sd.play(self.tone, self.RATE)
            self.played = True
        except (self.sd.PortAudioError, ValueError) as e:
            self.failed = True
            log.warning("--chime: cannot play sound (%s); continuing without it", e)

    def close(self) -> None:
        if self.played:
            self.sd.wait()  # let the last chime finish before the process exits


def _source(args: argparse.Namespace, rate: int):
    from sdk.sources.audio import MicrophoneSource, WavFileSource

    if args.input:
        return WavFileSource(args.input, sample_rate=rate, chunk=args.chunk)
    return MicrophoneSource(device=args.mic or None, sample_rate=rate, chunk=args.chunk, duration=args.duration)


def run(args: argparse.Namespace, out: Output) -> int:
    from apps.trigger_word.app import TriggerWordDetector, default_model
    from sdk.web.serve import serve_options, start_web, stop_web

    serve = serve_options(args)
    model = args.model or default_model()
    det = TriggerWordDetector(model, args.threshold, args.smoothing, args.refractory, runner_kwargs=runner_kwargs(args))
    web = start_web(serve, out, "trigger-word", det.runner, args.input or f"mic {args.mic or 'default'}", frame_hook=True)
    if web is not None:
        _publish_scores(det, web)
    actions = _Actions(args.exec_cmd, args.chime)
    limit = None if args.duration is None else args.duration
    n_events, audio_s = 0, 0.0
    start = time.perf_counter()
    source = _source(args, det.sample_rate)  # opening checks the file/device before anything is printed
    log.info("listening for %r (threshold %.2f) from %s", det.word, det.threshold, args.input or f"mic {args.mic or 'default'}")
    try:
        with source:
            for chunk in source:
                samples = chunk.samples
                if limit is not None:
                    samples = samples[: max(0, int(round((limit - chunk.time) * det.sample_rate)))]
                for event in det.process(samples):
                    n_events += 1
                    out.emit(event, f"{event['time']:8.2f} s  {event['word']}  (score {event['score']:.2f})")
                    actions(event)
                audio_s = chunk.time + samples.shape[0] / det.sample_rate
                if limit is not None and audio_s >= limit:
                    break
    finally:
        actions.close()
        stop_web(web, serve)
    wall = time.perf_counter() - start
    speed = f", {audio_s / wall:.0f}x real time" if args.input and wall > 0 else ""
    log.info("%d detection(s) in %.1f s of audio%s", n_events, audio_s, speed)
    return 0


def _publish_scores(det: Any, web: Any) -> None:
    """Send every raw score (one per hop) to the web view's timeline and stats.

    The detector's threshold logic sees each ``(time, score)`` once, so wrapping its ``update``
    taps the scores without a second model run; publishing is a non-blocking append.
    """
    update, runner, hops = det.logic.update, det.runner, [0]

    def tapped(t: float, score: float) -> float | None:
        fired = update(t, score)
        hops[0] += 1
        web.score(t, score, det.threshold)
        web.metrics({"frame": hops[0], "latency_ms": {"infer": round(runner.stats.last_ms("infer"), 3)}})
        return fired

    det.logic.update = tapped


def run_eval(args: argparse.Namespace, out: Output) -> int:
    from apps.trigger_word.app import default_model
    from apps.trigger_word.eval import evaluate, plot_det, report_text
    from sdk.sources.audio import WavFileSource, wav_files

    for folder, what in ((args.positives, "positives"), (args.negatives, "negatives")):
        for f in wav_files(folder, what):  # every header checked before hours of audio are scored
            WavFileSource(f)
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise ConfigError(f"--plot {args.plot}: folder {Path(args.plot).resolve().parent} does not exist")
    models = [args.model or default_model()] + ([args.compare] if args.compare else [])
    results = []
    for m in models:
        res = evaluate(
            m, args.positives, args.negatives, threshold=args.threshold, max_delay_s=args.max_delay, runner_kwargs=runner_kwargs(args)
        )
        results.append(res)
        out.emit(res, report_text(res))
    written = plot_det(results, args.plot) if args.plot else None
    if written:
        out.emit({"plot": written}, f"plot: {written}")
    return 0
