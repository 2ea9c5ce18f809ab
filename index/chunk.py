"""`Document`s to chunks: paragraph- and sentence-aware windows with overlap and exact source spans.

A chunk is a contiguous slice `text[start:end]` of its document, so a citation can always point at
the exact characters it came from. Sentences are never cut unless one alone is longer than a chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from langchain_core.documents import Document

from index.arabic import clause_spans, sentence_spans, trim_span
from index.formats import locate

# Part of the index settings: a change re-chunks every document. 2: a heading opens a chunk, and
# chunks carry page/page_end/section/ocr.
CHUNKER_VERSION = 2
# Far above any real 150-word chunk (~1,000 characters); bounds pathological input.
MAX_CHUNK_CHARS = 8_000


@dataclass(frozen=True)
class ChunkSettings:
    """Chunk size and overlap in words; recorded in the index manifest."""

    max_words: int = 150
    overlap_words: int = 30


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int
    paragraph_start: bool


def chunk_id(source: str, start: int, end: int, text: str) -> str:
    """Stable id: the same file chunked the same way always gives the same ids."""
    digest = hashlib.sha256(f"{source}\x00{start}\x00{end}\x00{text}".encode()).hexdigest()
    return digest[:20]


def _units(text: str, max_words: int) -> list[_Unit]:
    """Sentences (trimmed), each flagged if it opens a paragraph; oversized ones are split further."""
    units: list[_Unit] = []
    paragraph_start = True
    for s_start, s_end in sentence_spans(text):
        start, end = trim_span(text, s_start, s_end)
        if start == end:
            paragraph_start = paragraph_start or "\n" in text[s_start:s_end]
            continue
        for piece_start, piece_end in _cap_chars(_split_long(text, start, end, max_words)):
            units.append(_Unit(piece_start, piece_end, len(text[piece_start:piece_end].split()), paragraph_start))
            paragraph_start = False
        paragraph_start = text[s_end - 1] == "\n" or text.startswith("\n", s_end)
    return units


def _split_long(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    """A sentence over `max_words` is cut at commas, then, if still too long, every `max_words` words."""
    if len(text[start:end].split(None, max_words)) <= max_words:
        return _cap_chars([(start, end)])
    pieces: list[tuple[int, int]] = []
    for c_start, c_end in clause_spans(text, start, end):
        c_start, c_end = trim_span(text, c_start, c_end)
        if c_start == c_end:
            continue
        if len(text[c_start:c_end].split(None, max_words)) <= max_words:
            pieces.append((c_start, c_end))
            continue
        # No punctuation to lean on (e.g. a 1 MB line): fall back to fixed word windows.
        cursor = c_start
        while cursor < c_end:
            stop = _after_n_words(text, cursor, c_end, max_words)
            s, e = trim_span(text, cursor, stop)
            if s < e:
                pieces.append((s, e))
            cursor = stop
    return pieces


def _cap_chars(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cut anything longer than MAX_CHUNK_CHARS (a "word" of 1 MB with no spaces) into windows."""
    out = []
    for start, end in spans:
        out.extend((s, min(s + MAX_CHUNK_CHARS, end)) for s in range(start, end, MAX_CHUNK_CHARS))
    return out


def _after_n_words(text: str, start: int, end: int, n: int) -> int:
    seen = 0
    in_word = False
    for i in range(start, end):
        if text[i].isspace():
            if in_word:
                seen += 1
                if seen == n:
                    return i
            in_word = False
        else:
            in_word = True
    return end


def split_document(document: Document, settings: ChunkSettings) -> list[Document]:
    """Chunks of one document, each with source, title, span, stable id and position, plus the
    page(s) and section the span lies in when the document records them (PDF, DOCX, HTML, Markdown)."""
    text = document.page_content
    units = _units(text, settings.max_words)
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    words = 0
    # A heading (DOCX/HTML/PDF/Markdown) always opens a chunk, so a chunk's section is the one its
    # text is in, not the previous one it merely starts in.
    headings = {int(offset) for offset, _ in document.metadata.get("sections") or ()}
    for unit in units:
        too_big = current and words + unit.words > settings.max_words
        # Prefer a paragraph boundary once the chunk has real content: keeps topics apart.
        natural_break = current and (
            (unit.paragraph_start and words >= settings.max_words // 2) or unit.start in headings
        )
        if too_big or natural_break:
            groups.append(current)
            current, words = (
                _overlap(current, settings.overlap_words) if too_big and not unit.paragraph_start else ([], 0)
            )
            if current and words + unit.words > settings.max_words:
                current, words = [], 0
        current.append(unit)
        words += unit.words
    if current:
        groups.append(current)

    source = document.metadata["source"]
    chunks = []
    for position, group in enumerate(groups):
        start, end = group[0].start, group[-1].end
        body = text[start:end]
        chunks.append(
            Document(
                page_content=body,
                id=chunk_id(source, start, end, body),
                metadata={
                    "id": chunk_id(source, start, end, body),
                    "source": source,
                    "title": document.metadata["title"],
                    "start": start,
                    "end": end,
                    "position": position,
                    # page / page_end / section / ocr, when the document has them
                    **locate(document.metadata, start, end),
                },
            )
        )
    return chunks


def _overlap(group: list[_Unit], overlap_words: int) -> tuple[list[_Unit], int]:
    """The trailing sentences of a chunk (up to `overlap_words`) that open the next one."""
    carried: list[_Unit] = []
    words = 0
    for unit in reversed(group):
        if words + unit.words > overlap_words:
            break
        carried.insert(0, unit)
        words += unit.words
    return carried, words
