"""The FAISS store: chunks and vectors to a local folder and back, as FAISS vectors, a JSONL
docstore and a JSON manifest.

Layout of an index folder (no pickle anywhere):
    manifest.json           the commit point: settings, per-file hashes, and which generation is live
    vectors.<gen>.faiss     faiss.write_index output, row i = chunk i
    chunks.<gen>.jsonl      one JSON object per chunk, row i = vector i
    lexical.<gen>.npz       BM25 term counts, row i = chunk i (index/lexical.py; numpy arrays, no pickle)
    .rag-index.json         the ledger: this folder is ours, the generations we wrote, the docs folder
    .tmp/                   temp files of writes in progress
    .lock                   writers' lock

A write puts a new generation's files in place first and then atomically replaces manifest.json,
so a crash at any moment leaves either the old or the new index loadable, never a mix. The index
deletes only files its ledger names, and refuses to start in a folder that holds anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.documents import Document

from core.config import Config, IndexType
from index.lexical import LexicalFileError, LexicalIndex
from index.store.base import (
    APPROXIMATE_FROM,
    FORMAT_VERSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    MANIFEST,
    Changes,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    IndexProblem,
    StoredIndex,
    check_embedder,
)
from index.store.files import (
    TMP_DIR,
    atomic_write,
    claim,
    fsync_dir,
    read_owner,
    rebuild_hint,
    recorded_docs_dir,
    write_lock,
    write_owner,
)

_GENERATION_FILES = ("vectors.{}.faiss", "chunks.{}.jsonl", "lexical.{}.npz")

# Generations kept on disk besides the live one, so a reader that read the manifest just before a
# commit still finds its files; a slower reader retries from the new manifest (see `load`).
_KEEP_PREVIOUS = 1

_LOAD_ATTEMPTS = 20


def choose_index_type(count: int, requested: IndexType) -> str:
    """Exact ("flat") for small collections, HNSW for large ones, unless the user says otherwise."""
    if requested != "auto":
        return requested
    return "flat" if count < APPROXIMATE_FROM else "hnsw"


def build_vectors(vectors: np.ndarray, dim: int, index_type: str, ef_search: int) -> faiss.Index:
    """Inner-product index over unit vectors (cosine): exact, or an HNSW graph.

    HNSW rather than IVF: on embeddings without strong cluster structure IVF needs to probe a
    large share of its lists to reach 0.95 recall, while HNSW gets there in ~10 ms at 1M chunks (eval/BENCHMARKS.md).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index: faiss.Index
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    prepare(index, ef_search)
    return index


def prepare(index: faiss.Index, ef_search: int) -> None:
    """Search-time setting of an HNSW index: candidates explored per query (recall vs speed)."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search


def _chunk_record(chunk: Document) -> dict[str, Any]:
    return {**chunk.metadata, "text": chunk.page_content}


def _chunk_from_record(record: dict[str, Any]) -> Document:
    text = record.pop("text")
    return Document(page_content=text, id=record["id"], metadata=record)


def save(
    folder: Path,
    manifest: dict[str, Any],
    chunks: list[Document],
    vectors: faiss.Index,
    lexical: LexicalIndex | None = None,
) -> dict[str, Any]:
    """Persist a new generation atomically; returns the manifest that is now live.

    `lexical` (the chunks' term counts, counted here when not given) is part of the generation,
    so the vectors, chunks and counts on disk always belong together.

    Callers must hold `write_lock(folder)`. The generation is entered in the ledger before its files
    are written, so a build killed at any point leaves only files the next cleanup knows to be ours.
    """
    if vectors.ntotal != len(chunks):
        raise ValueError(f"{vectors.ntotal} vectors for {len(chunks)} chunks")
    lexical = lexical if lexical is not None else LexicalIndex.from_chunks(chunks)
    if lexical.rows != len(chunks):
        raise ValueError(f"term counts of {lexical.rows} chunks for {len(chunks)} chunks")
    owner = claim(folder)
    # Never reuse a generation number: after --rebuild the manifest starts from 0, and overwriting
    # the live generation's files in place would break the old index mid-write.
    live_generation = 0
    with contextlib.suppress(IndexProblem):
        live_generation = int(read_manifest(folder).get("generation", 0))
    generation = max([int(manifest.get("generation", 0)), live_generation, *owner["generations"]]) + 1
    owner["generations"] = sorted({*owner["generations"], generation})
    if manifest.get("docs_dir"):
        owner["docs_dir"] = manifest["docs_dir"]
    write_owner(folder, owner)
    vectors_name, chunks_name, lexical_name = (name.format(generation) for name in _GENERATION_FILES)
    live = {
        **manifest,
        "generation": generation,
        # The generation this commit replaces: the one kept for readers mid-load (remove_stale),
        # not merely the newest older number, which may belong to a commit that failed.
        "previous_generation": live_generation,
        "count": len(chunks),
        "vectors_file": vectors_name,
        "chunks_file": chunks_name,
        "lexical_file": lexical_name,
    }
    try:
        serialized = faiss.serialize_index(vectors)
        atomic_write(folder / vectors_name, lambda h: h.write(serialized.tobytes()), folder / TMP_DIR)

        def write_chunks(handle: Any) -> None:
            for chunk in chunks:
                handle.write(json.dumps(_chunk_record(chunk), ensure_ascii=False).encode() + b"\n")

        atomic_write(folder / chunks_name, write_chunks, folder / TMP_DIR)
        atomic_write(folder / lexical_name, lexical.write, folder / TMP_DIR)
    except Exception:
        # A full disk mid-write: this generation's files go now (they are ours and never were
        # live). A kill leaves them to remove_stale, which keeps only the live and previous ones.
        for name in (vectors_name, chunks_name, lexical_name):
            with contextlib.suppress(OSError):
                (folder / name).unlink()
        raise
    fsync_dir(folder)
    atomic_write(
        folder / MANIFEST, lambda h: h.write(json.dumps(live, ensure_ascii=False, indent=1).encode()), folder / TMP_DIR
    )
    fsync_dir(folder)
    remove_stale(folder)
    return live


def remove_stale(folder: Path) -> None:
    """Delete what this tool wrote and no longer needs: generations older than the live one and its
    predecessor (kept for readers mid-load), and temp files of interrupted writes. Only files named
    in the ledger, or in the ledger's own temp folder, are ever deleted."""
    owner = read_owner(folder)
    if owner is None:
        return
    try:
        manifest = read_manifest(folder)
        live = int(manifest["generation"])
    except (IndexProblem, KeyError, TypeError, ValueError):
        return  # without a readable live generation nothing can be called stale
    older = sorted(g for g in owner["generations"] if g < live)
    if "previous_generation" in manifest:  # 0: the first commit, nothing before it to keep
        keep = {live} | ({manifest["previous_generation"]} & set(older))
    else:  # a manifest written before previous_generation was recorded
        keep = {live, *older[len(older) - _KEEP_PREVIOUS :]}  # not newer ones: those are of killed builds
    for generation in sorted(set(owner["generations"]) - keep):
        for name in _GENERATION_FILES:
            with contextlib.suppress(FileNotFoundError):
                (folder / name.format(generation)).unlink()
    if keep != set(owner["generations"]):
        write_owner(folder, {**owner, "generations": sorted(keep)})
    tmp = folder / TMP_DIR
    if tmp.is_dir():
        for path in tmp.iterdir():
            if path.is_file() and path.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The live manifest, validated for format; raises IndexMissing / IndexCorrupt / IndexMismatch."""
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexMissing(f"no index in {folder}: build it with `python -m index build DOCS_DIR --index {folder}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"{path} is not valid JSON ({exc}); rebuild with `{rebuild_hint(folder)}`") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatch(
            f"{path} has index format {manifest.get('format_version')!r}, this version reads {FORMAT_VERSION}; "
            f"rebuild with `{rebuild_hint(folder)}`"
        )
    missing = [k for k in ("embedder", "dim", "files", "count", "vectors_file", "chunks_file") if k not in manifest]
    if missing:
        raise IndexCorrupt(f"{path} lacks {', '.join(missing)}; rebuild with `{rebuild_hint(folder)}`")
    return manifest


def load(folder: Path, embedder: str | None = None) -> StoredIndex:
    """Load and cross-check an index; every failure names the file and the fix.

    A writer may commit between our reading the manifest and opening its files, and later delete
    them; such a vanished file is not damage: read the new manifest and try again.
    """
    for _ in range(_LOAD_ATTEMPTS):
        manifest = read_manifest(folder)
        try:
            return _load_generation(folder, manifest, embedder)
        except IndexCorrupt:
            with contextlib.suppress(IndexProblem):
                if read_manifest(folder).get("generation") != manifest.get("generation"):
                    continue
            raise
    raise IndexCorrupt(f"{folder} changed {_LOAD_ATTEMPTS} times while being read; try again when the build is done")


def _load_generation(folder: Path, manifest: dict[str, Any], embedder: str | None) -> StoredIndex:
    hint = rebuild_hint(folder)
    if embedder is not None:
        check_embedder(manifest, embedder, str(folder), hint)
    vectors_path = folder / manifest["vectors_file"]
    chunks_path = folder / manifest["chunks_file"]
    try:
        data = vectors_path.read_bytes()
        vectors = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except (OSError, RuntimeError) as exc:
        raise IndexCorrupt(
            f"{vectors_path} is missing or damaged ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); rebuild with `{hint}`"
        ) from exc
    chunks: list[Document] = []
    try:
        with open(chunks_path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    chunks.append(_chunk_from_record(record))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise IndexCorrupt(
                        f"{chunks_path} line {line_no} is not a valid chunk record; rebuild with `{hint}`"
                    ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"{chunks_path} is missing or unreadable ({exc}); rebuild with `{hint}`") from exc
    if not (vectors.ntotal == len(chunks) == manifest["count"]) or vectors.d != manifest["dim"]:
        raise IndexCorrupt(
            f"index in {folder} is inconsistent: {vectors.ntotal} vectors of dim {vectors.d}, {len(chunks)} chunks, "
            f"manifest says {manifest['count']} of dim {manifest['dim']}; rebuild with `{hint}`"
        )
    # Indexes built before efSearch was recorded get today's default.
    prepare(vectors, int(manifest.get("ef_search", Config.default("hnsw_ef_search"))))
    return StoredIndex(
        manifest=manifest, chunks=chunks, vectors=vectors, folder=folder, lexical=_load_lexical(folder, manifest, hint)
    )


def _load_lexical(folder: Path, manifest: dict[str, Any], hint: str) -> LexicalIndex | None:
    """The generation's term counts; None for an index written before they were saved (the retriever
    then counts them from the chunks, and the next write saves them)."""
    if "lexical_file" not in manifest:
        return None
    path = folder / str(manifest["lexical_file"])
    try:
        return LexicalIndex.read(path, int(manifest["count"]))
    except LexicalFileError as exc:
        raise IndexCorrupt(f"{path} is missing or damaged ({exc}); rebuild with `{hint}`") from exc


@dataclass
class FaissStore:
    """A local folder: FAISS vectors + JSONL docstore + manifest, written as atomic generations."""

    folder: Path
    description: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.description = str(self.folder)

    @classmethod
    def from_config(cls, config: Config) -> FaissStore:
        """The store `faiss` of core/registry.py: the folder index_dir."""
        return cls(config.index_dir)

    def recorded_docs_dir(self) -> Path | None:
        return recorded_docs_dir(self.folder)

    def rebuild_hint(self) -> str:
        return rebuild_hint(self.folder)

    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.folder)

    def load(self, embedder: str | None = None) -> StoredIndex:
        return load(self.folder, embedder)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return write_lock(self.folder)

    def tidy(self) -> None:
        remove_stale(self.folder)

    def refreshed(self, index: StoredIndex) -> StoredIndex | None:
        """None: a folder index is written by the process that serves it (its write lock is a
        file lock on one machine); a second app process sees changes when it restarts."""
        return None

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        kept = [i for i, c in enumerate(old.chunks) if c.metadata["source"] not in changes.drop] if old else []
        chunks = [old.chunks[i] for i in kept] if old else []
        kept_vectors = old.all_vectors()[kept] if old and kept else np.zeros((0, manifest["dim"]), np.float32)
        # Term counts: the old rows carried over, only the new chunks counted.
        if old is None:
            lexical = LexicalIndex.from_chunks(changes.chunks)
        else:
            base = old.lexical if old.lexical is not None else LexicalIndex.from_chunks(old.chunks)
            lexical = base.update(kept, changes.chunks)
        chunks += changes.chunks
        all_vectors = np.concatenate([kept_vectors, changes.vectors])
        manifest["index_type"] = choose_index_type(len(chunks), manifest.get("index_type_requested", "auto"))
        vectors = build_vectors(all_vectors, manifest["dim"], manifest["index_type"], manifest["ef_search"])
        live = save(self.folder, manifest, chunks, vectors, lexical)
        return StoredIndex(manifest=live, chunks=chunks, vectors=vectors, folder=self.folder, lexical=lexical)
