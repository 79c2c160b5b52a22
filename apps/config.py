"""App configs: one YAML file per app run (``edgesdk run CONFIG.yaml``).

A config names the app, its model and source, a device profile, the app command's own
options (by their long-flag names) and the outputs (JSON lines, MQTT, ``/metrics``). Its
options are validated against the app's own schema, which is the app's own command parser
(``apps/<app>/cli.py``'s ``register``, built alone, not the whole CLI): one definition of
each option serves flags and configs, so the two behave the same by construction. The
config is then translated into that command's argv (``to_argv``); ``cli.config`` runs it.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from apps.registry import CONFIG_APPS
from sdk.config import from_dict
from sdk.console import common_parent
from sdk.errors import ConfigError
from sdk.yamlio import clip

log = logging.getLogger("edgesdk.run")

AppName = Literal["detect", "trigger-word", "face-verify", "face-identify"]  # the keys of CONFIG_APPS (a test checks)


# Set through top-level fields (or outputs), never through `options`.
RESERVED = {"model": "model", "input": "source", "mic": "source", "source": "source", "json": "outputs.json", "help": "-"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class MqttOutput:
    """MQTT publishing: events on ``<prefix>/<device>/<app>/events``, stats on ``.../stats``."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "edgesdk"
    device: str = ""  # default: the host name
    username: str = ""
    password_env: str = ""  # name of an environment variable holding the password (never the password itself)
    qos: int = 0
    stats_interval_s: float = 30.0
    queue_size: int = 1000
    tls: bool = False  # TLS to the broker (usually port 8883), certificate checked against ca_file or the system CAs
    ca_file: str = ""  # PEM file of the CA that signed the broker's certificate (needs tls: true)


@dataclass(frozen=True)
class Outputs:
    json: bool = True
    mqtt: MqttOutput | None = None
    metrics_port: int = 0  # 0: no HTTP server
    metrics_host: str = "127.0.0.1"


@dataclass(frozen=True)
class AppConfig:
    app: AppName
    model: str | None = None
    source: str | None = None
    name: str | None = None  # face-verify: the enrolled person
    profile: str | None = None
    loop: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    outputs: Outputs = field(default_factory=Outputs)


def load_config(path: str | Path) -> AppConfig:
    """Load and validate ``path`` (schema, app options against the app's parser, profile).

    Raises:
        ConfigError: Naming the file and the dotted path of the problem.
    """
    p = Path(path)
    try:
        data = _read_yaml(p)
        cfg = from_dict(AppConfig, data)
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e
    return cfg


def _read_yaml(p: Path) -> Any:
    from sdk.yamlio import load_file

    data = load_file(p, "config", where="") or {}  # bounded, no aliases, binary refused; load_config adds the path
    if isinstance(data, dict) and data.get("options", {}) is None:  # every option commented out
        data["options"] = {}
    return data


def validate(cfg: AppConfig) -> None:
    """Checks the schema cannot express: options, profile, source, ports."""
    if cfg.app == "face-verify" and not cfg.name:
        raise ConfigError("name: face-verify needs the enrolled person's name")
    if cfg.app != "face-verify" and cfg.name:
        raise ConfigError(f"name: only face-verify takes a name, not {cfg.app}")
    if cfg.profile:
        from devices.profile import load_profile

        load_profile(cfg.profile)
    for port_field, port in (("outputs.metrics_port", cfg.outputs.metrics_port), ("outputs.mqtt.port", cfg.outputs.mqtt.port if cfg.outputs.mqtt else 1)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{port_field}: expected a TCP port 0-65535, got {port}")
    option_actions(cfg.app)  # the app is installed
    for key, value in cfg.options.items():
        if value is not None:
            _option_argv(cfg.app, str(key), value)


def app_parser(app: str) -> argparse.ArgumentParser:
    """The parser of ``app``'s command, built from the app's own ``cli.register`` alone."""
    owner, spec = CONFIG_APPS[app]
    module = owner.module("cli")
    if module is None:
        raise ConfigError(f"app: {app!r} is not installed here (no apps/{owner.package}/cli.py)")
    parser = argparse.ArgumentParser(prog="edgesdk")
    module.register(parser.add_subparsers(dest="command"), common_parent())
    for name in spec.command:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or name not in sub.choices:
            raise ConfigError(f"app: {app!r} is not installed here (no `edgesdk {' '.join(spec.command)}` command)")
        parser = sub.choices[name]
    return parser


@functools.lru_cache(maxsize=8)
def option_actions(app: str) -> dict[str, argparse.Action]:
    """Long-flag name (``conf``, ``delegate-option``) to its argparse action, for ``app``."""
    actions = {}
    for action in app_parser(app)._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                actions[opt[2:]] = action
    return actions


def _option_argv(app: str, key: str, value: Any) -> list[str]:
    """The argv for one ``options`` entry, after checking name, type and choices."""
    name = key.replace("_", "-")
    where = f"options.{key}"
    if name in RESERVED:
        raise ConfigError(f"{where}: set this with the top-level {RESERVED[name]!r} field, not in options")
    actions = option_actions(app)
    if name not in actions:
        close = difflib.get_close_matches(name, [a for a in actions if a not in RESERVED], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else f" {app} options: {', '.join(sorted(a for a in actions if a not in RESERVED))}"
        raise ConfigError(f"Invalid field {where!r} (not an option of `edgesdk {' '.join(CONFIG_APPS[app][1].command)}`).{hint}")
    action = actions[name]
    flag = f"--{name}"
    if action.nargs == 0:  # store_true / store_false / count
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {clip(value)}")
        return [flag] if value else []
    values = value if isinstance(value, list) and isinstance(action, argparse._AppendAction) else [value]
    argv: list[str] = []
    for v in values:
        if isinstance(v, (dict, list)) or v is None:
            raise ConfigError(f"{where}: expected a single value, got {clip(v)}")
        text = str(v).lower() if isinstance(v, bool) else str(v)
        if callable(action.type):
            try:
                action.type(text)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise ConfigError(f"{where}: expected {getattr(action.type, '__name__', 'a valid value')}, got {clip(v)}") from e
        if action.choices is not None and text not in action.choices:
            raise ConfigError(f"{where}: expected one of {list(action.choices)}, got {clip(v)}")
        argv += [flag, text]
    return argv


def _resolve(value: str, base: Path, must_exist: bool) -> str:
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    q = base / p
    return str(q) if (must_exist or q.exists()) else value


def to_argv(cfg: AppConfig, base: str | Path = ".") -> list[str]:
    """The ``edgesdk`` argv equivalent to ``cfg``; relative paths resolve against ``base``.

    Raises:
        ConfigError: Missing model file or source.
    """
    spec, base = CONFIG_APPS[cfg.app][1], Path(base)
    argv = [*spec.command]
    if cfg.outputs.json:
        argv.append("--json")
    if cfg.model:
        model = _resolve(cfg.model, base, must_exist=True)
        if not Path(model).is_file():
            raise ConfigError(f"model: {model} not found; convert one with `edgesdk convert` or fix the path (relative paths start at the config's folder)")
        argv += ["--model", model]
    argv += _source_argv(cfg, base)
    names = {str(k).replace("_", "-") for k, v in cfg.options.items() if v is not None}
    for key, value in cfg.options.items():
        if value is None:  # written by `config init` for "the app's default"
            continue
        if key.replace("_", "-") in spec.path_options and isinstance(value, str):
            value = _resolve(value, base, must_exist=False)
        argv += _option_argv(cfg.app, str(key), value)
    argv += _profile_argv(cfg, names)
    if cfg.app == "face-verify":
        argv.append(str(cfg.name))
    argv += _image_argv(cfg, base)
    return argv


def _source_argv(cfg: AppConfig, base: Path) -> list[str]:
    src = cfg.source
    if cfg.app == "trigger-word":
        if not src:
            raise ConfigError("source: trigger-word needs a .wav path, 'mic' or 'mic:DEVICE'")
        if src == "mic" or src.startswith("mic:"):
            return ["--mic", src[4:]] if src[4:] else ["--mic"]
        return ["--input", _resolve(src, base, must_exist=True)]
    if cfg.app == "detect":
        if not src:
            raise ConfigError("source: detect needs a camera index, /dev/videoN, a video or image file, a folder or a URL")
        return ["--source", _resolve(src, base, must_exist=False)]
    if src and Path(src).suffix.lower() not in IMAGE_SUFFIXES:
        return ["--source", _resolve(src, base, must_exist=False)]
    return []


def _image_argv(cfg: AppConfig, base: Path) -> list[str]:
    """Face apps take a still image as a positional argument, after the name."""
    if cfg.app.startswith("face-"):
        if not cfg.source:
            raise ConfigError(f"source: {cfg.app} needs an image file or a camera (index, /dev/videoN, video, URL)")
        if Path(cfg.source).suffix.lower() in IMAGE_SUFFIXES:
            return [_resolve(cfg.source, base, must_exist=True)]
    return []


def _profile_argv(cfg: AppConfig, given: set[str]) -> list[str]:
    """Threads and delegate from the profile, unless the options set them."""
    if not cfg.profile:
        return []
    from devices.profile import load_profile

    prof = load_profile(cfg.profile)
    actions = option_actions(cfg.app)
    argv = []
    if "threads" in actions and "threads" not in given and prof.threads > 0:
        argv += ["--threads", str(prof.threads)]
    if "delegate" in actions and "delegate" not in given and prof.delegate != "cpu":
        argv += ["--delegate", prof.delegate]
    return argv
