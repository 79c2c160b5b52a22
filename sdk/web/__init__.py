"""A small, read-only live web view for the apps (``--serve [HOST:]PORT``)."""

from __future__ import annotations

from sdk.web.server import WebView, check_bind, is_loopback, parse_serve

__all__ = ["WebView", "check_bind", "is_loopback", "parse_serve"]
