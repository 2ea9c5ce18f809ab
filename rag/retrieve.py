"""Question -> ranked passages: dense (FAISS cosine), Arabic-aware BM25, and their fusion.

The hybrid retriever scores the union of both candidate lists with *both* signals (a passage found
only by BM25 still gets its exact cosine, and vice versa) and fuses min-max normalised scores with a
tuned weight. On ARCD this beats reciprocal-rank fusion, which throws the score gaps away.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict
from scipy import sparse

from core.config import Config, Retriever
from index.arabic import terms
from index.embed import VectorEmbeddings
from index.lexical import LexicalIndex
from index.store import StoredIndex


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


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, largest first.

    A full partial sort of a 1M-score vector takes ~8 ms; instead a threshold is read off a strided
    sample and only the scores above it are sorted (~1 ms). Exact: when at least n scores clear the
    threshold they include the n largest; otherwise it falls back to the full partial sort.
    """
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    step = len(scores) // _TOP_SAMPLE
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


_TOP_SAMPLE = 20_000


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return np.ones_like(values) if high > 0 else np.zeros_like(values)
    return (values - low) / (high - low)


class HybridRetriever(BaseRetriever):
    """langchain-core retriever over a `StoredIndex`: mode 'hybrid', 'dense' or 'bm25'.

    Returned Documents are copies of the stored chunks with `score` (the fused ranking score),
    `dense_score` (cosine) and `bm25_score` added to their metadata.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: StoredIndex
    embedder: VectorEmbeddings
    bm25: BM25
    mode: Retriever
    k: int
    candidates: int
    dense_weight: float

    @classmethod
    def from_config(
        cls, config: Config, index: StoredIndex, embedder: VectorEmbeddings, bm25: BM25 | None = None
    ) -> HybridRetriever:
        """The configured retriever; `bm25` defaults to one over the index's term counts (counted from
        its chunks when the store does not keep them)."""
        if bm25 is None:
            bm25 = BM25.from_lexical(
                index.lexical if index.lexical is not None else LexicalIndex.from_chunks(index.chunks), config
            )
        return cls(
            index=index,
            embedder=embedder,
            bm25=bm25,
            mode=config.retriever,
            k=config.k,
            candidates=config.candidates,
            dense_weight=config.dense_weight,
        )

    def _dense(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        sims, rows = self.index.vectors.search(query.reshape(1, -1), min(n, self.index.vectors.ntotal))
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), sims[0][keep]

    def rank(self, question: str, k: int | None = None) -> list[tuple[int, float, float, float]]:
        """(row, fused score, cosine, bm25) for the top k chunks (`k` None: the configured k)."""
        k = self.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        query = self.embedder.encode_query(question) if self.mode != "bm25" else np.zeros(0, np.float32)
        return self.rank_vectors(query, terms(question) if self.mode != "dense" else [], k)

    def rank_vectors(self, query: np.ndarray, query_terms: list[str], k: int) -> list[tuple[int, float, float, float]]:
        """Ranking from an already embedded question and its terms (benchmarks call this directly)."""
        if self.index.vectors.ntotal == 0:
            return []
        if self.mode == "dense":
            rows, sims = self._dense(query, k)
            return [(int(r), float(s), float(s), 0.0) for r, s in zip(rows, sims)]
        bm25_scores = self.bm25.scores(query_terms)
        if self.mode == "bm25":
            # k results like the other modes, even when fewer than k chunks share a term with the question.
            return [(int(r), float(bm25_scores[r]), 0.0, float(bm25_scores[r])) for r in _top(bm25_scores, k)]
        candidates = max(self.candidates, k)  # a caller may ask for more than the configured pool
        dense_rows, _ = self._dense(query, candidates)
        lexical_rows = [r for r in _top(bm25_scores, candidates) if bm25_scores[r] > 0]
        union = np.array(sorted(set(dense_rows.tolist()) | {int(r) for r in lexical_rows}), dtype=np.int64)
        # Exact cosine for every candidate, including those only BM25 found.
        cosines = np.array([float(self.index.vectors.reconstruct(int(r)) @ query) for r in union], dtype=np.float32)
        lexical = bm25_scores[union]
        fused = self.dense_weight * _minmax(cosines) + (1 - self.dense_weight) * (
            lexical / lexical.max() if lexical.max() > 0 else lexical
        )
        order = np.argsort(-fused, kind="stable")[:k]
        return [(int(union[i]), float(fused[i]), float(cosines[i]), float(lexical[i])) for i in order]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        results = []
        for row, score, cosine, lexical in self.rank(query, k):
            chunk = self.index.chunks[row]
            results.append(
                Document(
                    page_content=chunk.page_content,
                    id=chunk.id,
                    metadata={**chunk.metadata, "score": score, "dense_score": cosine, "bm25_score": lexical},
                )
            )
        return results

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        # BaseRetriever's default drops keyword arguments, so `ainvoke(q, k=1)` raised TypeError.
        return await run_in_executor(None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k)
