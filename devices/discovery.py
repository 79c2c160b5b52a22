"""What this machine has: backends, delegates, Edge TPUs, cameras, audio inputs, CPU, profile."""

from __future__ import annotations

import glob
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devices.profile import Profile, all_profiles

# USB ids of the Coral USB Accelerator: before its firmware is loaded, and after.
EDGETPU_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


@dataclass(frozen=True)
class Machine:
    arch: str
    cpu_model: str
    cores: int
    board: str
    python: str
    backends: dict[str, str]
    delegates: dict[str, str]
    edgetpus: list[str]
    cameras: list[str]
    audio_inputs: list[str]
    tools: dict[str, str] = field(default_factory=dict)
    profile: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().replace(b"\x00", b"").decode(errors="replace").strip()
    except OSError:
        return ""


def board_model() -> str:
    """The device-tree model string (``Raspberry Pi 5 Model B Rev 1.0``), or ``""``."""
    return _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def edgetpus(sys_usb: str = "/sys/bus/usb/devices", dev: str = "/dev") -> list[str]:
    """Edge TPUs present: ``usb:N`` for Coral USB ids, ``pci:N`` for ``/dev/apex_N``."""
    found = []
    usb = sorted(Path(sys_usb).glob("*/idVendor")) if Path(sys_usb).exists() else []
    n = 0
    for vendor_file in usb:
        vid = _read(str(vendor_file))
        pid = _read(str(vendor_file.with_name("idProduct")))
        if (vid, pid) in EDGETPU_USB_IDS:
            found.append(f"usb:{n} ({vid}:{pid})")
            n += 1
    found += [f"pci:{i} ({p})" for i, p in enumerate(sorted(glob.glob(os.path.join(dev, "apex_*"))))]
    return found


def audio_inputs() -> list[str]:
    """Input-capable audio devices as ``index: name (rate Hz)``; ``[]`` without PortAudio."""
    from sdk.errors import EdgeSDKError
    from sdk.sources.audio import input_devices

    try:
        devs = input_devices()
    except (EdgeSDKError, ImportError, OSError):  # no sounddevice, no PortAudio library, or no sound server
        return []
    return [f"{d['index']}: {d['name']} ({int(d['default_rate'])} Hz)" for d in devs]


def delegates() -> dict[str, str]:
    """Delegate libraries that can be loaded here (``loadable`` or why not)."""
    import ctypes

    from sdk.delegates.edgetpu import LIBRARY as EDGETPU_LIB
    from sdk.delegates.gpu import LIBRARIES as GPU_LIBS

    out = {"cpu": "loadable (XNNPACK)"}
    for name, lib in (("edgetpu", EDGETPU_LIB), *(("gpu", g) for g in GPU_LIBS)):
        try:
            ctypes.CDLL(lib)
            out[name] = f"loadable ({lib})"
        except OSError:
            out[name] = f"missing ({lib})"
    return out


def match_profile(model: str, arch: str, tpus: list[str], profiles: list[Profile] | None = None) -> str:
    """The best profile: one needing an Edge TPU that is present beats a plain board match."""
    best, best_score = "", -1
    for p in profiles or all_profiles():
        if p.match.arch and arch not in p.match.arch:
            continue
        if p.match.model and not any(m in model for m in p.match.model):
            continue
        if p.match.edgetpu and not any(t.startswith(p.match.edgetpu) for t in tpus):
            continue
        score = 2 * bool(p.match.model) + 3 * bool(p.match.edgetpu) + bool(p.match.arch)
        if score > best_score:
            best, best_score = p.name, score
    return best


def discover() -> Machine:
    from sdk.backends import available_backends

    arch = platform.machine()
    model = board_model()
    tpus = edgetpus()
    tools = {t: (shutil.which(t) or "missing") for t in ("edgetpu_compiler", "espeak-ng", "pulseaudio", "paplay")}
    return Machine(
        arch=arch,
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 1,
        board=model or "unknown",
        python=platform.python_version(),
        backends=available_backends(),
        delegates=delegates(),
        edgetpus=tpus,
        cameras=sorted(glob.glob("/dev/video*")),
        audio_inputs=audio_inputs(),
        tools=tools,
        profile=match_profile(model, arch, tpus),
    )
