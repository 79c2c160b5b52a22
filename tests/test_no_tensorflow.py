"""The device side runs with TensorFlow blocked from import (a meta-path blocker)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith(("tensorflow.", "keras", "tf_keras")):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bench_inspect_devices_without_tensorflow(tmp_path):
    model = tmp_path / "probe.tflite"
    code = f"""
import pkgutil, importlib
from pathlib import Path
from sdk.backends._probe import PROBE_MODEL
Path({str(model)!r}).write_bytes(PROBE_MODEL)
from cli import main
assert main(["bench", {str(model)!r}, "--runs", "5", "--json"]) == 0
assert main(["inspect", {str(model)!r}, "--json"]) == 0
assert main(["devices", "--json"]) == 0
import sdk, devices, apps
for pkg in (sdk, devices, apps):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        # device-side modules only: apps' host-side recipes may need TensorFlow
        if m.name.startswith("apps.") and m.name.rsplit(".", 1)[-1] in ("model", "train", "data"):
            continue
        if m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)
assert not any(k == "tensorflow" or k.startswith("tensorflow.") for k in sys.modules), "tensorflow was imported"
"""
    res = run_blocked(code, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    bench = lines[0]
    assert bench["p50_ms"] > 0 and bench["p99_ms"] >= bench["p50_ms"] and bench["backend"].startswith("ai_edge_litert")
    assert lines[1]["ops"] == {"RELU": 1}
    assert lines[2]["backends"]["tensorflow"] == "not installed" or "installed" in lines[2]["backends"]["tensorflow"]
