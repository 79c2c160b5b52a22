"""``edgesdk deploy pull-config``: pull mode, for devices the controller cannot reach (NAT, mobile).

Writes a folder for the user to commit to a git repository they host. Each device runs
``ansible-pull`` from a systemd timer (or cron): it fetches the repository and applies
``local.yml`` — the same ``edgesdk`` role as ``deploy push``, on ``localhost`` — which takes the
bundle from the repository (``bundles/``) or from a URL, checked against its SHA-256, and lets
the agent install, health-check and roll back. Re-runs change nothing while the device is
healthy on that bundle.

Layout: ``local.yml``, ``roles/edgesdk/`` (with ``files/agent.py``), ``bundles/NAME`` (unless
``bundle_url``), ``device/`` (``edgesdk-pull.sh``, ``.service``, ``.timer``, ``.cron``,
``setup.sh``), ``README.md``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from deploy.fleet import ANSIBLE_DIR
from deploy.push import DeviceSettings, bundle_facts
from sdk.errors import ConfigError

# ansible-pull pastes the URL, branch and folder into a shell command unquoted: only plain characters pass
URL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:/@%+=-]*")
BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
PROGRAM_RE = re.compile(r"[A-Za-z0-9_./~][A-Za-z0-9._/+~-]*")

PULL_SH = """#!/bin/sh
# edgesdk pull mode (written by `edgesdk deploy pull-config`): fetch {repo} ({branch})
# and apply local.yml to this device. Run by edgesdk-pull.timer or cron; safe to run by hand.
set -eu
dir="${{EDGESDK_PULL_DIR:-$HOME/.edgesdk/pull}}"
mkdir -p "$(dirname "$dir")"
# one run at a time (-o: the app started by this run must not hold the lock); --clean drops local edits in the checkout
exec flock -n -o "$dir.lock" {ansible_pull} -U '{repo}' -C '{branch}' -d "$dir" --clean local.yml
"""

SERVICE = """[Unit]
Description=edgesdk pull: fetch {repo} and apply it (ansible-pull)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=%h/.edgesdk/edgesdk-pull.sh
# without a systemd user session the agent starts the app as a plain process: it must outlive this run
KillMode=process
"""

TIMER = """[Unit]
Description=edgesdk pull every {every} min

[Timer]
OnBootSec=2min
OnUnitActiveSec={every}min
# spread a fleet's fetches over time
RandomizedDelaySec={spread}s
Persistent=true

[Install]
WantedBy=timers.target
"""

SETUP_SH = """#!/bin/sh
# Once per device: install the pull timer (systemd user units), or a cron entry without systemd.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
mkdir -p "$HOME/.edgesdk"
install -m 0755 "$here/edgesdk-pull.sh" "$HOME/.edgesdk/edgesdk-pull.sh"
if systemctl --user show-environment >/dev/null 2>&1; then
  mkdir -p "$HOME/.config/systemd/user"
  install -m 0644 "$here/edgesdk-pull.service" "$here/edgesdk-pull.timer" "$HOME/.config/systemd/user/"
  systemctl --user daemon-reload
  systemctl --user enable --now edgesdk-pull.timer
  echo "setup.sh: edgesdk-pull.timer enabled; to run it without a login: sudo loginctl enable-linger $(id -un)"
else
  (crontab -l 2>/dev/null | grep -v edgesdk-pull.sh || true; cat "$here/edgesdk-pull.cron") | crontab -
  echo "setup.sh: cron entry installed (crontab -l)"
fi
"""

README = """# edgesdk pull mode

Written by `edgesdk deploy pull-config`. Commit this folder to {repo} (branch {branch}).

On each device, once (Python 3.10+, git and ansible-core: `sudo apt install git ansible-core`
or `pip install --user ansible-core`):

    git clone -b {branch} {repo} /tmp/edgesdk-pull && sh /tmp/edgesdk-pull/device/setup.sh

Every {every} min the device fetches this repository and applies `local.yml`: bundle
{bundle_id} ({source}). To roll out a new bundle, run `edgesdk deploy pull-config` again and commit.
Logs: `journalctl --user -u edgesdk-pull` (or ~/.edgesdk/pull.log with cron); the app's state:
`~/.edgesdk/last_install.json`.
"""


def check_pull_args(repo: str, branch: str, bundle_url: str | None, every_min: int, ansible_pull: str = "ansible-pull") -> None:
    """Refuse values that ``ansible-pull``'s shell command or the timer could misread.

    Raises:
        ConfigError: The parameter that is wrong, and what it may contain.
    """
    if not URL_RE.fullmatch(repo):
        raise ConfigError(f"repo {repo!r} refused: a git URL of letters, digits and ._~:/@%+=- only (no spaces or quotes)", param="repo")
    if not BRANCH_RE.fullmatch(branch):
        raise ConfigError(f"branch {branch!r} refused: letters, digits and ._/- only, not starting with '-'", param="branch")
    if bundle_url is not None and not (URL_RE.fullmatch(bundle_url) and bundle_url.startswith(("https://", "http://"))):
        raise ConfigError(f"bundle_url {bundle_url!r} refused: an http(s) URL without spaces or quotes", param="bundle_url")
    if every_min < 1 or (every_min < 60 and 60 % every_min) or (every_min >= 60 and every_min % 60):
        raise ConfigError(f"every must divide an hour (1, 5, 15, 30 min) or be whole hours, got {every_min} min", param="every")
    if not PROGRAM_RE.fullmatch(ansible_pull):
        raise ConfigError(f"ansible_pull {ansible_pull!r} refused: a command name or path (letters, digits and ._/+- only)", param="ansible_pull")


def write_pull_config(bundle: str | Path, output: str | Path, repo: str, branch: str = "main", bundle_url: str | None = None,
                      every_min: int = 15, settings: DeviceSettings = DeviceSettings(), ansible_pull: str = "ansible-pull") -> dict[str, Any]:
    """Write the pull-mode folder (see the module docstring).

    Args:
        bundle: The bundle (``edgesdk deploy bundle``); copied into ``bundles/`` unless ``bundle_url``.
        output: The folder to write (new, or empty; in an existing folder). Written whole or not at all.
        repo: The git URL devices fetch (``https://...``, ``ssh://...``, ``file:///...``).
        branch: The branch they follow.
        bundle_url: Where devices download the bundle instead (checked against its SHA-256).
        every_min: Minutes between fetches.
        settings: Device settings written into ``local.yml`` (folder, Python, ...).
        ansible_pull: The ``ansible-pull`` command on the device.

    Returns:
        A summary: folder, bundle id, files written.

    Raises:
        ConfigError: A refused URL, branch, interval or command, a non-empty or unwritable folder, a missing bundle.
    """
    check_pull_args(repo, branch, bundle_url, every_min, ansible_pull)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} exists and is not an empty folder; pick a new one", param="output")
    if not out.absolute().parent.is_dir():
        raise ConfigError(f"output {out}: folder {out.absolute().parent} does not exist", param="output")
    facts = bundle_facts(bundle)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.absolute().parent))
    except OSError as e:
        raise ConfigError(f"output {out}: cannot write in {out.absolute().parent} ({e.strerror or e})", param="output") from e
    try:
        files = _write_all(tmp, facts, repo, branch, bundle_url, every_min, settings, ansible_pull)
        tmp.chmod(0o755)
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)  # whole or nothing
    except OSError as e:
        raise ConfigError(f"output {out}: cannot write ({e.strerror or e})", param="output") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"output": str(out), "bundle_id": facts["edgesdk_bundle_id"], "repo": repo, "branch": branch, "files": files}


def _write_all(out: Path, facts: dict[str, str], repo: str, branch: str, bundle_url: str | None, every_min: int,
               settings: DeviceSettings, ansible_pull: str) -> list[str]:
    name = Path(facts["edgesdk_bundle"]).name
    role = out / "roles" / "edgesdk"
    shutil.copytree(ANSIBLE_DIR / "roles" / "edgesdk", role)
    (role / "files").mkdir(exist_ok=True)
    shutil.copy2(ANSIBLE_DIR.parent / "agent.py", role / "files" / "agent.py")
    play_vars: dict[str, Any] = {**settings.fleet_vars(), "edgesdk_bundle_sha256": facts["edgesdk_bundle_sha256"],
                                 "edgesdk_bundle_id": facts["edgesdk_bundle_id"],
                                 "edgesdk_agent": "{{ playbook_dir }}/roles/edgesdk/files/agent.py"}
    if bundle_url:
        play_vars["edgesdk_bundle_url"] = bundle_url
    else:
        (out / "bundles").mkdir()
        shutil.copy2(facts["edgesdk_bundle"], out / "bundles" / name)
        play_vars["edgesdk_bundle"] = "{{ playbook_dir }}/bundles/" + name
    _write_playbook(out / "local.yml", play_vars)
    _write_device(out / "device", repo, branch, every_min, ansible_pull)
    (out / "README.md").write_text(README.format(repo=repo, branch=branch, every=every_min, bundle_id=facts["edgesdk_bundle_id"],
                                                 source=bundle_url or f"bundles/{name}"))
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _write_playbook(path: Path, play_vars: dict[str, Any]) -> None:
    import yaml

    play = [{"name": "edgesdk pull", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": play_vars, "roles": ["edgesdk"]}]
    head = "# Written by `edgesdk deploy pull-config`: what ansible-pull applies on each device.\n"
    path.write_text(head + yaml.safe_dump(play, sort_keys=False, default_flow_style=False))


def _write_device(folder: Path, repo: str, branch: str, every_min: int, ansible_pull: str) -> None:
    import shlex

    folder.mkdir()
    cron = f"*/{every_min} * * * *" if every_min < 60 else f"0 */{every_min // 60} * * *"
    files = {
        "edgesdk-pull.sh": PULL_SH.format(repo=repo, branch=branch, ansible_pull=shlex.quote(ansible_pull)),
        "edgesdk-pull.service": SERVICE.format(repo=repo),
        "edgesdk-pull.timer": TIMER.format(every=every_min, spread=min(every_min * 60 // 3, 900)),
        "edgesdk-pull.cron": f"{cron} $HOME/.edgesdk/edgesdk-pull.sh >> $HOME/.edgesdk/pull.log 2>&1\n",
        "setup.sh": SETUP_SH,
    }
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755 if name.endswith(".sh") else 0o644)
