"""The device install for real: the wheel without ``[host]``, in a fresh venv, run outside the repo.

``pip install .`` on a Pi or Coral gets NumPy, OpenCV, LiteRT and the rest but no TensorFlow,
and the repo's folders are not on ``sys.path`` there. Every command must at least show its
help, ``inspect --edgetpu`` must work (it reads only the flatbuffer) and ``demo`` must run
every app on the shipped models. The tests in ``test_no_tensorflow.py`` block TensorFlow
inside the repo; these catch what only an installed wheel shows (package data left out, a
module importing a host-only package, a command that silently drops out of ``--help``).

Dependencies come from a wheelhouse kept in pytest's cache (``EDGESDK_WHEELHOUSE`` overrides
it) and the wheels pip has built before, with ``--no-index``; only what is missing there is
fetched from the package index once. Without the index the tests skip and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

APPS = ("trigger-word", "detect", "face")
# the commands whose help lists sub-actions (ACTION/APP); each sub-action's help is run too
WITH_ACTIONS = ("face", "models", "config", "deploy", "eval", "train")
# pip's messages when the index cannot be reached (as opposed to a real resolution error)
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution", "Network is unreachable",
                  "Connection refused", "ConnectTimeout", "ReadTimeout", "ProxyError", "Could not fetch URL", "SSLError")


@dataclass(frozen=True)
class DeviceInstall:
    """A fresh venv with the device wheel installed, and where to run it from."""

    venv: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def edgesdk(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "edgesdk"), *args, timeout=timeout)

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "python"), "-c", code)


def _check(res: subprocess.CompletedProcess, what: str) -> None:
    assert res.returncode == 0, f"{what}: exit {res.returncode}\n{res.stderr[-3000:]}"


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the project (setuptools would write build/ into the shared tree)."""
    src = dest / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for p in ROOT.iterdir():
        if p.is_dir() and (p / "__init__.py").exists() and p.name != "tests":
            shutil.copytree(p, src / p.name, ignore=ignore)
        elif p.is_file() and (p.name in ("pyproject.toml", "README.md") or p.name.startswith("LICENSE")):
            shutil.copy2(p, src / p.name)
    # no build isolation: setuptools comes from this environment, so the build needs no index
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600)
    _check(res, "pip wheel")
    return next((dest / "dist").glob("edgesdk-*.whl"))


def requirements(wheel: Path) -> list[str]:
    """The wheel's own runtime requirements (``Requires-Dist`` without an extra)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in reqs if "extra ==" not in r]


def _wheelhouse(config: pytest.Config) -> Path:
    env = os.environ.get("EDGESDK_WHEELHOUSE")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return Path(config.cache.mkdir("edgesdk-device-wheels"))


def _pip_built_wheel_dirs(pip: list[str]) -> list[str]:
    """Folders of the wheels pip built and cached before (downloaded wheels are not kept as files)."""
    res = subprocess.run([*pip, "cache", "list", "--format=abspath"], capture_output=True, text=True, timeout=60)
    return sorted({str(Path(line).parent) for line in res.stdout.splitlines() if line.endswith(".whl")}) if res.returncode == 0 else []


def install(venv: Path, wheel: Path, wheelhouse: Path) -> None:
    """Install ``wheel`` and its dependencies into ``venv``: offline first, the index only for what is missing."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    links = [str(wheelhouse), *_pip_built_wheel_dirs(pip)]
    offline = [*pip, "install", "-q", "--no-index", *(a for d in links for a in ("--find-links", d)), str(wheel)]
    if subprocess.run(offline, capture_output=True, text=True, timeout=600).returncode == 0:
        return
    # not -q: pip's retry warnings are how an unreachable index is told from a bad requirement
    dl = subprocess.run([*pip, "download", "--retries", "1", "--timeout", "20", "--dest", str(wheelhouse), *requirements(wheel)],
                        capture_output=True, text=True, timeout=900)
    if dl.returncode != 0:
        seen = [m for m in NETWORK_ERRORS if m in dl.stderr]
        if seen:
            pytest.skip(f"the device install needs its dependencies' wheels: not in {wheelhouse} and the package index is unreachable "
                        f"(pip: {seen[0]}; {dl.stderr.strip().splitlines()[-1]})")
        _check(dl, "pip download")
    _check(subprocess.run(offline, capture_output=True, text=True, timeout=600), "pip install (from the downloaded wheels)")


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> DeviceInstall:
    work = tmp_path_factory.mktemp("device-install")
    wheel = build_wheel(work)
    venv = work / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300), "python -m venv")
    install(venv, wheel, _wheelhouse(request.config))
    cwd, home = work / "outside", work / "home"
    cwd.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    # a fresh HOME keeps face databases and pulled models of the demo out of the user's
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), XDG_DATA_HOME=str(home / "data"),
               PYTHONNOUSERSITE="1", COLUMNS="200")
    return DeviceInstall(venv, cwd, env)


def test_runs_from_the_installed_wheel_without_tensorflow(device):
    res = device.python("import cli, sdk, apps; print(cli.__file__); print(apps.__file__)")
    _check(res, "import cli")
    assert all(Path(p).is_relative_to(device.venv) for p in res.stdout.split()), f"imported from outside the venv: {res.stdout}"
    res = device.python("import tensorflow")
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr, "tensorflow is importable in the device venv"


def _actions(help_text: str) -> list[str]:
    """Sub-actions listed under ``positional arguments`` (argparse indents subparser entries by 4)."""
    section = help_text.split("positional arguments:", 1)[1].split("\n\n", 1)[0] if "positional arguments:" in help_text else ""
    return re.findall(r"^ {4}([a-z][\w-]*)(?:\s|$)", section, flags=re.M)


def test_every_command_and_action_shows_its_help(device):
    from cli import COMMANDS

    top = device.edgesdk("--help")
    _check(top, "edgesdk --help")
    assert "Traceback" not in top.stderr and "unavailable" not in top.stderr, top.stderr
    commands = _actions(top.stdout)
    # the CLI drops a command whose module is not installed, so a gap shows only here
    assert set(COMMANDS) <= set(commands), f"commands missing from the device install's --help: {sorted(set(COMMANDS) - set(commands))}"
    failed = []
    for cmd in commands:
        res = device.edgesdk(cmd, "--help")
        runs = [((cmd,), res)]
        actions = _actions(res.stdout) if res.returncode == 0 else []
        if cmd in WITH_ACTIONS and res.returncode == 0 and not actions:
            failed.append(f"edgesdk {cmd} --help lists no sub-actions")
        runs += [((cmd, a), device.edgesdk(cmd, a, "--help")) for a in actions]
        failed += [f"edgesdk {' '.join(argv)} --help: exit {r.returncode}\n{r.stderr[-2000:]}" for argv, r in runs
                   if r.returncode != 0 or "Traceback" in r.stderr]
    assert not failed, "\n".join(failed)


def test_inspect_edgetpu_reads_the_flatbuffer_only(device):
    from sdk.backends._probe import PROBE_MODEL

    (device.cwd / "probe.tflite").write_bytes(PROBE_MODEL)
    res = device.edgesdk("inspect", "--edgetpu", "probe.tflite")
    _check(res, "edgesdk inspect --edgetpu")
    assert "Traceback" not in res.stderr
    assert "ops: RELU" in res.stdout and "Edge TPU: not ready: 0 ops on the TPU, 1 on the CPU" in res.stdout


def test_demo_runs_every_app(device):
    res = device.edgesdk("demo", timeout=600)
    _check(res, "edgesdk demo")
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    # "[app]" starts each app's part; "[app] not yet available ..." stays on the header line
    sections = dict(re.findall(r"^\[([\w-]+)\](.*?)(?=^\[|\Z)", res.stdout, flags=re.M | re.S))
    for app in APPS:
        assert app in sections, f"demo printed no [{app}] part:\n{res.stdout}"
        text = sections[app]
        assert text.strip() and "missing" not in text and "not yet available" not in text, f"[{app}] did not run:\n{text}"
    assert "detections" in sections["trigger-word"] and "detections" in sections["detect"] and "enroll" in sections["face"]
