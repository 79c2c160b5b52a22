"""``edgesdk deploy bundle``: one reproducible ``.tar.gz`` holding everything a device needs.

Layout: ``config.yaml`` (paths rewritten relative to the bundle), ``models/``, ``data/``
(file sources, face database), the edgesdk device-side wheel, ``install.sh``, ``run.sh``,
``edgesdk-<app>.service``, optional ``wheels/`` (``--offline``) and ``manifest.json`` with
the SHA-256 of every other file. Same inputs give a byte-identical archive: sorted entries,
fixed mtime/uid/gid/names/modes, gzip with mtime 0.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.registry import APPS, CONFIG_APPS
from deploy import templates
from sdk.errors import ConfigError, EdgeSDKError

log = logging.getLogger("edgesdk.deploy")

GLIBC = (2, 36)  # Debian 12 / Raspberry Pi OS Bookworm
PYTHON = "3.11"  # their python3
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Target:
    """What the wheels must fit: CPU architecture and the device's Python."""

    arch: str
    python: str

    def platforms(self) -> list[str]:
        """pip ``--platform`` tags, newest glibc first (pip does not expand them itself)."""
        return [f"manylinux_2_{v}_{self.arch}" for v in range(GLIBC[1], 16, -1)] + [f"manylinux2014_{self.arch}"]


def target_for(profile: Any, python: str | None = None) -> Target:
    arch = next((a for a in profile.match.arch if a in ("aarch64", "x86_64", "armv7l")), "aarch64")
    return Target(arch, python or PYTHON)


def bundle_id(manifest_bytes: bytes) -> str:
    """A bundle's id: the start of its manifest's SHA-256 (the manifest covers every file)."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:16]


def make_bundle(config: str | Path, output: str | Path, profile: str | None = None, offline: bool = False,
                python: str | None = None) -> dict[str, Any]:
    """Build a bundle from an app config.

    Args:
        config: The app's YAML config (``edgesdk config init``).
        output: The ``.tar.gz`` to write (atomically).
        profile: Device profile name or YAML; default: the config's ``profile``.
        offline: Add the target's wheels (``pip download --platform``) so the device needs no internet.
        python: The device's Python version for ``--offline`` (default: the profile's OS, 3.11).

    Returns:
        A summary: path, id, size, files, target.

    Raises:
        ConfigError: Bad config, missing model or source, no profile.
    """
    from apps.config import load_config, to_argv
    from devices.profile import load_profile
    from sdk.card import atomic_write

    cfg_path = Path(config)
    cfg = load_config(cfg_path)
    base = cfg_path.resolve().parent
    to_argv(cfg, base)  # every file the config names exists (model, source), before any work
    prof_name = profile or cfg.profile
    if not prof_name:
        raise ConfigError(f"{cfg_path}: no device profile; pass --profile (e.g. rpi5) or set `profile:` in the config")
    prof = load_profile(prof_name)
    target = target_for(prof, python)
    files: dict[str, bytes] = {}
    cfg = _pack_files(cfg, base, prof_name, files)
    files["config.yaml"] = _config_yaml(cfg)
    wheel_name, wheel = _wheel(cfg.app)
    files[wheel_name] = wheel
    devices = _device_classes(cfg.app, prof.delegates)
    names = {"app": cfg.app, "bundle_name": f"{cfg.app}-{prof.name}", "unit": f"edgesdk-{cfg.app}.service", "wheel": wheel_name}
    allow = [line for d in devices for line in templates.DEVICE_RULES[d][0]]
    groups = sorted({g for d in devices for g in templates.DEVICE_RULES[d][1]}) or ["edgesdk"]
    names["groups"] = ",".join(groups)
    files["install.sh"] = templates.INSTALL_SH.format(**names).encode()
    files["run.sh"] = templates.RUN_SH.format(**names).encode()
    files[names["unit"]] = templates.UNIT.format(**names, device_allow="\n".join(allow)).encode()
    if offline:
        files.update(download_wheels(target))
    manifest = _manifest(cfg, prof.name, target, offline, files)
    files[MANIFEST] = manifest
    data = pack_tar(files)
    out = Path(output)
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: folder {out.parent} does not exist")
    atomic_write(out, data, mode=0o644)
    return {"bundle": str(out), "id": bundle_id(manifest), "app": cfg.app, "profile": prof.name, "arch": target.arch,
            "python": target.python, "offline": offline, "files": len(files), "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def config_for_model(model: str | Path, folder: str | Path, source: str | None = None, profile: str | None = None) -> Path:
    """Write a default app config for a converted model into ``folder`` (``deploy bundle MODEL.tflite``).

    The app comes from the model card's task; the source defaults to the microphone or camera 0.

    Raises:
        ConfigError: No card, or a task that needs more than a model (face: a database of people).
    """
    import yaml

    from sdk.card import read_card

    card = read_card(model)
    # apps whose config needs nothing but a model (face needs a database of people)
    task_apps = {a.task: a.name for a in APPS.values() if a.name in a.configs}
    if card is None or card.task not in task_apps:
        task = card.task if card else "none (no model card)"
        raise ConfigError(f"{model}: cannot tell the app from the model card (task: {task}); "
                          "write a config with `edgesdk config init APP` and bundle that")
    app = task_apps[card.task]
    cfg = {"app": app, "model": str(Path(model).resolve()), "source": source or ("mic" if app == "trigger-word" else "0"),
           "profile": profile, "outputs": {"json": True, "metrics_port": 9100}}
    path = Path(folder) / f"{app}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=True))
    return path


def _pack_files(cfg: Any, base: Path, profile: str, files: dict[str, bytes]) -> Any:
    """Copy the model, a file source and path options into ``files``; return the rewritten config."""
    def take(value: str, folder: str) -> str:
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base / p
        name = f"{folder}/{p.name}"
        if name in files and files[name] != p.read_bytes():
            raise ConfigError(f"two different files named {p.name} would land in {folder}/; rename one")
        files[name] = p.read_bytes()
        return name

    changes: dict[str, Any] = {"profile": profile}
    if cfg.model:
        changes["model"] = take(cfg.model, "models")
    if cfg.source:
        src = Path(cfg.source).expanduser()
        if (src if src.is_absolute() else base / src).is_file():  # not a camera, URL or "mic"
            changes["source"] = take(cfg.source, "data")
    options = dict(cfg.options)
    for key, value in cfg.options.items():
        if key.replace("_", "-") in CONFIG_APPS[cfg.app][1].path_options and isinstance(value, str) and (base / value).is_file():
            options[key] = take(value, "data")
    if Path(profile).suffix in (".yaml", ".yml"):
        changes["profile"] = take(profile, "data")
    return dataclasses.replace(cfg, options=options, **changes)


def _config_yaml(cfg: Any) -> bytes:
    import yaml

    data = dataclasses.asdict(cfg)
    head = "# Written by `edgesdk deploy bundle`; paths are relative to this bundle.\n"
    return (head + yaml.safe_dump(data, sort_keys=True, default_flow_style=False)).encode()


def _wheel(app: str) -> tuple[str, bytes]:
    from deploy.wheel import build_wheel

    return build_wheel(CONFIG_APPS[app][0].package)


def _device_classes(app: str, delegates: tuple[str, ...]) -> list[str]:
    devices = list(CONFIG_APPS[app][1].devices)
    for d in delegates:
        if d.startswith("edgetpu"):
            devices.append("edgetpu-pci" if ":pci" in d else "edgetpu-usb")
    return devices


def download_wheels(target: Target) -> dict[str, bytes]:
    """The target's wheels of edgesdk's device dependencies (``pip download --only-binary``).

    Raises:
        EdgeSDKError: pip failed (no network, no wheel for the target).
    """
    from deploy.wheel import project_metadata

    _, deps = project_metadata()
    plats = [a for p in target.platforms() for a in ("--platform", p)]
    with tempfile.TemporaryDirectory(prefix="edgesdk-wheels-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
               "--implementation", "cp", "--python-version", target.python, *plats, "-d", tmp, *deps]
        log.info("downloading %s wheels for Python %s (%d packages and their dependencies)...", target.arch, target.python, len(deps))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise EdgeSDKError(f"--offline: pip download for {target.arch}/Python {target.python} failed: {last}; check the network or drop --offline")
        return {f"wheels/{p.name}": p.read_bytes() for p in sorted(Path(tmp).glob("*.whl"))}


def _manifest(cfg: Any, profile: str, target: Target, offline: bool, files: dict[str, bytes]) -> bytes:
    from sdk import __version__

    doc = {
        "format": 1,
        "app": cfg.app,
        "profile": profile,
        "arch": target.arch,
        "python": target.python if offline else ">=3.10",
        "offline": offline,
        "edgesdk_version": __version__,
        "metrics_port": cfg.outputs.metrics_port,
        "metrics_host": cfg.outputs.metrics_host,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in sorted(files.items())},
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def pack_tar(files: dict[str, bytes]) -> bytes:
    """A deterministic ``.tar.gz`` of ``files`` (sorted; fixed mtime, owner, modes; gzip mtime 0)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = 0
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
