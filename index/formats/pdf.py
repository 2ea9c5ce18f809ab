"""PDF to text with pypdfium2 (Apache-2.0/BSD): our own line assembly from character positions.

Why not a library's `extract_text`: on Chromium/Word Arabic PDFs every candidate got the reading
order wrong (docs/PDF_EXTRACTORS.md: pypdfium2 reverses words, pdfplumber returns visual order,
pypdf scrambles numbers). pdfium gives each glyph's Unicode value, baseline origin and font size
quickly (~50 pages/s here), so lines are rebuilt from geometry: glyphs grouped into lines in content
stream order (which keeps columns apart), sorted left to right by position, then turned from visual
into logical order (`visual_to_logical`), with diacritics kept on their letters. Paragraphs come
from vertical gaps, headings from font size, and lines repeated at the top or bottom of most pages
(running headers, page numbers) are dropped. Pages without a usable text layer go to OCR.
"""

from __future__ import annotations

import ctypes
import itertools
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from tqdm import tqdm

from index.formats import Extracted, FormatError
from index.formats.repair import letter_share, repair_extracted, visual_to_logical

# Memory and time stay bounded: pages are read one at a time and at most this many.
MAX_PAGES = 2_000
# Below this share of letters a page's text layer is junk (private-use glyph codes, broken CMaps);
# real Arabic or English prose measures > 0.75 (spaces excluded; punctuation and digits lower it).
MIN_LETTER_SHARE = 0.5
# A page with fewer letters than this has no real text layer (a scan, maybe with a stamped number).
MIN_PAGE_LETTERS = 20
# Baselines closer than this fraction of the font size belong to one line.
_SAME_LINE = 0.35
# A gap between baselines over this multiple of the usual line pitch starts a new paragraph.
_PARAGRAPH_GAP = 1.45
# Pieces of one word touch; separate words are a space (~0.25 em) apart. Measured on the
# eval.pdf_extractors PDFs: 0.1 and 0.15 em give the same CER, 0.2 em starts joining real words.
_TOUCH = 0.1
# A glyph over an em away from the word being read starts another word.
_JUMP = 1.0
# A line set this much larger than the body text, and short, is a heading.
_HEADING_SCALE = 1.12
_HEADING_MAX_CHARS = 120
# A line seen in the top/bottom 2 lines of at least this share of pages (3 pages minimum) is a
# running header or footer.
_REPEAT_SHARE = 0.5
_MARK_RE = re.compile("[\u064b-\u065f\u0670\u0610-\u061a\u06d6-\u06ed]")
_PAGE_NUMBER_RE = re.compile(
    r"^[\s\-–—|/.]*(?:(?:page|صفحة|الصفحة|ص)\.?\s*)?[0-9٠-٩]+(?:\s*(?:/|of|من)\s*[0-9٠-٩]+)?[\s\-–—|.]*$", re.I
)
_DIGITS_RE = re.compile(r"[0-9٠-٩]+")


@dataclass
class _Glyph:
    char: str
    x: float  # left edge of the glyph box
    right: float
    y: float  # baseline
    size: float
    bottom: float = 0.0  # the glyph box's lower and upper edges (page points, from the bottom)
    top: float = 0.0


@dataclass(frozen=True)
class PageWord:
    """One word of a page as a reader sees it: logical-order text and its box in page points from
    the top-left corner (left, top, right, bottom); for marking the cited words on the page."""

    text: str
    box: tuple[float, float, float, float]


@dataclass
class _Line:
    text: str
    y: float
    size: float


def extract_pdf(data: bytes) -> Extracted:
    """The text of every page, logical order, with page offsets, headings and OCR'd pages."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc).lower()
        if "password" in message:
            raise FormatError(code="pdf_encrypted") from exc
        raise FormatError(code="pdf_damaged", params={"error": exc}) from exc
    try:
        count = len(document)
        if count == 0:
            raise FormatError(code="pdf_no_pages")
        if count > MAX_PAGES:
            raise FormatError(code="pdf_too_many", params={"pages": count, "limit": MAX_PAGES})
        pages: list[list[_Line]] = []
        # Long documents show progress on a terminal (tqdm hides itself otherwise).
        for i in tqdm(range(count), desc="PDF", unit="page", disable=None if count > 100 else True, leave=False):
            try:
                page = document[i]
            except pdfium.PdfiumError as exc:
                raise FormatError(code="pdf_page", params={"page": i + 1, "error": exc}) from exc
            try:
                pages.append(_page_lines(page))
            finally:
                page.close()
        needs_ocr = [i for i, lines in enumerate(pages) if not _usable(lines)]
        ocr_text: dict[int, str] = {}
        notes: list[str] = []
        if needs_ocr:
            from index.formats.ocr import OcrUnavailable, ocr_pdf_pages

            try:
                ocr_text = ocr_pdf_pages(document, needs_ocr)
            except OcrUnavailable as exc:
                if len(needs_ocr) == count:
                    raise FormatError.like(exc) from exc
                notes.append(f"{len(needs_ocr)} page(s) without text skipped: {exc}")
    finally:
        document.close()
    return _assemble(pages, ocr_text, notes)


def _page_lines(page: object) -> list[_Line]:
    """Lines of one page, top to bottom in stream order, each in logical order."""
    lines = []
    for run in _merge_split_lines(_page_runs(page)):
        text = _visual_line(run)
        if text.strip():
            lines.append(_Line(text, run[0].y, statistics.median(g.size for g in run)))
    return lines


def mostly_arabic(text: str) -> bool:
    """Are most of the letters of a line Arabic (so its words read right to left)?"""
    return sum("\u0600" <= c <= "\u06ff" for c in text) * 2 > sum(c.isalpha() for c in text)


def page_words(page: object) -> list[PageWord]:
    """The words of one page in reading order (lines top to bottom in stream order; in a line
    right to left where it is mostly Arabic), each with its box."""
    height = float(page.get_height())  # type: ignore[attr-defined]
    out: list[PageWord] = []
    for run in _merge_split_lines(_page_runs(page)):
        words = [(w, visual_to_logical(_word_text(w))) for w in _line_words(run)]
        if mostly_arabic("".join(text for _, text in words)):
            words.reverse()  # _line_words gives them left to right
        for glyphs, text in words:
            box = (
                min(g.x for g in glyphs),
                height - max(g.top for g in glyphs),
                max(g.right for g in glyphs),
                height - min(g.bottom for g in glyphs),
            )
            out.append(PageWord(text, box))
    return out


def _page_runs(page: object) -> list[list[_Glyph]]:
    """The page's glyphs in stream order, cut where the baseline changes."""
    import pypdfium2.raw as raw

    textpage = page.get_textpage()  # type: ignore[attr-defined]
    try:
        handle = textpage.raw
        x, y = ctypes.c_double(), ctypes.c_double()
        left, right, bottom, top = (ctypes.c_double() for _ in range(4))
        runs: list[list[_Glyph]] = []
        for i in range(raw.FPDFText_CountChars(handle)):
            code = raw.FPDFText_GetUnicode(handle, i)
            # Spaces (the file's, and those pdfium infers from gaps) only mark word boundaries in
            # stream order: in shaped RTL runs a space's own position can fall inside a neighbour.
            if code in (0, 0xFFFE, 0xFFFF) or chr(code) in "\r\n":
                continue
            raw.FPDFText_GetCharOrigin(handle, i, x, y)
            raw.FPDFText_GetCharBox(handle, i, left, right, bottom, top)
            size = raw.FPDFText_GetFontSize(handle, i) or 1.0
            glyph = _Glyph(chr(code), left.value, right.value, y.value, size, bottom.value, top.value)
            if runs and abs(runs[-1][-1].y - glyph.y) <= _SAME_LINE * max(glyph.size, runs[-1][-1].size):
                runs[-1].append(glyph)
            else:
                runs.append([glyph])
    finally:
        textpage.close()
    return runs


def _merge_split_lines(runs: list[list[_Glyph]]) -> list[list[_Glyph]]:
    """Re-join pieces of one line that the writer emitted apart (a run of vowelled words drawn
    after the rest of the line). Pieces join when they share a baseline and touch horizontally
    (gap under one em); the columns of a two-column page are further apart and stay separate."""
    merged: list[list[_Glyph]] = []
    for run in runs:
        lo, hi = min(g.x for g in run), max(g.right for g in run)
        for target in reversed(merged):
            same_line = abs(target[0].y - run[0].y) <= _SAME_LINE * max(target[0].size, run[0].size)
            t_lo, t_hi = min(g.x for g in target), max(g.right for g in target)
            if same_line and max(t_lo - hi, lo - t_hi) < run[0].size:
                target.append(_Glyph(" ", hi, hi, run[0].y, run[0].size))
                target.extend(run)
                break
        else:
            merged.append(run)
    return merged


def _join_touching(words: list[list[_Glyph]]) -> list[list[_Glyph]]:
    """One word drawn in several pieces (vowelled text often is) is one word again: pieces whose
    letter boxes touch or overlap (gap under _TOUCH of the font size; a word space is ~0.25) join."""

    spans = sorted(((min(g.x for g in w), max(g.right for g in w), w) for w in words), key=lambda t: (t[0], t[1]))
    out: list[tuple[float, float, list[_Glyph]]] = []
    for lo, hi, word in spans:
        if out and lo - out[-1][1] < _TOUCH * word[0].size:
            p_lo, p_hi, p_word = out[-1]
            out[-1] = (p_lo, max(p_hi, hi), p_word + word)
        else:
            out.append((lo, hi, word))
    return [w for _, _, w in out]


def _visual_line(run: list[_Glyph]) -> str:
    """Glyphs of one line into a logical-order string: its words (`_line_words`) placed by position,
    then the visual string reversed into logical order with `visual_to_logical`."""
    visual = " ".join(_word_text(word) for word in _line_words(run))
    return " ".join(visual_to_logical(visual).split())


def _line_words(run: list[_Glyph]) -> list[list[_Glyph]]:
    """The words of one line, left to right.

    Words are the stream's space-separated groups (writers emit a line word by word, each word's
    glyphs in visual order), placed by position.
    """
    words: list[list[_Glyph]] = [[]]
    for glyph in run:
        if glyph.char.isspace():
            if words[-1]:
                words.append([])
            continue
        if words[-1]:
            # A jump across the line with no space between (a line drawn as two runs) also ends a
            # word; `_join_touching` re-joins a word that this cut at a piece boundary.
            last = words[-1][-1]
            if max(glyph.x - last.right, last.x - glyph.right) > _JUMP * glyph.size:
                words.append([])
        words[-1].append(glyph)
    return sorted(_join_touching([w for w in words if w]), key=lambda w: min(g.x for g in w))


def _word_text(word: list[_Glyph]) -> str:
    """A word's glyphs in visual order: sorted left to right; the letters of a ligature share one
    box and keep stream order, a diacritic is placed just left of the letter whose box is nearest
    its own centre."""
    bases = [g for g in word if not _MARK_RE.match(g.char)] or word
    keyed: list[tuple[float, int, int, str]] = []
    for n, glyph in enumerate(word):
        if _MARK_RE.match(glyph.char):
            centre = (glyph.x + glyph.right) / 2
            base = min(bases, key=lambda b: max(b.x - centre, centre - b.right, 0.0))
            keyed.append((round(base.x, 1), 0, -n, glyph.char))
        else:
            keyed.append((round(glyph.x, 1), 1, n, glyph.char))
    keyed.sort()
    return "".join(k[3] for k in keyed)


def _usable(lines: list[_Line]) -> bool:
    text = "".join(line.text for line in lines)
    letters = sum(1 for c in text if c.isalpha())
    return letters >= MIN_PAGE_LETTERS and letter_share(repair_extracted(text)) >= MIN_LETTER_SHARE


def _repeated(pages: list[list[_Line]]) -> set[str]:
    """Keys of lines that recur at the top or bottom of most pages (digits ignored: page numbers)."""
    if len(pages) < 3:
        return set()
    seen: Counter[str] = Counter()
    for lines in pages:
        edge = {_DIGITS_RE.sub("#", line.text) for line in lines[:2] + lines[-2:]}
        seen.update(edge)
    return {key for key, n in seen.items() if n >= max(3, _REPEAT_SHARE * len(pages))}


def _assemble(pages: list[list[_Line]], ocr_text: dict[int, str], notes: list[str]) -> Extracted:
    """Join pages into one text; record page starts and headings as offsets into it."""
    # OCR'd pages take part in header/footer detection too: one block of OCR text per line.
    edges = [[_Line(t, 0.0, 0.0) for t in ocr_text[i].split("\n")] if i in ocr_text else p for i, p in enumerate(pages)]
    repeated = _repeated(edges)
    sizes = [line.size for lines in pages for line in lines for _ in range(len(line.text))]
    body = statistics.median(sizes) if sizes else 0.0
    parts: list[str] = []
    offsets: list[int] = []
    sections: list[tuple[int, str]] = []
    cursor = 0
    for i, lines in enumerate(edges):
        offsets.append(cursor)
        kept = [
            line
            for j, line in enumerate(lines)
            if not (
                (j < 2 or j >= len(lines) - 2)
                and (_DIGITS_RE.sub("#", line.text) in repeated or _PAGE_NUMBER_RE.match(line.text))
            )
        ]
        if i in ocr_text:
            page_text = "\n".join(line.text for line in kept)
        else:
            page_text, headings = _paragraphs(kept, body)
            sections.extend((cursor + offset, heading) for offset, heading in headings)
        page_text = page_text.strip()
        parts.append(page_text)
        cursor += len(page_text) + 2
    text = "\n\n".join(parts)
    if not text.strip():
        raise FormatError(code="pdf_no_text")
    title = sections[0][1] if sections and sections[0][0] < 500 else ""
    kind = "pdf+ocr" if ocr_text else "pdf"
    return Extracted(text, kind, offsets, sections, sorted(i + 1 for i in ocr_text), title, notes)


def _paragraphs(lines: list[_Line], body: float) -> tuple[str, list[tuple[int, str]]]:
    """Lines into paragraphs (blank-line gaps) and headings (large, short lines) with offsets.

    Text is repaired line by line, before offsets are taken, so the offsets stay exact.
    """
    pitches = [abs(a.y - b.y) for a, b in itertools.pairwise(lines) if abs(a.size - b.size) < 0.5]
    pitch = statistics.median(pitches) if pitches else 0.0
    out = ""
    headings: list[tuple[int, str]] = []
    previous: _Line | None = None
    previous_heading = False
    for line in lines:
        text = repair_extracted(line.text).strip()
        if not text:
            continue
        heading = bool(body) and line.size >= body * _HEADING_SCALE and len(text) <= _HEADING_MAX_CHARS
        if previous is None:
            separator = ""
        elif heading or previous_heading or (pitch and abs(previous.y - line.y) > pitch * _PARAGRAPH_GAP):
            separator = "\n"
        else:
            separator = " "
        out += separator
        if heading:
            headings.append((len(out), text))
        out += text
        previous, previous_heading = line, heading
    return out, headings
