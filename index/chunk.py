"""`Document`s to chunks: paragraph- and sentence-aware windows with overlap and exact source spans.

A chunk is a contiguous slice `text[start:end]` of its document, so a citation can always point at
the exact characters it came from. Sentences are never cut unless one alone is longer than a chunk.

Every chunk is at most MAX_CHUNK_CHARS long, whatever the input: a chunk is embedded, stored in a
Milvus VARCHAR and re-read at every question, so one unbounded chunk (a base64 image, a 5 MB line)
made every question slow and a Milvus build fail. Runs of more than MAX_RUN_CHARS characters without
whitespace (base64, minified data, hashes) are not prose: they are left out of the chunks.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass

from langchain_core.documents import Document

from core.config import Config
from index.arabic import clause_spans, sentence_spans, trim_span
from index.formats import locate

# Part of the index settings: a change re-chunks every document. 2: a heading opens a chunk, and
# chunks carry page/page_end/section/ocr and the paragraph they start in.
CHUNKER_VERSION = 2
# Four times a real 150-word chunk (~1,000 characters), so real chunks are never cut by it; also
# sizes the Milvus text field (index/store/milvus.py: 4 UTF-8 bytes a character). The encoder reads at
# most its 512 tokens of a chunk in any case (index/embed.py).
MAX_CHUNK_CHARS = 4_000
# A "word" longer than this is not a word: no language writes 500 characters without a space.
MAX_RUN_CHARS = 500
_NON_TEXT_RE = re.compile(rf"\S{{{MAX_RUN_CHARS + 1},}}")


@dataclass(frozen=True)
class ChunkSettings:
    """Chunk size and overlap in words; recorded in the index manifest."""

    max_words: int
    overlap_words: int

    @classmethod
    def from_config(cls, config: Config) -> ChunkSettings:
        return cls(config.chunk_max_words, config.chunk_overlap_words)


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int
    paragraph_start: bool
    after_gap: bool = False  # non-text was left out just before it: a chunk must not span it


def chunk_id(source: str, start: int, end: int, text: str) -> str:
    """Stable id: the same file chunked the same way always gives the same ids."""
    digest = hashlib.sha256(f"{source}\x00{start}\x00{end}\x00{text}".encode()).hexdigest()
    return digest[:20]


def _units(text: str, max_words: int) -> list[_Unit]:
    """Sentences (trimmed), each flagged if it opens a paragraph; oversized ones are split further;
    non-text runs are dropped."""
    units: list[_Unit] = []
    paragraph_start = True
    gap = False
    for s_start, s_end in sentence_spans(text):
        for start, end, gap_before in _text_parts(text, s_start, s_end):
            gap = gap or gap_before
            start, end = trim_span(text, start, end)
            if start == end:
                continue
            for piece_start, piece_end in _cap_chars(text, _split_long(text, start, end, max_words)):
                words = len(text[piece_start:piece_end].split())
                units.append(_Unit(piece_start, piece_end, words, paragraph_start, gap))
                paragraph_start = gap = False
        if not text[s_start:s_end].strip():
            paragraph_start = paragraph_start or "\n" in text[s_start:s_end]
            continue
        paragraph_start = text[s_end - 1] == "\n" or text.startswith("\n", s_end)
    return units


def _text_parts(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """text[start:end] without its non-text runs: (start, end, a run was dropped just before)."""
    parts: list[tuple[int, int, bool]] = []
    cursor, gap = start, False
    for match in _NON_TEXT_RE.finditer(text, start, end):
        parts.append((cursor, match.start(), gap))
        cursor, gap = match.end(), True
    parts.append((cursor, end, gap))
    return parts


def _split_long(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int]]:
    """A sentence over `max_words` is cut at commas, then, if still too long, every `max_words` words."""
    if len(text[start:end].split(None, max_words)) <= max_words:
        return [(start, end)]
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


def _cap_chars(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cut anything longer than MAX_CHUNK_CHARS into windows, at the last space where there is one."""
    out = []
    for start, end in spans:
        while end - start > MAX_CHUNK_CHARS:
            limit = start + MAX_CHUNK_CHARS
            space = max(text.rfind(" ", start + MAX_CHUNK_CHARS // 2, limit), text.rfind("\n", start, limit))
            cut = space if space > start + MAX_CHUNK_CHARS // 2 else limit
            piece = trim_span(text, start, cut)
            if piece[0] < piece[1]:
                out.append(piece)
            start = trim_span(text, cut, end)[0]
        if start < end:
            out.append((start, end))
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
        too_big = current and _too_big(current, words, unit, settings.max_words)
        # Prefer a paragraph boundary once the chunk has real content: keeps topics apart.
        natural_break = current and (
            (unit.paragraph_start and words >= settings.max_words // 2) or unit.start in headings
        )
        if too_big or natural_break or (current and unit.after_gap):
            groups.append(current)
            carry = too_big and not unit.paragraph_start and not unit.after_gap
            current, words = _overlap(current, settings.overlap_words) if carry else ([], 0)
            if current and _too_big(current, words, unit, settings.max_words):
                current, words = [], 0
        current.append(unit)
        words += unit.words
    if current:
        groups.append(current)

    source = document.metadata["source"]
    paragraph_starts = [u.start for u in units if u.paragraph_start]
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
                    # 1-based paragraph the chunk starts in: how a reader finds it (UI, CLI)
                    "paragraph": max(1, bisect.bisect_right(paragraph_starts, start)),
                    # page / page_end / section / ocr, when the document has them
                    **locate(document.metadata, start, end),
                },
            )
        )
    return chunks


def _too_big(group: list[_Unit], words: int, unit: _Unit, max_words: int) -> bool:
    """Adding `unit` would pass the word budget or the character cap (spans include the gaps)."""
    return words + unit.words > max_words or unit.end - group[0].start > MAX_CHUNK_CHARS


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


def embedding_text(chunk: Document) -> str:
    """What the encoder sees for a chunk, and what BM25 counts: its document title gives it context
    (who/what it is about)."""
    return f"{chunk.metadata['title']}\n{chunk.page_content}"
