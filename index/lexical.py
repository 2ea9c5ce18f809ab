"""The lexical side of an index: how often each stemmed term occurs in each chunk, saved with the vectors.

BM25 (rag/retrieve.py) needs these counts for every chunk. Counting means tokenising and stemming
every chunk's text, which the app used to do for the whole collection at each start and after each
upload; at 100k chunks that is most of the start-up time (`python -m eval.bench --only lexical`).
Now the counts are written with each index generation, read back at start, and updated row by row
when documents change: rows of removed chunks are dropped, rows of new chunks appended. BM25's
weights (document frequencies, average length) are recomputed from the counts in one vectorised
pass, so they are not stored and cannot disagree with the counts.

`BM25` turns the counts into Okapi weights; it lives here, beside the counts, because both the
retriever (rag/) and a store that serves its own lexical side (Milvus on a server without BM25)
score with it.

File format: one `.npz` (numpy's zip of `.npy` arrays, no pickle) with the counts as CSR arrays
and the vocabulary as UTF-8 JSON bytes. It is read with `allow_pickle=False` and every array is
checked, so a damaged, truncated or planted file is reported, never trusted and never unpickled.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from langchain_core.documents import Document
from scipy import sparse

from core.config import Config
from index.arabic import terms
from index.chunk import embedding_text

FORMAT = 1
# Term frequencies within one chunk: a chunk is at most a few thousand words, so 16 bits hold any
# count; 2 bytes a stored (chunk, term) pair instead of 4 keep the resident counts small.
COUNT_DTYPE = np.uint16
_ARRAYS = ("format", "shape", "indptr", "indices", "data", "vocabulary")


class LexicalFileError(ValueError):
    """A saved lexical index that cannot be used; the store reports it with its rebuild hint."""


def chunk_terms(chunk: Document) -> list[str]:
    """The terms BM25 matches for a chunk: those of the text the encoder sees (title and body)."""
    return terms(embedding_text(chunk))


class LexicalIndex:
    """Term counts, chunks x terms (row i = chunk i of the index), and the term of each column."""

    def __init__(self, counts: sparse.csr_matrix, vocabulary: Sequence[str]) -> None:
        if counts.shape[1] != len(vocabulary):
            raise ValueError(f"{counts.shape[1]} count columns for {len(vocabulary)} terms")
        self.counts = counts
        self.terms = list(vocabulary)
        self.vocabulary = {term: column for column, term in enumerate(self.terms)}

    @property
    def rows(self) -> int:
        return int(self.counts.shape[0])

    @property
    def nbytes(self) -> int:
        """Resident size of the counts (the vocabulary is shared with BM25 and not counted)."""
        return int(self.counts.data.nbytes + self.counts.indices.nbytes + self.counts.indptr.nbytes)

    @classmethod
    def from_terms(cls, documents: Iterable[list[str]]) -> LexicalIndex:
        vocabulary: dict[str, int] = {}
        return cls(_count(documents, vocabulary), list(vocabulary))

    @classmethod
    def from_chunks(cls, chunks: Iterable[Document]) -> LexicalIndex:
        return cls.from_terms(chunk_terms(c) for c in chunks)

    def update(self, keep: Sequence[int], added: Sequence[Document]) -> LexicalIndex:
        """The counts after a write: rows `keep` (in that order), then rows for the `added` chunks.

        Only the added chunks are stemmed. Terms no remaining chunk uses are dropped, so the
        vocabulary does not grow with every replaced document; BM25 scores do not depend on the
        order of columns, so they equal those of counts made from scratch.
        """
        return self.update_terms(keep, [chunk_terms(c) for c in added])

    def update_terms(self, keep: Sequence[int], added: Iterable[list[str]]) -> LexicalIndex:
        """`update` for chunks already analysed: `added` holds each new chunk's terms."""
        vocabulary = dict(self.vocabulary)
        kept = self.counts[np.asarray(keep, dtype=np.int64)]
        new = _count(added, vocabulary)
        kept.resize((kept.shape[0], len(vocabulary)))
        counts = sparse.vstack([kept, new], format="csr", dtype=COUNT_DTYPE)
        terms_ = list(vocabulary)
        used = np.bincount(counts.indices, minlength=len(terms_)) > 0
        if not used.all():
            column = np.cumsum(used) - 1
            counts = sparse.csr_matrix(
                (counts.data, column[counts.indices].astype(np.int32), counts.indptr),
                shape=(counts.shape[0], used.sum()),
            )
            terms_ = [t for t, u in zip(terms_, used) if u]
        return LexicalIndex(counts, terms_)

    def write(self, handle: IO[bytes]) -> None:
        """Save as .npz (for `index.store.atomic_write`, which makes the file appear whole or not at all)."""
        counts = self.counts
        np.savez(
            handle,
            format=np.array([FORMAT], dtype=np.int64),
            shape=np.array(counts.shape, dtype=np.int64),
            indptr=counts.indptr.astype(np.int64),
            indices=counts.indices.astype(np.int32),
            data=counts.data.astype(COUNT_DTYPE),
            vocabulary=np.frombuffer(json.dumps(self.terms, ensure_ascii=False).encode(), dtype=np.uint8),
        )

    @classmethod
    def read(cls, path: Path | IO[bytes], rows: int) -> LexicalIndex:
        """Load and check a saved index of `rows` chunks; any flaw raises LexicalFileError with the reason."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                missing = [name for name in _ARRAYS if name not in saved.files]
                if missing:
                    raise LexicalFileError(f"lacks {', '.join(missing)}")
                arrays = {name: saved[name] for name in _ARRAYS}
        except LexicalFileError:
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            # ValueError includes "Object arrays cannot be loaded when allow_pickle=False".
            raise LexicalFileError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        return cls(*_checked(arrays, rows))


def _count(documents: Iterable[list[str]], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    """CSR counts of `documents`, one column per `vocabulary` entry; new terms are added to it."""
    indptr = [0]
    indices: list[int] = []
    data: list[int] = []
    for document in documents:
        for term, tf in Counter(document).items():
            indices.append(vocabulary.setdefault(term, len(vocabulary)))
            data.append(tf)
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.array(data, dtype=COUNT_DTYPE), np.array(indices, dtype=np.int32), np.array(indptr, dtype=np.int64)),
        shape=(len(indptr) - 1, len(vocabulary)),
    )


def _checked(arrays: dict[str, np.ndarray], rows: int) -> tuple[sparse.csr_matrix, list[str]]:
    """The counts and vocabulary, after every check that a damaged or foreign file could fail."""
    for name, array in arrays.items():
        if array.dtype.kind not in "iu":
            raise LexicalFileError(f"{name} holds {array.dtype} values, not integers")
    if arrays["format"].tolist() != [FORMAT]:
        raise LexicalFileError(f"format {arrays['format'].tolist()}, this version reads [{FORMAT}]")
    shape, indptr, indices, data = (arrays[n] for n in ("shape", "indptr", "indices", "data"))
    if shape.shape != (2,) or indptr.ndim != 1 or indices.ndim != 1 or data.ndim != 1:
        raise LexicalFileError("arrays of the wrong shape")
    n_rows, n_columns = (int(v) for v in shape)
    if n_rows != rows:
        raise LexicalFileError(f"counts for {n_rows} chunks, the index has {rows}")
    if len(indptr) != rows + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
        raise LexicalFileError("row offsets are inconsistent")
    if len(data) != len(indices) or (len(indices) and (indices.min() < 0 or indices.max() >= n_columns)):
        raise LexicalFileError("column numbers are inconsistent")
    if (data <= 0).any() or data.max(initial=0) > np.iinfo(COUNT_DTYPE).max:
        raise LexicalFileError("term counts out of range")
    try:
        vocabulary = json.loads(arrays["vocabulary"].astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LexicalFileError("vocabulary is not UTF-8 JSON") from exc
    if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
        raise LexicalFileError("vocabulary is not a list of terms")
    if len(vocabulary) != n_columns or len(set(vocabulary)) != n_columns:
        raise LexicalFileError(f"{len(vocabulary)} terms for {n_columns} columns")
    counts = sparse.csr_matrix(
        (data.astype(COUNT_DTYPE), indices.astype(np.int32), indptr.astype(np.int64)), shape=(n_rows, n_columns)
    )
    return counts, vocabulary


class BM25:
    """Okapi BM25 over stemmed, normalised Arabic terms, as a sparse doc-term weight matrix.

    Weights are precomputed, so scoring a question is one sparse column sum over the corpus.
    """

    def __init__(self, counts: sparse.spmatrix, vocabulary: dict[str, int], k1: float, b: float) -> None:
        """`counts`: documents x terms raw term frequencies; `vocabulary`: term -> column; `k1`, `b`:
        Config.bm25_k1 and bm25_b."""
        counts = sparse.csr_matrix(counts, dtype=np.float32)
        self.vocabulary = vocabulary
        n = counts.shape[0]
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float32)
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avg = float(lengths.mean()) if n else 1.0
        rows = np.repeat(np.arange(n), np.diff(counts.indptr))
        tf = counts.data
        norm = k1 * (1 - b + b * lengths[rows] / max(avg, 1e-9))
        weights = self.idf[counts.indices] * tf * (k1 + 1) / (tf + norm)
        self.matrix = sparse.csr_matrix((weights, counts.indices, counts.indptr), shape=counts.shape).tocsc()
        self.size = n

    @classmethod
    def from_documents(cls, documents: list[list[str]], config: Config) -> BM25:
        """Build from token lists (stemmed, normalised terms)."""
        return cls.from_lexical(LexicalIndex.from_terms(documents), config)

    @classmethod
    def from_lexical(cls, lexical: LexicalIndex, config: Config) -> BM25:
        """Build from an index's saved term counts (no chunk is stemmed again)."""
        return cls(lexical.counts, lexical.vocabulary, config.bm25_k1, config.bm25_b)

    def term_weight(self, term: str) -> float:
        """IDF of a stemmed term (unknown terms get the maximum: they are maximally specific)."""
        col = self.vocabulary.get(term)
        if col is None:
            return math.log1p((self.size + 0.5) / 0.5)
        return float(self.idf[col])

    def scores(self, query_terms: list[str]) -> np.ndarray:
        counts = Counter(t for t in query_terms if t in self.vocabulary)
        if not counts:
            return np.zeros(self.size, dtype=np.float32)
        cols = [self.vocabulary[t] for t in counts]
        weights = np.array(list(counts.values()), dtype=np.float32)
        return np.asarray(self.matrix[:, cols] @ weights).ravel()


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, largest first.

    A full partial sort of a 1M-score vector takes ~8 ms; instead a threshold is read off a strided
    sample and only the scores above it are sorted (~1 ms). Exact: when at least n scores clear the
    threshold they include the n largest; otherwise it falls back to the full partial sort.
    """
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    step = len(scores) // TOP_SAMPLE
    if step >= 2:
        sample = scores[::step]
        rank = min(len(sample), 2 * (n // step) + 16)
        threshold = np.partition(sample, len(sample) - rank)[len(sample) - rank]
        above = np.flatnonzero(scores >= threshold)
        if n <= len(above) <= len(scores) // 4:
            part = above[np.argpartition(-scores[above], n - 1)[:n]]
            return part[np.argsort(-scores[part], kind="stable")]
    part = np.argpartition(-scores, n - 1)[:n]
    return part[np.argsort(-scores[part], kind="stable")]


TOP_SAMPLE = 20_000
