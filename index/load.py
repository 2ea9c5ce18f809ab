"""Files to `Document`s: find .txt/.md files, detect their encoding, derive a title.

A file that cannot be read as text is reported by name and skipped; it never stops the rest of the
collection from being indexed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from index import formats
from index.arabic import language

SUPPORTED_SUFFIXES = (".txt", ".md", *formats.SUFFIXES)
MAX_FILE_BYTES = 64 * 1024 * 1024
_TITLE_MAX_CHARS = 120
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_ARABIC_RE = re.compile(r"[\u0600-\u06ff]")
_LETTER_RE = re.compile(r"[^\W\d_]")


_TERMINAL_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Document text and file names may carry escape sequences that would drive a terminal
    (clear it, retitle it); printed output shows them as inert replacement characters."""
    return _TERMINAL_CONTROL_RE.sub("\ufffd", text)


class UnreadableFile(ValueError):
    """A file that is not text in an encoding we can recognise."""


@dataclass(frozen=True)
class Skipped:
    """A file left out of the index, and why (shown to the user)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        name = self.path.name.encode("utf-8", "replace").decode("utf-8")
        return terminal_safe(f"skipped {name}: {self.reason}")


def decode(data: bytes) -> tuple[str, str]:
    """Return (text, encoding). Tries BOMs, strict UTF-8, then Windows-1256 for Arabic files.

    Windows-1256 maps almost every byte to something, so it is accepted only when the result looks
    like Arabic prose: no control characters and most letters Arabic.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        candidates = [("utf-8-sig", data)]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = [("utf-16", data)]
    else:
        # A UTF-8 file with a few damaged bytes (a truncated download) is still UTF-8: read as
        # Windows-1256 it would become mojibake that passes for Arabic.
        lenient = data.decode("utf-8", "replace")
        damaged = lenient.count("\ufffd")
        if 0 < damaged <= max(3, len(lenient) // 1000) and "\x00" not in lenient:
            return lenient.replace("\r\n", "\n").replace("\r", "\n"), "utf-8 (damaged bytes replaced)"
        candidates = [("utf-8", data), ("cp1256", data)]
    for encoding, raw in candidates:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        # UTF-8 is self-validating; the other two decode junk too, so they must also look like text.
        if "\x00" in text or (not encoding.startswith("utf-8") and _CONTROL_RE.search(text)):
            continue
        if encoding == "cp1256" and not _looks_arabic(text):
            continue
        return text.replace("\r\n", "\n").replace("\r", "\n"), encoding
    if b"\x00" in data[:4096]:
        raise UnreadableFile("binary content, not text")
    raise UnreadableFile("not valid UTF-8, UTF-16 or Windows-1256 text")


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


def load_file(path: Path, name: str | None = None) -> Document:
    """Read one file into a Document (original text kept intact for display and citation spans)."""
    suffix = Path(name or path.name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableFile(f"unsupported type {suffix or '(none)'}; use .txt, .md, .pdf, .docx, .html or an image")
    size = path.stat().st_size
    limit = formats.MAX_BYTES.get(suffix, MAX_FILE_BYTES)
    if size > limit:
        raise UnreadableFile(f"{size / 2**20:.0f} MB is over the {limit // 2**20} MB limit for {suffix} files")
    data = path.read_bytes()
    extra: dict[str, Any] = {}
    if suffix in formats.SUFFIXES:
        try:
            found = formats.extract(data, suffix)
        except formats.FormatError as exc:
            raise UnreadableFile(str(exc)) from exc
        text, encoding, extra = found.text, found.kind, found.metadata()
    else:
        text, encoding = decode(data)
        if suffix == ".md" and (headings := formats.markdown_sections(text)):
            extra["sections"] = headings
    if not text.strip():
        raise UnreadableFile("empty file")
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


def load_folder(folder: Path) -> tuple[list[Document], list[Skipped]]:
    """Every supported file under `folder` (sorted, recursive), plus the ones that were skipped.

    Documents are named by their path relative to the folder, so two files with the same name in
    different subfolders stay distinct.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"documents folder not found: {folder}")
    documents: list[Document] = []
    skipped: list[Skipped] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in SUPPORTED_SUFFIXES or any(
            part.startswith(".") for part in path.parts[len(folder.parts) :]
        ):
            continue
        name = path.relative_to(folder).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(Skipped(path, "file name is not valid UTF-8; rename it"))
            continue
        try:
            documents.append(load_file(path, name))
        except (UnreadableFile, OSError) as exc:
            skipped.append(Skipped(path, str(exc)))
    return documents, skipped
