"""The one error base shown to users.

An exception that derives from `UserError` is something the user can fix (a missing index, a bad
setting, an unreadable file, an endpoint that is down): interfaces show its message, and its hint
when it has one, in one line. Every other exception is a bug: the CLIs let it raise with its
traceback, the UI and the API log the traceback and tell the user that something went wrong. So
interfaces catch `UserError` and nothing broader (simonw/llm's `ModelError` pattern).
"""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; `hint` says how, when the message alone does not."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(UserError):
    """A setting (environment variable or CLI flag) has a value the tool cannot use."""
