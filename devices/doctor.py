"""``edgesdk doctor``: each thing the SDK needs, checked, with the fix when it fails.

Statuses: ``pass``; ``fail`` (something the detected profile needs is broken); ``warn``
(works, but worse than it could); ``skip`` (not needed on this machine).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from typing import Any

from devices.discovery import Machine, discover
from devices.profile import load_profile


def _c(check: str, status: str, detail: str, fix: str = "") -> dict[str, Any]:
    return {"check": check, "status": status, "detail": detail, "fix": "" if status == "pass" else fix}


def _python() -> dict[str, Any]:
    ok = sys.version_info >= (3, 10)
    return _c("python", "pass" if ok else "fail", platform.python_version(), "" if ok else "install Python 3.10 or newer")


def _backend(m: Machine) -> list[dict[str, Any]]:
    usable = [k for k, v in m.backends.items() if v[:1].isdigit()]
    checks = [
        _c("interpreter backend", "pass" if usable else "fail", ", ".join(f"{k} {m.backends[k]}" for k in usable) or "none importable", "pip install ai-edge-litert")
    ]
    tfl = m.backends.get("tflite_runtime", "")
    if tfl.startswith("unavailable"):
        checks.append(_c("tflite_runtime", "warn", "installed but unusable (NumPy 2?)", "pip uninstall tflite-runtime (ai-edge-litert replaces it)"))
    return checks


def _module(name: str, purpose: str, fix: str) -> dict[str, Any]:
    if importlib.util.find_spec(name) is None:
        return _c(name, "fail", f"not installed ({purpose})", fix)
    try:
        __import__(name)
    except (ImportError, OSError) as e:
        return _c(name, "fail", f"{type(e).__name__}: {e}"[:120], fix)
    return _c(name, "pass", purpose)


def _audio(m: Machine) -> list[dict[str, Any]]:
    sd = _module("sounddevice", "microphone capture", "sudo apt-get install libportaudio2 && pip install sounddevice")
    if sd["status"] != "pass":
        return [sd]
    if m.audio_inputs:
        return [sd, _c("audio input", "pass", m.audio_inputs[0])]
    return [sd, _c("audio input", "warn", "no input device found (trigger-word --mic needs one)", "plug in a USB microphone, or start PulseAudio")]


def _edgetpu(m: Machine, wants_tpu: bool) -> list[dict[str, Any]]:
    lib_ok = m.delegates.get("edgetpu", "").startswith("loadable")
    if not wants_tpu and not m.edgetpus:
        return [_c("edge tpu", "skip", "no Edge TPU on this machine and the profile needs none")]
    checks = [
        _c("edge tpu device", "pass" if m.edgetpus else "fail", ", ".join(m.edgetpus) or "none found (USB 1a6e:089a/18d1:9302, /dev/apex_*)",
           "" if m.edgetpus else "plug the Coral USB Accelerator into a USB 3 port, or install the PCIe driver (gasket-dkms)"),
        _c("libedgetpu", "pass" if lib_ok else "fail", m.delegates.get("edgetpu", ""),
           "" if lib_ok else "sudo apt-get install libedgetpu1-std (Coral's apt repository: https://coral.ai/software/#debian-packages)"),
    ]
    return checks


def _camera(m: Machine) -> dict[str, Any]:
    if m.cameras:
        return _c("camera", "pass", ", ".join(m.cameras))
    return _c("camera", "warn", "no /dev/video* (detect can still read files and http/rtsp streams)", "connect a camera; for the Pi camera enable it with raspi-config / libcamera")


def _tools(m: Machine) -> list[dict[str, Any]]:
    out = [
        _c("opencv cascades", "pass" if any(os.path.isdir(p) for p in ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")) else "warn",
           "Haar cascades for `face --detector haar`", "sudo apt-get install opencv-data"),
    ]
    if importlib.util.find_spec("tensorflow") is not None:
        out.append(_c("espeak-ng", "pass" if m.tools.get("espeak-ng", "missing") != "missing" else "warn", "speech synthesis for `train trigger-word`", "sudo apt-get install espeak-ng"))
        compiler = m.tools.get("edgetpu_compiler", "missing") != "missing"
        note = "Edge TPU compiler" if compiler else "no edgetpu_compiler (only needed for `convert --target edgetpu`; x86-64 Debian/Ubuntu only)"
        out.append(_c("edgetpu_compiler", "pass" if compiler else "skip", note, "" if compiler else "sudo apt-get install edgetpu-compiler (Coral's apt repository)"))
    else:
        out.append(_c("tensorflow", "skip", "device install: convert/train need `pip install 'edgesdk[host]'` on a host machine"))
    return out


def run_checks(profile_name: str | None = None) -> list[dict[str, Any]]:
    """Every check, in order. ``profile_name`` overrides the detected profile."""
    given = load_profile(profile_name) if profile_name else None  # a bad profile fails before discovery touches anything
    m = discover()
    name = profile_name or m.profile
    profile = given or (load_profile(name) if name else None)
    wants_tpu = bool(profile and any(d.startswith("edgetpu") for d in profile.delegates))
    checks = [
        _python(),
        _c("profile", "pass" if profile else "warn", name or "no profile matches this machine", "" if profile else "pass --profile generic-x86 or add a YAML under devices/profiles/"),
        *_backend(m),
        _module("numpy", "arrays", "pip install numpy"),
        _module("cv2", "images and video", "pip install opencv-python-headless"),
        *_audio(m),
        _camera(m),
        *_edgetpu(m, wants_tpu),
        *_tools(m),
    ]
    return checks
