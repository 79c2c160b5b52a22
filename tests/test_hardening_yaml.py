"""Hostile YAML through the real command line: alias bombs, binary bytes, odd top levels; one line and exit 2 each."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import main
from tests.conftest import ROOT

MEMORY_LIMIT = 1 << 30  # address space of the child: a bomb that expanded would hit it


def laughs(levels: int) -> str:
    """The classic "billion laughs": ``levels`` lists of nine aliases to the previous one (9**levels leaves)."""
    text = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    return text + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, levels))


# The child's own high-water mark (VmHWM of its address space after exec), written at exit: the
# kernel's ru_maxrss would also count the copy of this large test process that fork() made
CHILD = """import atexit, re, sys
path = sys.argv[1]
def hwm():
    with open('/proc/self/status') as f, open(path, 'w') as out:
        out.write(re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1))
atexit.register(hwm)
sys.argv = ['edgesdk', *sys.argv[2:]]
from cli import main
raise SystemExit(main())
"""


def run_limited(tmp_path: Path, *args: str) -> tuple[int, str, float, int, float]:
    """``edgesdk ARGS`` in a child limited to :data:`MEMORY_LIMIT`: exit code, stderr, CPU seconds, peak RSS (bytes), wall seconds."""
    hwm = tmp_path / "hwm"
    cmd = ["prlimit", f"--as={MEMORY_LIMIT}", sys.executable, "-c", CHILD, str(hwm), *args]
    with open(os.devnull, "wb") as null, subprocess.Popen(cmd, cwd=ROOT, stdout=null, stderr=subprocess.PIPE) as proc:
        t0 = time.perf_counter()
        err = proc.stderr.read()  # small: one line; read before reaping so the pipe never fills
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    # CPU seconds, not wall time: the same on a busy 2-core CI machine (an expanding bomb burns CPU either way)
    return proc.returncode, err.decode(errors="replace"), usage.ru_utime + usage.ru_stime, int(hwm.read_text()) * 1024, seconds


@pytest.mark.parametrize("levels", [9, 10])
def test_alias_bomb_config_is_refused_fast_in_little_memory(tmp_path, levels):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("app: detect\nsource: '0'\noptions:\n  " + laughs(levels).replace("\n", "\n  ").rstrip() + "\n")
    assert bomb.stat().st_size < 800
    code, err, seconds, peak, wall = run_limited(tmp_path, "run", str(bomb))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("edgesdk: error:") and "anchors and aliases" in lines[0] and len(lines[0]) < 400
    assert seconds < 2.0, f"took {seconds:.2f} CPU s"
    assert peak < 300 << 20, f"peak RSS {peak >> 20} MiB"
    print(f"\nalias bomb ({bomb.stat().st_size} bytes, {levels} levels): exit {code} in {seconds:.2f} CPU s ({wall:.2f} s wall), peak RSS {peak / 2**20:.0f} MiB")


def binary(path: Path) -> Path:
    path.write_bytes(b"name: x\n\x00\x01\x02\xff\xfe\x89PNG\r\n")
    return path


def one_line_exit_2(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesdk: error:") and all(n in err[0] for n in needles), err
    return err[0]


def test_binary_config_and_profile(tmp_path, capsys):
    bad = binary(tmp_path / "bad.yaml")
    one_line_exit_2(["run", str(bad)], capsys, "binary data", "not a config")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"app: detect\nsource: '0'\nprofile: {bad}\n")
    one_line_exit_2(["run", str(cfg)], capsys, "binary data", "device profile")
    (tmp_path / "latin1.yaml").write_bytes(b"app: d\xe9tect\n")
    one_line_exit_2(["run", str(tmp_path / "latin1.yaml")], capsys, "not UTF-8 text (byte 0xe9 at offset 6)")
    one_line_exit_2(["doctor", "--profile", str(bad)], capsys, "binary data", "device profile")


def test_binary_registry_and_card(tmp_path, capsys):
    bad = binary(tmp_path / "bad.yaml")
    one_line_exit_2(["models", "list", "--registry", str(bad)], capsys, "binary data", "model registry")
    dat = tmp_path / "net.dat"  # a dlib network passes the model-path check without TensorFlow
    dat.write_bytes(b"x")
    one_line_exit_2(["convert", str(dat), "--mode", "fp32", "--card", str(bad), "-o", str(tmp_path / "o.tflite")], capsys,
                    "binary data", "model card")
    one_line_exit_2(["convert", str(dat), "--mode", "fp32", "--card", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "o.tflite")],
                    capsys, "--card", "cannot read model card")
    assert not (tmp_path / "o.tflite").exists()


def test_bombs_everywhere_else(tmp_path, capsys):
    bomb = laughs(9)
    reg = tmp_path / "reg.yaml"
    reg.write_text("models:\n  x:\n    " + bomb.replace("\n", "\n    ").rstrip() + "\n")
    one_line_exit_2(["models", "list", "--registry", str(reg)], capsys, "anchors and aliases")
    prof = tmp_path / "board.yaml"
    prof.write_text("name: b\ndescription: &d x\nthreads: 2\ndelegates: [cpu]\nmatch: {model: [*d]}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"app: detect\nsource: '0'\nprofile: {prof}\n")
    one_line_exit_2(["run", str(cfg)], capsys, "anchors and aliases")


def test_card_in_a_model_goes_through_the_same_loader():
    from sdk.card import ModelCard
    from sdk.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="m.tflite: model card is not valid YAML .*anchors and aliases"):
        ModelCard.from_yaml(laughs(9).encode(), "m.tflite")
    with pytest.raises(ModelFormatError, match="m.tflite: binary data"):
        ModelCard.from_yaml(b"task: detect\n\x00", "m.tflite")
    card = ModelCard(task="detect", output={"labels": ["a", "b"], "same": ["a", "b"]})
    assert ModelCard.from_yaml(card.to_yaml()) == card


def test_large_values_are_not_quoted_in_full(tmp_path, capsys):
    big = ",".join(str(i) for i in range(100_000))  # ~590 kB: under the size limit, far over what a message may quote
    prof = tmp_path / "board.yaml"
    prof.write_text(f"name: b\ndescription: d\nthreads: [{big}]\ndelegates: [cpu]\n")
    assert len(one_line_exit_2(["doctor", "--profile", str(prof)], capsys, "threads: expected int")) < 600
    reg = tmp_path / "reg.yaml"
    reg.write_text(f"models:\n  x: {{url: 'https://e/x', sha256: [{big}], license: l, format: tflite, filename: f}}\n")
    assert len(one_line_exit_2(["models", "list", "--registry", str(reg)], capsys, "models.x.sha256")) < 600
