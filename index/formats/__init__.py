"""Rich document formats (PDF, scans and images, DOCX, HTML) to text with page and section maps.

Each format lives in its own module and returns an `Extracted`: the text the index stores (so
chunk spans are exact offsets into it), the offset where each page starts, and (offset, heading)
pairs for sections. `locate` turns a chunk's span into the page/section a citation shows. The
format modules import their libraries lazily, so plain-text indexing never pays for them.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError
from core.registry import load_attribute


class FormatError(UserError):
    """A file of a supported type that cannot be read; the message is the one-line reason."""


@dataclass
class Extracted:
    """Text of one document and where its pages and sections start (character offsets)."""

    text: str
    kind: str  # shown as the manifest's "encoding": pdf, pdf+ocr, docx, html, image+ocr
    pages: list[int] = field(default_factory=list)  # start offset of page i+1; empty: no pages
    sections: list[tuple[int, str]] = field(default_factory=list)  # (offset, nearest heading)
    ocr_pages: list[int] = field(default_factory=list)  # 1-based pages whose text came from OCR
    title: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. pages OCR could not read

    def metadata(self) -> dict[str, Any]:
        """Document metadata for the chunker (lists of plain ints/strings: JSON-safe)."""
        meta: dict[str, Any] = {"format": self.kind.split("+")[0]}
        if self.pages:
            meta["pages"] = self.pages
        if self.sections:
            meta["sections"] = [[o, h] for o, h in self.sections]
        if self.ocr_pages:
            meta["ocr_pages"] = self.ocr_pages
        if self.title:
            meta["title"] = self.title
        if self.notes:
            meta["notes"] = self.notes
        return meta


MB = 2**20


@dataclass(frozen=True)
class Format:
    """How one file type is read: its extractor, its size cap and the signature its bytes start with."""

    extractor: str  # "module:function" from bytes to `Extracted`, imported when a file of the type comes
    max_bytes: int
    magic: tuple[bytes, ...] = ()  # one of these starts the file; none: no check (HTML)
    magic_within: int = 0  # > 0: the signature may sit anywhere in the first that many bytes


_IMAGE = Format("index.formats.ocr:extract_image", 20 * MB)
_JPEG = dataclasses.replace(_IMAGE, magic=(b"\xff\xd8\xff",))
_TIFF = dataclasses.replace(_IMAGE, magic=(b"II*\x00", b"MM\x00*"))
_HTML = Format("index.formats.html:extract_html", 10 * MB)
# The rich formats by suffix (plain text and Markdown are read by index/load.py itself): adding a
# type is its module plus one line here. Size caps: a 50 MB PDF is ~1,000 scanned pages or far more
# text pages; DOCX/HTML are text plus images, 20 MB holds hundreds of pages of prose. PDF readers
# accept a header anywhere in the first 1 KB (some writers prepend junk).
FORMATS: dict[str, Format] = {
    ".pdf": Format("index.formats.pdf:extract_pdf", 50 * MB, (b"%PDF-",), magic_within=1024),
    ".docx": Format("index.formats.docx:extract_docx", 20 * MB, (b"PK\x03\x04",)),
    ".html": _HTML,
    ".htm": _HTML,
    ".png": dataclasses.replace(_IMAGE, magic=(b"\x89PNG\r\n\x1a\n",)),
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
    ".tif": _TIFF,
    ".tiff": _TIFF,
}


def max_bytes(suffix: str, default: int) -> int:
    """The size cap of a rich format, else `default` (plain text's)."""
    found = FORMATS.get(suffix)
    return found.max_bytes if found else default


def largest_cap() -> int:
    """The largest per-type cap: what an upload route must let through before the type's own check."""
    return max(found.max_bytes for found in FORMATS.values())


def sniff(data: bytes) -> str:
    """What the bytes look like, as the catalogue key of a reason such as "not a PDF file (it looks
    like HTML)": a key, not English words, so the reason reads in the page's language."""
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "unreadable_looks_html"
    if data.startswith(b"PK\x03\x04"):
        return "unreadable_looks_zip"
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return "unreadable_looks_old_word"
    if data.startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "unreadable_looks_pdf"
    return "unreadable_looks_other"


def extract(data: bytes, suffix: str) -> Extracted:
    """Read a file of a registered type after checking the bytes are what the suffix claims."""
    found = FORMATS.get(suffix)
    if found is None:
        raise FormatError(code="unreadable_type", params={"suffix": suffix})
    kind = suffix.lstrip(".").upper()
    if not data.strip():
        raise FormatError(code="unreadable_empty")
    head = data[: found.magic_within or 8]
    if found.magic and not any(m in head if found.magic_within else head.startswith(m) for m in found.magic):
        raise FormatError(code=sniff(data), params={"kind": kind})
    try:
        extracted: Extracted = load_attribute(found.extractor)(data)
    except FormatError:
        raise
    except Exception as exc:
        # Parsers of hostile files fail in ways no list of exception types covers (pdfium, lxml,
        # zipfile, PIL each have their own); one bad file must be skipped, never stop the folder.
        raise FormatError(
            code="unreadable_parser", params={"kind": kind, "error": f"{type(exc).__name__}: {exc}"}
        ) from exc
    return extracted


# A "heading" longer than this is a paragraph in a heading style; a citation shows its start.
_SECTION_MAX_CHARS = 300
_MD_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def markdown_sections(text: str) -> list[list[Any]]:
    """[(offset, heading)] of ATX headings (`## Title`) in a Markdown file."""
    return [[m.start(), m.group(2).strip()] for m in _MD_HEADING_RE.finditer(text)]


# Chunk metadata keys `locate` may set; stores with a fixed schema (Milvus) keep them as one JSON field.
LOCATION_KEYS = ("page", "page_end", "page_breaks", "section", "ocr", "paragraph")


def locate(metadata: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """Page, last page (only when the span crosses a page break), section and OCR flag of a span.
    A span that crosses page breaks also gets `page_breaks`: where in it each later page starts
    (offsets from the span's start), so a citation can name the page of the sentence it uses.

    Keys are present only when the document has that information, so plain-text chunks keep the
    metadata (and store records) they always had.
    """
    out: dict[str, Any] = {}
    pages: list[int] = metadata.get("pages") or []
    if pages:
        first = bisect.bisect_right(pages, start)
        last = bisect.bisect_right(pages, max(start, end - 1))
        out["page"] = max(first, 1)
        if last > first:
            out["page_end"] = last
            out["page_breaks"] = [pages[p - 1] - start for p in range(out["page"] + 1, last + 1)]
        ocr = set(metadata.get("ocr_pages") or ())
        if ocr and any(p in ocr for p in range(out["page"], last + 1)):
            out["ocr"] = True
    elif metadata.get("ocr_pages"):
        out["ocr"] = True
    sections = metadata.get("sections") or []
    if sections:
        i = bisect.bisect_right([s[0] for s in sections], start) - 1
        if i >= 0:
            out["section"] = sections[i][1][:_SECTION_MAX_CHARS]
    return out


# Text per document, in characters, for every format (index/load.py checks the rest): ~1,500
# pages of prose, ~3,000 chunks, about 6 minutes of embedding on 2 cores. A 7.8 MB DOCX within the
# byte and ratio caps expanded to 24.6 M characters (83 s and 526 MB to read, ~55 minutes of
# embedding under the index lock; issue 27 point 10).
MAX_TEXT_CHARS = 3_000_000


def too_long(chars: int) -> FormatError:
    """The failure of a document over MAX_TEXT_CHARS, naming the fix."""
    return FormatError(code="unreadable_too_long", params={"limit": f"{MAX_TEXT_CHARS:,}", "chars": f"{chars:,}"})


def from_blocks(blocks: Iterable[tuple[bool, str]], kind: str, title: str = "") -> Extracted:
    """Text of (is_heading, text) blocks in reading order, one per line; headings become sections.

    Shared by the DOCX and HTML loaders, which differ only in how they find the blocks. They
    yield them lazily, so a document over MAX_TEXT_CHARS stops being read as soon as it is.
    """
    from index.formats.repair import repair_extracted

    parts: list[str] = []
    sections: list[tuple[int, str]] = []
    cursor = 0
    for is_heading, raw in blocks:
        text = " ".join(repair_extracted(raw).split())
        if not text:
            continue
        if is_heading:
            sections.append((cursor, text))
        parts.append(text)
        cursor += len(text) + 1
        if cursor > MAX_TEXT_CHARS:
            raise too_long(cursor)
    if not parts:
        raise FormatError(code="unreadable_no_text")
    title = " ".join(title.split()) or (sections[0][1] if sections and sections[0][0] == 0 else "")
    return Extracted("\n".join(parts), kind, sections=sections, title=title[:120])


def describe_location(
    page: int | None, page_end: int | None, section: str, ocr: bool, arabic: bool, paragraph: int = 0
) -> str:
    """ "ص 3–4 · القسم الثاني · الفقرة 5 · OCR" / "p. 3–4 · Section two · paragraph 5 · OCR"; "" when
    nothing is known. A reader finds a passage by page and paragraph, not by character offsets
    (those stay in the JSON)."""
    parts = []
    if page:
        pages = f"{page}–{page_end}" if page_end and page_end != page else str(page)
        parts.append(f"ص {pages}" if arabic else f"{'pp.' if page_end else 'p.'} {pages}")
    if section:
        parts.append(section)
    if paragraph:
        parts.append(f"الفقرة {paragraph}" if arabic else f"paragraph {paragraph}")
    if ocr:
        parts.append("OCR")
    return " · ".join(parts)
