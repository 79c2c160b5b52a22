"""``--serve``/``--token-file``/``--serve-linger`` for the app commands, and what they show about the model.

The token comes from ``$EDGESDK_WEB_TOKEN`` or a file only its owner can read
(``--token-file``); ``--token`` still works but every user of the machine can read it in
``ps``, so it is said once. Logs show the page's address with the token hidden.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.console import number
from sdk.errors import ConfigError
from sdk.web.server import TOKEN_RE, WebView, check_bind, parse_serve

log = logging.getLogger("edgesdk.web")

TOKEN_ENV = "EDGESDK_WEB_TOKEN"


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the web-view options to an app's parser."""
    g = parser.add_argument_group("web view")
    g.add_argument("--serve", metavar="[HOST:]PORT", default=None,
                   help="serve a live web view (127.0.0.1 unless HOST is given; any other address needs --token)")
    g.add_argument("--token-file", default=None, metavar="FILE",
                   help=f"file (mode 0600) holding the token every web request must carry (?token= or Authorization: Bearer); default ${TOKEN_ENV}")
    g.add_argument("--token", default=None, help="the token itself (visible to other users in `ps`: prefer --token-file or $" + TOKEN_ENV + ")")
    g.add_argument("--serve-linger", type=number(float, 0), default=0.0, metavar="S", help="keep the web view up S seconds after the input ends")
    g.add_argument("--max-streams", type=number(int, 1, 32), default=8, metavar="N", help="live streams (video and events) served at once; more get HTTP 503")


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    token: str | None
    linger: float
    max_streams: int = 8


def serve_options(args: argparse.Namespace) -> ServeOptions | None:
    """The checked ``--serve`` options (before any model loads), or None without ``--serve``.

    Raises:
        ConfigError: Bad address, an off-loopback address without a token, a malformed or
            unprotected token file, both ``--token`` and ``--token-file``, a bad ``--max-streams``.
    """
    if not getattr(args, "serve", None):
        return None
    host, port = parse_serve(args.serve)
    token_file = getattr(args, "token_file", None)
    if args.token and token_file:
        raise ConfigError("--token and --token-file both given; pass one (--token-file keeps the token out of `ps`)")
    if args.token:
        log.warning("web view: --token is visible to every user of this machine (`ps`, shell history); "
                    "prefer --token-file FILE (mode 0600) or $%s", TOKEN_ENV)
        token = args.token
    else:
        token = read_token_file(token_file) if token_file else os.environ.get(TOKEN_ENV) or None
    check_bind(host, port, token)
    streams = int(getattr(args, "max_streams", 8))
    if not 1 <= streams <= 32:
        raise ConfigError(f"--max-streams must be 1-32, got {streams}")
    return ServeOptions(host, port, token, max(0.0, float(args.serve_linger or 0.0)), streams)


def read_token_file(path: str | Path) -> str:
    """The token in ``path``: a regular file of the current user (or root) that nobody else can read.

    Raises:
        ConfigError: Missing, not a regular file, readable or writable by others, or not a valid token.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ConfigError(f"--token-file {p}: cannot read it ({e.strerror or e}); write the token into a file with mode 0600") from e
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"--token-file {p}: not a regular file; write the token into a file with mode 0600")
        if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid not in (os.geteuid(), 0):
            raise ConfigError(f"--token-file {p}: others can read or change it (mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}); "
                              f"chmod 600 {p}")
        raw = fh.read(1024)
    token = raw.decode("ascii", errors="replace").strip()
    if not TOKEN_RE.fullmatch(token):
        raise ConfigError(f"--token-file {p}: expected one line of 8-256 characters from A-Z a-z 0-9 . _ ~ - "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`)")
    return token


def start_web(opts: ServeOptions | None, out: Any, app: str, runner: Any = None, source: str = "", **kwargs: Any) -> WebView | None:
    """Start the web view and subscribe it to ``out``'s emitted objects; None when ``opts`` is None."""
    if opts is None:
        return None
    info = {"model": model_info(runner), "source": source}
    web = WebView(app, opts.host, opts.port, opts.token, info, max_streams=opts.max_streams, **kwargs)
    out.sinks.append(web.sink)
    log.info("web view on %s", web.url)  # the token, if any, shows as ?token=...
    return web


def stop_web(web: WebView | None, opts: ServeOptions | None) -> None:
    """Linger if asked, then close."""
    if web is not None and opts is not None:
        try:
            web.linger(opts.linger)
        finally:
            web.close()


def model_info(runner: Any) -> dict[str, Any]:
    """Model name, backend/delegate and a card summary for the page."""
    if runner is None:
        return {}
    info: dict[str, Any] = {"name": getattr(runner, "name", "")}
    try:
        info["backend"] = runner.describe()
    except Exception as e:  # a page without backend details beats no page
        info["backend"] = {"error": str(e)}
    card = getattr(runner, "card", None)
    if card is not None:
        info["card"] = card_summary(card)
    return info


def card_summary(card: Any) -> dict[str, Any]:
    """The card fields worth a glance: task, quantization, metrics, licence, and short output fields."""
    out = _scalars(card.output)
    labels = dict(card.output).get("labels")
    if isinstance(labels, list):
        out["labels"] = len(labels)
    return {"task": card.task, "output": out, "quantization": _scalars(card.quantization), "metrics": _scalars(card.metrics),
            "license": card.license, "edgesdk_version": card.edgesdk_version}


def _scalars(d: Any) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in dict(d or {}).items() if isinstance(v, (str, int, float, bool))}
