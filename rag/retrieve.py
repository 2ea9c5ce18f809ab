"""Question -> ranked passages: dense (FAISS cosine), Arabic-aware BM25, and their fusion.

The hybrid retriever scores the union of both candidate lists with *both* signals (a passage found
only by BM25 still gets its exact cosine, and vice versa) and fuses min-max normalised scores with a
tuned weight. On ARCD this beats reciprocal-rank fusion, which throws the score gaps away.
"""

from __future__ import annotations

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict

from core.config import Config, Retriever
from index.arabic import terms
from index.embed import VectorEmbeddings
from index.lexical import BM25
from index.store import Corpus, Key, StoredIndex


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return np.ones_like(values) if high > 0 else np.zeros_like(values)
    return (values - low) / (high - low)


class HybridRetriever(BaseRetriever):
    """langchain-core retriever over an index's `Corpus`: mode 'hybrid', 'dense' or 'bm25'.

    The corpus is held in memory (FAISS folders) or served by the store (Milvus); the fusion is
    this class's alone, so both rank alike. Returned Documents are copies of the stored chunks with
    `score` (the fused ranking score), `dense_score` (cosine) and `bm25_score` added to their metadata.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: StoredIndex
    corpus: Corpus
    embedder: VectorEmbeddings
    mode: Retriever
    k: int
    candidates: int
    dense_weight: float

    @classmethod
    def from_config(
        cls, config: Config, index: StoredIndex, embedder: VectorEmbeddings, bm25: BM25 | None = None
    ) -> HybridRetriever:
        """The configured retriever over the index's corpus (`bm25`: see StoredIndex.serving)."""
        return cls(
            index=index,
            corpus=index.serving(config, bm25),
            embedder=embedder,
            mode=config.retriever,
            k=config.k,
            candidates=config.candidates,
            dense_weight=config.dense_weight,
        )

    def rank(self, question: str, k: int | None = None) -> list[tuple[Key, float, float, float]]:
        """(key, fused score, cosine, bm25) for the top k chunks (`k` None: the configured k)."""
        k = self.k if k is None else k
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        query = self.embedder.encode_query(question) if self.mode != "bm25" else np.zeros(0, np.float32)
        return self.rank_vectors(query, terms(question) if self.mode != "dense" else [], k)

    def rank_vectors(self, query: np.ndarray, query_terms: list[str], k: int) -> list[tuple[Key, float, float, float]]:
        """Ranking from an already embedded question and its terms (benchmarks call this directly)."""
        if self.corpus.size == 0:
            return []
        if self.mode == "dense":
            return [(key, s, s, 0.0) for key, s in self.corpus.dense(query, k)]
        if self.mode == "bm25":
            # k results like the other modes, even when fewer than k chunks share a term with the question.
            return [(key, s, 0.0, s) for key, s in self.corpus.lexical(query_terms, k)]
        candidates = max(self.candidates, k)  # a caller may ask for more than the configured pool
        found = {key for key, _ in self.corpus.dense(query, candidates)}
        found |= {key for key, s in self.corpus.lexical(query_terms, candidates) if s > 0}
        union = sorted(found)  # one corpus's keys are all int or all str
        # Exact cosine and BM25 for every candidate, including those only one search found.
        cosines, lexical = self.corpus.rescore(union, query, query_terms)
        fused = self.dense_weight * _minmax(cosines) + (1 - self.dense_weight) * (
            lexical / lexical.max() if lexical.max() > 0 else lexical
        )
        order = np.argsort(-fused, kind="stable")[:k]
        return [(union[i], float(fused[i]), float(cosines[i]), float(lexical[i])) for i in order]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        ranked = self.rank(query, k)
        chunks = self.corpus.passages([key for key, *_ in ranked])
        return [
            Document(
                page_content=chunk.page_content,
                id=chunk.id,
                metadata={**chunk.metadata, "score": score, "dense_score": cosine, "bm25_score": lexical},
            )
            for key, score, cosine, lexical in ranked
            if (chunk := chunks.get(key)) is not None
        ]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        # BaseRetriever's default drops keyword arguments, so `ainvoke(q, k=1)` raised TypeError.
        return await run_in_executor(None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k)
