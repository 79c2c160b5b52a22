"""Delegates through the real ``load_delegate`` path, with a stub delegate compiled by gcc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdk.backends._probe import PROBE_MODEL
from sdk.delegates import parse_delegate
from sdk.errors import BackendUnavailableError, ConfigError
from sdk.runner import Runner
from tests.conftest import DATA, ROOT


@pytest.fixture(scope="session")
def stub_so(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the stub delegate")
    out = tmp_path_factory.mktemp("stub") / "libstub_delegate.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(DATA / "stub_delegate.c")], check=True)
    return out


@pytest.fixture
def record(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "record.txt"
    monkeypatch.setenv("STUB_DELEGATE_RECORD", str(path))
    return path


def test_external_delegate_is_loaded_and_prepared(stub_so, record):
    r = Runner(PROBE_MODEL, delegate=str(stub_so), delegate_options={"answer": "42"})
    assert r.delegate == "external" and r.fallback_reason is None
    out = r.run(np.array([-2.0, ], np.float32))[0]
    assert out.tolist() == [0.0]
    lines = record.read_text().splitlines()
    assert "option answer=42" in lines and "create" in lines and "prepare" in lines


def test_failing_delegate_falls_back_with_reason(stub_so, record, caplog):
    r = Runner(PROBE_MODEL, delegate=str(stub_so), delegate_options={"fail": "1"})
    assert r.delegate == "cpu"
    assert "stub asked to fail" in r.fallback_reason
    assert r.run(np.array([3.0], np.float32))[0].tolist() == [3.0]
    assert any("running on CPU" in m for m in caplog.messages)
    with pytest.raises(BackendUnavailableError, match="required"):
        Runner(PROBE_MODEL, delegate=str(stub_so), delegate_options={"fail": "1"}, require_delegate=True)


def test_missing_delegate_path(tmp_path):
    r = Runner(PROBE_MODEL, delegate=str(tmp_path / "nope.so"))
    assert r.delegate == "cpu" and "no such delegate library" in r.fallback_reason


def test_edgetpu_absent_falls_back_with_the_fix():
    r = Runner(PROBE_MODEL, delegate="edgetpu")
    assert r.delegate == "cpu"
    assert "libedgetpu.so.1" in r.fallback_reason and "apt install libedgetpu1-std" in r.fallback_reason


def test_edgetpu_path_runs_for_real_with_a_stub_libedgetpu(stub_so, tmp_path):
    """The stub installed as libedgetpu.so.1 on LD_LIBRARY_PATH: the real Edge TPU code path."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(stub_so, libdir / "libedgetpu.so.1")
    record = tmp_path / "record.txt"
    code = (
        "import json, numpy as np; from sdk.runner import Runner; from sdk.backends._probe import PROBE_MODEL\n"
        "r = Runner(PROBE_MODEL, delegate='edgetpu:usb:0')\n"
        "print(json.dumps({'delegate': r.delegate, 'out': r.run(np.array([5.0], np.float32))[0].tolist()}))"
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir), "STUB_DELEGATE_RECORD": str(record)}
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"delegate": "edgetpu", "out": [5.0]}
    lines = record.read_text().splitlines()
    assert "option device=usb:0" in lines and "prepare" in lines
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "text,kind,device",
    [(None, "cpu", ""), ("xnnpack", "cpu", ""), ("edgetpu", "edgetpu", ""), ("edgetpu:usb:1", "edgetpu", "usb:1"),
     ("edgetpu:pci", "edgetpu", "pci"), ("gpu", "gpu", ""), ("gpu:/x/libgpu.so", "gpu", "/x/libgpu.so"), ("./libfoo.so", "external", "./libfoo.so")],
)
def test_delegate_grammar(text, kind, device):
    spec = parse_delegate(text)
    assert (spec.kind, spec.device) == (kind, device)


@pytest.mark.parametrize("text,msg", [("edgetpu:usbb", "invalid Edge TPU device"), ("edgtpu", "Did you mean 'edgetpu'"), ("cpu:1", "no device")])
def test_bad_delegate_strings(text, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_delegate(text)


def test_gpu_request_falls_back_on_a_machine_without_gpu():
    r = Runner(PROBE_MODEL, delegate="gpu")
    if r.delegate == "gpu":  # a machine with a GPU adapter: then it must compute correctly
        assert r.run(np.array([-1.0], np.float32))[0].tolist() == [0.0]
    else:
        assert r.fallback_reason and r.run(np.array([2.0], np.float32))[0].tolist() == [2.0]
