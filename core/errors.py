"""The one error base shown to users.

An exception that derives from `UserError` is something the user can fix (a missing index, a bad
setting, an unreadable file, an endpoint that is down): interfaces show its message, and its hint
when it has one, in one line. Every other exception is a bug: the CLIs let it raise with its
traceback, the UI and the API log the traceback and tell the user that something went wrong. So
interfaces catch `UserError` and nothing broader (simonw/llm's `ModelError` pattern).

An error raised with a `code` (a key of the catalogue, core/i18n.py) and its `params` can be shown
in either language (`localized`): the UI shows it in the page's, the API and the CLIs in English,
with the code beside it for a program to act on. Its English message comes from the catalogue too,
so the two never drift.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.i18n import t


class UserError(Exception):
    """A failure the user can fix; `hint` says how, when the message alone does not."""

    def __init__(
        self, message: str = "", hint: str = "", *, code: str = "", params: Mapping[str, object] | None = None
    ) -> None:
        self.code = code
        self.params = dict(params or {})
        message = message or (t("en", code, **self.params) if code else "")
        super().__init__(message)
        self.message = message
        self.hint = hint

    @classmethod
    def like(cls, other: UserError) -> UserError:
        """This kind of error, saying what `other` says (a format's failure as a file's)."""
        return cls(other.message, other.hint, code=other.code, params=other.params)

    def localized(self, lang: str | None) -> str:
        """The message in `lang` ('ar' or 'en') when it has a code, else as raised."""
        return t(lang, self.code, **self.params) if self.code else self.message

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(UserError):
    """A setting (environment variable or CLI flag) has a value the tool cannot use."""
