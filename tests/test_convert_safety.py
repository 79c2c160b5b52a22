"""No code from model files by default; clear lines for LFS pointers, damaged files and unknown layers;
the work folder and the converter child never outlive an interrupted ``convert``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cli import main
from converters import workdir

ROOT = Path(__file__).resolve().parents[1]
BARE_EXCEPTION = re.compile(r"\b(?:[A-Z][a-z]+)+(?:Error|Exception)\b|\bEOFError\b")


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    line = [ln for ln in err if ln.startswith("edgesdk: error:")]
    assert line, err
    assert not BARE_EXCEPTION.search(line[-1].replace("ModelFormatError", "")), line[-1]
    return line[-1]


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """A .keras whose Lambda writes a file when the model is built (what loading with code allowed does)."""
    keras = pytest.importorskip("keras")
    work = tmp_path_factory.mktemp("safety")
    marker = work / "pwned.txt"
    target = str(marker)  # a closure of plain strings, so the lambda can be saved
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: (open(target, "w").close(), x * 2.0)[1], name="doubler")(inp)  # noqa: SIM115
    keras.Model(inp, out).save(work / "lambda.keras")
    marker.unlink()
    return work / "lambda.keras", marker


@pytest.mark.tensorflow
def test_lambda_refused_without_the_flag_and_nothing_runs(lambda_model, capsys, tmp_path):
    path, marker = lambda_model
    assert main(["convert", str(path), "--mode", "fp32", "-o", str(tmp_path / "m.tflite")]) == 2
    err = _err(capsys)
    assert "Lambda layer 'doubler' holds Python code" in err and "--custom-objects FILE.py" in err and "--trust-model-code" in err
    assert not marker.exists() and not (tmp_path / "m.tflite").exists()


@pytest.mark.tensorflow
def test_lambda_runs_with_trust(lambda_model, capsys, tmp_path):
    path, marker = lambda_model
    assert main(["convert", str(path), "--mode", "fp32", "-o", str(tmp_path / "m.tflite"), "--trust-model-code"]) == 0
    assert (tmp_path / "m.tflite").exists() and marker.exists()  # trusted: the file's code ran
    marker.unlink()


@pytest.mark.tensorflow
def test_lambda_replaced_by_a_registered_function(lambda_model, capsys, tmp_path):
    from sdk.runner import Runner

    path, marker = lambda_model
    objs = tmp_path / "objs.py"
    objs.write_text("def double(x):\n    return x * 2.0\n\nCUSTOM_OBJECTS = {'doubler': double}\n")
    assert main(["convert", str(path), "--mode", "fp32", "-o", str(tmp_path / "m.tflite"), "--custom-objects", str(objs)]) == 0
    assert not marker.exists()
    out = Runner(tmp_path / "m.tflite").run(np.ones((1, 4), np.float32))[0]
    np.testing.assert_allclose(out, 2.0)


def _keras_with_config(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for item in z.infolist():
            data = z.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            out.writestr(item, data)
    return dst


@pytest.mark.tensorflow
def test_bytecode_from_another_python_names_the_layer(lambda_model, capsys, tmp_path):
    def corrupt(cfg):
        layer = next(ly for ly in cfg["config"]["layers"] if ly["class_name"] == "Lambda")
        layer["config"]["function"]["config"]["code"] = "4wAAAAAAAAAAAAAAAAEAAAAD"  # a code object cut short

    bad = _keras_with_config(lambda_model[0], tmp_path / "other_python.keras", corrupt)
    assert main(["convert", str(bad), "--mode", "fp32", "--trust-model-code", "-o", str(tmp_path / "m.tflite")]) == 2
    err = _err(capsys)
    assert "Lambda layer 'doubler': its Python code was saved by another Python version" in err and "--custom-objects" in err


@pytest.mark.tensorflow
def test_unknown_layer_class_names_class_and_fix(lambda_model, capsys, tmp_path):
    def rename(cfg):
        layer = next(ly for ly in cfg["config"]["layers"] if ly["class_name"] == "Lambda")
        layer.update(class_name="Scaler", module="my_layers", registered_name="Custom>Scaler")

    bad = _keras_with_config(lambda_model[0], tmp_path / "custom.keras", rename)
    assert main(["convert", str(bad), "--mode", "fp32", "-o", str(tmp_path / "m.tflite")]) == 2
    err = _err(capsys)
    assert "layer 'doubler' has class 'Scaler', which is not a Keras layer" in err and "--custom-objects FILE.py" in err


def test_git_lfs_pointer_says_git_lfs_pull(tmp_path, capsys):
    p = tmp_path / "tr_model.h5"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 1234567\n")
    assert main(["convert", str(p), "--mode", "fp32"]) == 2
    err = _err(capsys)
    assert "Git LFS pointer" in err and "git lfs pull" in err and "tr_model.h5" in err


def test_truncated_keras_and_h5(tmp_path, capsys):
    keras_file = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_file, "w") as z:
        z.writestr("config.json", "{}" * 2000)
        z.writestr("model.weights.h5", os.urandom(20000))
    keras_file.write_bytes(keras_file.read_bytes()[:5000])
    assert main(["convert", str(keras_file), "--mode", "fp32"]) == 2
    assert "m.keras: truncated or damaged .keras archive" in _err(capsys)
    h5py = pytest.importorskip("h5py")
    h5 = tmp_path / "m.h5"
    with h5py.File(h5, "w") as f:
        f.attrs["model_config"] = "{}"
        f.create_dataset("w", data=np.zeros(50000, np.float32))
    h5.write_bytes(h5.read_bytes()[:3000])
    assert main(["convert", str(h5), "--mode", "fp32"]) == 2
    assert "m.h5: truncated or damaged .h5 file" in _err(capsys)


# --- interrupted conversions ------------------------------------------------------------------

@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    keras = pytest.importorskip("keras")
    path = tmp_path_factory.mktemp("interrupt") / "dense.keras"
    inp = keras.Input((8,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save(path)
    return path


def _start(dense: Path, tmp: Path) -> tuple[subprocess.Popen, Path]:
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "EDGESDK_TEST_CHILD_SLEEP": "120", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "convert", str(dense), "--mode", "fp32", "-o", str(tmp.parent / "out.tflite")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline:
        pids = list(tmp.glob("edgesdk-convert-*/child.pid"))
        if pids and pids[0].read_text():
            return proc, pids[0]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the converter child did not start")


def _gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its (dead) parent counts as gone
                if fh.read().split(")")[-1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.tensorflow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_terminated_convert_removes_its_folder_and_child(dense, tmp_path, sig):
    proc, pid_file = _start(dense, tmp_path / "tmp")
    child = int(pid_file.read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=20) != 0
    assert _gone(child)
    assert not list((tmp_path / "tmp").glob("edgesdk-convert-*")) and not (tmp_path / "out.tflite").exists()


@pytest.mark.tensorflow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_killed_convert_takes_its_child_along_and_the_next_run_cleans_up(dense, tmp_path, monkeypatch):
    proc, pid_file = _start(dense, tmp_path / "tmp")
    child = int(pid_file.read_text())
    proc.kill()
    proc.wait(timeout=10)
    assert _gone(child), "the converter child outlived its killed parent"
    left = list((tmp_path / "tmp").glob("edgesdk-convert-*"))
    assert len(left) == 1  # SIGKILL cannot clean up...
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    assert workdir.remove_stale() == left and not left[0].exists()  # ...the next run does
