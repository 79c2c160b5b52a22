"""Device profiles: threads, preferred delegates, camera and audio defaults per board.

Profiles live in ``devices/profiles/*.yaml`` and load through :mod:`sdk.yamlio` (bounded,
no aliases, text only) and the strict loader, so an unknown key is rejected with its dotted
path and a suggestion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdk.config import from_dict
from sdk.errors import ConfigError
from sdk.yamlio import cut, load_file

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class CameraDefaults:
    size: tuple[int, ...] = (640, 480)
    fps: int = 30
    device: str = "0"


@dataclass(frozen=True)
class AudioDefaults:
    sample_rate: int = 16000
    channels: int = 1
    device: str = ""
    block_ms: int = 80


@dataclass(frozen=True)
class Match:
    """How discovery recognises the board: substrings of the device-tree model, CPU arch."""

    model: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    edgetpu: str = ""  # "usb" / "pci" when the profile needs that Edge TPU present


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    threads: int  # 0: all cores
    delegates: tuple[str, ...]
    camera: CameraDefaults = field(default_factory=CameraDefaults)
    audio: AudioDefaults = field(default_factory=AudioDefaults)
    match: Match = field(default_factory=Match)

    @property
    def delegate(self) -> str:
        """The most preferred delegate (the runner falls back to the CPU itself)."""
        return self.delegates[0] if self.delegates else "cpu"


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``rpi5``) or any profile YAML by path.

    Raises:
        ConfigError: Unknown name (with the list), or an invalid file.
    """
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PROFILE_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            import difflib

            close = difflib.get_close_matches(str(name_or_path), profile_names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown profile {str(name_or_path)!r}; choose one of {', '.join(profile_names())}.{hint}")
    data = load_file(p, "device profile") or {}  # bounded, no aliases, binary refused, one-line errors
    try:
        profile = from_dict(Profile, data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {cut(str(e), 400)}") from e  # the message may quote a large value from the file
    if profile.threads < 0:
        raise ConfigError(f"{p}: threads must be 0 (all cores) or more, got {profile.threads}")
    from sdk.delegates import parse_delegate

    for d in profile.delegates:
        try:
            parse_delegate(d)
        except ConfigError as e:
            raise ConfigError(f"{p}: delegates: {e}") from e
    return profile


def all_profiles() -> list[Profile]:
    return [load_profile(n) for n in profile_names()]
