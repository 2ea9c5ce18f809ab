"""Which language a message about a question speaks (the catalogue itself is core/i18n.py)."""

from __future__ import annotations

from core.i18n import normalise_language
from index.arabic import has_letters, language


def for_question(question: str, page_lang: str | None) -> str:
    """Messages about a question speak its language; a question without letters (empty, or only
    numbers and marks) has none of its own, so it gets the page's."""
    return language(question) if has_letters(question) else normalise_language(page_lang)
