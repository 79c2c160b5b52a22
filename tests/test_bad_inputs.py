"""Bad inputs, every command: one line ``edgesdk: error: ...`` on stderr, exit code 2, nothing written.

The README's promise, checked table-driven (:data:`CASES`, one row per bad input). A case
passes when:

- the exit code is 2 (or the case's documented code);
- stderr has no ``Traceback`` and no ``Exception ignored`` and, after dropping the native
  noise lines of :data:`NOISE`, is exactly one line starting with ``edgesdk: error:``;
- the case folder is unchanged afterwards: same names, modes, sizes, mtimes and SHA-256 of
  every file (``__pycache__`` excepted), so no output, ``*.part`` or temporary file remains
  and inputs (a foreign SQLite file) are byte-for-byte intact.

How a case runs: argparse is tried first, in this process (``cli.parse(build_parser(), argv)``,
exactly what ``cli.main`` does first: a usage error there is its whole run). Anything the
parser accepts runs as ``python -m cli ARGV`` in a subprocess, in a fresh folder that is
also ``$HOME`` and ``$XDG_*_HOME`` (a default database or models folder lands inside it and
is seen), with stdin closed and a timeout, so a hang (a FIFO opened for reading blocks until
a writer comes) or a native crash fails the case, not the session. Those subprocesses start
on a few threads as soon as the module's fixture has laid out every case folder, so the
waits (timeouts, TensorFlow's start) overlap; each test then checks its own outcome.

Read-only folders: the tests run as root, who ignores permission bits, so those cases run
the command under ``setpriv --bounding-set -dac_override,-dac_read_search``, which makes root
honour them (checked once; the cases skip, saying why, where it does not work).

A case that shows a bug is marked ``xfail(strict=True)`` with the bug in its reason: the
suite stays green, the bug stays visible, and the mark must go when the bug is fixed.
Nothing here trains: ``train`` cases are argument errors, with output folders inside the
case folder, tiny sizes and a CPU-time limit, so a missing check cannot start a real run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import wave
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# stderr lines that are native-library noise, not the SDK's: LiteRT's XNNPACK banner and
# absl's pre-init notice. Exact prefixes only, so an SDK line can never hide behind them.
NOISE = (
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)
SETPRIV = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
GiB = 1 << 30
FIFO_S = 10.0  # a command reads a FIFO's path at once or never: 10 s tells a hang from a slow start


# ---------------------------------------------------------------------------------------
# fixture files


@dataclasses.dataclass(frozen=True)
class K:
    """A fixture file made at run time (see :func:`_make`)."""

    kind: str
    cut: int | None = None  # "probe": keep only the first ``cut`` bytes


@dataclasses.dataclass(frozen=True)
class Chmod:
    """``spec`` with file mode ``mode``."""

    spec: Any
    mode: int


DIR, FIFO, RODIR, LOCKED = K("dir"), K("fifo"), K("rodir"), K("locked")
PROBE, JPG, WAV, FACE, NOTDELEGATE = K("probe"), K("jpg"), K("wav"), K("face"), K("notdelegate")
FACE_DB = Chmod(K("face_db"), 0o600)  # an edgesdk face database with one identity, astronaut
FOREIGN_DB, BUNDLE, KERAS_ZIP, H5_BAD_CONFIG = K("foreign_db"), K("bundle"), K("keras_zip"), K("h5_bad_config")

BIN = b"\x00\x01\x02binary\xff\xfe\x00" * 8
GARBAGE = bytes(range(256)) * 4
TEXT = "this is a text file, not a model\n"
HEX = "a" * 64
# billion laughs: 9 levels of 9 aliases, a few hundred bytes that expand to 387 million leaves
ALIAS_BOMB = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["app: detect", "source: '0'", "options: {conf: *i}", ""]
)


# ---------------------------------------------------------------------------------------
# case table


@dataclasses.dataclass(frozen=True)
class Case:
    cmd: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, Any], ...] = ()
    rc: int = 2
    expect: str = "error"  # "error": one `edgesdk: error:` line; "warning": one warning line and a result on stdout
    timeout: float = 60.0
    setpriv: bool = False
    rlimit_as: int | None = None
    rlimit_cpu: int | None = None
    says: tuple[str, ...] = ()  # words the error line must hold (the file or option it is about)


def C(cmd: str, label: str, argv: list[str], files: dict[str, Any] | None = None, *, bug: str | None = None, **kw: Any) -> Any:
    """One row: ``cmd`` (for the summary), a label unique within it, argv, fixture files; ``bug`` marks a known bug."""
    kw["says"] = tuple(kw.get("says", ()))
    case = Case(cmd, tuple(argv), tuple((files or {}).items()), **kw)
    marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
    return pytest.param(case, id=f"{cmd.replace(' ', '-')}:{label}", marks=marks)


def nums(cmd: str, prefix: list[str], flag: str, values: list[str], files: dict[str, Any] | None = None,
         bugs: dict[str, str] | None = None, **kw: Any) -> list[Any]:
    """One row per bad ``flag`` value (``bugs``: value -> known bug)."""
    return [C(cmd, f"{flag.lstrip('-')}={v or 'empty'}", [*prefix, flag, v], files, bug=(bugs or {}).get(v), **kw) for v in values]


def cfg(app: str = "detect", source: str = "img.jpg", **extra: str) -> str:
    """A small app config (the keys `edgesdk config init` writes), with ``extra`` lines."""
    return f"app: {app}\nsource: '{source}'\n" + "".join(f"{k}: {v}\n" for k, v in extra.items())


def registry(**entry: str | None) -> str:
    """A one-model registry; ``None`` drops a key."""
    base: dict[str, str | None] = {"url": "https://example.invalid/m.tflite", "sha256": HEX, "license": "MIT", "format": "tflite", "filename": "m.tflite"}
    base.update(entry)
    return "models:\n  m:\n" + "".join(f"    {k}: {v}\n" for k, v in base.items() if v is not None)


# the known bugs, by root cause (see the module docstring: xfail until fixed)



IMG = {"img.jpg": JPG}
TW = ["trigger-word", "--input", "a.wav"]
DET = ["detect", "--source", "img.jpg"]
KZ = {"m.keras": KERAS_ZIP}
CV = ["convert", "m.keras", "--mode", "fp32"]
ENROLL = ["face", "enroll", "alice", "face.jpg", "--db", "f.db"]
TRAIN_GUARD = {"rlimit_cpu": 30, "timeout": 45}  # a missing check must not turn into a training run
TWT = ["train", "trigger-word", "--out", "o", "--work", "w", "--minutes", "0.1", "--mixed-voices", "0", "--epochs", "1", "--jobs", "1"]
TDT = ["train", "detect", "--out", "o", "--work", "w", "--train-size", "2", "--val-size", "2", "--test-size", "2", "--epochs", "1", "--imgsz", "32"]
TFT = ["train", "face", "--data", "people", "-o", "o/f.tflite", "--epochs", "1", "--steps", "1"]
PUSH = ["deploy", "push", "b.tar.gz", "pi@device.invalid"]  # .invalid: never resolves, nothing is reached
PC = ["deploy", "pull-config", "b.tar.gz", "--repo", "https://example.invalid/fleet.git", "-o", "out"]
B = {"b.tar.gz": BUNDLE}
DM = {"m.tflite": K("detect_model")}  # a model with a card
PM = {"m.tflite": PROBE}  # a model without one
PRIV_DB = {"priv": Chmod(DIR, 0o700), "priv/f.db": FACE_DB}  # the face database in a private folder, as edgesdk makes it

CASES: list[Any] = [
    # --- the command table itself
    C("edgesdk", "unknown-command", ["frobnicate"]),
    C("edgesdk", "unknown-option", ["--frobnicate"]),
    C("edgesdk", "face-no-action", ["face"]),
    C("edgesdk", "eval-no-app", ["eval"]),
    C("edgesdk", "train-unknown-app", ["train", "cats"]),
    C("edgesdk", "models-no-action", ["models"]),
    C("edgesdk", "deploy-unknown-action", ["deploy", "launch"]),
    C("edgesdk", "config-no-action", ["config"]),
    # --- convert: checks before TensorFlow
    C("convert", "missing", ["convert", "nope.keras", "--mode", "fp32"]),
    C("convert", "folder-not-savedmodel", ["convert", "d", "--mode", "fp32"], {"d": DIR}),
    C("convert", "empty-keras", ["convert", "m.keras", "--mode", "fp32"], {"m.keras": b""}),
    C("convert", "garbage-keras-not-zip", ["convert", "m.keras", "--mode", "fp32"], {"m.keras": GARBAGE}),
    C("convert", "truncated-keras-zip", ["convert", "m.keras", "--mode", "fp32"], {"m.keras": b"PK\x03\x04" + GARBAGE[:100]}),
    C("convert", "truncated-h5", ["convert", "m.h5", "--mode", "fp32"], {"m.h5": b"\x89HDF\r\n\x1a\n" + GARBAGE[:200]}),
    C("convert", "text-as-h5", ["convert", "m.h5", "--mode", "fp32"], {"m.h5": TEXT}),
    C("convert", "tflite-as-input", ["convert", "m.tflite", "--mode", "fp32"], {"m.tflite": PROBE}),
    C("convert", "lfs-pointer", ["convert", "m.keras", "--mode", "fp32"], {"m.keras": "version https://git-lfs.github.com/spec/v1\noid sha256:" + HEX + "\nsize 9\n"}),
    C("convert", "fifo-model", ["convert", "m.h5", "--mode", "fp32"], {"m.h5": FIFO}, timeout=FIFO_S),
    C("convert", "bad-mode", [*CV[:2], "--mode", "int3"], KZ),
    C("convert", "bad-target", [*CV, "--target", "npu"], KZ),
    C("convert", "int8-no-calibration", CV[:2], KZ),
    C("convert", "calibration-missing", [*CV[:2], "-c", "nope.npy"], KZ),
    C("convert", "calibration-empty-folder", [*CV[:2], "-c", "cal"], {**KZ, "cal": DIR}),
    C("convert", "calibration-text", [*CV[:2], "-c", "cal.txt"], {**KZ, "cal.txt": TEXT}),
    C("convert", "eval-missing", [*CV, "--eval", "nope"], KZ),
    C("convert", "io-mismatch", [*CV, "--io", "int8"], KZ),
    C("convert", "edgetpu-fp32", [*CV, "--target", "edgetpu"], KZ),
    C("convert", "float-layers-fp16", [*CV[:2], "--mode", "fp16", "--float-layers", "a"], KZ),
    C("convert", "debug-quant-fp32", [*CV, "--debug-quant"], KZ),
    C("convert", "out-folder-missing", [*CV, "-o", "no/such/m.tflite"], KZ),
    C("convert", "out-is-folder", [*CV, "-o", "d"], {**KZ, "d": DIR}),
    C("convert", "out-read-only", [*CV, "-o", "ro/m.tflite"], {**KZ, "ro": RODIR}, setpriv=True),
    C("convert", "all-out-not-folder", [*CV[:2], "--mode", "all", "-o", "x.tflite"], KZ),
    C("convert", "card-missing", [*CV, "--card", "nope.yaml"], KZ),
    C("convert", "card-binary", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": BIN}),
    C("convert", "card-list", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": "- task\n- detect\n"}),
    C("convert", "card-scalar", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": "detect\n"}),
    C("convert", "card-unknown-key", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": "task: detect\ncolour: red\n"}),
    C("convert", "card-bad-task", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": "task: 42\n"}),
    C("convert", "card-input-list", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": "task: detect\ninput: [1, 2]\n"}),
    C("convert", "card-folder", [*CV, "--card", "d"], {**KZ, "d": DIR}),
    C("convert", "card-fifo", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": FIFO}, timeout=FIFO_S),
    C("convert", "card-alias", [*CV, "--card", "c.yaml"], {**KZ, "c.yaml": ALIAS_BOMB}),
    C("convert", "custom-objects-syntax", [*CV, "--custom-objects", "nocolon"], KZ),
    # these pass every check and load the file: TensorFlow starts (~10 s each), so only three
    C("convert", "tf-keras-bad-config", [*CV, "-o", "out.tflite"], KZ, timeout=120, says=["m.keras"]),
    C("convert", "tf-h5-bad-config", ["convert", "m.h5", "--mode", "fp32", "-o", "out.tflite"], {"m.h5": H5_BAD_CONFIG}, timeout=120, says=["m.h5"]),
    C("convert", "tf-savedmodel-garbage", ["convert", "sm", "--mode", "fp32", "-o", "out.tflite"], {"sm/saved_model.pb": GARBAGE, "sm/variables": DIR}, timeout=120),
    # --- inspect
    C("inspect", "missing", ["inspect", "nope.tflite"]),
    C("inspect", "folder", ["inspect", "d"], {"d": DIR}),
    C("inspect", "empty", ["inspect", "m.tflite"], {"m.tflite": b""}),
    C("inspect", "garbage", ["inspect", "m.tflite"], {"m.tflite": GARBAGE}),
    C("inspect", "text", ["inspect", "m.tflite"], {"m.tflite": TEXT}),
    C("inspect", "truncated", ["inspect", "m.tflite"], {"m.tflite": K("probe", 300)}),
    C("inspect", "header-only", ["inspect", "m.tflite"], {"m.tflite": K("probe", 24)}),
    C("inspect", "keras-file", ["inspect", "m.keras"], KZ),
    C("inspect", "jpeg", ["inspect", "img.jpg"], IMG),
    C("inspect", "fifo", ["inspect", "m.tflite"], {"m.tflite": FIFO}, timeout=FIFO_S),
    C("inspect", "edgetpu-garbage", ["inspect", "--edgetpu", "m.tflite"], {"m.tflite": GARBAGE}),
    C("inspect", "unreadable", ["inspect", "m.tflite"], {"m.tflite": Chmod(PROBE, 0o000)}, setpriv=True),
    # --- bench
    C("bench", "missing", ["bench", "nope.tflite"]),
    C("bench", "folder", ["bench", "d"], {"d": DIR}),
    C("bench", "empty", ["bench", "m.tflite"], {"m.tflite": b""}),
    C("bench", "garbage", ["bench", "m.tflite"], {"m.tflite": GARBAGE}),
    C("bench", "text", ["bench", "m.tflite"], {"m.tflite": TEXT}),
    C("bench", "truncated", ["bench", "m.tflite"], {"m.tflite": K("probe", 300)}),
    C("bench", "fifo", ["bench", "m.tflite"], {"m.tflite": FIFO}, timeout=FIFO_S),
    *nums("bench", ["bench", "m.tflite"], "--threads", ["0", "-1", "x"], {"m.tflite": PROBE}),
    *nums("bench", ["bench", "m.tflite"], "--runs", ["0", "-1"], {"m.tflite": PROBE}),
    *nums("bench", ["bench", "m.tflite"], "--warmup", ["-1"], {"m.tflite": PROBE}),
    C("bench", "delegate-missing-so", ["bench", "m.tflite", "--delegate", "./nope.so", "--require-delegate"], {"m.tflite": PROBE}),
    C("bench", "delegate-unknown", ["bench", "m.tflite", "--delegate", "warpdrive"], {"m.tflite": PROBE}),
    C("bench", "delegate-edgetpu-bad-device", ["bench", "m.tflite", "--delegate", "edgetpu:floppy"], {"m.tflite": PROBE}),
    C("bench", "delegate-cpu-with-device", ["bench", "m.tflite", "--delegate", "cpu:1"], {"m.tflite": PROBE}),
    C("bench", "delegate-option-syntax", ["bench", "m.tflite", "--delegate", "./x.so", "--delegate-option", "noequals"], {"m.tflite": PROBE, "x.so": NOTDELEGATE}),
    C("bench", "backend-unknown", ["bench", "m.tflite", "--backend", "tensorflux"], {"m.tflite": PROBE}),
    C("bench", "compare-missing", ["bench", "m.tflite", "--compare", "nope.tflite", "-n", "2"], {"m.tflite": PROBE}),
    C("bench", "compare-garbage", ["bench", "m.tflite", "--compare", "g.tflite", "-n", "2"], {"m.tflite": PROBE, "g.tflite": GARBAGE}),
    # a .so that is no delegate: falls back to the CPU with ONE warning line, exit 0
    C("bench", "so-not-a-delegate-falls-back", ["bench", "m.tflite", "--delegate", "./x.so", "-n", "3", "--warmup", "1"],
      {"m.tflite": PROBE, "x.so": NOTDELEGATE}, rc=0, expect="warning"),
    C("bench", "so-bare-name-in-cwd-falls-back", ["bench", "m.tflite", "--delegate", "x.so", "-n", "3", "--warmup", "1"],
      {"m.tflite": PROBE, "x.so": NOTDELEGATE}, rc=0, expect="warning"),
    C("bench", "so-not-a-delegate-required", ["bench", "m.tflite", "--delegate", "./x.so", "--require-delegate", "-n", "3"],
      {"m.tflite": PROBE, "x.so": NOTDELEGATE}),
    # --- devices / doctor
    C("devices", "extra-argument", ["devices", "now"], says=["devices"]),
    C("devices", "unknown-option", ["devices", "--profile", "rpi4"], says=["devices"]),
    C("doctor", "profile-unknown", ["doctor", "--profile", "rpi9"]),
    C("doctor", "profile-missing-file", ["doctor", "--profile", "nope.yaml"]),
    C("doctor", "profile-binary", ["doctor", "--profile", "p.yaml"], {"p.yaml": BIN}),
    C("doctor", "profile-list", ["doctor", "--profile", "p.yaml"], {"p.yaml": "- name\n- rpi4\n"}),
    C("doctor", "profile-scalar", ["doctor", "--profile", "p.yaml"], {"p.yaml": "rpi4\n"}),
    C("doctor", "profile-unknown-key", ["doctor", "--profile", "p.yaml"], {"p.yaml": "name: x\nwarp: 9\n"}),
    C("doctor", "profile-folder", ["doctor", "--profile", "d.yaml"], {"d.yaml": DIR}),
    C("doctor", "profile-fifo", ["doctor", "--profile", "p.yaml"], {"p.yaml": FIFO}, timeout=FIFO_S),
    C("doctor", "profile-alias", ["doctor", "--profile", "p.yaml"], {"p.yaml": ALIAS_BOMB}),
    # --- trigger-word
    C("trigger-word", "no-source", ["trigger-word"]),
    C("trigger-word", "input-and-mic", [*TW, "--mic"], {"a.wav": WAV}),
    C("trigger-word", "input-missing", TW),
    C("trigger-word", "input-folder", TW, {"a.wav": DIR}),
    C("trigger-word", "input-empty", TW, {"a.wav": b""}),
    C("trigger-word", "input-text", TW, {"a.wav": TEXT}),
    C("trigger-word", "input-riff-truncated", TW, {"a.wav": b"RIFF\x24\x00\x00\x00WAVEfmt "}),
    C("trigger-word", "input-fifo", TW, {"a.wav": FIFO}, timeout=FIFO_S),
    C("trigger-word", "model-missing", [*TW, "--model", "nope.tflite"], {"a.wav": WAV}),
    C("trigger-word", "model-garbage", [*TW, "--model", "m.tflite"], {"a.wav": WAV, "m.tflite": GARBAGE}),
    C("trigger-word", "model-text", [*TW, "--model", "m.tflite"], {"a.wav": WAV, "m.tflite": TEXT}),
    C("trigger-word", "model-without-card", [*TW, "--model", "m.tflite"], {"a.wav": WAV, "m.tflite": PROBE}),
    *nums("trigger-word", TW, "--threshold", ["nan", "-1", "2", "inf", ""], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--duration", ["-1", "0", "nan"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--smoothing", ["0", "1.5"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--refractory", ["-1"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--chunk", ["0", "-5"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--threads", ["0"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--serve", ["99999", "host:port", "-1"], {"a.wav": WAV}),
    *nums("trigger-word", TW, "--serve-linger", ["-1", "nan"], {"a.wav": WAV}),
    C("trigger-word", "serve-public-without-token", [*TW, "--serve", "0.0.0.0:8080"], {"a.wav": WAV}),
    C("trigger-word", "token-file-missing", [*TW, "--serve", "0", "--token-file", "nope"], {"a.wav": WAV}),
    C("trigger-word", "token-file-others-can-read", [*TW, "--serve", "0", "--token-file", "t"], {"a.wav": WAV, "t": "s3cret\n"}),
    C("trigger-word", "token-file-empty", [*TW, "--serve", "0.0.0.0:0", "--token-file", "t"], {"a.wav": WAV, "t": Chmod(b"", 0o600)}),
    C("trigger-word", "delegate-missing-so", [*TW, "--delegate", "./nope.so", "--require-delegate"], {"a.wav": WAV}),
    # --- detect
    C("detect", "no-source", ["detect"]),
    C("detect", "source-missing", ["detect", "--source", "nope.jpg"]),
    C("detect", "source-empty-folder", ["detect", "--source", "d"], {"d": DIR}),
    C("detect", "source-unreadable-folder", ["detect", "--source", "locked"], {"locked": LOCKED}, setpriv=True),
    C("detect", "source-garbage-jpg", ["detect", "--source", "x.jpg"], {"x.jpg": GARBAGE}),
    C("detect", "source-text-png", ["detect", "--source", "x.png"], {"x.png": TEXT}),
    C("detect", "source-empty-mp4", ["detect", "--source", "x.mp4"], {"x.mp4": b""}),
    C("detect", "source-fifo", ["detect", "--source", "x.jpg"], {"x.jpg": FIFO}, timeout=FIFO_S),
    C("detect", "source-bad-scheme", ["detect", "--source", "gopher://x/y"]),
    C("detect", "source-no-camera", ["detect", "--source", "/dev/video97"]),
    *nums("detect", DET, "--conf", ["1.5", "-0.1", "nan"], IMG),
    *nums("detect", DET, "--iou", ["-0.1", "2", "nan"], IMG),
    *nums("detect", DET, "--max-det", ["0", "-1", "2.5"], IMG),
    *nums("detect", DET, "--fps", ["0", "-1"], IMG),
    *nums("detect", DET, "--max-frames", ["0"], IMG),
    *nums("detect", DET, "--stats-every", ["-1"], IMG),
    *nums("detect", DET, "--size", ["big", "0x0", "640"], IMG),
    *nums("detect", DET, "--threads", ["0"], IMG),
    *nums("detect", DET, "--anchors", ["x", "10,14 23", "-5,3 4,4"], IMG),
    *nums("detect", DET, "--mean", ["abc", "1 2", "nan"], IMG),
    *nums("detect", DET, "--std", ["0", "-1"], IMG),
    *nums("detect", DET, "--channel-order", ["rgbx"], IMG),
    *nums("detect", DET, "--decoder", ["yolov9"], IMG),
    *nums("detect", DET, "--max-streams", ["0"], IMG),
    C("detect", "token-file-missing", [*DET, "--serve", "0", "--token-file", "nope"], IMG),
    C("detect", "labels-missing", [*DET, "--labels", "nope.txt"], IMG),
    C("detect", "labels-folder", [*DET, "--labels", "d"], {**IMG, "d": DIR}),
    C("detect", "labels-empty", [*DET, "--labels", "l.txt"], {**IMG, "l.txt": b""}),
    C("detect", "labels-too-few", [*DET, "--labels", "l.txt"], {**IMG, "l.txt": "cat\n"}),
    C("detect", "labels-fifo", [*DET, "--labels", "l.txt"], {**IMG, "l.txt": FIFO}, timeout=FIFO_S),
    C("detect", "model-missing", [*DET, "--model", "nope.tflite"], IMG),
    C("detect", "model-garbage", [*DET, "--model", "m.tflite"], {**IMG, "m.tflite": GARBAGE}),
    C("detect", "model-truncated", [*DET, "--model", "m.tflite"], {**IMG, "m.tflite": K("probe", 300)}),
    C("detect", "model-not-a-detector", [*DET, "--model", "m.tflite"], {**IMG, "m.tflite": PROBE}),
    C("detect", "save-folder-missing", [*DET, "--save", "no/such/out.mp4"], IMG),
    C("detect", "save-read-only", [*DET, "--save", "ro/out.mp4"], {**IMG, "ro": RODIR}, setpriv=True),
    C("detect", "save-unknown-extension", [*DET, "--save", "out.gif"], IMG),
    # --- face
    C("face enroll", "no-image", ["face", "enroll", "alice", "--db", "f.db"]),
    C("face enroll", "image-missing", ["face", "enroll", "alice", "nope.jpg", "--db", "f.db"]),
    C("face enroll", "image-text", ["face", "enroll", "alice", "x.jpg", "--db", "f.db"], {"x.jpg": TEXT}),
    C("face enroll", "image-folder", ["face", "enroll", "alice", "d", "--db", "f.db"], {"d": DIR}),
    C("face enroll", "image-fifo", ["face", "enroll", "alice", "x.jpg", "--db", "f.db"], {"x.jpg": FIFO}, timeout=FIFO_S),
    C("face enroll", "no-face", ["face", "enroll", "alice", "img.jpg", "--db", "f.db"], IMG),
    C("face enroll", "foreign-sqlite", ["face", "enroll", "alice", "face.jpg", "--db", "other.db"], {"face.jpg": FACE, "other.db": FOREIGN_DB}),
    C("face enroll", "db-text-file", ENROLL, {"face.jpg": FACE, "f.db": TEXT}),
    C("face enroll", "db-is-folder", [*ENROLL[:-1], "d"], {"face.jpg": FACE, "d": DIR}),
    C("face enroll", "db-folder-missing", [*ENROLL[:-1], "no/such/f.db"], {"face.jpg": FACE}),
    C("face enroll", "db-read-only-folder", [*ENROLL[:-1], "ro/f.db"], {"face.jpg": FACE, "ro": RODIR}, setpriv=True),
    C("face enroll", "image-and-source", [*ENROLL, "--source", "0"], {"face.jpg": FACE}),
    C("face enroll", "model-garbage", [*ENROLL, "--model", "m.tflite"], {"face.jpg": FACE, "m.tflite": GARBAGE}),
    C("face enroll", "model-not-embedder", [*ENROLL, "--model", "m.tflite"], {"face.jpg": FACE, "m.tflite": PROBE}),
    *nums("face enroll", ENROLL, "--min-face", ["-1", "nan"], {"face.jpg": FACE}),
    *nums("face enroll", ENROLL, "--min-sharpness", ["-5"], {"face.jpg": FACE}),
    *nums("face enroll", ENROLL, "--threshold", ["nan", "-1", "0"], {"face.jpg": FACE}),
    *nums("face enroll", ["face", "enroll", "alice", "--source", "0", "--db", "f.db"], "--consistent", ["0"]),
    *nums("face enroll", ["face", "enroll", "alice", "--source", "0", "--db", "f.db"], "--count", ["0"]),
    *nums("face enroll", ["face", "enroll", "alice", "--source", "0", "--db", "f.db"], "--frames", ["-1"]),
    C("face enroll", "detector-unknown", [*ENROLL, "--detector", "mtcnn"], {"face.jpg": FACE}),
    C("face verify", "db-missing", ["face", "verify", "alice", "face.jpg", "--db", "nope.db"], {"face.jpg": FACE}),
    C("face verify", "no-image", ["face", "verify", "alice", "--db", "f.db"], {"f.db": FOREIGN_DB}),
    C("face verify", "db-not-sqlite", ["face", "verify", "alice", "face.jpg", "--db", "f.db"], {"face.jpg": FACE, "f.db": TEXT}),
    C("face verify", "foreign-sqlite", ["face", "verify", "alice", "face.jpg", "--db", "f.db"], {"face.jpg": FACE, "f.db": FOREIGN_DB}),
    C("face verify", "default-db-absent", ["face", "verify", "alice", "face.jpg"], {"face.jpg": FACE}),
    C("face verify", "serve-without-source", ["face", "verify", "alice", "face.jpg", "--db", "f.db", "--serve", "8080"], {"face.jpg": FACE, "f.db": FOREIGN_DB}),
    *nums("face verify", ["face", "verify", "alice", "face.jpg", "--db", "f.db"], "--threshold", ["2x"], {"face.jpg": FACE}),
    C("face identify", "db-missing", ["face", "identify", "face.jpg", "--db", "nope.db"], {"face.jpg": FACE}),
    C("face identify", "db-not-sqlite", ["face", "identify", "face.jpg", "--db", "f.db"], {"face.jpg": FACE, "f.db": GARBAGE}),
    # an existing database readable by others is warned about and tightened to 0600 (a second line, and a mode
    # change) by design: the biometric-data rule of the hardening issue, tested in test_embeddings_store.py
    C("face identify", "image-and-source", ["face", "identify", "face.jpg", "--source", "0", "--db", "f.db"], {"face.jpg": FACE, "f.db": FOREIGN_DB}),
    *nums("face identify", ["face", "identify", "--source", "0", "--db", "f.db"], "--consistent", ["0", "-3"]),
    C("face compare", "a-missing", ["face", "compare", "nope.jpg", "face.jpg", "--db", "f.db"], {"face.jpg": FACE}),
    C("face compare", "b-text", ["face", "compare", "face.jpg", "x.jpg", "--db", "f.db"], {"face.jpg": FACE, "x.jpg": TEXT}),
    C("face compare", "no-face", ["face", "compare", "face.jpg", "img.jpg", "--db", "f.db"], {"face.jpg": FACE, **IMG}),
    C("face compare", "one-image", ["face", "compare", "face.jpg"], {"face.jpg": FACE}),
    *nums("face compare", ["face", "compare", "face.jpg", "face.jpg", "--db", "f.db"], "--min-sharpness", ["-5"], {"face.jpg": FACE}),
    C("face calibrate", "db-missing", ["face", "calibrate", "--db", "nope.db"]),
    C("face calibrate", "db-not-sqlite", ["face", "calibrate", "--db", "f.db"], {"f.db": TEXT}),
    *nums("face calibrate", ["face", "calibrate", "--db", "f.db"], "--far", ["2", "nan", "-0.1"]),
    C("face calibrate", "one-identity", ["face", "calibrate", "--db", "priv/f.db"], {**PRIV_DB}),
    C("face calibrate", "pairs-missing", ["face", "calibrate", "--db", "priv/f.db", "--pairs", "nope.csv"], {**PRIV_DB}),
    C("face calibrate", "pairs-binary", ["face", "calibrate", "--db", "priv/f.db", "--pairs", "p.csv"], {**PRIV_DB, "p.csv": BIN}),
    C("face calibrate", "pairs-bad-rows", ["face", "calibrate", "--db", "priv/f.db", "--pairs", "p.csv"], {**PRIV_DB, "p.csv": "a,b\n"}),
    C("face verify", "unknown-name", ["face", "verify", "bob", "face.jpg", "--db", "priv/f.db"], {"face.jpg": FACE, **PRIV_DB}),
    C("face verify", "no-face", ["face", "verify", "astronaut", "img.jpg", "--db", "priv/f.db"], {**IMG, **PRIV_DB}),
    C("face verify", "other-model", ["face", "verify", "astronaut", "face.jpg", "--db", "priv/f.db", "--model", "m.tflite"],
      {"face.jpg": FACE, **PRIV_DB, "m.tflite": PROBE}),
    C("face identify", "no-face", ["face", "identify", "img.jpg", "--db", "priv/f.db"], {**IMG, **PRIV_DB}),
    C("face identify", "image-text", ["face", "identify", "x.jpg", "--db", "priv/f.db"], {"x.jpg": TEXT, **PRIV_DB}),
    C("face enroll", "no-face-real-db", ["face", "enroll", "bob", "img.jpg", "--db", "priv/f.db"], {**IMG, **PRIV_DB}),
    C("face remove", "unknown-name", ["face", "remove", "bob", "--db", "priv/f.db"], {**PRIV_DB}),
    C("face list", "db-not-sqlite", ["face", "list", "--db", "f.db"], {"f.db": TEXT}),
    C("face list", "db-garbage", ["face", "list", "--db", "f.db"], {"f.db": GARBAGE}),
    C("face list", "db-foreign-sqlite", ["face", "list", "--db", "f.db"], {"f.db": FOREIGN_DB}),
    C("face list", "db-missing", ["face", "list", "--db", "nope.db"]),
    C("face list", "default-db-absent", ["face", "list"]),
    C("face list", "db-folder", ["face", "list", "--db", "d"], {"d": DIR}),
    C("face list", "db-fifo", ["face", "list", "--db", "f.db"], {"f.db": FIFO}, timeout=FIFO_S),
    C("face remove", "db-missing", ["face", "remove", "alice", "--db", "nope.db"]),
    C("face remove", "db-not-sqlite", ["face", "remove", "alice", "--db", "f.db"], {"f.db": TEXT}),
    C("face remove", "db-foreign-sqlite", ["face", "remove", "alice", "--db", "f.db"], {"f.db": FOREIGN_DB}),
    C("face remove", "no-name", ["face", "remove", "--db", "f.db"]),
    # --- eval
    C("eval trigger-word", "positives-missing", ["eval", "trigger-word", "--positives", "nope", "--negatives", "neg"], {"neg": DIR}),
    C("eval trigger-word", "positives-is-file", ["eval", "trigger-word", "--positives", "a.wav", "--negatives", "neg"], {"a.wav": WAV, "neg": DIR}),
    C("eval trigger-word", "positives-empty", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg"], {"pos": DIR, "neg/n.wav": WAV}),
    C("eval trigger-word", "negatives-text-wav", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg"], {"pos/p.wav": WAV, "neg/n.wav": TEXT}),
    C("eval trigger-word", "no-negatives", ["eval", "trigger-word", "--positives", "pos"], {"pos/p.wav": WAV}),
    *nums("eval trigger-word", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg"], "--threshold", ["nan", "1.5"], {"pos/p.wav": WAV, "neg/n.wav": WAV}),
    *nums("eval trigger-word", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg"], "--max-delay", ["-1"], {"pos/p.wav": WAV, "neg/n.wav": WAV}),
    C("eval trigger-word", "plot-folder-missing", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg", "--plot", "no/such/det.png"],
      {"pos/p.wav": WAV, "neg/n.wav": WAV}),
    C("eval trigger-word", "model-garbage", ["eval", "trigger-word", "--positives", "pos", "--negatives", "neg", "-m", "m.tflite"],
      {"pos/p.wav": WAV, "neg/n.wav": WAV, "m.tflite": GARBAGE}),
    C("eval detect", "images-missing", ["eval", "detect", "--images", "nope", "--annotations", "a.json"], {"a.json": '{"images": [], "annotations": [], "categories": []}'}),
    C("eval detect", "annotations-missing", ["eval", "detect", "--images", "imgs", "--annotations", "nope.json"], {"imgs/img.jpg": JPG}),
    C("eval detect", "annotations-binary", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], {"imgs/img.jpg": JPG, "a.json": BIN}),
    C("eval detect", "annotations-not-json", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], {"imgs/img.jpg": JPG, "a.json": "{not json"}),
    C("eval detect", "annotations-list", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], {"imgs/img.jpg": JPG, "a.json": "[1, 2]"}),
    C("eval detect", "annotations-missing-keys", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], {"imgs/img.jpg": JPG, "a.json": '{"images": 5}'}),
    C("eval detect", "annotations-folder", ["eval", "detect", "--images", "imgs", "--annotations", "d"], {"imgs/img.jpg": JPG, "d": DIR}),
    *nums("eval detect", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], "--conf", ["2", "nan"], {"imgs/img.jpg": JPG, "a.json": "{}"}),
    *nums("eval detect", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], "--iou", ["nan"], {"imgs/img.jpg": JPG, "a.json": "{}"}),
    *nums("eval detect", ["eval", "detect", "--images", "imgs", "--annotations", "a.json"], "--max-det", ["0"], {"imgs/img.jpg": JPG, "a.json": "{}"}),
    C("eval face", "pairs-missing", ["eval", "face", "--pairs", "nope.csv"]),
    C("eval face", "pairs-binary", ["eval", "face", "--pairs", "p.csv"], {"p.csv": BIN}),
    C("eval face", "pairs-bad-rows", ["eval", "face", "--pairs", "p.csv"], {"p.csv": "a.jpg;b.jpg;maybe\nx\n"}),
    C("eval face", "pairs-folder", ["eval", "face", "--pairs", "d"], {"d": DIR}),
    C("eval face", "pairs-images-missing", ["eval", "face", "--pairs", "p.csv"], {"p.csv": "image_a,image_b,same\nnope.jpg,nope2.jpg,1\n"}),
    *nums("eval face", ["eval", "face", "--pairs", "p.csv"], "--far", ["2", "nan"], {"p.csv": "image_a,image_b,same\n"}),
    C("eval face", "no-pairs", ["eval", "face"]),
    # --- train: argument checks only (tiny sizes, outputs inside the case folder, CPU-time limited)
    *nums("train trigger-word", TWT, "--heads", ["0"], **TRAIN_GUARD),
    *nums("train trigger-word", TWT, "--jobs", ["0"], **TRAIN_GUARD),
    *nums("train trigger-word", TWT, "--mixed-voices", ["-1"], **TRAIN_GUARD),
    *nums("train trigger-word", TWT, "--babble-weights", ["abc", "0,1", "2,2"], **TRAIN_GUARD),
    *nums("train trigger-word", TWT, "--minutes", ["x"], **TRAIN_GUARD),
    *nums("train trigger-word", TWT, "--word", [""], **TRAIN_GUARD),
    C("train trigger-word", "arch-unknown", ["train", "trigger-word", "--arch", "transformer"]),
    *nums("train detect", TDT, "--imgsz", ["17", "16", "0"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--epochs", ["0"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--batch", ["0"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--width", ["-1"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--train-size", ["0"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--data", ["nope.json"], **TRAIN_GUARD),
    *nums("train detect", TDT, "--seed", ["1.5"], **TRAIN_GUARD),
    C("train face", "no-data", ["train", "face"]),
    C("train face", "data-missing", [*TFT[:2], "nope", *TFT[3:]], **TRAIN_GUARD),
    C("train face", "data-is-file", [*TFT[:2], "x.txt", *TFT[3:]], {"x.txt": TEXT}, **TRAIN_GUARD),
    C("train face", "data-two-people", TFT, {"people/a/1.jpg": JPG, "people/b/1.jpg": JPG}, **TRAIN_GUARD),
    *nums("train face", TFT, "--size", ["16"], {"people": DIR}, **TRAIN_GUARD),
    *nums("train face", TFT, "--people", ["1"], {"people": DIR}, **TRAIN_GUARD),
    *nums("train face", TFT, "--per-person", ["1"], {"people": DIR}, **TRAIN_GUARD),
    C("train face", "detector-unknown", [*TFT, "--detector", "mtcnn"], {"people": DIR}),
    # --- models
    C("models list", "registry-missing", ["models", "list", "--registry", "nope.yaml"]),
    C("models list", "registry-folder", ["models", "list", "--registry", "d"], {"d": DIR}),
    C("models list", "registry-binary", ["models", "list", "--registry", "r.yaml"], {"r.yaml": BIN}),
    C("models list", "registry-list", ["models", "list", "--registry", "r.yaml"], {"r.yaml": "- m\n- n\n"}),
    C("models list", "registry-scalar", ["models", "list", "--registry", "r.yaml"], {"r.yaml": "42\n"}),
    C("models list", "registry-models-list", ["models", "list", "--registry", "r.yaml"], {"r.yaml": "models: [a, b]\n"}),
    C("models list", "registry-unknown-top-key", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry() + "extra: 1\n"}),
    C("models list", "registry-entry-scalar", ["models", "list", "--registry", "r.yaml"], {"r.yaml": "models:\n  m: 42\n"}),
    C("models list", "registry-unknown-entry-key", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(colour="red")}),
    C("models list", "registry-missing-url", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(url=None)}),
    C("models list", "registry-bad-sha", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(sha256="xyz")}),
    C("models list", "registry-file-url", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(url="file:///etc/passwd")}),
    C("models list", "registry-bad-format", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(format="onnx")}),
    C("models list", "registry-wrong-type", ["models", "list", "--registry", "r.yaml"], {"r.yaml": registry(card="[1, 2]")}),
    C("models list", "registry-alias", ["models", "list", "--registry", "r.yaml"], {"r.yaml": ALIAS_BOMB}),
    C("models list", "registry-fifo", ["models", "list", "--registry", "r.yaml"], {"r.yaml": FIFO}, timeout=FIFO_S),
    C("models pull", "unknown-name", ["models", "pull", "nosuchmodel", "--dir", "models"]),
    C("models pull", "dir-is-file", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "f"], {"r.yaml": registry(), "f": TEXT}),
    C("models pull", "dir-read-only", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "ro/models"], {"r.yaml": registry(), "ro": RODIR}, setpriv=True),
    C("models pull", "registry-list", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "models"], {"r.yaml": "- m\n"}),
    C("models pull", "registry-binary", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "models"], {"r.yaml": BIN}),
    C("models pull", "filename-dotdot-quiet", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "models", "-q"],
      {"r.yaml": registry(url="http://127.0.0.1:9/m.tflite", filename="../x"), "models": DIR}),
    C("models pull", "filename-dotdot", ["models", "pull", "m", "--registry", "r.yaml", "--dir", "models", "--no-progress"],
      {"r.yaml": registry(url="http://127.0.0.1:9/m.tflite", filename="../x"), "models": DIR}),
    C("models pull", "no-name", ["models", "pull"]),
    # --- config init
    C("config init", "unknown-app", ["config", "init", "cats"]),
    C("config init", "exists-no-force", ["config", "init", "detect", "-o", "detect.yaml"], {"detect.yaml": "app: detect\n"}),
    C("config init", "folder-missing", ["config", "init", "detect", "-o", "no/such/detect.yaml"]),
    C("config init", "output-is-folder", ["config", "init", "detect", "-o", "d"], {"d": DIR}),
    C("config init", "read-only-folder", ["config", "init", "detect", "-o", "ro/detect.yaml"], {"ro": RODIR}, setpriv=True),
    C("config init", "output-fifo", ["config", "init", "detect", "-o", "c.yaml"], {"c.yaml": FIFO}, timeout=FIFO_S),
    # --- run
    C("run", "missing", ["run", "nope.yaml"]),
    C("run", "folder", ["run", "d"], {"d": DIR}),
    C("run", "empty", ["run", "c.yaml"], {"c.yaml": b""}),
    C("run", "binary", ["run", "c.yaml"], {"c.yaml": BIN}),
    C("run", "latin1", ["run", "c.yaml"], {"c.yaml": "app: d\xe9tect\n".encode("latin-1")}),
    C("run", "list", ["run", "c.yaml"], {"c.yaml": "- app\n- detect\n"}),
    C("run", "scalar", ["run", "c.yaml"], {"c.yaml": "detect\n"}),
    C("run", "not-yaml", ["run", "c.yaml"], {"c.yaml": "app: [detect\n"}),
    C("run", "duplicate-key", ["run", "c.yaml"], {"c.yaml": cfg() + "app: detect\n"}),
    C("run", "unknown-key", ["run", "c.yaml"], {"c.yaml": cfg(colour="red"), **IMG}),
    C("run", "unknown-app", ["run", "c.yaml"], {"c.yaml": cfg(app="cats"), **IMG}),
    C("run", "loop-not-bool", ["run", "c.yaml"], {"c.yaml": cfg(loop="sometimes"), **IMG}),
    C("run", "options-list", ["run", "c.yaml"], {"c.yaml": cfg(options="[1, 2]"), **IMG}),
    C("run", "option-unknown", ["run", "c.yaml"], {"c.yaml": cfg(options="{confidence: 0.5}"), **IMG}),
    C("run", "option-out-of-range", ["run", "c.yaml"], {"c.yaml": cfg(options="{conf: 2}"), **IMG}),
    C("run", "option-nan", ["run", "c.yaml"], {"c.yaml": cfg(options="{iou: .nan}"), **IMG}),
    C("run", "option-wrong-type", ["run", "c.yaml"], {"c.yaml": cfg(options="{max-det: many}"), **IMG}),
    C("run", "trigger-duration-negative", ["run", "c.yaml"], {"c.yaml": cfg(app="trigger-word", source="a.wav", options="{duration: -1}"), "a.wav": WAV}),
    C("run", "trigger-threshold-string", ["run", "c.yaml"], {"c.yaml": cfg(app="trigger-word", source="a.wav", options="{threshold: high}"), "a.wav": WAV}),
    C("run", "model-missing", ["run", "c.yaml"], {"c.yaml": cfg(model="nope.tflite"), **IMG}),
    C("run", "source-missing", ["run", "c.yaml"], {"c.yaml": cfg(source="nope.jpg")}),
    C("run", "profile-unknown", ["run", "c.yaml"], {"c.yaml": cfg(profile="rpi9"), **IMG}),
    C("run", "outputs-bad-port", ["run", "c.yaml"], {"c.yaml": cfg(outputs="{metrics_port: 70000}"), **IMG}),
    C("run", "outputs-unknown-key", ["run", "c.yaml"], {"c.yaml": cfg(outputs="{jsonl: true}"), **IMG}),
    C("run", "mqtt-wrong-type", ["run", "c.yaml"], {"c.yaml": cfg(outputs="{mqtt: {port: x}}"), **IMG}),
    C("run", "fifo", ["run", "c.yaml"], {"c.yaml": FIFO}, timeout=FIFO_S),
    C("run", "alias-bomb", ["run", "c.yaml"], {"c.yaml": ALIAS_BOMB, **IMG}, timeout=20, rlimit_as=2 * GiB),
    C("run", "print-argv-bad-option", ["run", "--print-argv", "c.yaml"], {"c.yaml": cfg(options="{conf: 2}"), **IMG}),
    # --- deploy bundle
    C("deploy bundle", "config-missing", ["deploy", "bundle", "nope.yaml"]),
    C("deploy bundle", "config-binary", ["deploy", "bundle", "c.yaml"], {"c.yaml": BIN}),
    C("deploy bundle", "config-list", ["deploy", "bundle", "c.yaml"], {"c.yaml": "- app\n"}),
    C("deploy bundle", "config-unknown-key", ["deploy", "bundle", "c.yaml", "-o", "b.tar.gz"], {"c.yaml": cfg(colour="red", profile="rpi5"), **IMG}),
    C("deploy bundle", "no-profile", ["deploy", "bundle", "c.yaml", "-o", "b.tar.gz"], {"c.yaml": cfg(), **IMG}),
    C("deploy bundle", "profile-unknown", ["deploy", "bundle", "c.yaml", "--profile", "rpi9", "-o", "b.tar.gz"], {"c.yaml": cfg(), **IMG}),
    C("deploy bundle", "out-folder-missing", ["deploy", "bundle", "c.yaml", "-o", "no/such/b.tar.gz"], {"c.yaml": cfg(profile="rpi5"), **IMG}),
    C("deploy bundle", "out-read-only", ["deploy", "bundle", "c.yaml", "-o", "ro/b.tar.gz"], {"c.yaml": cfg(profile="rpi5"), **IMG, "ro": RODIR}, setpriv=True),
    C("deploy bundle", "model-without-card", ["deploy", "bundle", "m.tflite", "--profile", "rpi5", "-o", "b.tar.gz"], {"m.tflite": PROBE}),
    C("deploy bundle", "model-garbage", ["deploy", "bundle", "m.tflite", "--profile", "rpi5", "-o", "b.tar.gz"], {"m.tflite": GARBAGE}),
    C("deploy bundle", "source-with-config", ["deploy", "bundle", "c.yaml", "--source", "0", "-o", "b.tar.gz"], {"c.yaml": cfg(profile="rpi5"), **IMG}),
    C("deploy bundle", "config-model-missing", ["deploy", "bundle", "c.yaml", "-o", "b.tar.gz"], {"c.yaml": cfg(model="nope.tflite", profile="rpi5"), **IMG}),
    C("deploy bundle", "config-fifo", ["deploy", "bundle", "c.yaml", "-o", "b.tar.gz"], {"c.yaml": FIFO}, timeout=FIFO_S),
    # --- deploy push (a real bundle, so the option under test is what is refused)
    C("deploy push", "bundle-missing", ["deploy", "push", "nope.tar.gz", "pi@device.invalid"]),
    C("deploy push", "bundle-garbage", PUSH, {"b.tar.gz": GARBAGE}),
    C("deploy push", "no-hosts", ["deploy", "push", "b.tar.gz"], B),
    C("deploy push", "no-bundle", ["deploy", "push", "pi@device.invalid"]),
    *[C("deploy push", f"host-{label}", ["deploy", "push", "b.tar.gz", *host], B)
      for label, host in [("proxycommand", ["--", "-oProxyCommand=x"]), ("space", ["a b"]), ("newline", ["host\n"]), ("empty", [""]),
                          ("bad-port", ["pi@host:99999"]), ("bad-ipv6", ["pi@[zz::1]:22"]), ("semicolon", ["pi@host;id"])]],
    C("deploy push", "unknown-option", ["deploy", "push", "b.tar.gz", "-l@host"], B, says=["deploy push"]),
    C("deploy push", "hosts-file-missing", ["deploy", "push", "b.tar.gz", "--hosts", "nope.txt"], B),
    C("deploy push", "hosts-file-binary", ["deploy", "push", "b.tar.gz", "--hosts", "h.txt"], {**B, "h.txt": BIN}),
    C("deploy push", "hosts-file-bad-host", ["deploy", "push", "b.tar.gz", "--hosts", "h.txt"], {**B, "h.txt": "# fleet\npi@ok-host\n-oProxyCommand=touch_pwned\n"}),
    C("deploy push", "inventory-missing", ["deploy", "push", "b.tar.gz", "--inventory", "nope.ini"], B),
    C("deploy push", "inventory-binary", ["deploy", "push", "b.tar.gz", "--inventory", "inv.yaml"], {**B, "inv.yaml": BIN}),
    C("deploy push", "inventory-yaml-list", ["deploy", "push", "b.tar.gz", "--inventory", "inv.yaml"], {**B, "inv.yaml": "- a\n- b\n"}),
    C("deploy push", "inventory-bad-host", ["deploy", "push", "b.tar.gz", "--inventory", "inv.ini"], {**B, "inv.ini": "[kitchen]\n-oProxyCommand=touch_x\n"}),
    C("deploy push", "inventory-bad-port", ["deploy", "push", "b.tar.gz", "--inventory", "inv.ini"], {**B, "inv.ini": "[kitchen]\npi1 ansible_port=99999\n"}),
    C("deploy push", "inventory-alias", ["deploy", "push", "b.tar.gz", "--inventory", "inv.yaml"], {**B, "inv.yaml": ALIAS_BOMB}),
    C("deploy push", "inventory-fifo", ["deploy", "push", "b.tar.gz", "--inventory", "inv.yaml"], {**B, "inv.yaml": FIFO}, timeout=FIFO_S),
    C("deploy push", "user-proxycommand", [*PUSH[:3], "device.invalid", "--user=-oProxyCommand=x"], B),
    C("deploy push", "user-space", [*PUSH[:3], "device.invalid", "--user", "a b"], B),
    *nums("deploy push", PUSH, "--port", ["0", "70000", "x"], B),
    *nums("deploy push", PUSH, "--batch", ["0", "x", "150%"], B),
    *nums("deploy push", PUSH, "--max-fail", ["x", "150%"], B),
    *nums("deploy push", PUSH, "--retries", ["-1", "11"], B),
    *nums("deploy push", PUSH, "--forks", ["0", "1001"], B),
    *nums("deploy push", PUSH, "--connect-timeout", ["0", "-1"], B),
    *nums("deploy push", PUSH, "--health-timeout", ["nan", "-1"], B),
    C("deploy push", "identity-missing", [*PUSH, "-i", "nope_key"], B),
    C("deploy push", "audit-log-folder-missing", [*PUSH, "--audit-log", "no/such/audit.jsonl"], B),
    C("deploy push", "audit-log-read-only", [*PUSH, "--audit-log", "ro/audit.jsonl"], {**B, "ro": RODIR}, setpriv=True),
    C("deploy push", "audit-log-folder", [*PUSH, "--audit-log", "d"], {**B, "d": DIR}),
    C("deploy push", "limit-without-inventory", [*PUSH, "--limit", "kitchen"], B),
    # --- deploy status
    C("deploy status", "no-hosts", ["deploy", "status"]),
    *[C("deploy status", f"host-{label}", ["deploy", "status", *host])
      for label, host in [("proxycommand", ["--", "-oProxyCommand=x"]), ("space", ["a b"]), ("newline", ["host\n"]), ("empty", [""])]],
    C("deploy status", "hosts-file-missing", ["deploy", "status", "--hosts", "nope.txt"]),
    C("deploy status", "hosts-file-folder", ["deploy", "status", "--hosts", "d"], {"d": DIR}),
    C("deploy status", "hosts-file-fifo", ["deploy", "status", "--hosts", "h.txt"], {"h.txt": FIFO}, timeout=FIFO_S),
    C("deploy status", "inventory-missing", ["deploy", "status", "--inventory", "nope.ini"]),
    C("deploy status", "user-proxycommand", ["deploy", "status", "device.invalid", "--user=-oProxyCommand=x"]),
    C("deploy status", "user-space", ["deploy", "status", "device.invalid", "--user", "a b"]),
    *nums("deploy status", ["deploy", "status", "pi@device.invalid"], "--port", ["0", "65536"]),
    *nums("deploy status", ["deploy", "status", "pi@device.invalid"], "--jobs", ["0", "-2"]),
    *nums("deploy status", ["deploy", "status", "pi@device.invalid"], "--connect-timeout", ["0"]),
    *nums("deploy status", ["deploy", "status", "pi@device.invalid"], "--retries", ["-1"]),
    # --- deploy pull-config
    C("deploy pull-config", "bundle-missing", ["deploy", "pull-config", "nope.tar.gz", *PC[3:]]),
    C("deploy pull-config", "bundle-garbage", PC, {"b.tar.gz": GARBAGE}),
    C("deploy pull-config", "no-repo", ["deploy", "pull-config", "b.tar.gz", "-o", "out"], B),
    C("deploy pull-config", "no-output", PC[:5], B),
    C("deploy pull-config", "output-not-empty", PC, {**B, "out/x.txt": TEXT}),
    C("deploy pull-config", "output-is-file", PC, {**B, "out": TEXT}),
    C("deploy pull-config", "output-read-only", [*PC[:-1], "ro/out"], {**B, "ro": RODIR}, setpriv=True),
    C("deploy pull-config", "output-folder-missing", [*PC[:-1], "no/such/out"], B),
    *nums("deploy pull-config", PC, "--every", ["0", "-5", "7", "x"], B),
    C("deploy pull-config", "repo-proxycommand", ["deploy", "pull-config", "b.tar.gz", "--repo=-oProxyCommand=x", "-o", "out"], B),
    C("deploy pull-config", "repo-empty", ["deploy", "pull-config", "b.tar.gz", "--repo", "", "-o", "out"], B),
    C("deploy pull-config", "bundle-url-file", [*PC, "--bundle-url", "file:///etc/passwd"], B),
    C("deploy pull-config", "branch-dash", [*PC, "--branch=-x"], B),
    C("deploy pull-config", "branch-space", [*PC, "--branch", "a b"], B),
    *nums("deploy pull-config", PC, "--health-timeout", ["0", "nan"], B),
    C("deploy pull-config", "ansible-pull-empty", [*PC, "--ansible-pull", ""], B),
    # --- card
    C("card show", "missing", ["card", "show", "nope.tflite"]),
    C("card show", "folder", ["card", "show", "d"], {"d": DIR}),
    C("card show", "garbage", ["card", "show", "m.tflite"], {"m.tflite": GARBAGE}),
    C("card show", "truncated", ["card", "show", "m.tflite"], {"m.tflite": K("detect_model", 4096)}),
    C("card show", "fifo", ["card", "show", "m.tflite"], {"m.tflite": FIFO}, timeout=FIFO_S),
    C("card show", "no-model", ["card", "show"]),
    C("card set", "no-equals", ["card", "set", "m.tflite", "task"], DM),
    C("card set", "no-pairs", ["card", "set", "m.tflite"], DM),
    C("card set", "unknown-key", ["card", "set", "m.tflite", "colour=red"], DM),
    C("card set", "unknown-section-key", ["card", "set", "m.tflite", "input.colour=red"], DM),
    C("card set", "bad-task", ["card", "set", "m.tflite", "task=bogus"], PM),
    C("card set", "garbage-model", ["card", "set", "m.tflite", "task=detect"], {"m.tflite": GARBAGE}),
    C("card set", "decoder-unknown", ["card", "set", "m.tflite", "output.decoder=yolov99"], DM),
    C("card set", "channel-order", ["card", "set", "m.tflite", "input.channel_order=xyz"], DM),
    C("card set", "size-negative", ["card", "set", "m.tflite", "input.size=[-1, 5]"], DM, says=["input.size"]),
    C("card set", "value-alias", ["card", "set", "m.tflite", "output.labels=&a [*a]"], DM),
    C("card set", "value-control-chars", ["card", "set", "m.tflite", "notes=\x1b[31m\x07"], DM),
    *[C("card set", f"std-{v}", ["card", "set", "m.tflite", f"input.std={v}"], DM) for v in ("abc", "nan", "0")],
    C("card set", "out-folder-missing", ["card", "set", "m.tflite", "task=detect", "-o", "no/such/o.tflite"], PM),
    C("card set", "out-read-only", ["card", "set", "m.tflite", "task=detect", "-o", "ro/o.tflite"], {**PM, "ro": RODIR}, setpriv=True),
    C("card set", "in-place-read-only", ["card", "set", "ro/m.tflite", "task=detect"], {"ro": RODIR, "ro/m.tflite": PROBE}, setpriv=True),
    C("card unset", "unknown-key", ["card", "unset", "m.tflite", "colour"], DM),
    C("card unset", "garbage-model", ["card", "unset", "m.tflite", "task"], {"m.tflite": GARBAGE}),
    C("card unset", "no-key", ["card", "unset", "m.tflite"], DM),
    C("card unset", "required-task", ["card", "unset", "m.tflite", "task"], DM),
    C("card unset", "no-card", ["card", "unset", "m.tflite", "task"], PM),
    C("card unset", "absent-key", ["card", "unset", "m.tflite", "input.std"], PM),
]


# ---------------------------------------------------------------------------------------
# fixtures: assets made once, one folder per case


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_assets(tmp_path_factory.mktemp("bad_inputs_assets"))


def build_assets(d: Path) -> Path:
    """The valid inputs cases copy: probe model, JPEG, WAV, face photo, foreign SQLite, bundle, models that fail late."""
    import cv2
    import h5py

    from sdk.backends._probe import PROBE_MODEL

    (d / "probe.tflite").write_bytes(PROBE_MODEL)
    cv2.imwrite(str(d / "img.jpg"), np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    with wave.open(str(d / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * 3000).astype("<i2").tobytes())
    shutil.copy(ROOT / "apps" / "face" / "samples" / "astronaut.jpg", d / "face.jpg")
    con = sqlite3.connect(d / "foreign.db")
    with con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
        con.executemany("INSERT INTO invoices (customer, total) VALUES (?, ?)", [("acme", 12.5), ("globex", 99.0)])
    con.close()
    # a .keras zip and an .h5 that pass every check without TensorFlow, then fail to load
    with zipfile.ZipFile(d / "keras_zip.keras", "w") as z:
        z.writestr("config.json", "{this is not json")
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        z.writestr("model.weights.h5", GARBAGE)
    with h5py.File(d / "h5_bad_config.h5", "w") as f:
        f.attrs["model_config"] = "{this is not json"
        f.create_group("model_weights")
    if shutil.which("gcc"):
        (d / "notdelegate.c").write_text("int edgesdk_not_a_delegate(void) { return 42; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "notdelegate.so"), str(d / "notdelegate.c")], check=True, capture_output=True)
    (d / "keras_home").mkdir()
    shutil.copy(ROOT / "apps" / "detect" / "models" / "detect_int8.tflite", d / "detect_model.tflite")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(d / "keras_home")}
    subprocess.run([sys.executable, "-m", "cli", "face", "enroll", "astronaut", "face.jpg", "--db", "face.db", "-q"], cwd=d, env=env,
                   capture_output=True, timeout=120)  # no face.db afterwards: its cases skip
    b = d / "bundle_build"
    b.mkdir()
    (b / "c.yaml").write_text(cfg(source="0", profile="rpi5"))
    r = subprocess.run([sys.executable, "-m", "cli", "deploy", "bundle", "c.yaml", "-o", str(d / "bundle.tar.gz")], cwd=b,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    if r.returncode != 0:
        (d / "bundle.tar.gz").unlink(missing_ok=True)
    return d


ASSET_FILES = {"probe": "probe.tflite", "face_db": "face.db", "detect_model": "detect_model.tflite", "jpg": "img.jpg", "wav": "a.wav", "face": "face.jpg", "notdelegate": "notdelegate.so", "foreign_db": "foreign.db",
               "bundle": "bundle.tar.gz", "keras_zip": "keras_zip.keras", "h5_bad_config": "h5_bad_config.h5"}


@functools.cache
def setpriv_works() -> str | None:
    """None when setpriv makes root honour a read-only folder, else why not."""
    if not shutil.which("setpriv"):
        return "setpriv is not installed (util-linux)"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ro = Path(tmp) / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        r = subprocess.run([*SETPRIV, "touch", str(ro / "x")], capture_output=True)
        if r.returncode == 0:
            return "setpriv --bounding-set did not make a read-only folder read-only for root"
        if b"Permission denied" not in r.stderr:
            return f"setpriv failed: {r.stderr.decode(errors='replace').strip()[:200]}"
    return None


def _make(root: Path, rel: str, spec: Any, assets: Path) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, Chmod):
        _make(root, rel, spec.spec, assets)
        p.chmod(spec.mode)
    elif isinstance(spec, bytes):
        p.write_bytes(spec)
    elif isinstance(spec, str):
        p.write_text(spec)
    elif spec.kind == "dir":
        p.mkdir()
    elif spec.kind == "rodir":
        p.mkdir()
        p.chmod(0o555)
    elif spec.kind == "locked":  # an image folder nobody may list or enter
        p.mkdir()
        shutil.copy(assets / "img.jpg", p / "img.jpg")
        p.chmod(0o000)
    elif spec.kind == "fifo":
        os.mkfifo(p)
    else:
        src = assets / ASSET_FILES[spec.kind]
        if not src.exists():
            pytest.skip(f"{src.name} could not be built on this machine (gcc, or `edgesdk deploy bundle`, failed)")
        p.write_bytes(src.read_bytes()[: spec.cut])


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (``__pycache__`` excepted): type, mode, size, mtime and SHA-256 of files."""
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                snap[rel] = ("link", os.readlink(p))
            elif p.is_fifo():
                snap[rel] = ("fifo", st.st_mode & 0o7777)
            elif p.is_dir():
                snap[rel] = ("dir", st.st_mode & 0o7777)
            else:
                snap[rel] = ("file", st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()[:16])
    return snap


# ---------------------------------------------------------------------------------------
# running a case


@functools.cache
def _parser() -> Any:
    from cli import build_parser

    return build_parser()


def parse_stage(argv: tuple[str, ...]) -> tuple[int, str] | None:
    """``(exit code, stderr)`` when argparse refuses ``argv`` (all ``cli.main`` does then), else None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            from cli import parse

            parse(_parser(), list(argv))
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 2), err.getvalue()
    return None


def _limits(rlimit_as: int | None, rlimit_cpu: int | None) -> Any:
    if rlimit_as is None and rlimit_cpu is None:
        return None

    def apply() -> None:
        if rlimit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
        if rlimit_cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (rlimit_cpu, rlimit_cpu))

    return apply


def run_case(case: Case, cwd: Path, keras_home: Path) -> tuple[int | None, str, str, float]:
    """Run ``case`` in ``cwd``; returns (exit code, None on a timeout; stdout; stderr; seconds)."""
    home = cwd / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGESDK_", "PYTHON"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"), KERAS_HOME=str(keras_home),
               MPLCONFIGDIR=str(keras_home / "mpl"), NO_PROXY="*", no_proxy="*")
    cmd = [sys.executable, "-m", "cli", *case.argv]
    if case.setpriv:
        cmd = [*SETPRIV, *cmd]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=_limits(case.rlimit_as, case.rlimit_cpu))
    try:
        out, err = proc.communicate(timeout=case.timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    with contextlib.suppress(ProcessLookupError):  # children left behind (ssh, workers) must not outlive the case
        os.killpg(proc.pid, signal.SIGKILL)
    return rc, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - t0


def problems(case: Case, rc: int | None, out: str, err: str, before: dict, after: dict) -> list[str]:
    """What breaks the promise, one entry per broken rule (empty: a clean case)."""
    found = []
    lines = [line for line in err.splitlines() if not line.startswith(NOISE)]
    if rc is None:
        found.append(f"no exit within {case.timeout:g} s (killed)")
    elif rc != case.rc:
        found.append(f"exit code {rc}, expected {case.rc}" + (" (killed by a signal)" if rc < 0 else ""))
    if "Traceback" in err:
        found.append("a Traceback on stderr")
    if "Exception ignored" in err:
        found.append("'Exception ignored' on stderr")
    if len(lines) != 1:
        found.append(f"{len(lines)} stderr lines, expected 1")
    elif case.expect == "error" and not lines[0].startswith("edgesdk: error:"):
        found.append("the stderr line does not start with 'edgesdk: error:'")
    elif case.expect == "warning" and "warning" not in lines[0].lower():
        found.append("the stderr line is not a warning")
    elif missing := [w for w in case.says if w not in lines[0]]:
        found.append(f"the error does not name {missing}")
    if case.expect == "warning" and not out.strip():
        found.append("no result on stdout")
    if before != after:
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
        found.append(f"files changed: added {added}, removed {removed}, modified {changed}")
    return found


@dataclasses.dataclass
class Outcome:
    rc: int | None
    out: str
    err: str
    seconds: float
    via: str
    found: list[str]


def execute(case: Case, root: Path, assets: Path, parsed: tuple[int, str] | None = None) -> Outcome:
    """Run ``case`` in ``root`` between two snapshots (``parsed``: argparse already refused it in process)."""
    before = snapshot(root)
    if parsed is not None:
        (rc, err), out, seconds, via = parsed, "", 0.0, "argparse, in process"
    else:
        rc, out, err, seconds = run_case(case, root, assets / "keras_home")
        via = "subprocess"
    return Outcome(rc, out, err, seconds, via, problems(case, rc, out, err, before, snapshot(root)))


WORKERS = 3  # subprocess cases run ahead on a few threads: waits (timeouts, TensorFlow start) overlap


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Any:
    """Each selected case's :class:`Outcome` (a future), or why it is skipped.

    Fixture files and argparse run here, in order, in this thread (argparse's stderr is
    redirected, which is process-wide); subprocess cases go to a small pool at once, so by
    the time a test asks for its outcome it has usually run.
    """
    from concurrent.futures import ThreadPoolExecutor

    selected = {item.callspec.id for item in request.session.items if item.originalname == "test_bad_input" and hasattr(item, "callspec")}
    base = tmp_path_factory.mktemp("bad_input_cases")
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="bad-input")
    found: dict[str, Any] = {}
    for n, param in enumerate(CASES):
        if param.id not in selected:
            continue
        case: Case = param.values[0]
        if case.setpriv and (why := setpriv_works()):
            found[param.id] = why
            continue
        root = base / f"{n:03d}"
        (root / "home").mkdir(parents=True)
        try:
            for rel, spec in case.files:
                _make(root, rel, spec, assets)
        except pytest.skip.Exception as e:
            found[param.id] = str(e)
            continue
        parsed = None if (case.setpriv or case.rlimit_as or case.rlimit_cpu) else parse_stage(case.argv)
        found[param.id] = execute(case, root, assets, parsed) if parsed is not None else pool.submit(execute, case, root, assets)
    yield found
    pool.shutdown(wait=True, cancel_futures=True)


RESULTS: list[tuple[str, bool, bool]] = []  # (command, clean, marked as a known bug)


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Any:
    """At the end of the module: cases, clean errors, xfailed (bugs found), per command."""
    t0 = time.monotonic()
    yield
    if not RESULTS:
        return
    lines = [f"bad inputs: {len(RESULTS)} cases, {sum(c for _, c, _ in RESULTS)} clean errors, "
             f"{sum(b and not c for _, c, b in RESULTS)} xfailed (bugs found), "
             f"{sum(not b and not c for _, c, b in RESULTS)} unexpected failures, "
             f"{sum(b and c for _, c, b in RESULTS)} fixed bugs (drop their xfail), {time.monotonic() - t0:.0f} s"]
    per: dict[str, Counter] = {}
    for cmd, clean, bug in RESULTS:
        per.setdefault(cmd, Counter()).update(cases=1, clean=int(clean), bugs=int(bug and not clean))
    lines += [f"  {cmd:<20} {c['cases']:3d} cases {c['clean']:3d} clean {c['bugs']:3d} xfailed" for cmd, c in per.items()]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, outcomes: dict[str, Any], request: pytest.FixtureRequest) -> None:
    got = outcomes[request.node.callspec.id]
    if isinstance(got, str):
        pytest.skip(got)
    o: Outcome = got if isinstance(got, Outcome) else got.result()
    RESULTS.append((case.cmd, not o.found, request.node.get_closest_marker("xfail") is not None))
    assert not o.found, (
        f"edgesdk {' '.join(map(repr, case.argv))}: " + "; ".join(o.found)
        + f"\n--- exit {o.rc} after {o.seconds:.1f} s ({o.via})\n--- stderr:\n{o.err[-3000:]}\n--- stdout:\n{o.out[-1000:]}"
    )


def test_table_covers_every_command() -> None:
    """Every command and sub-command `edgesdk --help` lists has cases, and there are at least 150."""
    import argparse

    def walk(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += walk(sub, f"{prefix} {name}".strip()) or [f"{prefix} {name}".strip()]
        return found

    commands = set(walk(_parser(), "")) - {"demo"}  # demo takes no input to get wrong
    covered = {p.values[0].cmd for p in CASES}
    assert commands <= covered, f"commands without bad-input cases: {sorted(commands - covered)}"
    assert len(CASES) >= 150
