"""The benchmark's synthetic corpus: what makes its scaling numbers stand for real collections."""

from __future__ import annotations

import numpy as np
import pytest

from eval.bench import SyntheticCorpus
from eval.questions import load_jsonl
from index.store import StoredIndex, build_vectors
from tests.helpers import QUESTIONS_DIR, SeedsIndex, vectors_of


@pytest.fixture(scope="module")
def clustered_index(seeds_index: SeedsIndex) -> StoredIndex:
    """600 "real" vectors in documents of 4 close chunks (as real collections have), seeds texts."""
    rng = np.random.default_rng(7)
    centres = np.repeat(rng.standard_normal((150, 384)), 4, axis=0)
    vectors = (centres + 0.5 * rng.standard_normal((600, 384)) + 3.0).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [seeds_index.index.chunks[i % len(seeds_index.index.chunks)] for i in range(600)]
    return StoredIndex(manifest={"files": {}}, chunks=chunks, vectors=build_vectors(vectors, 384, "flat", 1))


def test_synthetic_vectors_match_the_real_neighbour_similarity(
    seeds_index: SeedsIndex, clustered_index: StoredIndex
) -> None:
    questions = [q.question for q in load_jsonl(QUESTIONS_DIR / "seeds.jsonl")][:20]
    corpus = SyntheticCorpus(seeds_index.config, clustered_index, questions)
    real = vectors_of(clustered_index).reconstruct_n(0, 600)
    assert corpus.queries.shape == (20, 384)
    # Calibrated: as close to the real chunks' local structure as the 0.05 grid allows.
    assert abs(corpus.synthetic_neighbour_cosine - corpus.real_neighbour_cosine) < 0.03
    assert corpus.between_share > 0.0  # a single flat Gaussian has no close neighbours
    vectors = corpus.vectors(2_000)
    assert vectors.shape == (2_000, real.shape[1])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, corpus.vectors(2_000))  # deterministic: same n, same corpus
    # Same mean direction as the real embeddings.
    assert (
        float(vectors.mean(axis=0) @ real.mean(axis=0))
        / (np.linalg.norm(vectors.mean(axis=0)) * np.linalg.norm(real.mean(axis=0)))
        > 0.99
    )


def test_synthetic_bm25_has_the_real_vocabulary(seeds_index: SeedsIndex) -> None:
    corpus = SyntheticCorpus(seeds_index.config, seeds_index.index, ["سؤال"])
    bm25 = corpus.bm25(500)
    assert bm25.matrix.shape == (500, len(corpus.vocabulary))
    # Terms are drawn by their real frequency: the commonest real term is the least informative.
    assert int(np.argmin(bm25.idf)) == 0
