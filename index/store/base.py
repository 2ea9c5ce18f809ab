"""What every store shares: the `Store` protocol, the in-memory `StoredIndex`, the manifest, and
the errors a user sees when an index cannot be used (each says how to fix it).

A store is where an index lives (a FAISS folder, a Milvus collection); which one is a setting,
chosen from core/registry.py's STORES. No pickle anywhere in any store.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.documents import Document

from core.errors import UserError
from index.lexical import LexicalIndex

FORMAT_VERSION = 1

MANIFEST = "manifest.json"

REBUILD_HINT = "python -m index build --rebuild"


class IndexProblem(UserError):
    """Base for index errors; messages are meant for the user and say how to fix it."""


class IndexMissing(IndexProblem):
    """No index has been built in this folder yet."""


class IndexCorrupt(IndexProblem):
    """A file of the index is unreadable or inconsistent with the others."""


class IndexMismatch(IndexProblem):
    """The index was built with other settings (format, embedder) than the ones in use."""


class StoreUnavailable(IndexProblem):
    """The vector database cannot be reached or refused the connection."""


class NotAnIndex(IndexProblem):
    """The folder holds files this tool did not write; building there could delete or overwrite them."""


@runtime_checkable
class VectorIndex(Protocol):
    """What retrieval needs of a vector index: a FAISS index has it, and so has the Milvus store's
    `MilvusVectors`. Vectors are unit length; `search` returns (inner products, rows), -1 for none."""

    @property
    def ntotal(self) -> int: ...

    @property
    def d(self) -> int: ...

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, row: int) -> np.ndarray: ...

    def reconstruct_n(self, start: int, n: int) -> np.ndarray: ...


@dataclass
class StoredIndex:
    """An index in memory: the manifest, the chunks (row-aligned with vectors) and the vector index.

    `lexical` holds the chunks' BM25 term counts when the store keeps them (FAISS folders); None
    means the retriever counts them from the chunk texts (Milvus, a folder written before counts
    were saved, in-memory indexes of tests and benchmarks).
    """

    manifest: dict[str, Any]
    chunks: list[Document]
    vectors: VectorIndex
    folder: Path | None = None
    lexical: LexicalIndex | None = None

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.manifest["files"]

    def all_vectors(self) -> np.ndarray:
        """Every stored vector, row-aligned with `chunks` (used to carry unchanged files over)."""
        if self.vectors.ntotal == 0:
            return np.zeros((0, self.vectors.d), dtype=np.float32)
        return self.vectors.reconstruct_n(0, self.vectors.ntotal)


def new_manifest(embedder: str, dim: int, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "embedder": embedder,
        "dim": dim,
        "index_type": "flat",
        "settings": settings,
        "generation": 0,
        "count": 0,
        "files": {},
    }


def check_embedder(manifest: dict[str, Any], embedder: str, where: str, hint: str) -> None:
    if manifest["embedder"] != embedder:
        raise IndexMismatch(
            f"the index in {where} was built with embedder {manifest['embedder']!r} but {embedder!r} is configured; "
            f"rebuild with `{hint} --embedder {embedder}` or configure {manifest['embedder']!r}"
        )


# Below this many chunks exact search takes a few ms and has perfect recall.
APPROXIMATE_FROM = 50_000

HNSW_M = 32

HNSW_EF_CONSTRUCTION = 64


@dataclass(frozen=True)
class Changes:
    """One build's worth of edits: sources whose chunks go, and the new chunks with their vectors."""

    drop: frozenset[str]
    chunks: list[Document]
    vectors: np.ndarray


class Store(Protocol):
    """Where an index lives. `faiss` (a local folder) and `milvus` (a collection) implement it."""

    description: str

    def recorded_docs_dir(self) -> Path | None:
        """The documents folder the index was last built from, if it says."""
        ...

    def rebuild_hint(self) -> str:
        """The exact command that rebuilds this index from its own documents folder."""
        ...

    def read_manifest(self) -> dict[str, Any]: ...

    def load(self, embedder: str | None = None) -> StoredIndex: ...

    def lock(self) -> contextlib.AbstractContextManager[None]: ...

    def tidy(self) -> None:
        """Remove leftovers of interrupted writes (callers hold the lock)."""
        ...

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        """Apply `changes` on top of `old` (None: start from empty) and make `manifest` live."""
        ...
