"""Ansible stdout callback ``edgesdk_json``: one JSON line per host as soon as its result is known.

Lines carry ``"edgesdk": KIND``: ``plan`` (the hosts the play targets, in order), ``batch`` (the
hosts of each serial batch), ``host`` (one per host: ``ok``, ``action``, ``bundle``,
``previous``, ``message``, ``batch``, ``elapsed_s``, plus what the agent reported) and
``stats``. The device agent prints one JSON object per call; failures carry its message,
else Ansible's. ``edgesdk deploy push/status`` read these lines; they are plain JSON for anyone.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: edgesdk_json
    type: stdout
    short_description: one JSON line per host for edgesdk deploy
    description:
      - Prints the plan, each batch and one result line per host as JSON lines on stdout.
"""


def _agent_json(result: dict[str, Any]) -> dict[str, Any]:
    """The agent's last JSON line in a command result, or ``{}``."""
    for line in reversed(str(result.get("stdout") or "").splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            return data if isinstance(data, dict) else {}
    return {}


def _parts(result: Any) -> tuple[str, Any, dict[str, Any]]:
    """``(host name, task, result dict)`` of a task result (ansible-core 2.19 names them without ``_``)."""
    host = getattr(result, "host", None) or result._host
    task = getattr(result, "task", None) or result._task
    data = getattr(result, "result", None)
    return host.get_name(), task, data if isinstance(data, dict) else result._result


def _message(result: dict[str, Any]) -> str:
    stderr = [x for x in str(result.get("stderr") or result.get("module_stderr") or "").splitlines() if x.strip()]
    msg = str(result.get("msg") or "").strip()
    if stderr and (msg in ("", "non-zero return code") or msg.startswith("Module result deserialization failed")):
        msg = f"{msg}: {stderr[-1]}" if msg.startswith("Module") else stderr[-1]  # e.g. no usable Python for Ansible
    return " ".join(msg.split())[:500]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "edgesdk_json"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = 0
        self._started: dict[str, float] = {}
        self._done: set[str] = set()
        self._planned = False

    def _emit(self, kind: str, **fields: Any) -> None:
        self._display.display(json.dumps({"edgesdk": kind, **fields}, sort_keys=True, default=str))

    def _host(self, name: str, **fields: Any) -> None:
        if name in self._done:
            return
        self._done.add(name)
        elapsed = time.monotonic() - self._started.get(name, time.monotonic())
        self._emit("host", host=name, batch=self._batch, elapsed_s=round(elapsed, 2), **fields)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._batch += 1
        try:  # the play's hosts after --limit; private attributes, so a missing plan is tolerated
            inventory = play.get_variable_manager()._inventory
            batch = [h.name for h in inventory.get_hosts(play.hosts)]
            if not self._planned:
                self._emit("plan", hosts=[h.name for h in inventory.get_hosts(play.hosts, ignore_restrictions=True)])
                self._planned = True
        except (AttributeError, TypeError):
            batch = []
        self._emit("batch", number=self._batch, hosts=batch)

    def v2_playbook_on_no_hosts_matched(self) -> None:
        self._emit("no_hosts")

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._started.setdefault(host.get_name(), time.monotonic())

    def v2_runner_on_ok(self, result: Any) -> None:
        host, task, data = _parts(result)
        if getattr(task, "register", None) == "edgesdk_install":
            # reported now: with max_fail_percentage Ansible may end the batch before the result task runs
            self._host(host, **{"message": "", "previous": None, **_agent_json(data), "ok": True})
        elif getattr(task, "name", "") == "edgesdk: result":  # get_name() adds "role : "
            row = dict(data.get("msg") or {})
            row.update({k: None for k in ("bundle", "previous") if row.get(k) in ("", "None")})  # Jinja before 2.19 gives text
            self._host(host, **{"message": "", **row, "ok": bool(row.get("ok", True))})

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        host, task, data = _parts(result)
        agent = _agent_json(data)
        row = {"bundle": None, "previous": None, **agent, "ok": False, "action": agent.get("action") or "failed",
               "message": agent.get("message") or _message(data), "task": getattr(task, "name", "")}
        self._host(host, **row)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        host, task, data = _parts(result)
        self._host(host, ok=False, action="unreachable", bundle=None, previous=None, message=_message(data), task=getattr(task, "name", ""))

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(stats.processed)
        self._emit("stats", **{k: {h: getattr(stats, k).get(h, 0) for h in hosts}
                               for k in ("ok", "changed", "failures", "dark", "skipped", "rescued")})
