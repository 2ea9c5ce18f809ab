"""Text taken out of PDF text layers, OCR and office files, made to read like the typed original.

Applied at load time, so chunk spans and citations point into the repaired text; a change here
changes what new documents hold, never the matching keys of index/arabic.py.
"""

from __future__ import annotations

import re
import unicodedata

from index.arabic import ARABIC_LETTER_RE

# --- Text taken out of PDFs, OCR and office files -------------------------------------------------
# Presentation forms (U+FB50–U+FDFF, U+FE70–U+FEFC) are glyph shapes PDF text layers often carry
# instead of letters; NFKC maps them back to letters. NFKC is applied to these blocks only: on the
# whole text it would also rewrite superscripts, full-width forms and the like that the author typed.
_PRESENTATION_RE = re.compile("[\ufb50-\ufdff\ufe70-\ufefc]+")
# Bidi embedding/override/isolate marks, LRM/RLM/ALM, BOM: layout instructions, never content.
_BIDI_RE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_MARKS = "\u064b-\u065f\u0670"
# A mark a text layer put after a space ("يُ عقد" → the mark belongs to the letter before it).
_MARK_AFTER_SPACE_RE = re.compile(f"(?<=[\u0621-\u064a]) +([{_MARKS}]+)")
# "فضًل ا": the lam-alef ligature split in two, its mark moved before the lam.
# "ُي عقد": a mark placed before the letter it sits on, and the word cut after that letter.
_MARK_BEFORE_LETTER_RE = re.compile(f"(?<![\u0621-\u064a{_MARKS}])([{_MARKS}]+)([\u0621-\u064a]) ?")
_SPLIT_LAM_ALEF_RE = re.compile(f"([{_MARKS}]+)ل ا(?=[\\s{_MARKS}]|$)")
_ARABIC_RUN_RE = re.compile("[\u0600-\u06ff\ufb50-\ufdff\ufe70-\ufefc]")
# Characters that keep left-to-right order inside a right-to-left line: Latin letters and digits,
# plus the separators that join them (3.5, 2018-10, 1,000) when they sit between two of them.
_LTR_RUN_RE = re.compile(
    r"[A-Za-z0-9\u0660-\u0669\u06f0-\u06f9]+(?:[ .,:/%\-]+[A-Za-z0-9\u0660-\u0669\u06f0-\u06f9]+)*"
)
_MIRROR = str.maketrans("()[]{}<>«»", ")(][}{><»«")


def repair_extracted(text: str) -> str:
    """Make text pulled from a PDF/OCR layer read like the typed original.

    Presentation-form glyphs become letters (NFKC on those blocks only), bidi controls go, and the
    two breakages PDF text layers produce most in Arabic are mended: a diacritic cut off from its
    letter by a space, and a lam-alef ligature split into "ًل ا". Applied at load time, so chunk
    spans and citations point into this repaired text.
    """
    text = _PRESENTATION_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _BIDI_RE.sub("", text)
    text = _SPLIT_LAM_ALEF_RE.sub(lambda m: "ل" + m.group(1) + "ا", text)
    text = _MARK_BEFORE_LETTER_RE.sub(r"\2\1", text)
    return _MARK_AFTER_SPACE_RE.sub(r"\1", text)


def visual_to_logical(line: str) -> str:
    """One line stored in visual (left-to-right glyph) order back to logical order.

    Lines with Arabic are reversed, then each embedded left-to-right run (numbers, Latin words) is
    turned back the right way and mirrored brackets are swapped: what the Unicode bidi algorithm did
    for display, undone for the simple case of an RTL paragraph with LTR islands.
    """
    if not _ARABIC_RUN_RE.search(line):
        return line
    reversed_line = line[::-1].translate(_MIRROR)
    return _LTR_RUN_RE.sub(lambda m: m.group()[::-1], reversed_line)


def letter_share(text: str) -> float:
    """Share of non-space characters that are Arabic or Latin letters (or digits).

    A text layer made of private-use glyph codes or (cid:123) escapes scores low; real prose in
    either script scores above 0.7, so loaders use this to decide that a page needs OCR.
    """
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    good = sum(1 for c in chars if ARABIC_LETTER_RE.match(c) or (c.isascii() and c.isalnum()) or c.isdigit())
    return good / len(chars)
