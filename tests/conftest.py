"""Markers, machine capability probes (run once) and small shared fixtures.

Hardware tests skip by capability, never by machine name: ``mic`` needs PulseAudio and
PortAudio, ``camera`` a /dev/video device, ``edgetpu`` a real Edge TPU, ``gpu`` a GPU
adapter. ``slow`` marks tests that take more than ~30 s.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

MARKERS = {
    "mic": "needs PulseAudio + PortAudio (a virtual microphone is set up by the test)",
    "camera": "needs a /dev/video* camera",
    "edgetpu": "needs a real Edge TPU and libedgetpu",
    "gpu": "needs a GPU adapter",
    "slow": "takes more than ~30 s",
    "tensorflow": "needs TensorFlow (host side)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


@functools.cache
def capabilities() -> dict[str, bool]:
    caps = {
        "tensorflow": importlib.util.find_spec("tensorflow") is not None,
        "camera": bool(glob.glob("/dev/video*")),
        "mic": bool(shutil.which("pulseaudio") and shutil.which("pactl") and shutil.which("paplay")),
        "edgetpu": bool(glob.glob("/dev/apex_*")) and _has_lib("libedgetpu.so.1"),
        "gpu": bool(glob.glob("/dev/dri/renderD*")) or bool(glob.glob("/dev/nvidia0")),
        "slow": True,
    }
    if caps["mic"]:
        try:
            import sounddevice  # noqa: F401
        except OSError:  # PortAudio missing
            caps["mic"] = False
    return caps


def _has_lib(name: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    caps = capabilities()
    for item in items:
        for name in MARKERS:
            if item.get_closest_marker(name) and not caps.get(name, False):
                item.add_marker(pytest.mark.skip(reason=f"this machine lacks: {MARKERS[name]}"))


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
