"""The document service: list, add (upload), remove and restore documents, keeping the index in step.

Below both interfaces (the UI's documents panel and the API's /api/documents routes), so an upload
gets the same checks wherever it comes from: type, size, name, decodability, duplicates. A rejected
file changes nothing; accepted files are written to the documents folder and indexed in one atomic
index write. Results carry catalogue keys and parameters (core/i18n.py), which each interface
renders in its user's language; the index it serves is reached through `Served` (the pipeline).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from langchain_core.documents import Document

from core.config import Config
from core.errors import UserError
from core.i18n import t
from index.build import apply_changes
from index.embed import VectorEmbeddings
from index.formats import MAX_TEXT_CHARS, largest_cap, max_bytes
from index.load import UnreadableFile, load_file, supported_suffixes
from index.load import safe_name as displayed
from index.store import StoredIndex, atomic_write
from index.trash import NotMoved, Trash, TrashError, TrashItem, free_name

_MAX_NAME_BYTES = 200  # well under the usual 255-byte file-name limit
# One writer per index folder in this process, however many libraries serve it (the UI and the API).
_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(index_dir: Path) -> threading.Lock:
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(index_dir.resolve(), threading.Lock())


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
class FileResult:
    """One uploaded file's fate, shown as its own line under the upload area (and in the API's
    answer): a batch of five files needs five answers, not one sentence per kind of fate."""

    name: str  # as the user gave it
    outcome: str = "pending"  # indexed | reindexed | renamed | replaced | duplicate | rejected
    stored: str = ""  # the name in the documents folder
    same_as: str = ""  # for a duplicate: the indexed document with the same content
    # A rejection's reason: a catalogue key (core/i18n.py) and its parameters, so the line can be
    # shown in either language (a loader's reason too: its UnreadableFile's code).
    reason_key: str = ""
    reason: dict[str, str] = field(default_factory=dict)

    def why(self, lang: str = "en") -> str:
        """The reason of a rejection in `lang` (a loader's explanation stays as the loader wrote it)."""
        return t(lang, self.reason_key, **self.reason) if self.reason_key else self.reason.get("text", "")

    def text(self, lang: str = "en") -> str:
        """What happened to the file, in `lang`."""
        key = f"file_{self.outcome}"
        if self.outcome == "duplicate" and self.same_as == self.name:
            key = "file_duplicate_same_name"
        elif self.outcome == "indexed" and self.stored and self.stored != unicodedata.normalize("NFC", self.name):
            key = "file_indexed_as"  # made safe (path characters, length): say under what name
        return t(lang, key, stored=self.stored, same=self.same_as, reason=self.why(lang))

    def line(self, lang: str = "en") -> str:
        """'name: what happened', in `lang`."""
        return f"{self.name}: {self.text(lang)}"

    def duplicate_entry(self, lang: str = "en") -> str:
        """A duplicate as the report lists it: its name, with the document it repeats when that
        has another name."""
        return self.name if self.same_as == self.name else t(lang, "duplicate_of", name=self.name, same=self.same_as)

    def reject(self, key: str, **params: object) -> FileResult:
        """Marks the file rejected for the catalogue reason `key` (see `reason_key`)."""
        self.outcome, self.reason_key, self.reason = "rejected", key, {k: str(v) for k, v in params.items()}
        return self


@dataclass(frozen=True)
class UploadStep:
    """Where a running upload is, for a progress display: file `done` of `total` (`name`) is being
    read, or passage `done` of `total` has been embedded (one batch for all accepted files)."""

    stage: str  # "reading" | "embedding"
    done: int
    total: int
    name: str = ""


StepFn = Callable[[UploadStep], None]


@dataclass
class UploadReport:
    """Each uploaded file's fate, for the status line and tests."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)  # "given name → stored name"
    replaced: list[str] = field(default_factory=list)  # previous versions moved to the trash
    files: list[FileResult] = field(default_factory=list)  # one per uploaded file, in upload order

    def reject(self, result: FileResult) -> None:
        """Record a rejected file in both views (its line, and the API's `rejected` list)."""
        if not any(f is result for f in self.files):  # by identity: two files can fail alike
            self.files.append(result)
        self.rejected.append(f"{result.name}: {result.why()}")

    def message(self, lang: str = "en") -> str:
        """One line per kind of fate, in the page's language (file names as they are)."""
        duplicates = [f.duplicate_entry(lang) for f in self.files if f.outcome == "duplicate"]
        lines = [
            t(lang, key, names=", ".join(names))
            for key, names in (
                ("indexed", self.added),
                ("reindexed", self.updated),
                ("renamed", self.renamed),
                ("replaced", self.replaced),
                ("duplicates", duplicates),
            )
            if names
        ]
        if self.rejected:  # each reason in the page's language where it has a catalogue key
            reasons = [f"{f.name}: {f.why(lang)}" for f in self.files if f.outcome == "rejected"]
            lines.append(t(lang, "rejected", reasons="; ".join(reasons)))
        return "\n".join(lines) or t(lang, "nothing_to_do")


class RestoreFailed(UserError):
    """A trash item that could not be put back; `cause` says why (in either language when it is a
    coded `UserError`: the item has left the trash, the file is no longer readable)."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(code="restore_failed", params={"reason": cause})

    def localized(self, lang: str | None) -> str:
        reason = self.cause.localized(lang) if isinstance(self.cause, UserError) else str(self.cause)
        return t(lang, "restore_failed", reason=reason)


@dataclass(frozen=True)
class Restoration:
    """What one restore did: the trash item, and the name it has in the folder again."""

    item: TrashItem
    name: str

    def message(self, lang: str = "en") -> str:
        if self.name != self.item.name:
            return t(lang, "restored_as", title=self.item.title, name=self.name)
        return t(lang, "restored", title=self.item.title)


@dataclass(frozen=True)
class Removal:
    """What one removal did: the document, its title and the trash item it made."""

    name: str
    title: str
    item: TrashItem | None

    def message(self, lang: str = "en") -> str:
        return t(lang, "removed", title=self.title, name=self.name)


def plain_cap(config: Config) -> int:
    """The size cap of an uploaded plain-text or Markdown file, in bytes (Config.upload_max_mb)."""
    return config.upload_max_mb * 2**20


def largest_upload(config: Config) -> int:
    """The largest file an upload may bring: what a route lets through before the library applies
    each type's own cap (plain text: `plain_cap`; PDF, DOCX…: index/formats FORMATS)."""
    return max(plain_cap(config), largest_cap())


class Served(Protocol):
    """What the service needs of the app it serves (rag.chain.Pipeline): the settings, the
    embedder, the index answering now, and a way to swap in the index a change committed."""

    config: Config
    embedder: VectorEmbeddings

    @property
    def index(self) -> StoredIndex: ...

    def reload(self, index: StoredIndex) -> None: ...


S = TypeVar("S", bound=Served)


class DocumentLibrary(Generic[S]):
    """Adds, removes and restores documents of a running pipeline; one writer at a time.

    Nothing the user put in the documents folder is ever deleted here: a removed document and the
    previous version of a replaced one go to the trash (index/trash.py) until the user empties it.
    """

    def __init__(self, pipeline: S, config: Config | None = None, max_bytes: int | None = None) -> None:
        """Plain-text files are capped at `max_bytes`, else at `config`'s upload_max_mb (default:
        the pipeline's settings); rich formats have their own caps (index/formats FORMATS)."""
        self.pipeline = pipeline
        self.max_bytes = plain_cap(config or pipeline.config) if max_bytes is None else max_bytes
        self._lock = _writer_lock(pipeline.config.index_dir)

    @property
    def folder(self) -> Path:
        return self.pipeline.config.docs_dir

    @property
    def trash(self) -> Trash:
        return Trash(self.pipeline.config.index_dir, self.folder)

    def rows(self) -> list[list[object]]:
        """(title, file, chunks, size in KB) of every indexed document."""
        files = self.pipeline.index.files
        return [
            [displayed(info["title"]), displayed(name), info["chunks"], round(info["bytes"] / 1024, 1)]
            for name, info in sorted(files.items())
        ]

    def names(self) -> list[str]:
        return sorted(self.pipeline.index.files)

    def choices(self) -> list[tuple[str, str]]:
        """(label, file name) pairs for a picker: the title first, since file names can be opaque."""
        return [
            (displayed(f"{info['title']} ({name})"), name) for name, info in sorted(self.pipeline.index.files.items())
        ]

    def title(self, name: str) -> str:
        info = self.pipeline.index.files.get(name)
        return str(info["title"]) if info else name

    def add(self, paths: list[tuple[Path, str]], on_step: StepFn | None = None) -> UploadReport:
        """Index uploaded files, given as (temporary path, name the user gave it); `on_step` hears
        of each file as it is read and of the embedding as it goes (a scanned PDF can take minutes)."""
        report = UploadReport()
        accepted: list[tuple[Document, Path]] = []
        step = on_step or (lambda _: None)
        with self._lock:
            known = {info["sha256"]: name for name, info in self.pipeline.index.files.items()}
            for number, (path, original) in enumerate(paths, 1):
                step(UploadStep("reading", number, len(paths), original))
                result = FileResult(original)
                name = safe_name(original)
                suffix = Path(name).suffix.lower()
                if suffix not in (supported := supported_suffixes()):
                    report.reject(result.reject("reason_type", types=" ".join(supported)))
                    continue
                size = path.stat().st_size
                limit = max_bytes(suffix, self.max_bytes)  # per type: PDF 50 MB, DOCX 20 MB…
                if size > limit:
                    report.reject(
                        result.reject(
                            "reason_size", size=f"{size / 2**20:.1f}", limit=f"{limit / 2**20:.0f}", suffix=suffix
                        )
                    )
                    continue
                try:
                    document = load_file(path, name)
                except UnreadableFile as exc:  # the loader's reason, by its catalogue key
                    report.reject(
                        result.reject(exc.code, **exc.params) if exc.code else result.reject("", text=str(exc))
                    )
                    continue
                except OSError as exc:
                    report.reject(result.reject("unreadable_io", error=getattr(exc, "strerror", None) or exc))
                    continue
                sha = document.metadata["sha256"]
                same = known.get(sha) or next(
                    (d.metadata["source"] for d, _ in accepted if d.metadata["sha256"] == sha), None
                )
                if same:
                    result.outcome, result.same_as = "duplicate", same
                    report.duplicates.append(result.duplicate_entry())
                    report.files.append(result)
                    continue
                # Two files of one batch that sanitise to one name both stay: the later gets a suffix.
                taken = {d.metadata["source"] for d, _ in accepted}
                if name in taken:
                    stored = free_name(self.folder, name, taken)
                    document.metadata["source"] = stored  # not read again: a PDF may take minutes of OCR
                    report.renamed.append(f"{original} → {stored}")
                    result.outcome = "renamed"
                target = self.folder / document.metadata["source"]
                if target.is_symlink() or (target.exists() and not target.is_file()):
                    # Replacing it would move a link or a folder to the trash; before, that failed
                    # mid-batch with files written and not indexed (issue 27 point 5).
                    report.reject(result.reject("reason_occupied", name=document.metadata["source"]))
                    continue
                held = sum(len(d.page_content) for d, _ in accepted)
                if held + len(document.page_content) > MAX_UPLOAD_CHARS:
                    # One batch is embedded under the index lock while every other upload waits.
                    report.reject(result.reject("reason_batch", limit=f"{MAX_UPLOAD_CHARS:,}"))
                    continue
                result.stored = document.metadata["source"]
                report.files.append(result)
                accepted.append((document, path))
            if accepted:
                self._store(accepted, report, step)
        return report

    def _store(self, accepted: list[tuple[Document, Path]], report: UploadReport, step: StepFn) -> None:
        """Write the accepted files and index them; an existing file of the same name goes to the
        trash first. On failure the folder and the index are as before."""
        trashed: list[TrashItem] = []
        written: list[Path] = []
        try:
            for document, path in accepted:
                name = document.metadata["source"]
                target = self.folder / name
                if target.exists() or target.is_symlink():
                    trashed.append(self.trash.put(name, "replaced", self.title(name)))
                _copy_atomic(path, target)
                written.append(target)
            index, build = apply_changes(
                self.pipeline.config,
                self.pipeline.embedder,
                [d for d, _ in accepted],
                progress=lambda done, total: step(UploadStep("embedding", done, total)),
            )
        except (OSError, TrashError) as exc:
            # Nothing half-done: the index is untouched (atomic write), so undo the copies too.
            for target in written:
                with contextlib.suppress(OSError):
                    target.unlink()
            for item in trashed:
                with contextlib.suppress(OSError):
                    self.trash.restore(item)
            for result in [f for f in report.files if f.stored]:
                report.reject(result.reject("reason_store", error=str(getattr(exc, "strerror", None) or exc)))
            return
        self.pipeline.reload(index)
        report.added, report.updated = build.added, build.updated
        report.replaced = [item.name for item in trashed]
        for result in report.files:
            if result.stored in report.replaced:
                result.outcome = "replaced"
            elif result.outcome == "pending":
                result.outcome = "reindexed" if result.stored in build.updated else "indexed"

    def remove(self, name: str, lang: str = "en") -> str:
        """Drop a document from the index; its file goes to the trash, from where it can be restored."""
        try:
            removal = self.take_out(name)
        except NotMoved as exc:
            return t(lang, "remove_failed", name=name, reason=exc.reason)
        if removal is None:
            return t(lang, "not_in_index", name=name)
        return removal.message(lang)

    def take_out(self, name: str) -> Removal | None:
        """`remove` as a result: None when this call removed nothing (not in the index, or another
        call removed it first), else the title and the trash item this call made (None when the
        file was already gone from the folder and the document was only dropped from the index)."""
        with self._lock:
            if name not in self.pipeline.index.files:
                return None
            title = self.title(name)
            item = None
            try:
                item = self.trash.put(name, "removed", title)
            except NotMoved:
                raise  # nothing removed: the file stays, indexed
            except TrashError:
                pass  # a file already gone from the folder: just unindex
            try:
                index, _ = apply_changes(self.pipeline.config, self.pipeline.embedder, [], removals=[name])
            except BaseException:
                if item is not None:
                    self.trash.restore(item)
                raise
            self.pipeline.reload(index)
        return Removal(name, title, item)

    def trash_choices(self, lang: str | None = "en") -> list[tuple[str, str]]:
        return [(displayed(item.label(lang)), item.id) for item in self.trash.items()]

    def restore(self, item_id: str, lang: str = "en") -> str:
        """`bring_back` as a line in the page's language."""
        try:
            return self.bring_back(item_id).message(lang)
        except RestoreFailed as exc:
            return exc.localized(lang)

    def bring_back(self, item_id: str) -> Restoration:
        """Put a trashed document back in the folder (under a free name) and index it again;
        raises RestoreFailed (the API's 409, not a message to match) when it cannot."""
        with self._lock:
            try:
                item = self.trash.get(item_id)
                name = self.trash.restore(item)
                document = load_file(self.folder / name, name)
            except (TrashError, UnreadableFile, OSError) as exc:
                raise RestoreFailed(exc) from exc
            index, _ = apply_changes(self.pipeline.config, self.pipeline.embedder, [document])
            self.pipeline.reload(index)
        return Restoration(item, name)

    def empty_trash(self, lang: str = "en") -> str:
        with self._lock:
            count = self.trash.empty()
        return t(lang, "emptied", count=count)


# Text per upload batch, in characters: two documents at the per-document cap (~6,000 chunks, about
# 12 minutes of embedding on 2 cores while other uploads wait for the index; issue 27 point 10).
MAX_UPLOAD_CHARS = 2 * MAX_TEXT_CHARS


def _umask() -> int:
    umask = os.umask(0o022)  # the only way to read it is to set it: done once, at import
    os.umask(umask)
    return umask


# An upload lands as a document the user's other tools can read: 0666 less the umask, as a file
# they saved there themselves would be (mkstemp's 0600 kept them out; issue 27 point 5).
UPLOAD_MODE = 0o666 & ~_umask()


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda handle: handle.write(source.read_bytes()), mode=UPLOAD_MODE)
