"""index.load (encodings, titles, folders) and index.chunk (spans, ids, sizes) on Arabic text and the seeds."""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import pytest
from langchain_core.documents import Document

from core.config import Config
from index.chunk import ChunkSettings, chunk_id, split_document
from index.load import UnreadableFile, decode, derive_title, load_file, load_folder
from tests.helpers import SEEDS_DIR, uncovered_non_space, write_docs

ARABIC = (
    "مؤتمر موسكو للأمن الدولي\n"
    "انعقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة في 15 أغسطس 2023.\n"
    "وقد حضر المؤتمر أكثر من 800 مندوب من 76 دولة، بينما غابت الدول الغربية.\n"
)


# --- decode ----------------------------------------------------------------------------------------


def test_decode_utf8() -> None:
    assert decode(ARABIC.encode("utf-8")) == (ARABIC, "utf-8")


def test_decode_utf8_with_bom() -> None:
    text, encoding = decode(b"\xef\xbb\xbf" + ARABIC.encode("utf-8"))
    assert (text, encoding) == (ARABIC, "utf-8-sig")
    assert not text.startswith("\ufeff")


@pytest.mark.parametrize(
    "raw", [ARABIC.encode("utf-16"), b"\xff\xfe" + ARABIC.encode("utf-16-le"), b"\xfe\xff" + ARABIC.encode("utf-16-be")]
)
def test_decode_utf16_with_bom(raw: bytes) -> None:
    assert decode(raw) == (ARABIC, "utf-16")


def test_decode_windows_1256_arabic() -> None:
    raw = ARABIC.encode("cp1256")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert decode(raw) == (ARABIC, "cp1256")


def test_decode_normalises_line_endings() -> None:
    text, _ = decode("سطر أول\r\nسطر ثان\rسطر ثالث".encode())
    assert text == "سطر أول\nسطر ثان\nسطر ثالث"
    text, encoding = decode("سطر أول\r\nسطر ثان".encode("cp1256"))
    assert (text, encoding) == ("سطر أول\nسطر ثان", "cp1256")


@pytest.mark.parametrize(
    "junk",
    [
        random.Random(1256).randbytes(4096),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        b"%PDF-1.7\n\x00\x01\x02\x03\xff\xfe",
        "نص\x00عربي".encode(),  # a NUL makes even valid UTF-8 binary
    ],
    ids=["random", "png", "pdf", "nul-in-utf8"],
)
def test_decode_rejects_binary(junk: bytes) -> None:
    with pytest.raises(UnreadableFile):
        decode(junk)


@pytest.mark.parametrize(
    "text",
    ["Café résumé naïve, déjà vu à la crème brûlée. Über Straße größer.", "Ñandú señor año ¿qué? ¡sí! " * 20],
)
def test_decode_rejects_latin1_non_arabic(text: str) -> None:
    raw = text.encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    with pytest.raises(UnreadableFile, match="not valid UTF-8"):
        decode(raw)


# --- derive_title ----------------------------------------------------------------------------------


def test_title_from_heading_line() -> None:
    assert (
        derive_title("دلالات انعقاد مؤتمر موسكو\nانعقد المؤتمر في أغسطس 2023.", "fallback")
        == "دلالات انعقاد مؤتمر موسكو"
    )


def test_title_from_markdown_heading() -> None:
    assert derive_title("# مؤتمر موسكو للأمن الدولي\n\nنص.", "fallback") == "مؤتمر موسكو للأمن الدولي"
    assert derive_title("\n\n## الأهداف\n", "fallback") == "الأهداف"


def test_title_from_long_first_paragraph_is_its_first_words() -> None:
    paragraph = "في مرحلة مفصلية من تاريخ أنظمة وحكومات وشعوب تقيم روسيا الاتحادية مؤتمر موسكو للأمن الدولي."
    title = derive_title(paragraph + "\nفقرة ثانية.", "fallback")
    assert title == "في مرحلة مفصلية من تاريخ أنظمة وحكومات وشعوب …"
    long_line = " ".join(["كلمة"] * 40)  # no sentence end, but far over the heading length
    assert derive_title(long_line + "\nثانية", "fallback") == " ".join(["كلمة"] * 8) + " …"


def test_title_single_short_line_and_fallback() -> None:
    assert derive_title("سطر وحيد قصير", "fallback") == "سطر وحيد قصير"
    assert derive_title("  \n \n", "اسم الملف") == "اسم الملف"
    assert derive_title("هل هذا سؤال؟\nنعم.", "fallback") == "هل هذا سؤال؟"


def test_seed_titles() -> None:
    docs, skipped = load_folder(SEEDS_DIR)
    assert not skipped
    titles = {d.metadata["source"]: d.metadata["title"] for d in docs}
    assert titles["001_e9389b4ffc57ddb8.txt"] == "نحو بناء عالم مُتعدد الأقطاب….دلالات انعقاد مؤتمر موسكو للأمن الدولي"
    assert titles["000_b5c95c8664f5005e.txt"].endswith(" …")


# --- load_file / load_folder -----------------------------------------------------------------------


def test_load_file_metadata(tmp_path: Path) -> None:
    raw = ARABIC.encode("cp1256")
    path = tmp_path / "تقرير.txt"
    path.write_bytes(raw)
    doc = load_file(path)
    assert doc.page_content == ARABIC
    assert doc.metadata == {
        "source": "تقرير.txt",
        "title": "مؤتمر موسكو للأمن الدولي",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "encoding": "cp1256",
        "bytes": len(raw),
        "language": "ar",
    }


def test_load_file_refuses_unsupported_and_empty(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(UnreadableFile, match="unsupported"):
        load_file(tmp_path / "x.xlsx")
    (tmp_path / "empty.txt").write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(UnreadableFile, match="empty"):
        load_file(tmp_path / "empty.txt")


def test_load_folder_skips_undecodable_file_and_loads_the_rest(tmp_path: Path) -> None:
    write_docs(
        tmp_path,
        {
            "a.txt": "النص الأول عن مؤتمر موسكو.",
            "b_bad.txt": "Café résumé naïve, déjà vu à la crème brûlée.".encode("latin-1"),
            "c.md": "# عنوان\nالنص الثالث.",
            "sub/d.txt": "ملف في مجلد فرعي.".encode("cp1256"),
            "image.gif": b"GIF89a",
            ".hidden/e.txt": "ملف مخفي",
            "notes.TXT": "امتداد بأحرف كبيرة.",
        },
    )
    docs, skipped = load_folder(tmp_path)
    assert [d.metadata["source"] for d in docs] == ["a.txt", "c.md", "notes.TXT", "sub/d.txt"]
    assert [s.path.name for s in skipped] == ["b_bad.txt"]
    message = str(skipped[0])
    assert "b_bad.txt" in message and "\n" not in message
    assert docs[-1].metadata["encoding"] == "cp1256"


def test_load_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "nope")


# --- chunking ----------------------------------------------------------------------------------------


def seed_documents() -> list[Document]:
    docs, skipped = load_folder(SEEDS_DIR)
    assert len(docs) == 2 and not skipped
    return docs


SETTINGS = [ChunkSettings.from_config(Config()), ChunkSettings(40, 10), ChunkSettings(12, 4)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.max_words}w")
def test_seed_chunks_are_exact_source_slices(settings: ChunkSettings) -> None:
    for doc in seed_documents():
        text = doc.page_content
        chunks = split_document(doc, settings)
        assert chunks
        for position, chunk in enumerate(chunks):
            meta = chunk.metadata
            assert chunk.page_content == text[meta["start"] : meta["end"]]
            assert chunk.page_content == chunk.page_content.strip()
            assert meta["position"] == position
            assert meta["source"] == doc.metadata["source"]
            assert meta["title"] == doc.metadata["title"]
            assert chunk.id == meta["id"] == chunk_id(meta["source"], meta["start"], meta["end"], chunk.page_content)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.max_words}w")
def test_seed_chunks_cover_all_text(settings: ChunkSettings) -> None:
    for doc in seed_documents():
        chunks = split_document(doc, settings)
        spans = [(c.metadata["start"], c.metadata["end"]) for c in chunks]
        assert uncovered_non_space(doc.page_content, spans) == []
        starts = [s for s, _ in spans]
        ends = [e for _, e in spans]
        assert starts == sorted(starts) and ends == sorted(ends)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"{s.max_words}w")
def test_seed_chunks_respect_max_words(settings: ChunkSettings) -> None:
    for doc in seed_documents():
        for chunk in split_document(doc, settings):
            assert len(chunk.page_content.split()) <= settings.max_words, chunk.page_content


def test_seed_chunk_ids_are_stable_and_unique() -> None:
    first = [c.id for doc in seed_documents() for c in split_document(doc, ChunkSettings.from_config(Config()))]
    second = [c.id for doc in seed_documents() for c in split_document(doc, ChunkSettings.from_config(Config()))]
    assert first == second
    assert len(set(first)) == len(first)
    other = [c.id for doc in seed_documents() for c in split_document(doc, ChunkSettings(40, 10))]
    assert len(set(other)) == len(other)


def test_chunk_ids_depend_on_source_name() -> None:
    doc = seed_documents()[0]
    renamed = Document(page_content=doc.page_content, metadata={**doc.metadata, "source": "renamed.txt"})
    assert {c.id for c in split_document(doc, ChunkSettings.from_config(Config()))}.isdisjoint(
        c.id for c in split_document(renamed, ChunkSettings.from_config(Config()))
    )


def test_chunks_keep_sentences_whole_and_overlap() -> None:
    sentences = [f"الجملة رقم {i} تتحدث عن مؤتمر موسكو للأمن الدولي." for i in range(1, 21)]
    text = " ".join(sentences)
    doc = Document(page_content=text, metadata={"source": "s.txt", "title": "t"})
    chunks = split_document(doc, ChunkSettings(max_words=30, overlap_words=10))
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.page_content.startswith("الجملة رقم") and chunk.page_content.endswith("الدولي.")
    for before, after in itertools.pairwise(chunks):
        assert after.metadata["start"] < before.metadata["end"]  # overlap carried into the next chunk


def test_paragraph_breaks_start_new_chunks() -> None:
    para = " ".join(["جملة قصيرة عن المؤتمر."] * 6)  # 24 words
    text = f"{para}\n\n{para}\n\n{para}"
    doc = Document(page_content=text, metadata={"source": "p.txt", "title": "t"})
    chunks = split_document(doc, ChunkSettings(max_words=40, overlap_words=8))
    assert [c.page_content for c in chunks] == [para, para, para]


def test_one_megabyte_line_without_newline() -> None:
    text = "كلمة عربية " * 60_000  # ~1.2 MB of UTF-8, one line, no punctuation
    assert len(text.encode()) > 1_000_000 and "\n" not in text
    doc = Document(page_content=text, metadata={"source": "big.txt", "title": "big"})
    chunks = split_document(doc, ChunkSettings.from_config(Config()))
    assert len(chunks) >= len(text.split()) // 150
    assert all(len(c.page_content.split()) <= 150 for c in chunks)
    assert uncovered_non_space(text, [(c.metadata["start"], c.metadata["end"]) for c in chunks]) == []


def test_one_megabyte_word_without_space() -> None:
    """Not prose: left out (it used to become one 1 MB chunk; issue 17, point 5)."""
    text = "ك" * 1_000_000
    chunks = split_document(
        Document(page_content=text, metadata={"source": "w.txt", "title": "w"}), ChunkSettings.from_config(Config())
    )
    assert chunks == []


def test_empty_and_blank_documents_have_no_chunks() -> None:
    for text in ["", "   \n\n\t "]:
        assert (
            split_document(
                Document(page_content=text, metadata={"source": "e.txt", "title": "e"}),
                ChunkSettings.from_config(Config()),
            )
            == []
        )


def test_chunks_know_the_paragraph_they_start_in() -> None:
    """Sources show "paragraph 3" / "الفقرة 3" instead of character offsets: the number must be the
    paragraph of the document the chunk's text starts in, counted from 1."""
    paragraphs = [
        "عنوان المقال",
        " ".join(["انعقد المؤتمر في موسكو وحضره مندوبون من دول كثيرة."] * 12),
        " ".join(["ناقش المشاركون قضايا الأمن في آسيا وأفريقيا وأوروبا."] * 12),
        " ".join(["وفي الختام أصدر المؤتمر بيانا دعا فيه إلى التعاون."] * 12),
    ]
    text = "\n".join(paragraphs) + "\n"
    doc = Document(page_content=text, metadata={"source": "p.txt", "title": "عنوان المقال"})
    chunks = split_document(doc, ChunkSettings(max_words=100, overlap_words=10))
    for chunk in chunks:
        expected = text[: chunk.metadata["start"]].count("\n") + 1
        first_word = chunk.page_content.split()[0]
        assert chunk.metadata["paragraph"] == expected, (first_word, chunk.metadata)
    assert {c.metadata["paragraph"] for c in chunks} >= {1, 2, 3, 4}
