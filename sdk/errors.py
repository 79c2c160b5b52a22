"""The SDK's exceptions: one base class and a few kinds users can catch.

Messages say what was required, what was received and what to do. The CLI turns
any ``EdgeSDKError`` into a one-line message on stderr and exit code 2.
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ConfigError(EdgeSDKError, ValueError):
    """A configuration file, profile or option is invalid."""


class ModelFormatError(EdgeSDKError, ValueError):
    """A model file is missing, truncated, or not what it claims to be."""


class BackendUnavailableError(EdgeSDKError, ImportError):
    """No interpreter backend (or a named one) can be imported, or a delegate is required but failed."""


class ConversionError(EdgeSDKError, RuntimeError):
    """Converting or quantizing a model failed."""


class SourceError(EdgeSDKError, OSError):
    """An audio or video source cannot be opened or read."""
