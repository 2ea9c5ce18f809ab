"""core/i18n.py: one catalogue, two languages that cannot drift apart."""

from __future__ import annotations

import re
import string

import pytest

from core.i18n import LANGUAGES, MESSAGES, t
from tests.helpers import REPO_ROOT

PACKAGES = ("core", "index", "rag", "api", "ui", "eval")


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_languages_have_the_same_keys() -> None:
    ar, en = MESSAGES["ar"].keys(), MESSAGES["en"].keys()
    assert not ar - en and not en - ar, (sorted(ar - en), sorted(en - ar))


@pytest.mark.parametrize("key", sorted(MESSAGES["en"]))
def test_each_message_takes_the_same_parameters_in_both_languages(key: str) -> None:
    assert _fields(MESSAGES["ar"][key]) == _fields(MESSAGES["en"][key]), key


def test_every_code_raised_in_the_product_is_in_the_catalogue() -> None:
    """A `code="…"` with no message would fail only when that error is finally raised."""
    used: dict[str, str] = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for code in re.findall(r'\bcode="([a-z_]+)"', path.read_text(encoding="utf-8")):
                used.setdefault(code, str(path.relative_to(REPO_ROOT)))
    assert used, "no coded errors found: the pattern no longer matches how codes are written"
    missing = {code: where for code, where in used.items() if code not in MESSAGES["en"]}
    assert not missing, missing


@pytest.mark.parametrize("lang", LANGUAGES)
def test_arabic_messages_are_arabic_and_english_ones_english(lang: str) -> None:
    """Each message is in its own language: a copy-pasted English line on the Arabic side is
    what a new user saw ("removed … UTC")."""
    arabic_letters = re.compile("[\u0621-\u064a]")
    for key, text in MESSAGES[lang].items():
        letters = _fields(text)
        bare = re.sub(r"\{[^}]*\}", "", text)
        if lang == "ar" and re.search("[A-Za-z]{4,}", bare) and not arabic_letters.search(bare):
            pytest.fail(f"{key}: English in the Arabic catalogue: {text!r}")
        if lang == "en":
            assert not arabic_letters.search(bare), (key, text)
        assert t(lang, key, **dict.fromkeys(letters, "x"))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_what_a_user_is_thanked_with_names_no_command(lang: str) -> None:
    """A new user sending a correction was shown "(python -m eval --feedback)": a developer's
    command in a thank-you. Errors may name the command that fixes them; a thank-you has no fix."""
    for key in ("feedback_thanks_right", "feedback_thanks_wrong", "feedback_saved"):
        assert "python" not in MESSAGES[lang][key] and "`" not in MESSAGES[lang][key], key
