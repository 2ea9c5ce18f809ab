"""The cited page itself, with the evidence sentence shaded and the short answer outlined.

A reader checking an answer wants to see it where it stands: the page of the PDF (or the page
image) with the sentence the answer came from and the answer's own words marked at their real
positions. Common RAG apps shade whole chunks at best. Words and boxes come from the text layer
(`index.formats.pdf.page_words`: pdfium's glyph boxes, lines right to left where Arabic), or, for a
scanned page or an image, from Tesseract's word boxes on the rendered page.

The words of the sentence are found by matching keys (`index.arabic.normalize`: the same spelling
variants retrieval forgives) in the window of the page's reading order that holds most of them; the
answer's words are then looked for inside that window first. Nothing is stored at index time: a
page is rendered on demand (the API caches the image).
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from index.arabic import normalize
from index.formats import FORMATS, FormatError
from index.formats.pdf import PageWord, mostly_arabic, page_words

# Display resolution: sharp enough to read Arabic diacritics on a laptop screen, ~1.2 MB of PNG a page.
RENDER_DPI = 150
# Scanned pages are read at Tesseract's recommended resolution, then shown at RENDER_DPI.
OCR_DPI = 300
# A page with fewer words in its text layer is read with OCR (a scan, maybe with a stamped number).
MIN_TEXT_WORDS = 5
# A chunk spans at most a few pages; the page whose words match best is shown.
MAX_PAGES_TRIED = 3
# Bounds on what is matched (the sentence and answer come from a URL).
MAX_MARK_CHARS = 2_000
SHADE = (253, 224, 71, 110)  # the evidence sentence: translucent yellow
OUTLINE = (29, 78, 216, 255)  # the short answer: a blue frame
Box = tuple[float, float, float, float]  # left, top, right, bottom
# The types whose pages can be shown: PDFs, and page images (one page each).
PAGE_SUFFIXES = frozenset(
    suffix for suffix, kind in FORMATS.items() if kind.extractor.split(":")[1] in ("extract_pdf", "extract_image")
)


@dataclass(frozen=True)
class Marks:
    """Where the sentence and the answer are on one page (boxes in the page's pixels as shown)."""

    sentence: list[Box]
    answer: list[Box]
    matched: float  # share of the sentence's words found on the page: 1.0 is all of them


def keys(text: str) -> list[str]:
    """Matching keys of a text's words, in order (punctuation dropped)."""
    out = []
    for word in text[:MAX_MARK_CHARS].split():
        key = "".join(c for c in normalize(word) if c.isalnum())
        if key:
            out.append(key)
    return out


def _best_window(
    page: Sequence[str], target: Sequence[str], slack: int, within: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The stretch of `page` (start, end), at most `slack` words longer than `target`, that holds
    most of its words: the first such stretch, trimmed to its first and last useful word."""
    lo, hi = within or (0, len(page))
    size = max(1, min(len(target) + slack, hi - lo))
    wanted = Counter(target)

    def score(start: int, end: int) -> int:
        return sum(min(n, wanted[k]) for k, n in Counter(page[start:end]).items())

    best, (start, end) = -1, (lo, lo)
    for at in range(lo, max(lo, hi - size) + 1):
        if (found := score(at, at + size)) > best:
            best, (start, end) = found, (at, at + size)
    # The tightest stretch with that score: the slack never takes in a neighbour's "من".
    while start < end and score(start + 1, end) == best:
        start += 1
    while end > start and score(start, end - 1) == best:
        end -= 1
    return start, end


def mark_words(words: Sequence[tuple[str, Box]], sentence: str, answer: str) -> Marks:
    """The boxes of the sentence's words and of the answer's words among a page's words."""
    page = [k[0] if (k := keys(text)) else "" for text, _ in words]
    target = keys(sentence)
    if not target or not page:
        return Marks([], [], 0.0)
    # A sentence may have lost or gained a word in extraction (a page number, a hyphen).
    start, end = _best_window(page, target, max(2, len(target) // 4))
    # Each word of the sentence is marked as often as the sentence has it: "وزير" in the next
    # sentence, inside the window's slack, stays unmarked.
    left = Counter(target)
    found = []
    for i in range(start, end):
        if left[page[i]] > 0:
            left[page[i]] -= 1
            found.append(i)
    wanted = set(target)
    matched = len({page[i] for i in found}) / len(wanted)
    # Trim the window to its first and last matched word: no shading of the neighbours.
    start, end = (found[0], found[-1] + 1) if found else (start, start)
    answer_keys = keys(answer)
    answer_at: list[int] = []
    if answer_keys:
        a_start, a_end = _best_window(page, answer_keys, 0, (start, end) if end > start else None)
        answer_at = [i for i in range(a_start, a_end) if page[i] in set(answer_keys)]
    return Marks([words[i][1] for i in found], [words[i][1] for i in answer_at], matched)


# Tesseract's page segmentation modes tried in turn: automatic layout first (keeps columns apart),
# then one uniform block, which reads lines that automatic layout dropped (seen on a Chromium-printed
# Arabic page: the first line of a paragraph, holding the cited words, was missing with 3 and 4).
OCR_LAYOUTS = ("3", "6")


def ocr_words(image: Any, layout: str = OCR_LAYOUTS[0]) -> list[tuple[str, Box]]:
    """Tesseract's words of a page image with their pixel boxes, in reading order."""
    from index.formats.ocr import LANGUAGES, PAGE_TIMEOUT_S, check

    binary = check()
    with tempfile.TemporaryDirectory(prefix="rag-mark-") as tmp:
        path = Path(tmp) / "page.png"
        image.save(path)
        done = subprocess.run(
            [binary, str(path), "stdout", "-l", LANGUAGES, "--psm", layout, "tsv"],
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_S,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
    if done.returncode != 0:
        raise FormatError(code="ocr_failed", params={"error": done.stderr.strip().splitlines()[-1:] or done.returncode})
    lines: dict[tuple[str, ...], list[tuple[str, Box]]] = {}
    for row in done.stdout.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            left, top, width, height = (float(c) for c in cells[6:10])
            lines.setdefault(tuple(cells[1:5]), []).append((cells[11], (left, top, left + width, top + height)))
    # Tesseract lists a line's words left to right: an Arabic line is read right to left.
    return [word for line in lines.values() for word in reading_order(line)]


def reading_order(line: list[tuple[str, Box]]) -> list[tuple[str, Box]]:
    """A line's words in reading order: right to left when most of its letters are Arabic."""
    arabic = mostly_arabic("".join(text for text, _ in line))
    return sorted(line, key=lambda w: -w[1][0] if arabic else w[1][0])


def _text_layer(page: Any, scale: float) -> list[tuple[str, Box]]:
    words: list[PageWord] = page_words(page)
    return [(w.text, _scaled(w.box, scale)) for w in words]


def _pdf_page(document: Any, index: int, sentence: str, answer: str) -> tuple[Any, Marks]:
    """The page rendered for display and its marks (from the text layer, or OCR'd when it has none)."""
    page = document[index]
    try:
        scale = RENDER_DPI / 72
        words = _text_layer(page, scale)
        if len(words) >= MIN_TEXT_WORDS:
            return page.render(scale=scale).to_pil().convert("RGB"), mark_words(words, sentence, answer)
        big = page.render(scale=OCR_DPI / 72).to_pil().convert("RGB")
    finally:
        page.close()
    shrink = RENDER_DPI / OCR_DPI
    marks = _scanned(big, sentence, answer)
    scaled = Marks(
        [_scaled(b, shrink) for b in marks.sentence], [_scaled(b, shrink) for b in marks.answer], marks.matched
    )
    return big.resize((round(big.width * shrink), round(big.height * shrink))), scaled


def _scanned(image: Any, sentence: str, answer: str) -> Marks:
    """Marks on a page image from OCR: the first layout that finds every word of the sentence, else the best."""
    best = Marks([], [], -1.0)
    for layout in OCR_LAYOUTS:
        marks = mark_words(ocr_words(image, layout), sentence, answer)
        if marks.matched > best.matched:
            best = marks
        if best.matched == 1.0:
            break
    return best


def _scaled(box: Box, factor: float) -> Box:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def marked_page(data: bytes, suffix: str, pages: Sequence[int], sentence: str, answer: str) -> tuple[bytes, int, Marks]:
    """PNG of the page (of `pages`, 1-based; the one whose words match the sentence best) with the
    sentence shaded and the answer outlined; the page shown and its marks. Images are one page."""
    from PIL import Image

    candidates: list[tuple[Any, int, Marks]] = []
    if suffix == ".pdf":
        import pypdfium2 as pdfium

        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            raise FormatError(code="pdf_damaged", params={"error": exc}) from exc
        try:
            for number in list(dict.fromkeys(pages))[:MAX_PAGES_TRIED]:
                if not 1 <= number <= len(document):
                    continue
                image, marks = _pdf_page(document, number - 1, sentence, answer)
                candidates.append((image, number, marks))
                if candidates[-1][2].matched == 1.0:
                    break
        finally:
            document.close()
    else:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        candidates.append((image, 1, _scanned(image, sentence, answer)))
    if not candidates:
        raise FormatError(code="page_missing", params={"page": pages[0] if pages else 0})
    image, number, marks = max(candidates, key=lambda c: c[2].matched)
    return _draw(image, marks), number, marks


def _draw(image: Any, marks: Marks) -> bytes:
    from PIL import Image, ImageDraw

    shade = Image.new("RGBA", image.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(shade)
    for box in marks.sentence:
        pen.rectangle(_padded(box, 1.5), fill=SHADE)
    for box in marks.answer:
        pen.rectangle(_padded(box, 3.0), outline=OUTLINE, width=3)
    out = io.BytesIO()
    Image.alpha_composite(image.convert("RGBA"), shade).convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


def _padded(box: Box, pad: float) -> Box:
    return (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
