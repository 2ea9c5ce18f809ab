"""The documents panel's work: list, add (upload) and remove documents, keeping the index in step.

Checks happen here, on the server, whatever the page allowed: type, size, name, decodability,
duplicates. A rejected file changes nothing; accepted files are written to the documents folder and
indexed in one atomic index write.
"""

from __future__ import annotations

import contextlib
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from index.build import apply_changes
from index.formats import MAX_BYTES
from index.load import SUPPORTED_SUFFIXES, UnreadableFile, load_file
from index.store import atomic_write
from rag.chain import Pipeline

_MAX_NAME_BYTES = 200  # well under the usual 255-byte file-name limit


def _safe_part(text: str) -> str:
    """Letters, digits and combining marks (Arabic harakat) stay; anything else becomes '_'."""
    out = "".join(c if c.isalnum() or unicodedata.category(c).startswith("M") or c in "-_ ." else "_" for c in text)
    return re.sub(r"_{2,}", "_", out)


def safe_name(name: str) -> str:
    """A file name that cannot leave the documents folder: base name only, no control or path
    characters, no leading dots, at most 200 bytes; Arabic letters and marks are kept."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = _safe_part(stem).strip(" ._") or "document"
    suffix = _safe_part(suffix).strip(" _.").lower()
    tail = f".{suffix}" if suffix else ""
    while len((stem + tail).encode()) > _MAX_NAME_BYTES and len(stem) > 1:
        stem = stem[:-1]
    return stem + tail


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


@dataclass
class UploadReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def message(self) -> str:
        lines = []
        if self.added:
            lines.append(f"Indexed: {', '.join(self.added)}")
        if self.updated:
            lines.append(f"Re-indexed (changed): {', '.join(self.updated)}")
        if self.duplicates:
            lines.append(f"Already indexed: {', '.join(self.duplicates)}")
        if self.rejected:
            lines.append("Rejected: " + "; ".join(self.rejected))
        return "\n".join(lines) or "Nothing to do."


class DocumentLibrary:
    """Adds and removes documents of a running pipeline; one writer at a time."""

    def __init__(self, pipeline: Pipeline, max_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        return self.pipeline.config.docs_dir

    def rows(self) -> list[list[object]]:
        """(title, file, chunks, size in KB) of every indexed document."""
        files = self.pipeline.index.files
        return [
            [info["title"], name, info["chunks"], round(info["bytes"] / 1024, 1)]
            for name, info in sorted(files.items())
        ]

    def names(self) -> list[str]:
        return sorted(self.pipeline.index.files)

    def add(self, paths: list[tuple[Path, str]]) -> UploadReport:
        """Index uploaded files, given as (temporary path, name the user gave it)."""
        report = UploadReport()
        accepted = []
        with self._lock:
            known = {info["sha256"]: name for name, info in self.pipeline.index.files.items()}
            for path, original in paths:
                name = safe_name(original)
                suffix = Path(name).suffix.lower()
                if suffix not in SUPPORTED_SUFFIXES:
                    report.rejected.append(f"{original}: only {' '.join(SUPPORTED_SUFFIXES)} files are accepted")
                    continue
                size = path.stat().st_size
                limit = MAX_BYTES.get(suffix, self.max_bytes)  # per type: PDF 50 MB, DOCX 20 MB…
                if size > limit:
                    report.rejected.append(
                        f"{original}: {size / 2**20:.1f} MB is over the {limit / 2**20:.0f} MB limit for {suffix} files"
                    )
                    continue
                try:
                    document = load_file(path, name)
                except (UnreadableFile, OSError) as exc:
                    report.rejected.append(f"{original}: {exc}")
                    continue
                sha = document.metadata["sha256"]
                if sha in known or any(d.metadata["sha256"] == sha for d, _ in accepted):
                    report.duplicates.append(f"{original} (same content as {known.get(sha, name)})")
                    continue
                accepted.append((document, path))
            if not accepted:
                return report
            written: list[Path] = []
            try:
                for document, path in accepted:
                    target = self.folder / document.metadata["source"]
                    _copy_atomic(path, target)
                    written.append(target)
                index, build = apply_changes(self.pipeline.config, self.pipeline.embedder, [d for d, _ in accepted])
            except OSError as exc:
                # Nothing half-done: the index is untouched (atomic write), so undo the copies too.
                for target in written:
                    with contextlib.suppress(OSError):
                        target.unlink()
                report.rejected.extend(
                    f"{d.metadata['source']}: could not be stored ({exc.strerror or exc})" for d, _ in accepted
                )
                return report
            self.pipeline.reload(index)
            report.added, report.updated = build.added, build.updated
        return report

    def remove(self, name: str) -> str:
        """Drop a document from the index and the documents folder."""
        with self._lock:
            if name not in self.pipeline.index.files:
                return f"{name} is not in the index."
            index, _ = apply_changes(self.pipeline.config, self.pipeline.embedder, [], removals=[name])
            self.pipeline.reload(index)
            target = (self.folder / name).resolve()
            if target.is_relative_to(self.folder.resolve()):
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        return f"Removed {name}."


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda handle: handle.write(source.read_bytes()))
