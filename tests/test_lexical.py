"""BM25 term counts saved with the index: read back instead of recounted, updated row by row, and
refused (with the rebuild command) when the saved file is damaged, foreign or planted."""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import Config
from index import store
from index.arabic import terms
from index.build import build_folder
from index.chunk import embedding_text
from index.lexical import BM25, LexicalIndex
from rag.retrieve import HybridRetriever
from tests.helpers import HashEmbedder, write_docs

WORDS = (
    "مؤتمر موسكو الأمن الدولي وزير الدفاع الصيني نهر النيل القارة الأفريقية بحيرة فيكتوريا القهوة اليمن "
    "البن ميناء المخا مكة القاهرة إسطنبول البرازيل الخرطوم البحر المتوسط الجبال الشراكة روسيا المندوب"
).split()


def document(rng: random.Random, title: str, words: list[str] = WORDS) -> str:
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))) + "." for _ in range(rng.randint(3, 9))]
    return f"{title}\n" + " ".join(sentences) + "\n"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    rng = random.Random(1)
    docs = write_docs(tmp_path / "docs", {f"doc-{i}.txt": document(rng, f"وثيقة {i}") for i in range(6)})
    return Config(docs_dir=docs, index_dir=tmp_path / "index", chunk_max_words=20, chunk_overlap_words=5)


def built(config: Config) -> store.StoredIndex:
    build_folder(config, HashEmbedder())
    return store.load(config.index_dir, "hash-test")


def assert_same_bm25(index: store.StoredIndex, queries: list[list[str]]) -> None:
    """The BM25 of the saved counts scores every query exactly as one counted from the chunk texts."""
    assert index.lexical is not None
    persisted = BM25.from_lexical(index.lexical, Config())
    scratch = BM25.from_documents([terms(embedding_text(c)) for c in index.chunks], Config())
    for query in queries:
        assert np.array_equal(persisted.scores(query), scratch.scores(query)), query
        for term in query:
            assert persisted.term_weight(term) == scratch.term_weight(term), term


def remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink()


def test_saved_counts_score_as_counts_from_scratch_after_adds_and_removes(config: Config) -> None:
    rng = random.Random(2)
    docs = config.docs_dir
    queries = [terms(" ".join(rng.sample(WORDS, 3))) for _ in range(30)] + [terms("كلمة جديدة تماما")]
    steps: list[Callable[[], object]] = [
        lambda: write_docs(docs, {"added-1.txt": document(rng, "إضافة"), "added-2.txt": document(rng, "أخرى")}),
        lambda: remove([docs / "doc-0.txt", docs / "doc-3.txt"]),
        lambda: write_docs(docs, {"doc-1.txt": document(rng, "نسخة معدلة")}),
        # New words only this document has, then its removal: their columns must go too.
        lambda: write_docs(docs, {"rare.txt": document(rng, "نادر", ["كلمة", "جديدة", "تماما", "سفينة"])}),
        lambda: (docs / "rare.txt").unlink(),
        lambda: remove([p for p in docs.iterdir() if p.name != "doc-2.txt"]),
    ]
    index = built(config)
    assert_same_bm25(index, queries)
    retriever_config = config.replace(retriever="bm25", k=10)
    for step in steps:
        step()
        index = built(config)
        assert index.lexical is not None and index.lexical.rows == len(index.chunks)
        assert_same_bm25(index, queries)
        # No column for a term no chunk has: the vocabulary does not grow with every replaced file.
        assert set(index.lexical.terms) == {t for c in index.chunks for t in terms(embedding_text(c))}
        scratch = BM25.from_documents([terms(embedding_text(c)) for c in index.chunks], Config())
        for query in ("مؤتمر موسكو", "نهر النيل البحر", "سفينة"):
            saved = HybridRetriever.from_config(retriever_config, index, HashEmbedder()).invoke(query)
            fresh = HybridRetriever.from_config(retriever_config, index, HashEmbedder(), scratch).invoke(query)
            assert [(d.id, d.metadata["score"]) for d in saved] == [(d.id, d.metadata["score"]) for d in fresh]


def count_stemming(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every chunk text prepared for the encoder or for BM25, wherever it is imported."""
    calls = [0]

    def counted(chunk: Any) -> str:
        calls[0] += 1
        return embedding_text(chunk)

    for where in ("index.build", "index.lexical", "rag.retrieve"):
        monkeypatch.setattr(f"{where}.embedding_text", counted, raising=False)
    return calls


def test_starting_on_a_saved_index_stems_no_chunk(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    built(config)
    calls = count_stemming(monkeypatch)
    index = store.load(config.index_dir, "hash-test")
    retriever = HybridRetriever.from_config(config.replace(retriever="bm25"), index, HashEmbedder())
    assert retriever.invoke("مؤتمر موسكو")
    assert calls[0] == 0


def test_an_update_stems_only_the_new_chunks(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    built(config)
    write_docs(config.docs_dir, {"new.txt": document(random.Random(3), "جديد")})
    calls = count_stemming(monkeypatch)
    index, report = build_folder(config, HashEmbedder())
    HybridRetriever.from_config(config, index, HashEmbedder())  # what the app does after an upload
    assert report.added == ["new.txt"] and 0 < report.embedded_chunks < len(index.chunks)
    assert calls[0] == 2 * report.embedded_chunks  # once for the encoder, once for the counts


def test_an_index_saved_before_term_counts_loads_and_the_next_write_saves_them(config: Config) -> None:
    index = built(config)
    manifest_path = config.index_dir / store.MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["lexical_file"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    old = store.load(config.index_dir, "hash-test")
    assert old.lexical is None
    assert HybridRetriever.from_config(config.replace(retriever="bm25"), old, HashEmbedder()).invoke("نهر النيل")
    write_docs(config.docs_dir, {"new.txt": document(random.Random(4), "جديد")})
    index = built(config)
    assert "lexical_file" in index.manifest
    assert_same_bm25(index, [terms("نهر النيل"), terms("مؤتمر موسكو")])


# --- damaged and hostile files ------------------------------------------------------------------


class Planted:
    """A pickle payload: unpickling it creates a file (proof that the loader ran pickled code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def rewrite(path: Path, **changes: Any) -> None:
    """Save the file again with some arrays replaced (None: left out)."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays.update(changes)
    with open(path, "wb") as handle:
        np.savez(handle, **{k: v for k, v in arrays.items() if v is not None})


def other_rows(path: Path) -> None:
    """A well-formed file of another generation (one chunk fewer)."""
    with np.load(path, allow_pickle=False) as saved:
        indptr = saved["indptr"]
        rewrite(
            path,
            shape=np.array([len(indptr) - 2, saved["shape"][1]]),
            indptr=indptr[:-1],
            indices=saved["indices"][: indptr[-2]],
            data=saved["data"][: indptr[-2]],
        )


DAMAGES: dict[str, Callable[[Path], object]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(random.Random(5).randbytes(4096)),
    "empty": lambda p: p.write_bytes(b""),
    "missing": lambda p: p.unlink(),
    "other-row-count": other_rows,
    "array-left-out": lambda p: rewrite(p, vocabulary=None),
    "column-out-of-range": lambda p: rewrite(p, shape=np.array([int(np.load(p)["shape"][0]), 1])),
    "row-offsets-backwards": lambda p: rewrite(p, indptr=np.load(p)["indptr"][::-1].copy()),
    "float-counts": lambda p: rewrite(p, data=np.load(p)["data"].astype(np.float64) + 0.5),
    "negative-counts": lambda p: rewrite(p, data=-np.load(p)["data"].astype(np.int64)),
    "vocabulary-not-json": lambda p: rewrite(p, vocabulary=np.frombuffer(b"\xff\xfe[", dtype=np.uint8)),
    "vocabulary-too-short": lambda p: rewrite(p, vocabulary=np.frombuffer(b'["a"]', dtype=np.uint8)),
    "other-format": lambda p: rewrite(p, format=np.array([99])),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_term_counts_name_the_file_and_the_rebuild_command(config: Config, damage: str) -> None:
    index = built(config)
    path = config.index_dir / index.manifest["lexical_file"]
    DAMAGES[damage](path)
    with pytest.raises(store.IndexCorrupt) as raised:
        store.load(config.index_dir, "hash-test")
    message = str(raised.value)
    assert str(path) in message and store.REBUILD_HINT in message, message
    # The printed fix works.
    build_folder(config.replace(), HashEmbedder(), rebuild=True)
    assert_same_bm25(store.load(config.index_dir, "hash-test"), [terms("مؤتمر موسكو")])


def test_a_pickle_planted_in_the_term_counts_is_never_unpickled(config: Config, tmp_path: Path) -> None:
    index = built(config)
    path = config.index_dir / index.manifest["lexical_file"]
    marker = tmp_path / "unpickled"
    payload = np.empty(1, dtype=object)
    payload[0] = Planted(marker)
    assert pickle.loads(pickle.dumps(Planted(tmp_path / "probe"))) is None  # the payload does run when unpickled
    assert (tmp_path / "probe").exists()
    good = path.read_bytes()
    for name in ("data", "vocabulary"):
        path.write_bytes(good)
        rewrite(path, **{name: payload})
        with pytest.raises(store.IndexCorrupt, match="rebuild"):
            store.load(config.index_dir, "hash-test")
        assert not marker.exists()


def test_update_keeps_rows_in_the_given_order_and_appends_new_ones() -> None:
    chunks = [f"وثيقة {i}\nنص عن {w}" for i, w in enumerate(["موسكو", "النيل", "القهوة", "موسكو"])]
    base = LexicalIndex.from_terms(terms(t) for t in chunks)
    updated = base.update([3, 0], [])
    expected = LexicalIndex.from_terms(terms(chunks[i]) for i in (3, 0))
    assert updated.rows == 2

    def by_term(lexical: LexicalIndex) -> list[dict[str, int]]:
        rows = lexical.counts.tolil()
        return [{lexical.terms[c]: int(v) for c, v in zip(cols, vals)} for cols, vals in zip(rows.rows, rows.data)]

    assert by_term(updated) == by_term(expected)
    assert "النيل" not in " ".join(updated.terms) and len(updated.terms) == len(expected.terms)
