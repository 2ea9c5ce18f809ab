"""Index type chosen by corpus size, user override, approximate recall, and the query cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np

from core.config import Config
from index import store
from index.build import build_folder
from index.embed import VectorEmbeddings
from rag.chain import Pipeline
from tests.helpers import SEEDS_DIR, CountingEmbedder


def test_small_collections_are_exact_large_ones_approximate() -> None:
    assert store.choose_index_type(17, "auto") == "flat"
    assert store.choose_index_type(store.APPROXIMATE_FROM - 1, "auto") == "flat"
    assert store.choose_index_type(store.APPROXIMATE_FROM, "auto") == "hnsw"
    assert store.choose_index_type(1_000_000, "auto") == "hnsw"


def test_user_override_wins() -> None:
    assert store.choose_index_type(10, "hnsw") == "hnsw"
    assert store.choose_index_type(1_000_000, "flat") == "flat"


def test_hnsw_recall_against_exact_on_synthetic_set() -> None:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((50, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, 8000)] + 0.6 * rng.standard_normal((8000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(8000, 200, replace=False)] + 0.1 * rng.standard_normal((200, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ef_search = Config().hnsw_ef_search
    exact = store.build_vectors(vectors, 64, "flat", ef_search)
    approx = store.build_vectors(vectors, 64, "hnsw", ef_search)
    assert isinstance(approx, faiss.IndexHNSWFlat) and approx.hnsw.efSearch == ef_search
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95


def test_index_type_is_recorded_and_switching_does_not_re_embed(tmp_path: Path, embedder: VectorEmbeddings) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    counting = CountingEmbedder(embedder)
    config = Config(docs_dir=docs, index_dir=tmp_path / "index", index_type="hnsw")
    build_folder(config, counting)
    loaded = store.load(config.index_dir, embedder.name)
    assert loaded.manifest["index_type"] == "hnsw" and isinstance(loaded.vectors, faiss.IndexHNSWFlat)
    assert loaded.vectors.hnsw.efSearch == config.hnsw_ef_search
    answer = Pipeline(config, index=loaded).ask("متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟")
    assert answer.citations[0].source == "001_e9389b4ffc57ddb8.txt"

    counting.reset()
    flat_config = config.replace(index_type="auto")
    _, report = build_folder(flat_config, counting)
    assert report.embedded_chunks == 0 and counting.passages == []
    reloaded = store.load(config.index_dir, embedder.name)
    assert reloaded.manifest["index_type"] == "flat" and isinstance(reloaded.vectors, faiss.IndexFlatIP)
    assert reloaded.vectors.ntotal == len(reloaded.chunks) == loaded.vectors.ntotal


class _CountingQueries(VectorEmbeddings):
    def __init__(self, inner: VectorEmbeddings) -> None:
        super().__init__(inner.batch_size)
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        self.calls += 1
        return self.inner._encode(texts, is_query)


def test_repeated_questions_reuse_cached_query_embeddings(embedder: VectorEmbeddings) -> None:
    counting = _CountingQueries(embedder)
    first = counting.encode_query("كم عدد المندوبين؟")
    second = counting.encode_query("كم عدد المندوبين؟")
    assert counting.calls == 1 and np.array_equal(first, second)
    counting.encode_query("سؤال آخر")
    assert counting.calls == 2
