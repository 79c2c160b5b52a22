"""``--serve``/``--token``/``--serve-linger`` for the app commands, and what they show about the model."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

from sdk.web.server import WebView, check_bind, parse_serve

log = logging.getLogger("edgesdk.web")

TOKEN_ENV = "EDGESDK_WEB_TOKEN"


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the web-view options to an app's parser."""
    g = parser.add_argument_group("web view")
    g.add_argument("--serve", metavar="[HOST:]PORT", default=None,
                   help="serve a live web view (127.0.0.1 unless HOST is given; any other address needs --token)")
    g.add_argument("--token", default=None, help=f"token every web request must carry (?token= or Authorization: Bearer); default ${TOKEN_ENV}")
    g.add_argument("--serve-linger", type=float, default=0.0, metavar="S", help="keep the web view up S seconds after the input ends")


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    token: str | None
    linger: float


def serve_options(args: argparse.Namespace) -> ServeOptions | None:
    """The checked ``--serve`` options (before any model loads), or None without ``--serve``.

    Raises:
        ConfigError: Bad address, an off-loopback address without a token, a malformed token.
    """
    if not getattr(args, "serve", None):
        return None
    host, port = parse_serve(args.serve)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, port, token)
    return ServeOptions(host, port, token, max(0.0, float(args.serve_linger or 0.0)))


def start_web(opts: ServeOptions | None, out: Any, app: str, runner: Any = None, source: str = "", **kwargs: Any) -> WebView | None:
    """Start the web view and subscribe it to ``out``'s emitted objects; None when ``opts`` is None."""
    if opts is None:
        return None
    info = {"model": model_info(runner), "source": source}
    web = WebView(app, opts.host, opts.port, opts.token, info, **kwargs)
    out.sinks.append(web.sink)
    log.info("web view on %s", web.url)
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
