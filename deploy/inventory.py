"""Ansible inventories (INI or YAML) read and checked here, then written back in one plain form.

``ansible-playbook`` never reads the user's file: it gets the inventory this module wrote
after every host, user and port passed :mod:`deploy.hosts`. What is checked is exactly what
runs — no second parser can see a host differently. Supported: ``[group]``, ``[group:vars]``,
``[group:children]``, ``host:port``, ranges (``pi[01:20]``), inline host variables, the YAML
form (``all``/``hosts``/``vars``/``children``), and plain-YAML ``group_vars/`` and
``host_vars/`` beside the file. YAML is read by :mod:`sdk.yamlio` (no anchors or aliases).
Not supported (refused with a message): inventory scripts and plugins, vault-encrypted variables.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.hosts import MAX_BYTES, NAME_RE, Host, check_host, check_port, check_user
from sdk import yamlio
from sdk.errors import ConfigError

HOST_KEYS = ("ansible_host", "ansible_ssh_host")
USER_KEYS = ("ansible_user", "ansible_ssh_user")
PORT_KEYS = ("ansible_port", "ansible_ssh_port")
RANGE_RE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")
VARS_EXTS = ("", ".yml", ".yaml", ".json")


@dataclass
class Group:
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    """Hosts (in file order, with their own variables) and groups; ``source`` names the file in messages."""

    source: str
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=lambda: {"all": Group()})

    def group(self, name: str, where: str) -> Group:
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: group name {name!r} refused: letters, digits, '.', '-', '_' only")
        return self.groups.setdefault(name, Group())

    def add_host(self, name: str, group: str, variables: dict[str, Any]) -> None:
        self.hosts.setdefault(name, {}).update(variables)
        members = self.groups[group].hosts
        if name not in members:
            members.append(name)

    def check(self) -> None:
        """Every host name and every connection variable, wherever set, is something ssh cannot misread.

        Raises:
            ConfigError: The first bad entry, naming the file, the group or host, and why.
        """
        for name, variables in self.hosts.items():
            check_host(name, self.source)
            check_connection_vars(variables, f"{self.source}: host {name}")
        for gname, g in self.groups.items():
            check_connection_vars(g.vars, f"{self.source}: group {gname}")
            for child in g.children:
                if child not in self.groups:
                    raise ConfigError(f"{self.source}: group {gname} names child group {child!r}, which is not defined")
        if not self.hosts:
            raise ConfigError(f"{self.source}: no hosts in this inventory")

    def to_ansible(self, fleet_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        """The YAML-inventory structure (all hosts under ``all`` in file order, groups at the top)."""
        out: dict[str, Any] = {"all": {"vars": {**self.groups["all"].vars, **(fleet_vars or {})},
                                       "hosts": {h: v or None for h, v in self.hosts.items()}}}
        for name, g in self.groups.items():
            if name in ("all", "ungrouped"):
                continue
            out[name] = {"vars": g.vars, "hosts": dict.fromkeys(g.hosts), "children": dict.fromkeys(g.children)}
        return out

    def var_scopes(self) -> list[tuple[str, dict[str, Any]]]:
        """Every variable dict with a label for messages: groups, then hosts."""
        return [(f"group {n}", g.vars) for n, g in self.groups.items()] + [(f"host {n}", v) for n, v in self.hosts.items()]


def check_connection_vars(variables: dict[str, Any], where: str) -> None:
    for key in HOST_KEYS:
        if key in variables:
            check_host(str(variables[key]), f"{where}: {key}")
    for key in USER_KEYS:
        if key in variables:
            check_user(str(variables[key]), f"{where}: {key}")
    for key in PORT_KEYS:
        if key in variables:
            check_port(variables[key], f"{where}: {key}")


def from_hosts(hosts: list[Host]) -> tuple[Inventory, dict[str, str]]:
    """A one-off inventory for ``push USER@HOST`` / ``--hosts``: ``(inventory, {inventory name: label})``."""
    inv = Inventory("command line")
    inv.groups["ungrouped"] = Group()
    labels = {}
    for i, h in enumerate(hosts, 1):
        name = f"device{i}"
        variables: dict[str, Any] = {"ansible_host": h.host}
        if h.user:
            variables["ansible_user"] = h.user
        if h.port:
            variables["ansible_port"] = h.port
        inv.add_host(name, "ungrouped", variables)
        labels[name] = h.label
    return inv, labels


def load_inventory(path: str | Path) -> Inventory:
    """Read an INI (any name) or YAML (``.yml``/``.yaml``/``.json``) inventory and its ``group_vars``/``host_vars``.

    Raises:
        ConfigError: Unreadable, malformed, a plugin or script, or a refused host/user/port.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--inventory {p}: a folder; give one INI or YAML inventory file")
    text = yamlio.decode(yamlio.read_bytes(p, "inventory", f"--inventory {p}", MAX_BYTES), "inventory", f"--inventory {p}")
    if text.startswith("#!"):
        raise ConfigError(f"{p}: inventory scripts are not supported; write the hosts as an INI or YAML inventory")
    inv = _parse_yaml(text, str(p)) if p.suffix in (".yml", ".yaml", ".json") else _parse_ini(text, str(p))
    _merge_vars_dirs(inv, p.parent)
    inv.check()
    return inv


def expand_pattern(pattern: str, where: str) -> tuple[list[str], int | None]:
    """``name[01:03]:2222`` -> ``(["name01", "name02", "name03"], 2222)``; IPv6 in brackets keeps its colons."""
    port = None
    if pattern.startswith("[") and "]" in pattern:  # [IPv6] or [IPv6]:port
        addr, _, tail = pattern[1:].partition("]")
        return [addr], (check_port(tail[1:], where) if tail.startswith(":") else None)
    if RANGE_RE.sub("", pattern).count(":") == 1:  # host:port (ranges have colons of their own)
        pattern, _, p = pattern.rpartition(":")
        port = check_port(p, where)
    names = [pattern]
    while any(RANGE_RE.search(n) for n in names):
        names = [x for n in names for x in _expand_one(n, where)]
    return names, port


def _expand_one(name: str, where: str) -> list[str]:
    m = RANGE_RE.search(name)
    if not m:
        return [name]
    lo, hi, step = m[1], m[2], int(m[3] or 1)
    if lo.isdigit() != hi.isdigit() or step < 1:
        raise ConfigError(f"{where}: host range {m[0]!r} is not [N:M], [N:M:STEP] or [a:z]")
    if lo.isdigit():
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1, step)]
    else:
        items = [chr(c) for c in range(ord(lo), ord(hi) + 1, step)]
    if not items or len(items) > 100_000:
        raise ConfigError(f"{where}: host range {m[0]!r} is empty or too large")
    return [name[: m.start()] + i + name[m.end():] for i in items]


def _value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal when it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_ini(text: str, source: str) -> Inventory:
    inv = Inventory(source)
    inv.groups["ungrouped"] = Group()
    group, state = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{source} line {n}"
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[([^\]:\s]+)(?::([a-z]+))?\]", line)
        if m:
            if (m[2] or "hosts") not in ("hosts", "vars", "children"):
                raise ConfigError(f"{where}: section [{m[1]}:{m[2]}] has an unknown type; use [GROUP], [GROUP:vars] or [GROUP:children]")
            group, state = m[1], m[2] or "hosts"
            inv.group(group, where)
            continue
        if line.startswith("["):
            raise ConfigError(f"{where}: malformed section {line!r}; use [GROUP], [GROUP:vars] or [GROUP:children]")
        if state == "vars":
            key, eq, val = line.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"{where}: expected KEY=VALUE in [{group}:vars], got {line!r}")
            inv.groups[group].vars[key.strip()] = _value(val.strip())
        elif state == "children":
            child = line.split()[0]
            inv.group(child, where)
            if child not in inv.groups[group].children:
                inv.groups[group].children.append(child)
        else:
            _ini_host_line(inv, group, line, where)
    return inv


def _ini_host_line(inv: Inventory, group: str, line: str, where: str) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as e:
        raise ConfigError(f"{where}: cannot split the host line ({e})") from e
    if not tokens:
        return
    names, port = expand_pattern(tokens[0], where)
    for name in names:
        check_host(name, where)  # before anything else on the line: the name is what ssh would see
    variables = {}
    for tok in tokens[1:]:
        key, eq, val = tok.partition("=")
        if not eq or not key:
            raise ConfigError(f"{where}: expected KEY=VALUE after the host, got {tok!r}")
        variables[key] = _value(val)
    for name in names:
        check_connection_vars(variables, f"{where}: host {name}")
        inv.add_host(name, group, {**variables, **({"ansible_port": port} if port else {})})


def _load_yaml(text: str, where: str) -> Any:
    if text.lstrip().startswith("$ANSIBLE_VAULT") or "!vault" in text:
        raise ConfigError(f"{where}: vault-encrypted files and values are not supported by edgesdk deploy; keep secrets out of the inventory")
    return yamlio.loads(text, "inventory", where, MAX_BYTES)


def _parse_yaml(text: str, source: str) -> Inventory:
    data = _load_yaml(text, source)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: a YAML inventory is a mapping of groups (all: {{hosts: ..., children: ...}})")
    if "plugin" in data:
        raise ConfigError(f"{source}: inventory plugins are not supported; list the hosts in an INI or YAML inventory")
    inv = Inventory(source)
    inv.groups["ungrouped"] = Group()
    for name, body in data.items():
        _yaml_group(inv, str(name), body, source)
    return inv


def _yaml_group(inv: Inventory, name: str, body: Any, source: str) -> None:
    where = f"{source}: group {name}"
    g = inv.group(name, where)
    if body is None:
        return
    if not isinstance(body, dict) or set(body) - {"hosts", "vars", "children"}:
        raise ConfigError(f"{where}: expected a mapping with hosts, vars and children only")
    variables = body.get("vars") or {}
    if not isinstance(variables, dict):
        raise ConfigError(f"{where}: vars must be a mapping")
    g.vars.update({str(k): v for k, v in variables.items()})
    hosts = body.get("hosts") or {}
    hosts = {hosts: None} if isinstance(hosts, str) else hosts
    if not isinstance(hosts, dict):
        raise ConfigError(f"{where}: hosts must be a mapping of host names to their variables")
    for pattern, hvars in hosts.items():
        if hvars is not None and not isinstance(hvars, dict):
            raise ConfigError(f"{where}: host {pattern}: its variables must be a mapping")
        names, port = expand_pattern(str(pattern), where)
        for host in names:
            check_host(host, where)
            inv.add_host(host, name, {**(hvars or {}), **({"ansible_port": port} if port else {})})
    children = body.get("children") or {}
    if not isinstance(children, dict):
        raise ConfigError(f"{where}: children must be a mapping of group names")
    for child, cbody in children.items():
        _yaml_group(inv, str(child), cbody, source)
        if str(child) not in g.children:
            g.children.append(str(child))


def _merge_vars_dirs(inv: Inventory, base: Path) -> None:
    """``group_vars/NAME[.yml]`` (or a folder of files) over a group's own variables; the same for ``host_vars``."""
    for kind, targets in (("group_vars", {n: g.vars for n, g in inv.groups.items()}), ("host_vars", inv.hosts)):
        folder = base / kind
        if not folder.is_dir():
            continue
        for name, variables in targets.items():
            for path in _vars_files(folder, name):
                data = _load_yaml(yamlio.decode(yamlio.read_bytes(path, "variables file"), "variables file", str(path)), str(path))
                if data is None:
                    continue
                if not isinstance(data, dict):
                    raise ConfigError(f"{path}: expected a mapping of variables")
                variables.update({str(k): v for k, v in data.items()})


def _vars_files(folder: Path, name: str) -> list[Path]:
    found = [folder / (name + ext) for ext in VARS_EXTS if (folder / (name + ext)).is_file()]
    sub = folder / name
    if sub.is_dir():
        found += sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix in VARS_EXTS and not p.name.startswith("."))
    return found
