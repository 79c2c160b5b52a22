"""Device addresses: ``[USER@]HOST[:PORT]`` parsed and checked before anything connects.

A host string reaches ``ssh`` as a positional argument, and Ansible's ssh connection puts no
``--`` before it: ``-oProxyCommand=...`` would be read as an option and run a command on this
machine. So every host, user and port — from the command line, a ``--hosts`` file or an
inventory — passes :func:`check_host`, :func:`check_user` and :func:`check_port` first.
Allowed: DNS names and IPv4 addresses (letters, digits, ``.``, ``-``, ``_``, not starting with
``-`` or ``.``), IPv6 addresses (in brackets when written with a port or a user).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from sdk import yamlio
from sdk.errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
ZONE_RE = re.compile(r"[A-Za-z0-9_.-]+")
MAX_BYTES = 16 << 20  # a hosts file or inventory of many thousands of devices


@dataclass(frozen=True)
class Host:
    """One device: address, login user (None: ssh's default) and port (None: ssh's default)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def label(self) -> str:
        """``user@host:port`` as a person writes it (IPv6 in brackets when a port follows)."""
        addr = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return (f"{self.user}@" if self.user else "") + addr + (f":{self.port}" if self.port else "")


def _why_bad(text: str) -> str | None:
    """Why ``text`` cannot be handed to ssh as an argument, or None."""
    if not text:
        return "it is empty"
    if text.startswith("-"):
        return "it starts with '-' (ssh would read it as an option)"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        return "it contains whitespace or a control character"
    return None


def check_host(addr: str, where: str) -> str:
    """``addr`` if it is a DNS name, IPv4 or IPv6 address (no brackets); else ConfigError naming ``where``."""
    why = _why_bad(addr)
    if why is None and ":" in addr:
        ip, _, zone = addr.partition("%")
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            why = "it is not a valid IPv6 address"
        if zone and not ZONE_RE.fullmatch(zone):
            why = "its IPv6 zone has odd characters"
    elif why is None and not NAME_RE.fullmatch(addr):
        why = "it has characters a host name cannot have (letters, digits, '.', '-', '_' only)"
    if why:
        raise ConfigError(f"{where}: host {addr!r} refused: {why}; write [USER@]HOST[:PORT], IPv6 as [ADDR]:PORT")
    return addr


def check_user(user: str, where: str) -> str:
    """``user`` if it is a plain login name; else ConfigError naming ``where``."""
    why = _why_bad(user)
    if why is None and not USER_RE.fullmatch(user):
        why = "a login name has letters, digits, '.', '-', '_' only"
    if why:
        raise ConfigError(f"{where}: user {user!r} refused: {why}")
    return user


def check_port(port: object, where: str) -> int:
    """``port`` as an int in 1..65535; else ConfigError naming ``where``."""
    text = str(port).strip() if not isinstance(port, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{where}: port {port!r} refused: expected a number from 1 to 65535")
    return int(text)


def parse_host(text: str, where: str = "command line") -> Host:
    """``[USER@]HOST[:PORT]``, IPv6 as ``[ADDR]`` or ``[ADDR]:PORT`` (a bare IPv6 address has no port).

    Raises:
        ConfigError: Anything ssh could misread (leading ``-``, whitespace, control or odd characters).
    """
    why = _why_bad(text)
    if why:
        raise ConfigError(f"{where}: host {text!r} refused: {why}; write [USER@]HOST[:PORT]")
    user, at, rest = text.rpartition("@")
    port: str | None = None
    if rest.startswith("["):
        addr, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ConfigError(f"{where}: host {text!r} refused: expected [IPV6] or [IPV6]:PORT")
        port = tail[1:] if tail else None
        if ":" not in addr:
            raise ConfigError(f"{where}: host {text!r} refused: [{addr}] is not a valid IPv6 address (brackets are for IPv6)")
    elif rest.count(":") == 1:
        addr, _, port = rest.partition(":")
    else:
        addr = rest  # a name, IPv4, or a bare IPv6 address (no port)
    return Host(check_host(addr, where), check_user(user, where) if at else None, check_port(port, where) if port is not None else None)


def parse_hosts(hosts: list[str], hosts_file: str | None = None, default_port: int | None = None) -> list[Host]:
    """Hosts from the command line and a ``--hosts`` file (one per line, ``#`` comments).

    Args:
        hosts: ``[USER@]HOST[:PORT]`` strings.
        hosts_file: A file of more, or None.
        default_port: The port of hosts that name none (None: ssh's default).

    Raises:
        ConfigError: No host, an unreadable file, a refused or repeated host (the message names it).
    """
    texts = [(t, "command line") for t in hosts]
    if hosts_file:
        where = f"--hosts {hosts_file}"
        if Path(hosts_file).is_dir():
            raise ConfigError(f"{where}: a folder; give a file with one [USER@]HOST[:PORT] per line")
        lines = yamlio.decode(yamlio.read_bytes(hosts_file, "hosts file", where, MAX_BYTES), "hosts file", where).splitlines()
        for n, line in enumerate(lines, 1):
            body = line.split("#", 1)[0].strip()
            if body:
                texts.append((body, f"{hosts_file} line {n}"))
    if not texts:
        raise ConfigError("no host given; pass USER@HOST, --hosts FILE or --inventory FILE")
    out: list[Host] = []
    for text, where in texts:
        h = parse_host(text, where)
        h = Host(h.host, h.user, h.port or default_port)
        if h in out:
            raise ConfigError(f"{where}: host {h.label} is listed twice")
        out.append(h)
    return out
