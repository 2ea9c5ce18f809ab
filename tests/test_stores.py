"""Every index store (FAISS folder, Milvus Lite, a real Milvus server) behind the same build, load
and answer paths. The server runs only inside a loopback-only network namespace (`make test`);
elsewhere its parameters skip, saying why (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document

from core.config import Config
from index import store
from index.arabic import terms
from index.build import BuildReport, build_folder, store_for
from index.chunk import embedding_text
from index.embed import VectorEmbeddings
from index.lexical import BM25, LexicalIndex
from rag.chain import Pipeline
from tests.helpers import REPO_ROOT, SEEDS_DIR, CountingEmbedder, write_docs

STORES = ["faiss", "milvus", "milvus-server"]
MOSCOW_SOURCE = "001_e9389b4ffc57ddb8.txt"
ARABIC_QUESTION = "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟"
ENGLISH_QUESTION = "How many delegates attended the 2023 conference?"

NILE = (
    "نهر النيل\n"
    "نهر النيل أطول أنهار القارة الأفريقية. "
    "ينبع النيل الأبيض من بحيرة فيكتوريا، وينبع النيل الأزرق من بحيرة تانا في إثيوبيا. "
    "يلتقي الرافدان في الخرطوم ثم يجري النهر شمالا حتى يصب في البحر المتوسط.\n"
)
COFFEE = (
    "تاريخ القهوة\n"
    "عرف اليمنيون شراب القهوة في القرن الخامس عشر وزرعوا أشجار البن في الجبال. "
    "انتقلت القهوة من ميناء المخا إلى مكة والقاهرة ثم إلى إسطنبول. "
    "تعد البرازيل اليوم أكبر منتج للبن في العالم.\n"
)
DATES = (
    "النخيل في الجزيرة العربية\n"
    "تزرع أشجار النخيل في واحات الجزيرة العربية منذ آلاف السنين. "
    "تعد التمور غذاء أساسيا لسكان الصحراء، وتصدر اليوم إلى بلدان كثيرة.\n"
)


def make_config(
    kind: str, docs: Path, tmp: Path, request: pytest.FixtureRequest | None = None, db: str = "m.db"
) -> Config:
    """FAISS in a folder, Milvus Lite in a file, or a fresh collection on the session's server
    (which needs the test's `request`, for the server fixture)."""
    config = Config(docs_dir=docs, index_dir=tmp / "index", store="faiss" if kind == "faiss" else "milvus")
    if kind == "milvus":
        return config.replace(milvus_uri=str(tmp / db))
    if kind == "milvus-server":
        assert request is not None, "a milvus-server config needs the test's request"
        server = request.getfixturevalue("milvus_server")
        collection = f"t_{uuid.uuid4().hex[:12]}"
        return config.replace(milvus_uri=server.uri, milvus_token=server.token, milvus_collection=collection)
    return config


def free_closed_port() -> int:
    """A port nothing listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def source_text(config: Config, source: str) -> str:
    return (config.docs_dir / source).read_text(encoding="utf-8")


def chunks_of(index: store.StoredIndex) -> list[Document]:
    """Every chunk, whichever store holds them (in memory, or served by Milvus), in file order."""
    chunks = list(index.serving(Config()).scan())
    return sorted(chunks, key=lambda c: (c.metadata["source"], c.metadata["position"], c.metadata["start"]))


def ids_by_source(index: store.StoredIndex) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for chunk in chunks_of(index):
        result.setdefault(chunk.metadata["source"], set()).add(chunk.metadata["id"])
    return result


@dataclass
class Built:
    kind: str
    config: Config
    report: BuildReport
    tmp: Path


@pytest.fixture(scope="module", params=STORES)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedder: VectorEmbeddings
) -> Built:
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"stores-{kind}")
    docs = tmp / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    config = make_config(kind, docs, tmp, request)
    _, report = build_folder(config, embedder)
    return Built(kind, config, report, tmp)


@pytest.fixture(scope="module")
def pipeline(built: Built) -> Pipeline:
    return Pipeline(built.config)


# --- build and load ------------------------------------------------------------------------------


def test_build_then_load_is_consistent(built: Built, embedder: VectorEmbeddings) -> None:
    index = store_for(built.config).load(embedder.name)
    chunks = chunks_of(index)
    assert len(chunks) > 0
    assert len(chunks) == index.manifest["count"] == index.size == built.report.total_chunks
    assert embedder.dim == index.manifest["dim"]
    assert set(index.files) == {p.name for p in built.config.docs_dir.iterdir()}
    assert sum(info["chunks"] for info in index.files.values()) == len(chunks)
    assert len({c.metadata["id"] for c in chunks}) == len(chunks)
    texts = {name: source_text(built.config, name) for name in index.files}
    for chunk in chunks:
        meta = chunk.metadata
        assert chunk.page_content == texts[meta["source"]][meta["start"] : meta["end"]], meta["id"]
        assert chunk.page_content.strip()


def test_each_chunk_is_stored_with_its_own_vector(built: Built, embedder: VectorEmbeddings) -> None:
    index = store_for(built.config).load(embedder.name)
    corpus = index.serving(built.config)
    chunks = chunks_of(index)
    # Searching with a chunk's own vector, embedded again, finds that chunk first at cosine 1.
    for chunk in (chunks[0], chunks[len(chunks) // 2], chunks[-1]):
        vector = embedder.encode_passages([embedding_text(chunk)])[0]
        (key, cosine), *_ = corpus.dense(vector, 3)
        assert corpus.passages([key])[key].metadata["id"] == chunk.metadata["id"]
        assert cosine == pytest.approx(1.0, abs=1e-3)


def assert_term_weights(index: store.StoredIndex, config: Config, words: str) -> None:
    """Each store's term weights (IDF, which answer extraction uses) are BM25's over its chunks."""
    reference = BM25.from_lexical(LexicalIndex.from_chunks(chunks_of(index)), config)
    corpus = index.serving(config)
    for term in [*terms(words), "كلمةغيرموجودة"]:
        assert corpus.term_weight(term) == pytest.approx(reference.term_weight(term), rel=1e-5), term


def assert_bm25_scores(index: store.StoredIndex, config: Config, question: str) -> None:
    """The BM25 scores the fusion uses are the in-memory BM25's over the same chunks, whichever
    store finds the candidates (Milvus's own BM25 ranks them; the scores are the project's)."""
    chunks = chunks_of(index)
    reference = BM25.from_lexical(LexicalIndex.from_chunks(chunks), config)
    expected = dict(zip((c.metadata["id"] for c in chunks), reference.scores(terms(question)), strict=True))
    corpus = index.serving(config)
    keys = [key for key, _ in corpus.lexical(terms(question), 10)]
    assert keys
    _, scores = corpus.rescore(keys, np.zeros(index.manifest["dim"], np.float32), terms(question))
    found = corpus.passages(keys)
    assert scores.tolist() == pytest.approx([expected[found[k].metadata["id"]] for k in keys], rel=1e-4)


def test_term_weights_and_bm25_are_the_projects_over_the_stored_chunks(
    built: Built, embedder: VectorEmbeddings
) -> None:
    index = store_for(built.config).load(embedder.name)
    assert_term_weights(index, built.config, f"{ARABIC_QUESTION} {ENGLISH_QUESTION}")
    assert_bm25_scores(index, built.config, ARABIC_QUESTION)


def test_embedder_mismatch(built: Built) -> None:
    with pytest.raises(store.IndexMismatch, match="--rebuild") as info:
        store_for(built.config).load("other")
    assert "other" in str(info.value)


# --- retrieval and answers -----------------------------------------------------------------------


def check_citations(config: Config, answer: object) -> None:
    citations = answer.citations  # type: ignore[attr-defined]
    assert citations
    for c in citations:
        assert c.text == source_text(config, c.source)[c.start : c.end]


def test_arabic_question(built: Built, pipeline: Pipeline) -> None:
    answer = pipeline.ask(ARABIC_QUESTION)
    assert not answer.abstained
    assert answer.citations[0].source == MOSCOW_SOURCE
    assert "2023" in answer.answer
    check_citations(built.config, answer)


def test_english_question(built: Built, pipeline: Pipeline) -> None:
    answer = pipeline.ask(ENGLISH_QUESTION)
    assert not answer.abstained
    assert "800" in answer.answer
    check_citations(built.config, answer)


# --- incremental updates -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_incremental_updates(
    kind: str, tmp_path: Path, embedder: VectorEmbeddings, request: pytest.FixtureRequest
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    write_docs(docs, {"nile.txt": NILE, "coffee.txt": COFFEE})
    config = make_config(kind, docs, tmp_path, request, db="inc.db")
    counting = CountingEmbedder(embedder)

    def reload() -> store.StoredIndex:
        index = store_for(config).load(embedder.name)
        assert len(chunks_of(index)) == index.manifest["count"] == index.size
        assert set(index.files) == {p.name for p in docs.iterdir()}
        for chunk in chunks_of(index):
            meta = chunk.metadata
            assert chunk.page_content == source_text(config, meta["source"])[meta["start"] : meta["end"]]
        assert_term_weights(index, config, f"{NILE} {COFFEE} {DATES}")
        assert_bm25_scores(index, config, "من أين ينبع النيل وأين تزرع القهوة والنخيل؟")
        return index

    index, report = build_folder(config, counting)
    assert report.embedded_chunks == len(counting.passages) == index.size
    before = ids_by_source(reload())

    # Nothing changed: nothing is embedded and the index is the same.
    counting.reset()
    _, report = build_folder(config, counting)
    assert report.embedded_chunks == 0 and counting.passages == []
    assert ids_by_source(reload()) == before

    # One file changed: only its chunks are embedded; the other files keep their chunk ids.
    counting.reset()
    write_docs(docs, {"nile.txt": NILE.replace("أطول", "أكبر وأطول")})
    _, report = build_folder(config, counting)
    assert report.updated == ["nile.txt"]
    after = ids_by_source(reload())
    assert len(counting.passages) == report.embedded_chunks == len(after["nile.txt"])
    assert all("أكبر وأطول" in p or "نهر النيل" in p for p in counting.passages)
    assert after["nile.txt"] != before["nile.txt"]
    assert {s: ids for s, ids in after.items() if s != "nile.txt"} == {
        s: ids for s, ids in before.items() if s != "nile.txt"
    }

    # A new file: its chunks are added, nothing else is embedded.
    counting.reset()
    write_docs(docs, {"dates.txt": DATES})
    _, report = build_folder(config, counting)
    assert report.added == ["dates.txt"]
    added = ids_by_source(reload())
    assert len(counting.passages) == len(added["dates.txt"]) > 0
    assert {s: ids for s, ids in added.items() if s != "dates.txt"} == after

    # A removed file: its chunks are dropped, nothing is embedded.
    counting.reset()
    (docs / "coffee.txt").unlink()
    _, report = build_folder(config, counting)
    assert report.removed == ["coffee.txt"] and counting.passages == []
    removed = reload()
    assert not any(c.metadata["source"] == "coffee.txt" for c in chunks_of(removed))
    assert "coffee.txt" not in removed.files
    assert ids_by_source(removed) == {s: ids for s, ids in added.items() if s != "coffee.txt"}


@pytest.mark.parametrize("kind", ["milvus-server"])
def test_a_server_without_bm25_loads_its_saved_counts_not_every_chunks_terms(
    kind: str,
    tmp_path: Path,
    embedder: VectorEmbeddings,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 30: on a 2.3.x server each process read back and counted every chunk's terms at start
    (24 s at 100k chunks); each commit now saves the counts, and a load reads those."""
    from index.store.milvus import LocalBM25, MilvusCorpus, MilvusStore, _part_id

    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    config = make_config(kind, docs, tmp_path, request)
    build_folder(config, embedder)
    write_docs(docs, {"nile.txt": NILE})  # an incremental commit over the first one's counts
    build_folder(config, embedder)
    reads: list[tuple[str, tuple[str, ...]]] = []
    rows = MilvusStore.rows

    def spy(self: MilvusStore, collection: str, fields: list[str], filter: str = "") -> Iterator[dict[str, Any]]:
        reads.append((collection, tuple(fields)))
        return rows(self, collection, fields, filter)

    monkeypatch.setattr(MilvusStore, "rows", spy)
    target = MilvusStore.from_config(config)
    index = target.load(embedder.name)
    assert isinstance(index.corpus, MilvusCorpus) and isinstance(index.corpus.lexical_side, LocalBM25)
    assert not [read for read in reads if read[0] == target.collection], reads
    assert_bm25_scores(index, config, "من أين ينبع النيل وأين تزرع القهوة؟")
    assert_term_weights(index, config, f"{NILE} {ARABIC_QUESTION}")

    # Flawed saved counts are a cache gone bad: they cost a recount from the chunks, never the index.
    flawed = {"id": _part_id(int(index.manifest["generation"]), 0), "body": "bm90IGFuIG5weg==", "v": [0.0, 0.0]}
    target.call("upsert", target.counts, data=[flawed])
    reads.clear()
    index = target.load(embedder.name)
    assert (target.collection, ("id", "terms")) in reads
    assert_bm25_scores(index, config, "من أين ينبع النيل وأين تزرع القهوة؟")

    # A collection written before the counts were saved is counted from its chunks, as before.
    target.call("drop_collection", target.counts)
    reads.clear()
    index = target.load(embedder.name)
    assert (target.collection, ("id", "terms")) in reads
    assert_bm25_scores(index, config, "من أين ينبع النيل وأين تزرع القهوة؟")


# --- Milvus only ---------------------------------------------------------------------------------


MILVUS_ONLY = pytest.mark.parametrize("built", ["milvus", "milvus-server"], indirect=True)


@MILVUS_ONLY
def test_milvus_keeps_no_local_side_files(built: Built) -> None:
    index_dir = built.config.index_dir
    if index_dir.exists():
        leftovers = [*index_dir.glob("chunks*.jsonl"), *index_dir.glob("vectors*.faiss")]
        assert leftovers == []
    assert not list(built.tmp.rglob("*.faiss")) and not list(built.tmp.rglob("*.jsonl"))


@MILVUS_ONLY
def test_milvus_second_client_loads_same_chunks(built: Built, embedder: VectorEmbeddings) -> None:
    from index.store.milvus import MilvusStore

    config = built.config
    first = store_for(config).load(embedder.name)
    second = MilvusStore(config.milvus_uri, config.milvus_collection, config.milvus_token).load(embedder.name)
    assert second is not first
    assert [(c.metadata, c.page_content) for c in chunks_of(second)] == [
        (c.metadata, c.page_content) for c in chunks_of(first)
    ]
    assert second.manifest["files"] == first.manifest["files"]


def test_milvus_unreachable_server(tmp_path: Path, embedder: VectorEmbeddings) -> None:
    uri = f"http://127.0.0.1:{free_closed_port()}"
    config = Config(docs_dir=SEEDS_DIR, index_dir=tmp_path / "index", store="milvus", milvus_uri=uri)
    started = time.monotonic()
    with pytest.raises(store.StoreUnavailable) as info:
        store_for(config).load(embedder.name)
    assert time.monotonic() - started < 15
    assert uri in str(info.value)
    assert "\n" not in str(info.value)


def test_milvus_unreachable_server_cli(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        {
            "RAG_STORE": "milvus",
            "RAG_MILVUS_URI": uri,
            "RAG_INDEX_DIR": str(tmp_path / "index"),
            "RAG_DOCS_DIR": str(SEEDS_DIR),
            "PYTHONIOENCODING": "utf-8",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "rag", "ask", "سؤال"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "milvus" in lines[0].lower()
    assert uri in lines[0]
