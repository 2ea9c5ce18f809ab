"""Files to `Document`s: find .txt/.md files, detect their encoding, derive a title.

A file that cannot be read as text is reported by name and skipped; it never stops the rest of the
collection from being indexed.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from core.errors import UserError
from index import formats
from index.arabic import language
from index.chunk import MAX_RUN_CHARS

PLAIN_SUFFIXES = (".txt", ".md")


def supported_suffixes() -> tuple[str, ...]:
    """Plain text, Markdown and every registered rich format (index/formats FORMATS)."""
    return (*PLAIN_SUFFIXES, *formats.FORMATS)


MAX_FILE_BYTES = 64 * 1024 * 1024
# A document's name is its path inside the documents folder; PATH_MAX on Linux. Stores size their
# name fields from it (index/store/milvus.py).
MAX_SOURCE_CHARS = 4096
_TITLE_MAX_CHARS = 120
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_ARABIC_RE = re.compile(r"[\u0600-\u06ff]")
_LETTER_RE = re.compile(r"[^\W\d_]")
_WORD_RE = re.compile(rf"(?<!\S)\S{{1,{MAX_RUN_CHARS}}}(?!\S)")  # a run short enough to be a word


_TERMINAL_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Document text and file names may carry escape sequences that would drive a terminal
    (clear it, retitle it); printed output shows them as inert replacement characters."""
    return _TERMINAL_CONTROL_RE.sub("\ufffd", text)


# Bidirectional formatting controls (embeddings, overrides, isolates, marks).
_BIDI_CONTROL_RE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_name(name: str) -> str:
    """A file name (or title) as shown in the CLI and the chat. A right-to-left override makes
    `evil\u202egnp.txt` display as `eviltxt.png`, so bidi controls are shown as visible replacement
    characters, as are terminal controls. Document text keeps its own bidi marks (Arabic needs them)."""
    return terminal_safe(_BIDI_CONTROL_RE.sub("\ufffd", name))


class UnreadableFile(UserError):
    """A file that is not text in an encoding we can recognise."""


@dataclass(frozen=True)
class Skipped:
    """A file left out of the index, and why (shown to the user)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        name = self.path.name.encode("utf-8", "replace").decode("utf-8")
        return terminal_safe(f"skipped {safe_name(name)}: {self.reason}")


# Legacy Arabic code pages, most common first (the order settles exact ties).
_LEGACY = (("cp1256", "cp1256"), ("iso8859_6", "iso-8859-6"), ("mac_arabic", "mac-arabic"))
_UTF16 = (("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be"))
# Characters Arabic prose is made of; a wrong code page turns letters into é, ê, ç, ×, NBSP instead.
_UNEXPECTED_RE = re.compile("[^\t\n\x0b\x0c\r\x20-\x7e\u0600-\u06ff«»–—…‘’“”\u200c-\u200f]")
# Arabic letter frequencies in news prose (percent), most frequent first. A wrong code page maps
# frequent letters to rare ones (or Latin), so the mean log-frequency of the letters tells them apart.
_LETTER_PERCENT = dict(
    zip(
        "اليموترنةدعسهبفكأحقجشخىضزطإصذؤغظثئءآ",
        map(
            float,
            "16 12.4 8.3 6.4 6 4.9 4.8 4.7 3.7 3.5 3.5 2.5 2.3 2.1 2.1 2 1.7 1.7 1.6 1 .9 .8 .8 .8 .7 .7 .7 .7 .5 .5 .5 .4 .4 .3 .3 .1".split(),
        ),
        strict=True,
    )
)
_RARE_LETTER_PERCENT = 0.02
_MIN_EXPECTED_SHARE = 0.97
# Log-likelihood (nats, summed over the sample's letters) by which the best reading must beat a
# different one: a few letters of a short file prove little, a paragraph proves a lot.
_MIN_MARGIN = 3.0
_CP1256_PRIOR = 2.0  # Windows-1256 is by far the most common legacy Arabic encoding
_SAMPLE_BYTES = 1 << 16


def decode(data: bytes) -> tuple[str, str]:
    """Return (text, encoding): BOMs, strict UTF-8, then the best-scoring of UTF-16 without BOM,
    Windows-1256, ISO-8859-6 and Mac-Arabic.

    The single-byte code pages decode almost any bytes, so a reading is accepted only when it looks
    like Arabic prose (no control characters, no stray Latin letters, mostly Arabic letters with
    the usual letter frequencies). When two readings differ and neither clearly wins, the file is
    skipped with a message rather than indexed as garbage.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return _checked(data, "utf-8-sig")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _checked(data, "utf-16")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # A UTF-8 file with a few damaged bytes (a truncated download) is still UTF-8: read as
        # Windows-1256 it would become mojibake that passes for Arabic.
        lenient = data.decode("utf-8", "replace")
        damaged = lenient.count("\ufffd")
        if 0 < damaged <= max(3, len(lenient) // 1000) and damaged * 20 <= len(lenient) and "\x00" not in lenient:
            return _lines(lenient), "utf-8 (damaged bytes replaced)"
    else:
        if "\x00" not in text:  # NULs: UTF-16 without a BOM (or binary), scored below
            return _lines(text), "utf-8"
    return _guess(data)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _checked(data: bytes, encoding: str) -> tuple[str, str]:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(code="unreadable_bom", params={"encoding": encoding}) from exc
    if "\x00" in text or (encoding != "utf-8-sig" and _CONTROL_RE.search(text)):
        raise UnreadableFile(code="unreadable_binary")
    return _lines(text), encoding


def _guess(data: bytes) -> tuple[str, str]:
    """Score every reading on a sample; the best must win by a margin over a different reading."""
    sample = data[:_SAMPLE_BYTES]
    readings: list[tuple[float, str, str, str]] = []  # (score, label, codec, sample text)
    for codec, label in _UTF16 + _LEGACY:
        if codec.startswith("utf-16") and len(data) % 2:
            continue
        try:
            text = sample.decode(codec)
        except UnicodeDecodeError:
            continue
        if _CONTROL_RE.search(text) or len(_UNEXPECTED_RE.findall(text)) > (1 - _MIN_EXPECTED_SHARE) * len(text):
            continue
        if not codec.startswith("utf-16") and not _looks_arabic(text):
            continue
        readings.append((_letter_fit(text) + (_CP1256_PRIOR if codec == "cp1256" else 0.0), label, codec, text))
    if not readings:
        if b"\x00" in sample[:4096]:
            raise UnreadableFile(code="unreadable_binary")
        raise UnreadableFile(code="unreadable_encoding")
    readings.sort(key=lambda r: -r[0])  # stable: ties keep the _LEGACY order
    best = readings[0]
    rival = next((r for r in readings[1:] if r[3] != best[3]), None)
    if rival is not None and best[0] - rival[0] < _MIN_MARGIN:
        raise UnreadableFile(code="unreadable_ambiguous", params={"first": best[1], "second": rival[1]})
    try:
        text = data.decode(best[2])
    except UnicodeDecodeError as exc:
        raise UnreadableFile(code="unreadable_inconsistent", params={"encoding": best[1], "offset": exc.start}) from exc
    if _CONTROL_RE.search(text):
        raise UnreadableFile(code="unreadable_control", params={"encoding": best[1]})
    return _lines(text), best[1]


def _letter_fit(text: str) -> float:
    """Log-likelihood of the Arabic letters under Arabic letter frequencies (0 when there are none)."""
    letters = _ARABIC_RE.findall(text)
    if not letters:
        return 0.0
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter] = counts.get(letter, 0) + 1
    total = sum(n * math.log(_LETTER_PERCENT.get(c, _RARE_LETTER_PERCENT) / 100) for c, n in counts.items())
    return total


def _looks_arabic(text: str) -> bool:
    letters = _LETTER_RE.findall(text)
    return bool(letters) and sum(1 for c in letters if _ARABIC_RE.match(c)) / len(letters) > 0.6


def derive_title(text: str, fallback: str) -> str:
    """The first line when it reads as a heading (short, no sentence end), else its first words."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return fallback
    first = lines[0].lstrip("#").strip()
    is_heading = lines[0].startswith("#") or (
        len(first) <= _TITLE_MAX_CHARS and len(lines) > 1 and not first.endswith((".", "؟", "?", "!", ":"))
    )
    if is_heading and first:
        return first[:_TITLE_MAX_CHARS]
    words = first.split()
    return (" ".join(words[:8]) + (" …" if len(words) > 8 else ""))[: _TITLE_MAX_CHARS + 2]


def check_inside(path: Path, root: Path, follow_external_symlinks: bool = False) -> None:
    """Refuse a file whose real location is outside the documents folder `root`.

    A symlink `passwd.txt -> /etc/passwd` dropped into the folder would otherwise be indexed and
    served to every user of the chat. Links that stay inside the folder are followed. Every loader
    goes through `load_file`, which calls this, so the rule is the same for every file type.
    """
    if follow_external_symlinks:
        return
    real_root = root.resolve()
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling link or a loop
        raise UnreadableFile(
            code="unreadable_broken_link", params={"error": getattr(exc, "strerror", None) or exc}
        ) from exc
    if not target.is_relative_to(real_root):
        raise UnreadableFile(code="unreadable_outside")


def load_file(
    path: Path, name: str | None = None, *, root: Path | None = None, follow_external_symlinks: bool = False
) -> Document:
    """Read one file into a Document (original text kept intact for display and citation spans).

    With `root` (the documents folder) the file must really be inside it: see `check_inside`.
    """
    suffix = Path(name or path.name).suffix.lower()
    if suffix not in supported_suffixes():
        raise UnreadableFile(code="unreadable_type", params={"suffix": suffix or "(none)"})
    if root is not None:
        check_inside(path, root, follow_external_symlinks)
    size = path.stat().st_size
    limit = formats.max_bytes(suffix, MAX_FILE_BYTES)
    if size > limit:
        raise UnreadableFile(
            code="unreadable_size", params={"size": f"{size / 2**20:.0f}", "limit": limit // 2**20, "suffix": suffix}
        )
    data = path.read_bytes()
    extra: dict[str, Any] = {}
    if suffix in formats.FORMATS:
        try:
            found = formats.extract(data, suffix)
        except formats.FormatError as exc:
            raise UnreadableFile.like(exc) from exc
        text, encoding, extra = found.text, found.kind, found.metadata()
    else:
        text, encoding = decode(data)
        if suffix == ".md" and (headings := formats.markdown_sections(text)):
            extra["sections"] = headings
    if not text.strip():
        raise UnreadableFile(code="unreadable_empty")
    if not _WORD_RE.search(text):
        raise UnreadableFile(code="unreadable_no_words", params={"limit": MAX_RUN_CHARS})
    if len(text) > formats.MAX_TEXT_CHARS:  # plain text, Markdown, OCR and PDF (DOCX, HTML stop early)
        raise UnreadableFile.like(formats.too_long(len(text)))
    source = name or path.name
    return Document(
        page_content=text,
        metadata={
            "source": source,
            "title": extra.pop("title", "") or derive_title(text, Path(source).stem),
            "sha256": hashlib.sha256(data).hexdigest(),
            "encoding": encoding,
            "bytes": size,
            "language": language(text[:5000]),
            **extra,
        },
    )


def candidates(folder: Path) -> list[tuple[str, Path]]:
    """(name, path) of every file under `folder` a build would read: supported suffixes, no
    hidden parts; named by the path relative to the folder."""
    supported = supported_suffixes()
    return [
        (path.relative_to(folder).as_posix(), path)
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
        if path.suffix.lower() in supported
        and not any(part.startswith(".") for part in path.parts[len(folder.parts) :])
    ]


def load_folder(folder: Path, follow_external_symlinks: bool = False) -> tuple[list[Document], list[Skipped]]:
    """Every supported file under `folder` (sorted, recursive), plus the ones that were skipped.

    Documents are named by their path relative to the folder, so two files with the same name in
    different subfolders stay distinct. Symlinks are followed only when their target is inside
    `folder`, unless `follow_external_symlinks`.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"documents folder not found: {folder}")
    loaded = [load_candidate(name, path, folder, follow_external_symlinks) for name, path in candidates(folder)]
    return split_loaded(loaded)


def load_candidate(name: str, path: Path, folder: Path, follow_external_symlinks: bool = False) -> Document | Skipped:
    """One file of `candidates(folder)` read, or why it is left out: the unit of work a build hands
    to a worker (index/fanout.py), so a fanned-out build reads and skips exactly as this one does."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return Skipped(path, "file name is not valid UTF-8; rename it")
    if len(name) > MAX_SOURCE_CHARS:
        return Skipped(path, f"path of {len(name):,} characters, over {MAX_SOURCE_CHARS:,}; move it up or rename it")
    try:
        return load_file(path, name, root=folder, follow_external_symlinks=follow_external_symlinks)
    except (UnreadableFile, OSError) as exc:
        return Skipped(path, str(exc))


def split_loaded(loaded: list[Document | Skipped]) -> tuple[list[Document], list[Skipped]]:
    """Documents and skipped files apart, each in folder order."""
    return [d for d in loaded if isinstance(d, Document)], [s for s in loaded if isinstance(s, Skipped)]
