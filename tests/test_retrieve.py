"""The top-k selection behind BM25 and fusion is exact, on large score vectors too."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from core.config import Config
from index.arabic import terms
from index.lexical import BM25, LexicalIndex, top_n


def zipf_bm25(n_docs: int, vocabulary: int, seed: int) -> BM25:
    """Documents whose terms follow a Zipf law, like real text: a few very common terms, many rare."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocabulary + 1)
    p /= p.sum()
    lengths = rng.integers(5, 60, n_docs)
    rows = np.repeat(np.arange(n_docs), lengths)
    cols = rng.choice(vocabulary, size=int(lengths.sum()), p=p)
    counts = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_docs, vocabulary))
    counts.sum_duplicates()
    return BM25.from_lexical(LexicalIndex(counts, [f"t{i}" for i in range(vocabulary)]), Config())


def assert_exacttop_n(scores: np.ndarray, n: int) -> None:
    rows = top_n(scores, n)
    expected = np.sort(scores)[::-1][: min(n, len(scores))]
    assert len(rows) == len(expected) and len(set(rows.tolist())) == len(rows)
    assert np.array_equal(scores[rows], expected)  # the n largest, largest first


@pytest.mark.parametrize("size", [0, 1, 7, 1_000, 60_000, 400_000])
@pytest.mark.parametrize("n", [1, 5, 50, 500])
def test_top_is_exact_on_all_shapes_of_scores(size: int, n: int) -> None:
    rng = np.random.default_rng(size + n)
    shapes = [
        rng.random(size, dtype=np.float32),  # all distinct
        np.where(rng.random(size) < 0.9, 0.0, rng.random(size)).astype(np.float32),  # mostly zero (BM25)
        np.where(rng.random(size) < 0.999, 0.0, 1.0).astype(np.float32),  # a handful of hits, all tied
        np.round(rng.random(size), 1).astype(np.float32),  # heavy ties everywhere
        np.zeros(size, dtype=np.float32),
    ]
    for scores in shapes:
        assert_exacttop_n(scores, n)


def test_bm25_ranking_over_a_large_zipf_corpus() -> None:
    bm25 = zipf_bm25(60_000, 5_000, 0)
    rng = np.random.default_rng(1)
    for _ in range(30):
        query = [f"t{int(i)}" for i in rng.choice(5_000, rng.integers(1, 8))] + ["unseen"]
        assert_exacttop_n(bm25.scores(query), 50)


def test_bm25_scores_arabic_terms() -> None:
    bm25 = BM25.from_documents([terms("مؤتمر موسكو للأمن الدولي"), terms("وزير الدفاع الصيني")], Config())
    assert not bm25.scores(terms("كلمة غير موجودة")).any()
    scores = bm25.scores(terms("وزير الدفاع"))
    assert scores[1] > 0 and scores[0] == 0
