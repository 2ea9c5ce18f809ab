"""The ingestion pipeline: folder -> Documents -> chunks -> vectors -> persisted index, incrementally.

Only files whose content hash changed are re-chunked and re-embedded; vectors of unchanged files are
carried over from the live index, and removed files simply drop out of the new generation.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from langchain_core.documents import Document

from core.config import SEEDS_DIR, Config
from core.errors import UserError
from core.registry import INGESTERS, STORES
from index import store
from index.arabic import NORMALIZATION_VERSION
from index.chunk import CHUNKER_VERSION, ChunkSettings, embedding_text, split_document
from index.embed import ProgressFn, VectorEmbeddings
from index.load import Skipped, candidates, load_folder

LogFn = Callable[[str], None]


@dataclass
class BuildReport:
    """What a build did, for the CLI, the UI and tests."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    embedded_chunks: int = 0
    total_chunks: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def summary(self) -> str:
        parts = [
            f"{len(self.added)} added",
            f"{len(self.updated)} updated",
            f"{len(self.removed)} removed",
            f"{len(self.unchanged)} unchanged",
            f"{len(self.skipped)} skipped",
        ]
        return f"{', '.join(parts)}; embedded {self.embedded_chunks} chunks, {self.total_chunks} in the index"


class Ingest(Protocol):
    """The work of a build that scales with the documents: reading files, chunking, embedding.

    Here in this process (`LocalIngest`) or fanned out over workers (index/fanout.py), chosen by
    `Config.ingest` from core/registry.py's INGESTERS. Every implementation returns what this
    process would, in the same order, so the index and manifest written are the same; deciding
    what changed and committing stay in `apply_changes`, under the store's lock.
    """

    def load(self, folder: Path, follow_external_symlinks: bool) -> tuple[list[Document], list[Skipped]]:
        """`index.load.load_folder`'s result."""
        ...

    def chunk(self, documents: list[Document], settings: ChunkSettings) -> list[list[Document]]:
        """Each document's chunks, as `split_document` makes them."""
        ...

    def embed(self, texts: list[str], progress: ProgressFn | None) -> np.ndarray:
        """The build embedder's `encode_passages(texts, progress)`."""
        ...

    def close(self) -> None:
        """Release what it holds (Ray's actors); whoever opened it closes it."""
        ...


@dataclass(frozen=True)
class LocalIngest:
    """Everything in this process: the ingest `apply_changes` uses unless given another."""

    embedder: VectorEmbeddings

    @classmethod
    def from_config(cls, config: Config, embedder: VectorEmbeddings) -> LocalIngest:
        """The ingest `local` of core/registry.py; this process needs no settings of its own."""
        return cls(embedder)

    def load(self, folder: Path, follow_external_symlinks: bool) -> tuple[list[Document], list[Skipped]]:
        return load_folder(folder, follow_external_symlinks)

    def chunk(self, documents: list[Document], settings: ChunkSettings) -> list[list[Document]]:
        return [split_document(doc, settings) for doc in documents]

    def embed(self, texts: list[str], progress: ProgressFn | None) -> np.ndarray:
        return self.embedder.encode_passages(texts, progress)

    def close(self) -> None:
        """Nothing is held outside the embedder, which stays loaded for the process (load_embedder)."""


def open_ingest(config: Config, embedder: VectorEmbeddings) -> Ingest:
    """The configured ingest, from core/registry.py's table (Ray is imported only when chosen);
    the caller closes it."""
    opened: Ingest = INGESTERS.load(config.ingest)(config, embedder)
    return opened


def settings_record(config: Config) -> dict[str, Any]:
    """The settings that decide chunk boundaries and matching keys; a change forces re-chunking."""
    return {
        "chunk_max_words": config.chunk_max_words,
        "chunk_overlap_words": config.chunk_overlap_words,
        "normalization_version": NORMALIZATION_VERSION,
        "chunker_version": CHUNKER_VERSION,
    }


def apply_changes(
    config: Config,
    embedder: VectorEmbeddings,
    upserts: list[Document],
    removals: list[str] | None = None,
    rebuild: bool = False,
    progress: ProgressFn | None = None,
    ingest: Ingest | None = None,
) -> tuple[store.StoredIndex, BuildReport]:
    """Add or replace the given documents and drop `removals` (by source name), in one atomic write.

    Used by the folder build and by UI uploads alike, so both follow the same rules. `ingest`
    chunks and embeds (default: in this process with `embedder`, whose name and size the index records).
    """
    ingest = ingest or LocalIngest(embedder)
    target = store_for(config)
    settings = settings_record(config)
    report = BuildReport()
    with target.lock():
        old = None if rebuild else _load_existing(target, embedder.name)
        if old is not None and old.manifest.get("settings") != settings:
            old = None  # chunking or normalisation changed: everything must be re-chunked
        manifest = store.new_manifest(embedder.name, embedder.dim, settings) if old is None else dict(old.manifest)
        if old is not None:
            manifest["files"] = dict(old.files)
        files: dict[str, dict[str, Any]] = manifest["files"]

        replace = {d.metadata["source"]: d for d in upserts}
        drop = set(removals or ()) & set(files)
        # After --rebuild or a settings change, report against what the store held before.
        previous = files if old is not None else _previous_files(target)
        for source, doc in replace.items():
            if source not in previous:
                report.added.append(source)
            elif old is None or files[source]["sha256"] != doc.metadata["sha256"]:
                report.updated.append(source)
            else:
                report.unchanged.append(source)
        report.removed = sorted(drop | (set(previous) - set(replace) if old is None else set()))

        upserted = [replace[source] for source in report.added + report.updated]
        new_chunks: list[Document] = []
        for doc, doc_chunks in zip(upserted, ingest.chunk(upserted, ChunkSettings.from_config(config)), strict=True):
            source = doc.metadata["source"]
            new_chunks.extend(doc_chunks)
            files[source] = {
                "sha256": doc.metadata["sha256"],
                "title": doc.metadata["title"],
                "bytes": doc.metadata["bytes"],
                "encoding": doc.metadata["encoding"],
                "chunks": len(doc_chunks),
            }
        for source in drop:
            files.pop(source, None)

        layout = {"index_type_requested": config.index_type, "ef_search": config.hnsw_ef_search}
        # The folder moving from seeds/ to data/docs is written anew, so the record names where it
        # is now (a folder copied elsewhere with its index keeps its record until a change).
        recorded = old.manifest.get("docs_dir") if old is not None else None
        moving = isinstance(recorded, str) and moved_from_seeds(Path(recorded), config)
        same_layout = old is not None and not moving and all(old.manifest.get(k) == v for k, v in layout.items())
        if not report.changed and same_layout and old is not None:
            target.tidy()
            report.total_chunks = old.size
            return old, report
        new_vectors = ingest.embed([embedding_text(c) for c in new_chunks], progress)
        report.embedded_chunks = len(new_chunks)
        # Recorded for repair hints and `--rebuild` (a build with no change keeps the old record).
        manifest.update(layout, docs_dir=str(config.docs_dir.resolve()))
        changes = store.Changes(frozenset(drop | set(report.updated)), new_chunks, new_vectors)
        index = target.commit(manifest, changes, old)
        report.total_chunks = index.size
        return index, report


def store_for(config: Config) -> store.Store:
    """The configured store, from core/registry.py's table (Milvus is imported only when chosen)."""
    opened: store.Store = STORES.load(config.store)(config)
    return opened


# The default documents folder (data/docs). Uploads used to land in the repository's seeds/
# (`git status` showed them, and `make eval` then measured whatever a user had uploaded: issue 29).
USER_DOCS_DIR: Path = Config.default("docs_dir")


def adopt_seeds(config: Config) -> bool:
    """Make the default documents folder on first use, holding a copy of seeds/ (so a new user has
    something to ask about, and every file in it is one this tool wrote and may move to the trash).
    The copy is made beside it and renamed into place, so a crash leaves no half folder. True when
    the folder was made now; any other folder is the user's and is never made or filled."""
    folder = config.docs_dir
    if folder.resolve() != USER_DOCS_DIR.resolve() or folder.exists() or not SEEDS_DIR.is_dir():
        return False
    staging = folder.with_name(f".{folder.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)  # our own copy, from a run that stopped part-way
    staging.mkdir(parents=True)
    for path in sorted(SEEDS_DIR.iterdir()):
        if path.is_file() and not path.is_symlink():
            shutil.copy2(path, staging / path.name)
    staging.rename(folder)
    return True


def moved_from_seeds(recorded: Path | None, config: Config) -> bool:
    """An index built from seeds/ by an earlier version, now opened with the default documents
    folder: the folder moves to data/docs (seeds/ and the uploads in it are copied, never moved)."""
    return (
        recorded is not None
        and recorded.resolve() == SEEDS_DIR.resolve()
        and config.docs_dir.resolve() == USER_DOCS_DIR.resolve()
    )


def resolve_docs_dir(config: Config, given: bool, rebuild: bool = False) -> Config:
    """The documents folder to use: the one the user gave, else the one the index was built from.

    Without this, `python -m index build --rebuild` on an index of another folder silently indexed
    seeds/ instead (and on Milvus dropped the 400 documents it held).
    """
    target = store_for(config)
    recorded = target.recorded_docs_dir()
    if given or moved_from_seeds(recorded, config):
        return config
    if recorded is not None:
        if not recorded.is_dir():
            raise store.IndexProblem(
                f"{target.description} was built from {recorded}, which is not a folder any more; "
                f"name the documents folder: `python -m index build DOCS_DIR --index {store.shown_path(config.index_dir)}`"
            )
        return config.replace(docs_dir=recorded)
    if rebuild and _previous_files(target):
        raise store.IndexProblem(
            f"{target.description} does not record which documents folder it was built from; "
            f"name it: `python -m index build DOCS_DIR --rebuild --index {store.shown_path(config.index_dir)}`"
        )
    return config


def _previous_files(target: store.Store) -> dict[str, Any]:
    try:
        return target.read_manifest()["files"]
    except store.IndexProblem:
        return {}


def _load_existing(target: store.Store, embedder: str) -> store.StoredIndex | None:
    try:
        return target.load(embedder)
    except store.IndexMissing:
        return None


def build_folder(
    config: Config,
    embedder: VectorEmbeddings,
    rebuild: bool = False,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    ingest: Ingest | None = None,
) -> tuple[store.StoredIndex, BuildReport]:
    """Bring the index in `config.index_dir` in line with the files in `config.docs_dir`; `ingest`
    reads, chunks and embeds (default: in this process)."""
    ingest = ingest or LocalIngest(embedder)
    documents, skipped = ingest.load(config.docs_dir, config.follow_external_symlinks)
    for item in skipped:
        if log:
            log(str(item))
    present = {d.metadata["source"] for d in documents}
    known = set() if rebuild else set(_previous_files(store_for(config)))
    index, report = apply_changes(config, embedder, documents, sorted(known - present), rebuild, progress, ingest)
    report.skipped = skipped
    return index, report


@dataclass(frozen=True)
class Drift:
    """How the documents folder differs from what the index was built from: files whose content
    changed, files gone, and supported files the index does not hold (new, or skipped as unreadable)."""

    changed: list[str]
    gone: list[str]
    new: list[str]

    @property
    def stale(self) -> bool:
        """Does the index answer from content the folder no longer has?"""
        return bool(self.changed or self.gone)

    def summary(self) -> str:
        parts = [(self.changed, "changed"), (self.gone, "gone"), (self.new, "not indexed")]
        return ", ".join(
            f"{len(names)} {what} ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
            for names, what in parts
            if names
        )


def folder_drift(config: Config, files: dict[str, Any], contents: bool = True) -> Drift:
    """Compare the folder with the index's per-file hashes (reads every file once: a start-up
    check, ~1 s per GB). A crash between writing an upload and committing the index left the
    new version in the folder and the old one served, with nothing saying so (issue 27 point 3).
    Right after a build, which has just read every file, `contents=False` compares names only."""
    present = dict(candidates(config.docs_dir)) if config.docs_dir.is_dir() else {}
    changed = []
    for name, info in files.items():
        path = present.get(name)
        if contents and path is not None:
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue  # unreadable now: the build that follows reports it
            if digest != info.get("sha256"):
                changed.append(name)
    return Drift(changed, sorted(set(files) - set(present)), sorted(set(present) - set(files)))


def reconcile(
    config: Config, embedder: VectorEmbeddings, index: store.StoredIndex, log: LogFn | None = None
) -> tuple[store.StoredIndex, Drift]:
    """The index brought in line with the folder when it is stale (an incremental build: only
    changed files are embedded), and what still differs. A build that cannot run (a read-only
    index, say) leaves the index as it was, and the drift says what it lacks."""
    recorded = store_for(config).recorded_docs_dir()
    moved = moved_from_seeds(recorded, config)
    if moved:
        adopt_seeds(config)
    elif recorded is None or recorded.resolve() != config.docs_dir.resolve():
        # An index of another folder (`rag ask --index X` with the default folder configured):
        # the configured folder says nothing about it, and must never be built into it.
        return index, Drift([], [], [])
    drift = folder_drift(config, index.files)
    if not drift.stale and not moved:
        return index, drift
    if log:
        log(f"The documents folder differs from the index ({drift.summary()}); updating the index…")
    try:
        index, report = build_folder(config, embedder, log=log)
    except (OSError, UserError) as exc:
        if log:
            log(f"Could not update the index ({exc}); answering from it as it is.")
        return index, drift
    if log:
        log(report.summary())
    return index, folder_drift(config, index.files, contents=False)
