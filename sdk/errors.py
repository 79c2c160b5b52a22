"""The SDK's exceptions: one base class and a few kinds users can catch.

Messages say what was required, what was received and what to do. They name the library's
own parameters (``threshold must be in [0, 1], got nan``), never command-line flags: a Python
caller never passed those. An error about one parameter carries its name in ``param``; the
CLI turns any ``EdgeSDKError`` into a one-line message on stderr and exit code 2, naming the
flag that sets that parameter where the command has one (``--threshold must be ...``).
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base class of every error the SDK raises on purpose.

    Args:
        message: What was required, what was received, what to do.
        param: The parameter (function argument or config key) the error is about, if one;
            the message names it as a word.
    """

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


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
