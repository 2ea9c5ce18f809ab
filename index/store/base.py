"""What every store shares: the `Store` protocol, the in-memory `StoredIndex`, the manifest, and
the errors a user sees when an index cannot be used (each says how to fix it).

A store is where an index lives (a FAISS folder, a Milvus collection); which one is a setting,
chosen from core/registry.py's STORES. No pickle anywhere in any store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.documents import Document

from core.config import Config
from core.errors import UserError
from index.lexical import BM25, LexicalIndex, top_n

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


# A passage's handle in a corpus: its row in memory (FAISS folders), its chunk id in Milvus.
Key = int | str


@runtime_checkable
class Corpus(Protocol):
    """What retrieval reads of an index. Searches return keys with scores; text is fetched only for
    the few keys a question keeps, so a corpus served by a database (Milvus) never has to sit in the
    app's memory. `rag.retrieve.HybridRetriever` fuses the two searches the same way over either.
    """

    @property
    def size(self) -> int:
        """How many passages the corpus holds."""
        ...

    def dense(self, query: np.ndarray, n: int) -> list[tuple[Key, float]]:
        """The n passages nearest the (unit) query vector, with their cosines, best first."""
        ...

    def lexical(self, query_terms: Sequence[str], n: int) -> list[tuple[Key, float]]:
        """The n best passages by BM25 over the question's terms, best first."""
        ...

    def rescore(
        self, keys: Sequence[Key], query: np.ndarray, query_terms: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine and BM25 score of each key (a passage one search found gets the other's score)."""
        ...

    def passages(self, keys: Sequence[Key]) -> dict[Key, Document]:
        """The chunks of `keys` (one another process removed meanwhile is left out)."""
        ...

    def scan(self) -> Iterator[Document]:
        """Every chunk, in order (tools and tests; never on a question's path)."""
        ...

    def term_weight(self, term: str) -> float:
        """A stemmed term's IDF over the corpus (unknown terms: the maximum)."""
        ...


class InMemoryCorpus:
    """A corpus held in the process: chunks, a FAISS-like vector index and BM25 over term counts."""

    def __init__(self, chunks: Sequence[Document], vectors: VectorIndex, bm25: BM25) -> None:
        self.chunks, self.vectors, self.bm25 = chunks, vectors, bm25
        self._lock = threading.Lock()
        # The last question's BM25 scores: lexical() and rescore() of one question need the same
        # column sums, and a second pass over 1M chunks costs ~10 ms.
        self._last: tuple[tuple[str, ...], np.ndarray] | None = None

    @property
    def size(self) -> int:
        return int(self.vectors.ntotal)

    def _scores(self, query_terms: Sequence[str]) -> np.ndarray:
        key = tuple(query_terms)
        with self._lock:
            last = self._last
        if last is not None and last[0] == key:
            return last[1]
        scores = self.bm25.scores(list(query_terms))
        with self._lock:
            self._last = (key, scores)
        return scores

    def dense(self, query: np.ndarray, n: int) -> list[tuple[Key, float]]:
        sims, rows = self.vectors.search(query.reshape(1, -1), min(n, self.size))
        return [(int(r), float(s)) for r, s in zip(rows[0], sims[0]) if r >= 0]

    def lexical(self, query_terms: Sequence[str], n: int) -> list[tuple[Key, float]]:
        scores = self._scores(query_terms)
        return [(int(r), float(scores[r])) for r in top_n(scores, n)]

    def rescore(
        self, keys: Sequence[Key], query: np.ndarray, query_terms: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = [int(k) for k in keys]
        cosines = np.array([float(self.vectors.reconstruct(r) @ query) for r in rows], dtype=np.float32)
        return cosines, self._scores(query_terms)[rows].astype(np.float32)

    def passages(self, keys: Sequence[Key]) -> dict[Key, Document]:
        return {k: self.chunks[int(k)] for k in keys}

    def scan(self) -> Iterator[Document]:
        yield from self.chunks

    def term_weight(self, term: str) -> float:
        return self.bm25.term_weight(term)


@dataclass
class StoredIndex:
    """An index in memory: the manifest, the chunks (row-aligned with vectors) and the vector index,
    or, for a store that serves the corpus itself (Milvus), the manifest and that `corpus` alone.

    `lexical` holds the chunks' BM25 term counts when the store keeps them (FAISS folders); None
    means the retriever counts them from the chunk texts (a folder written before counts were
    saved, in-memory indexes of tests and benchmarks).
    """

    manifest: dict[str, Any]
    chunks: Sequence[Document] = ()
    vectors: VectorIndex | None = None
    folder: Path | None = None
    lexical: LexicalIndex | None = None
    corpus: Corpus | None = None

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.manifest["files"]

    @property
    def size(self) -> int:
        """How many chunks the index holds."""
        if self.corpus is not None:
            return self.corpus.size
        return len(self.chunks)

    def in_memory(self) -> tuple[Sequence[Document], VectorIndex]:
        """The chunks and vectors of an index held in the process (what a FAISS commit carries over)."""
        if self.vectors is None:
            raise IndexProblem("this index is served by its store; it holds no chunks in memory")
        return self.chunks, self.vectors

    def all_vectors(self) -> np.ndarray:
        """Every stored vector, row-aligned with `chunks` (used to carry unchanged files over)."""
        _, vectors = self.in_memory()
        if vectors.ntotal == 0:
            return np.zeros((0, vectors.d), dtype=np.float32)
        return vectors.reconstruct_n(0, vectors.ntotal)

    def serving(self, config: Config, bm25: BM25 | None = None) -> Corpus:
        """The corpus retrieval reads: the store's own, or one built here from the chunks, the
        vectors and BM25 (`bm25` given, else over the saved term counts, else counted now)."""
        if self.corpus is not None and bm25 is None:
            return self.corpus
        chunks, vectors = self.in_memory()
        if bm25 is None:
            lexical = self.lexical if self.lexical is not None else LexicalIndex.from_chunks(chunks)
            bm25 = BM25.from_lexical(lexical, config)
        return InMemoryCorpus(chunks, vectors, bm25)


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

    def refreshed(self, index: StoredIndex) -> StoredIndex | None:
        """The index as another process left it, when the store is shared and changed since `index`
        was read; None otherwise (cheap enough to ask before each question)."""
        ...

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        """Apply `changes` on top of `old` (None: start from empty) and make `manifest` live."""
        ...
