"""The UI's pieces without a browser or a server: escaping, answer HTML, upload names, the
documents library (add / reject / remove on a throwaway index), and the network-bind refusal."""

from __future__ import annotations

import dataclasses
import html
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Config
from core.i18n import t
from index import store
from index.build import build_folder
from index.embed import VectorEmbeddings
from index.library import DocumentLibrary, UploadReport, safe_name
from rag.answer import Answer, Citation
from rag.chain import Pipeline, reader_available
from tests.helpers import REPO_ROOT, SEEDS_DIR, SeedsIndex, collected, free_port
from ui.app import _reopened_lists, make_i18n
from ui.render import answer_message, escape_text

ARABIC_QUESTION = "كم عدد المندوبين الذين حضروا المؤتمر؟"
ENGLISH_QUESTION = "How many delegates attended the 2023 conference?"
OFF_TOPIC_QUESTION = "كيف أحضّر عجينة البيتزا في المنزل؟"
SEED = "000_b5c95c8664f5005e.txt"

# A document on a topic the seeds never mention, so only it can answer questions about it.
OLIVE_DOC = """مهرجان واحة الزيتون السنوي
أقيم مهرجان واحة الزيتون السنوي في مدينة الجوف يوم 3 مارس 2021. وشارك في المهرجان أكثر من 450 مزارعا من 12 محافظة. وفاز بالجائزة الأولى المزارع سالم العنزي عن زيت الزيتون البكر.
"""
OLIVE_QUESTION = "كم عدد المزارعين الذين شاركوا في مهرجان واحة الزيتون؟"
_uploads = itertools.count()
SMALL_DOC = "ملاحظات قصيرة عن صيد السمك في الخليج\nيخرج الصيادون فجرا بقواربهم الصغيرة ويعودون قبل الظهر.\n"


# --- escape_text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["<script>alert(1)</script>", "[click](http://evil.example)", "**bold**", "http://x.y"],
    ids=["script", "md-link", "md-bold", "autolink"],
)
def test_escape_text_leaves_no_markup_characters(text: str) -> None:
    escaped = escape_text(text)
    for raw in "<>[(*:":
        assert raw not in escaped, (raw, escaped)
    assert html.unescape(escaped) == text  # shown as the characters it is


def test_escape_text_keeps_arabic_and_turns_newlines_into_br() -> None:
    arabic = "مؤتمر موسكو للأمن الدولي، في نسخته الحادية عشرة"
    assert escape_text(arabic) == arabic
    assert escape_text("سطر أول\nسطر ثان") == "سطر أول<br>سطر ثان"
    assert escape_text("<b>\n</b>").count("<br>") == 1


# --- answer_message --------------------------------------------------------------------------


def test_answer_message_arabic_question(seeds_pipeline: Pipeline) -> None:
    answer = seeds_pipeline.ask(ARABIC_QUESTION)
    assert not answer.abstained and answer.citations
    page = answer_message(answer)
    assert 'dir="rtl"' in page
    assert "<mark>" in page
    assert '<sup class="cite cite-1" title="1">[1]</sup>' in page
    assert "المصادر" in page
    # Where a passage is, as a reader finds it: its paragraph, not character offsets.
    assert "الفقرة" in page and "chars" not in page
    assert "paragraph" not in page and "score" not in answer_message(answer, show_scores=True)
    for citation in answer.citations:
        # Punctuation in names (the underscore) is a character reference; the page shows the name.
        assert escape_text(citation.source) in page
        assert citation.source in html.unescape(page)


def test_answer_message_english_question(seeds_pipeline: Pipeline) -> None:
    answer = seeds_pipeline.ask(ENGLISH_QUESTION)
    assert not answer.abstained
    page = answer_message(answer)
    assert '<div dir="ltr" class="answer">' in page
    assert 'dir="rtl" class="answer' not in page
    assert "Sources" in page
    assert '<sup class="cite' in page
    # The passages are Arabic, the message English: where they are is said in the message's
    # language (issue 29: "الفقرة 1" on the English page), and so are the scores.
    assert "paragraph" in page and "الفقرة" not in page
    assert "· score" in answer_message(answer, show_scores=True)


def test_answer_message_abstained_shows_related_passages(seeds_pipeline: Pipeline) -> None:
    answer = seeds_pipeline.ask(OFF_TOPIC_QUESTION)
    assert answer.abstained and answer.related
    page = answer_message(answer)
    assert 'class="answer abstained"' in page
    assert "مقاطع ذات صلة" in page
    assert "<mark>" not in page
    assert '<sup class="cite' not in page
    assert "المصادر" not in page


def test_answer_message_escapes_document_text() -> None:
    text = "قال <script>alert('x')</script> ثم [اضغط هنا](http://evil.example) و **عريض** انتهى."
    start = text.index("<script>")
    citation = Citation(
        n=1,
        source="<img src=x onerror=alert(1)>.txt",
        title="<script>document.cookie</script> [t](http://t.example)",
        start=0,
        end=len(text),
        text=text,
        score=0.9,
        highlights=[(start, start + 20), (text.index("[اضغط"), len(text))],
    )
    answer = Answer(
        question="ما <script>؟",
        answer="جواب [رابط](http://evil.example) <script>x</script> [1]",
        abstained=False,
        citations=[citation],
        notice="<script>n</script>",
    )
    for page in (
        answer_message(answer),
        answer_message(answer, show_scores=True),
        answer_message(Answer(question="<script>", answer="[x](y)", abstained=True, citations=[], related=[citation])),
    ):
        assert "<script" not in page.lower()
        assert "<img" not in page.lower()
        assert "](" not in page
        assert "**" not in page
    page = answer_message(answer)
    assert '<sup class="cite cite-1" title="1">[1]</sup>' in page
    assert "<mark>" in page
    shown = html.unescape(re.sub(r"</?mark>", "", page))
    assert "<script>alert('x')</script>" in shown  # shown as text, not run


# --- safe_name -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("..\\..\\x.md", "x.md"),
        ("/abs/path/notes.md", "notes.md"),
        ("تقرير المؤتمر.TXT", "تقرير المؤتمر.txt"),
        ("x.tar.TXT", "x.tar.txt"),
        ("", "document"),
        ("...", "document"),
        ("a/b/", "document"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_safe_name_strips_leading_dots() -> None:
    name = safe_name(".hidden.txt")
    assert not name.startswith(".")
    assert name.endswith(".txt") and "hidden" in name


@pytest.mark.parametrize("name", ["a\x00b\x1f<c>|d.txt", 'x\ny\rz\t<>|?*".md', 'ملف<>|"تقرير\x07.txt'])
def test_safe_name_cleans_control_and_shell_characters(name: str) -> None:
    cleaned = safe_name(name)
    assert not any(ch in cleaned for ch in '<>|"?*/\\:')
    assert all(ch.isprintable() for ch in cleaned)
    assert cleaned.endswith((".txt", ".md"))
    assert not cleaned.startswith(".")


def test_safe_name_keeps_arabic_diacritics_readable() -> None:
    """Harakat are combining marks, not \\w: they must not become underscores inside the word."""
    cleaned = safe_name("تَقْرِير.txt")
    assert cleaned in {"تَقْرِير.txt", "تقرير.txt"}, cleaned


def test_safe_name_of_a_bare_suffix_keeps_the_suffix() -> None:
    """A file called ".txt" has an empty stem: it becomes document.txt, not an unsupported "txt"."""
    assert safe_name(".txt") == "document.txt"
    assert safe_name(".md") == "document.md"


@pytest.mark.parametrize("char", ["漢", "ﻻ", "a"], ids=["cjk-3-bytes", "arabic-presentation-form", "ascii"])
def test_safe_name_fits_the_filesystem_limit(char: str) -> None:
    cleaned = safe_name(char * 300 + ".txt")
    assert len(cleaned.encode("utf-8")) <= 255, len(cleaned.encode("utf-8"))
    assert cleaned.endswith(".txt")


# --- DocumentLibrary on a throwaway index --------------------------------------------------------


@pytest.fixture(scope="module")
def library_template(tmp_path_factory: pytest.TempPathFactory, embedder: VectorEmbeddings) -> Path:
    """A docs folder (one seed) and its index, built once and copied per test."""
    root = tmp_path_factory.mktemp("library-template")
    (root / "docs").mkdir()
    shutil.copy(SEEDS_DIR / SEED, root / "docs" / SEED)
    build_folder(Config(docs_dir=root / "docs", index_dir=root / "index"), embedder)
    return root


@pytest.fixture
def library(tmp_path: Path, library_template: Path) -> DocumentLibrary:
    root = tmp_path / "lib"
    shutil.copytree(library_template, root)
    config = Config(docs_dir=root / "docs", index_dir=root / "index")
    pipeline = Pipeline(config, index=store.load(config.index_dir))
    return DocumentLibrary(pipeline, max_bytes=10 * 2**20)


def upload(tmp_path: Path, content: str | bytes, name: str) -> Path:
    """A file as Gradio leaves it: in a temp folder of its own, outside the docs folder, keeping
    the suffix of the name the user gave it (which is passed to add() separately)."""
    folder = tmp_path / "gradio-upload" / str(next(_uploads))
    folder.mkdir(parents=True)
    path = folder / ("upload" + Path(name.replace("\\", "/")).suffix)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def add(library: DocumentLibrary, tmp_path: Path, *files: tuple[str | bytes, str]) -> UploadReport:
    """library.add() of (content, user's file name) pairs."""
    return library.add([(upload(tmp_path, content, name), name) for content, name in files])


def generation(library: DocumentLibrary) -> int:
    return int(store.read_manifest(library.pipeline.config.index_dir)["generation"])


def docs_files(library: DocumentLibrary) -> set[str]:
    return {p.name for p in library.folder.iterdir() if p.is_file()}


def test_add_indexes_a_new_document(library: DocumentLibrary, tmp_path: Path) -> None:
    before = generation(library)
    report = add(library, tmp_path, (OLIVE_DOC, "مهرجان الزيتون.txt"))
    assert report.added == ["مهرجان الزيتون.txt"], report
    assert not (report.rejected or report.duplicates or report.updated)
    assert (library.folder / "مهرجان الزيتون.txt").read_text(encoding="utf-8") == OLIVE_DOC
    assert "مهرجان الزيتون.txt" in library.pipeline.index.files
    assert "مهرجان الزيتون.txt" in library.names()
    assert any(row[1] == "مهرجان الزيتون.txt" for row in library.rows())
    assert generation(library) == before + 1
    assert SEED in library.pipeline.index.files  # the old document is still there

    answer = library.pipeline.ask(OLIVE_QUESTION)
    assert not answer.abstained, answer.answer
    assert "450" in answer.answer
    assert {c.source for c in answer.citations} == {"مهرجان الزيتون.txt"}

    # The index on disk agrees with the one in memory: a fresh load sees the document.
    assert "مهرجان الزيتون.txt" in store.load(library.pipeline.config.index_dir).files


def test_a_batch_naming_a_link_or_folder_indexes_the_rest_and_says_which(
    library: DocumentLibrary, tmp_path: Path
) -> None:
    """Issue 27 point 5: an upload whose name was a symlink or a folder in the documents folder
    was a 500, with the batch's earlier files written but not indexed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("ملف خارج المجلد", encoding="utf-8")
    (library.folder / "link.txt").symlink_to(outside)
    (library.folder / "folder.txt").mkdir()
    report = add(
        library,
        tmp_path,
        (OLIVE_DOC, "olive.txt"),
        ("مهرجان التمور\nأقيم مهرجان التمور في بريدة.\n", "link.txt"),
        ("مهرجان العسل\nأقيم مهرجان العسل في الباحة.\n", "folder.txt"),
        ("مهرجان الورد\nأقيم مهرجان الورد في الطائف.\n", "rose.txt"),
    )
    assert sorted(report.added) == ["olive.txt", "rose.txt"], report.message()
    assert {"olive.txt", "rose.txt"} <= set(library.pipeline.index.files)
    said = report.message("ar")
    for name in ("link.txt", "folder.txt"):
        assert name not in library.pipeline.index.files and f"الاسم {name}" in said
    assert (library.folder / "link.txt").is_symlink() and outside.read_text(encoding="utf-8") == "ملف خارج المجلد"
    assert not library.trash.items()  # nothing was moved aside for them


def test_an_upload_batch_is_capped_in_characters_and_says_which_file_to_send_alone(
    library: DocumentLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 point 10: text is capped per document and per upload (one batch is embedded
    under the index lock while every other upload waits)."""
    from index import library as documents

    monkeypatch.setattr(documents, "MAX_UPLOAD_CHARS", 150)
    report = add(
        library,
        tmp_path,
        ("مهرجان التمور\nأقيم مهرجان التمور في بريدة.\n", "dates.txt"),
        ("مهرجان العسل\nأقيم مهرجان العسل في الباحة.\n", "honey.txt"),
        (OLIVE_DOC, "olive.txt"),
    )
    assert sorted(report.added) == ["dates.txt", "honey.txt"], report.message()
    assert "olive.txt" not in library.pipeline.index.files
    assert "ارفع هذا الملف وحده" in report.message("ar")


def test_documents_keep_a_readable_mode_through_upload_and_the_trash(
    library: DocumentLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 point 5: uploads were always 0600, and a file copied through the trash across
    file systems came back 0600 whatever its mode was."""
    from index import trash as trash_module
    from index.library import UPLOAD_MODE

    add(library, tmp_path, (OLIVE_DOC, "olive.txt"))
    assert (library.folder / "olive.txt").stat().st_mode & 0o777 == UPLOAD_MODE != 0o600
    os.chmod(library.folder / SEED, 0o640)

    def across_devices(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(trash_module.os, "rename", across_devices)
    library.remove(SEED)
    restored = library.restore(library.trash.items()[0].id)
    assert SEED in library.names(), restored
    assert (library.folder / SEED).stat().st_mode & 0o777 == 0o640


def test_same_content_under_another_name_is_a_duplicate(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "olive.txt"))
    before_gen, before_files, before_index = (
        generation(library),
        docs_files(library),
        dict(library.pipeline.index.files),
    )

    report = add(library, tmp_path, (OLIVE_DOC, "olive-copy.txt"))
    assert not report.added and not report.updated
    assert len(report.duplicates) == 1 and "olive-copy.txt" in report.duplicates[0]
    assert "olive.txt" in report.duplicates[0]
    assert generation(library) == before_gen
    assert docs_files(library) == before_files
    assert library.pipeline.index.files == before_index


def test_duplicate_of_a_folder_document(library: DocumentLibrary, tmp_path: Path) -> None:
    content = (SEEDS_DIR / SEED).read_bytes()
    before = generation(library)
    report = add(library, tmp_path, (content, "نسخة.txt"))
    assert report.duplicates and not report.added
    assert generation(library) == before
    assert "نسخة.txt" not in docs_files(library)


@pytest.mark.parametrize("name", ["report.pdf", "notes.docx", "archive.txt.exe", "README"])
def test_unsupported_type_is_rejected(library: DocumentLibrary, tmp_path: Path, name: str) -> None:
    before_gen, before_files = generation(library), docs_files(library)
    report = add(library, tmp_path, (SMALL_DOC, name))
    assert not report.added
    assert len(report.rejected) == 1 and name in report.rejected[0]
    assert generation(library) == before_gen
    assert docs_files(library) == before_files


def test_file_over_the_size_limit_is_rejected(library: DocumentLibrary, tmp_path: Path) -> None:
    small = DocumentLibrary(library.pipeline, max_bytes=1000)
    before_gen, before_files = generation(library), docs_files(library)
    big = upload(tmp_path, SMALL_DOC * 40, "كبير.txt")
    assert big.stat().st_size > 1000
    report = small.add([(big, "كبير.txt")])
    assert not report.added
    assert len(report.rejected) == 1 and "كبير.txt" in report.rejected[0]
    assert generation(library) == before_gen
    assert docs_files(library) == before_files
    # A file under the limit goes through the same library.
    assert add(small, tmp_path, (SMALL_DOC, "صغير.txt")).added == ["صغير.txt"]


def test_binary_file_named_txt_is_rejected(library: DocumentLibrary, tmp_path: Path) -> None:
    before_gen, before_files, before_index = (
        generation(library),
        docs_files(library),
        dict(library.pipeline.index.files),
    )
    report = add(library, tmp_path, (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8, "صورة.txt"))
    assert not report.added and not report.duplicates
    assert len(report.rejected) == 1 and "صورة.txt" in report.rejected[0]
    assert generation(library) == before_gen
    assert docs_files(library) == before_files
    assert library.pipeline.index.files == before_index


def test_a_loaders_reason_reads_in_the_pages_language(library: DocumentLibrary, tmp_path: Path) -> None:
    """Issue 27 ("Also"): "مرفوض — binary content, not text" on the Arabic page; the loader's
    reason is a catalogue code now, shown in either language."""
    report = add(library, tmp_path, (b"\x00\x00\x00\x01binary", "bad.txt"), (b"", "empty.md"))
    binary, empty = report.files
    assert (
        binary.text("ar") == "مرفوض — محتوى ثنائي وليس نصا"
        and binary.text("en") == "rejected — binary content, not text"
    )
    assert empty.text("ar") == "مرفوض — ملف فارغ"
    assert not re.search("[A-Za-z]", report.message("ar").replace("bad.txt", "").replace("empty.md", ""))
    # A trash item gone meanwhile: the restore says so in Arabic too.
    gone = library.restore("no-such-item", "ar")
    assert gone == "تعذرت الاستعادة: لم يعد هذا المستند في سلة المحذوفات", gone


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_a_mislabelled_or_empty_file_and_a_duplicate_read_in_the_pages_language(
    library: DocumentLibrary, tmp_path: Path, lang: str
) -> None:
    """A new user saw «ليس ملف PDF (يبدو أنه something else)», «ليس ملف DOCX (يبدو أنه empty)» and
    «مفهرس من قبل: garden.md (same content as garden.md)» on the Arabic page: what the bytes look
    like and the duplicate's note were English text inside Arabic messages."""
    report = add(
        library,
        tmp_path,
        (b"MZ\x90\x00" + b"\x00" * 60, "invoice.pdf"),
        (b"", "zero.docx"),
        (b"<!DOCTYPE html><html><body>x</body></html>", "page.pdf"),
        ((SEEDS_DIR / SEED).read_bytes(), SEED),
        ((SEEDS_DIR / SEED).read_bytes(), "copy.txt"),
    )
    invoice, zero, page, same, copy = report.files
    assert zero.reason_key == "unreadable_empty" and zero.text(lang) == t(
        lang, "file_rejected", reason=t(lang, "unreadable_empty")
    )
    said = report.message(lang) + "\n" + "\n".join(f.line(lang) for f in report.files)
    names = (SEED, "copy.txt", "invoice.pdf", "zero.docx", "page.pdf", "PDF", "DOCX", "HTML")
    for name in names:
        said = said.replace(name, "")
    if lang == "ar":
        assert not re.search("[A-Za-z]", said), said
    else:
        assert "something else" not in said and "looks like HTML" in page.text("en")
    # The same name twice is said once: "x.txt", not "x.txt (same content as x.txt)".
    assert same.outcome == "duplicate" and f"{SEED} (" not in report.message(lang)
    assert same.text(lang) == t(lang, "file_duplicate_same_name")
    assert copy.outcome == "duplicate" and SEED in copy.line(lang)
    assert invoice.outcome == "rejected"


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_a_name_made_safe_says_what_it_is_stored_as(library: DocumentLibrary, tmp_path: Path, lang: str) -> None:
    """A new user's 242-character Arabic name was cut to 200 bytes mid-word, and "..\\..\\evil2.txt"
    stored as evil2.txt, each reported only as "indexed": the line must name what it is stored as."""
    long_name = "تقرير_" + "المؤتمر_الدولي_" * 16 + ".txt"
    report = add(library, tmp_path, (OLIVE_DOC, "..\\..\\evil2.txt"), ("نص آخر عن الحديقة.\n" * 3, long_name))
    escaped, long = report.files
    assert escaped.stored == "evil2.txt" and long.stored != long_name and len(long.stored.encode()) <= 200
    for result in (escaped, long):
        assert result.outcome == "indexed" and result.stored in result.text(lang), result.text(lang)
    plain = add(library, tmp_path, ("سطر عادي عن السوق.\n" * 3, "سوق.txt")).files[0]
    assert plain.text(lang) == t(lang, "file_indexed")  # a name kept as given is not repeated


def test_mixed_batch_adds_the_good_and_rejects_the_bad(library: DocumentLibrary, tmp_path: Path) -> None:
    report = add(
        library, tmp_path, (b"\x00\x00\x00\x01binary", "bad.txt"), (OLIVE_DOC, "good.md"), (SMALL_DOC, "slides.pdf")
    )
    assert report.added == ["good.md"]
    assert len(report.rejected) == 2
    assert docs_files(library) == {SEED, "good.md"}
    assert set(library.pipeline.index.files) == {SEED, "good.md"}
    assert "Indexed: good.md" in report.message() and "Rejected:" in report.message()


def test_path_traversal_name_stays_in_the_docs_folder(library: DocumentLibrary, tmp_path: Path) -> None:
    folder = library.folder
    outside_before = set(folder.parent.iterdir())
    report = add(library, tmp_path, (SMALL_DOC, "../evil.txt"))
    assert report.added == ["evil.txt"]
    assert (folder / "evil.txt").read_text(encoding="utf-8") == SMALL_DOC
    assert set(folder.parent.iterdir()) == outside_before
    assert not (folder.parent / "evil.txt").exists()
    assert "evil.txt" in library.pipeline.index.files
    # No temporary upload files are left behind in the docs folder.
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_long_name_does_not_crash_the_upload(library: DocumentLibrary, tmp_path: Path) -> None:
    """A name longer than the filesystem allows (255 bytes) must not raise out of add() and must not
    leave the other files of the batch copied into the docs folder but missing from the index."""
    report = add(library, tmp_path, (SMALL_DOC, "ok.txt"), (OLIVE_DOC, "漢" * 150 + ".txt"))
    assert "ok.txt" in report.added
    assert docs_files(library) == set(library.pipeline.index.files)


def test_remove_drops_the_document_and_keeps_its_file_in_the_trash(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "olive.txt"))
    assert not library.pipeline.ask(OLIVE_QUESTION).abstained
    before = generation(library)

    message = library.remove("olive.txt")
    assert "olive.txt" in message and "trash" in message
    assert "olive.txt" not in library.pipeline.index.files
    assert "olive.txt" not in store.load(library.pipeline.config.index_dir).files
    assert not (library.folder / "olive.txt").exists()
    assert generation(library) == before + 1
    assert SEED in library.pipeline.index.files
    answer = library.pipeline.ask(OLIVE_QUESTION)
    assert all(c.source != "olive.txt" for c in answer.citations + answer.related)
    # Not deleted: the file is in the trash, byte for byte.
    [item] = library.trash.items()
    assert (item.name, item.reason, item.title) == ("olive.txt", "removed", "مهرجان واحة الزيتون السنوي")
    kept = library.pipeline.config.index_dir / "trash" / item.id / "olive.txt"
    assert kept.read_text(encoding="utf-8") == OLIVE_DOC
    # The trash list speaks the page's language ("removed" was English on the Arabic page; issue 29).
    [(arabic, _)], [(english, _)] = library.trash_choices("ar"), library.trash_choices("en")
    assert "حُذف" in arabic and "removed" not in arabic and "olive.txt" in arabic
    assert "removed" in english and "حُذف" not in english

    # Removing what is not there changes nothing.
    assert "not in the index" in library.remove("olive.txt")
    assert "not in the index" in library.remove("../" + SEED)
    assert generation(library) == before + 1
    assert (library.folder / SEED).exists()


def test_restore_brings_a_removed_document_back_and_answerable(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "olive.txt"))
    library.remove("olive.txt")
    [item] = library.trash.items()
    assert "Restored" in library.restore(item.id)
    assert (library.folder / "olive.txt").read_text(encoding="utf-8") == OLIVE_DOC
    assert "olive.txt" in library.pipeline.index.files
    assert "450" in library.pipeline.ask(OLIVE_QUESTION).answer
    assert library.trash.items() == []
    assert "no longer in the trash" in library.restore(item.id)


def test_restore_never_overwrites_a_file_of_the_same_name(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "olive.txt"))
    library.remove("olive.txt")
    (library.folder / "olive.txt").write_text(SMALL_DOC, encoding="utf-8")  # the user made a new one meanwhile
    [item] = library.trash.items()
    message = library.restore(item.id)
    assert "olive (2).txt" in message
    assert (library.folder / "olive.txt").read_text(encoding="utf-8") == SMALL_DOC
    assert (library.folder / "olive (2).txt").read_text(encoding="utf-8") == OLIVE_DOC
    assert "olive (2).txt" in library.pipeline.index.files


def test_removing_the_seed_document_deletes_no_file(library: DocumentLibrary) -> None:
    original = (library.folder / SEED).read_bytes()
    library.remove(SEED)
    assert not library.pipeline.index.files
    [item] = library.trash.items()
    library.restore(item.id)
    assert (library.folder / SEED).read_bytes() == original
    assert SEED in library.pipeline.index.files


def test_emptying_the_trash_deletes_only_trashed_files(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "olive.txt"), (SMALL_DOC, "fish.txt"))
    library.remove("olive.txt")
    library.remove("fish.txt")
    assert len(library.trash.items()) == 2
    assert "(2 deleted for good)" in library.empty_trash()
    assert library.trash.items() == []
    assert docs_files(library) == {SEED}
    assert set(library.pipeline.index.files) == {SEED}


def test_names_that_sanitise_alike_in_one_batch_both_stay(library: DocumentLibrary, tmp_path: Path) -> None:
    """`تقرير:2024.txt` and `تقرير?2024.txt` once became one document, the other silently lost."""
    report = add(library, tmp_path, (OLIVE_DOC, "تقرير:2024.txt"), (SMALL_DOC, "تقرير?2024.txt"))
    stored = sorted(report.added)
    assert len(stored) == 2, report
    assert {(library.folder / name).read_text(encoding="utf-8") for name in stored} == {OLIVE_DOC, SMALL_DOC}
    assert set(stored) <= set(library.pipeline.index.files)
    assert len(report.renamed) == 1 and "تقرير?2024.txt" in report.renamed[0]
    assert "new name" in report.message()


def test_same_name_upload_keeps_the_previous_version_in_the_trash(library: DocumentLibrary, tmp_path: Path) -> None:
    add(library, tmp_path, (OLIVE_DOC, "notes.txt"))
    report = add(library, tmp_path, (SMALL_DOC, "notes.txt"))
    assert report.updated == ["notes.txt"] and report.replaced == ["notes.txt"]
    assert "trash" in report.message()
    assert (library.folder / "notes.txt").read_text(encoding="utf-8") == SMALL_DOC
    [item] = library.trash.items()
    assert item.reason == "replaced"
    library.restore(item.id)
    assert (library.folder / "notes (2).txt").read_text(encoding="utf-8") == OLIVE_DOC
    assert "450" in library.pipeline.ask(OLIVE_QUESTION).answer


# --- python -m ui refuses to expose documents without a login ---------------------------------


@pytest.mark.parametrize("credentials", [{}, {"RAG_UI_USERNAME": "admin"}], ids=["none", "no-password"])
def test_network_bind_without_credentials_exits_2(tmp_path: Path, credentials: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_INDEX_DIR": str(tmp_path / "index"), "PYTHONIOENCODING": "utf-8", **credentials})
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ui", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=180,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "RAG_UI_USERNAME" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Serving on" not in result.stderr
    assert elapsed < 120  # it stops before loading the model or the index
    assert not (tmp_path / "index").exists()


def test_answer_message_shows_the_short_answer_first_in_bold_and_marks_it_in_its_passage() -> None:
    text = "حضر المؤتمر <i>76 دولة</i> من القارات كلها."
    start, end = text.index("<i>"), text.index("</i>") + 4
    citation = Citation(1, "a.txt", "t", 0, len(text), text, 0.9, [(0, start), (start, end), (end, len(text))])
    short = text[start:end]
    answer = Answer(
        question="كم دولة حضرت؟",
        answer=f"{short} — {text} [1]",
        abstained=False,
        citations=[citation],
        short_answer=short,
        short_answer_citation={"n": 1, "start": start, "end": end},
        short_answer_by="reader",
    )
    page = answer_message(answer)
    assert "<i>" not in page  # escaped like any document text
    body = page[page.index('class="answer">') :]
    # Its tooltip says what chose it, in the question's language.
    assert body.startswith(
        f'class="answer"><b class="short-answer" title="اختارها القارئ المدرَّب">{escape_text(short)}</b>'
    )
    assert f'<mark class="short-answer"><b>{escape_text(short)}</b></mark>' in page
    assert page.count("<mark>") == 2  # the rest of the evidence sentence, in plain highlight


def test_a_source_header_names_the_page_of_the_cited_sentence() -> None:
    """Issue 29: a passage over pages 1–2 whose evidence sentence is on page 2 was headed «ص 1–2»."""
    text = "افتتح الوزير المعرض يوم الأحد. وشارك في المعرض أكثر من 900 دار نشر."
    second = text.index("وشارك")
    citation = Citation(1, "fair.pdf", "t", 0, len(text), text, 0.9, [(second, len(text))], page=1, page_end=2)
    answer = Answer("كم دار نشر شاركت؟", "أكثر من 900 دار نشر [1]", False, [citation])
    assert "ص 1–2" in answer_message(answer)  # no page breaks recorded: the passage's pages
    citation = dataclasses.replace(citation, page_breaks=[second])
    shown = answer_message(dataclasses.replace(answer, citations=[citation]))
    assert "ص 2" in shown and "ص 1–2" not in shown


def test_a_pdf_source_links_to_its_page_with_the_sentence_and_answer_and_a_text_source_does_not() -> None:
    """Issue 29: the cited page with the answer marked. The link carries the evidence sentence and
    the short answer; a hostile file name or text cannot break out of the attribute."""
    from urllib.parse import parse_qs, urlsplit

    text = 'مقدمة. وحضره أكثر من 800 مندوب" onmouseover="x". خاتمة.'
    sentence = (text.index("وحضره"), text.index(". خاتمة") + 1)
    short = (text.index("أكثر"), text.index(" مندوب") + len(" مندوب"))
    for source, linked in [('تقرير "x" & <b>.pdf', True), ("scan.PNG", True), ("notes.txt", False), ("a.docx", False)]:
        # Highlighted as the product does: the sentence in pieces around the short answer.
        pieces = [(sentence[0], short[0]), short, (short[1], sentence[1])]
        citation = Citation(1, source, "t", 0, len(text), text, 0.9, pieces, page=2, page_end=3)
        answer = Answer(
            question="كم مندوبا حضر؟",
            answer=f"{text[short[0] : short[1]]} [1]",
            abstained=False,
            citations=[citation],
            short_answer=text[short[0] : short[1]],
            short_answer_citation={"n": 1, "start": short[0], "end": short[1]},
        )
        page = answer_message(answer)
        links = re.findall(r'<a class="page-link" href="([^"]*)" target="_blank" rel="noopener">([^<]*)</a>', page)
        assert len(links) == (1 if linked else 0), page
        if linked:
            href, label = links[0]
            assert label == "اعرضها في الصفحة"
            query = parse_qs(urlsplit(html.unescape(href)).query)
            assert query["document"] == [source] and query["page"] == ["2"] and query["page_end"] == ["3"]
            assert query["sentence"] == [text[sentence[0] : sentence[1]]]
            assert query["answer"] == [text[short[0] : short[1]]]
            assert not set('"<>') & set(href)  # the file name and the text stay inside the attribute


# --- per-file upload progress and results ----------------------------------------------------------


def test_each_uploaded_file_gets_its_own_result_in_upload_order(library: DocumentLibrary, tmp_path: Path) -> None:
    """An upload said one line per kind of fate ("Rejected: a; b"), not which file ended how."""
    add(library, tmp_path, (OLIVE_DOC, "notes.txt"))
    report = add(
        library,
        tmp_path,
        (b"\x00\x00\x00\x01binary", "bad.txt"),
        (SMALL_DOC, "notes.txt"),  # same name, new content: the old version goes to the trash
        (OLIVE_DOC + "z", "again.txt"),  # new name, new content
        (SMALL_DOC + "x", "تقرير:1.txt"),
        (SMALL_DOC + "y", "تقرير?1.txt"),  # sanitises to the same name: stored under another
        (SMALL_DOC, "slides.pdf"),
        ((SEEDS_DIR / SEED).read_bytes(), "copy.txt"),
    )
    got = [(f.name, f.outcome) for f in report.files]
    assert got == [
        ("bad.txt", "rejected"),
        ("notes.txt", "replaced"),
        ("again.txt", "indexed"),
        ("تقرير:1.txt", "indexed"),
        ("تقرير?1.txt", "renamed"),
        ("slides.pdf", "rejected"),
        ("copy.txt", "duplicate"),
    ], got
    by_name = {f.name: f for f in report.files}
    assert by_name["تقرير?1.txt"].stored in library.pipeline.index.files
    assert by_name["تقرير?1.txt"].stored != by_name["تقرير:1.txt"].stored
    assert by_name["copy.txt"].same_as == SEED
    for lang, rejected_word in (("en", "rejected"), ("ar", "مرفوض")):
        lines = [f.line(lang) for f in report.files]
        assert all(line.startswith(f.name) for line, f in zip(lines, report.files)), lines
        assert rejected_word in lines[0] and rejected_word in lines[5]
        assert ".pdf" in lines[5] or "pdf" in lines[5]
        assert by_name["تقرير?1.txt"].stored in lines[4]
        assert SEED in lines[6]
    assert "trash" in report.files[1].line("en") and "سلة" in report.files[1].line("ar")


def test_upload_reports_each_file_as_it_is_read_then_the_embedding(library: DocumentLibrary, tmp_path: Path) -> None:
    steps: list[tuple[str, int, int, str]] = []
    pairs = [
        (upload(tmp_path, OLIVE_DOC, "a.txt"), "a.txt"),
        (upload(tmp_path, b"\x00\x01binary", "b.txt"), "b.txt"),
        (upload(tmp_path, SMALL_DOC, "c.md"), "c.md"),
    ]
    report = library.add(pairs, on_step=lambda s: steps.append((s.stage, s.done, s.total, s.name)))
    reading = [s for s in steps if s[0] == "reading"]
    assert reading == [("reading", 1, 3, "a.txt"), ("reading", 2, 3, "b.txt"), ("reading", 3, 3, "c.md")]
    embedding = [s for s in steps if s[0] == "embedding"]
    chunks = sum(library.pipeline.index.files[name]["chunks"] for name in ("a.txt", "c.md"))
    assert embedding and embedding[-1][1:3] == (chunks, chunks), embedding
    assert [s[1] for s in embedding] == sorted(s[1] for s in embedding)  # only forward
    assert steps.index(embedding[0]) > steps.index(reading[-1])  # reading all files comes first
    assert [f.outcome for f in report.files] == ["indexed", "rejected", "indexed"]


def test_upload_results_render_one_escaped_line_per_file(library: DocumentLibrary, tmp_path: Path) -> None:
    from ui.render import upload_results

    report = add(library, tmp_path, (OLIVE_DOC, "<b>x</b>.txt"), (SMALL_DOC, "slides.pdf"))
    page = upload_results([(f.outcome, f.name, f.text("ar")) for f in report.files])
    assert page.count("<li") == 2
    assert "<b>" not in page
    assert page.count("<bdi>") == 2  # a name in the other script keeps the line's order
    assert 'class="upload-file outcome-rejected"' in page
    assert 'aria-live="polite"' in page


def test_two_files_rejected_alike_get_a_line_each(library: DocumentLibrary, tmp_path: Path) -> None:
    report = add(library, tmp_path, (SMALL_DOC, "slides.pdf"), (SMALL_DOC, "slides.pdf"))
    assert [f.outcome for f in report.files] == ["rejected", "rejected"]
    assert len(report.rejected) == 2


def test_the_reader_checkbox_reaches_the_answer(seeds_index: SeedsIndex) -> None:
    from ui.app import _ask

    question = 'Which Chinese defense minister warned against "playing with fire" over Taiwan?'
    assert reader_available()  # `make` built the library; the weights ship
    # Every short answer shown: this is about the box reaching the answerer, not the gate.
    pipeline = Pipeline(seeds_index.config.replace(short_answer_threshold=0.0), index=seeds_index.index)
    answers = {}
    for read in (False, True):
        *_, (chat, _, _) = collected(_ask(pipeline, question, [], 5, False, "extractive", [], "en", read))
        answers[read] = chat[-1]["content"]
    assert '<b class="short-answer" title="Chosen by the fine-tuned reader">لي شانغفو</b>' in answers[True]
    assert "لي شانغفو</b>" not in answers[False]


def test_ticking_the_reader_box_loads_the_reader_before_the_question(seeds_index: SeedsIndex) -> None:
    from ui.app import _preload_reader

    pipeline = Pipeline(seeds_index.config.replace(answer_reader=False), index=seeds_index.index)
    _preload_reader(pipeline, False)
    assert pipeline.reader is None  # unticking loads nothing
    _preload_reader(pipeline, True)
    assert pipeline.reader is not None


# --- the conversation carried across a language switch ---------------------------------------------


def test_handover_gives_values_back_once_and_only_for_their_token() -> None:
    from ui.handover import Handover

    kept = Handover(seconds=60, limit=8)
    chat = [{"role": "user", "content": "<div>متى؟</div>"}]
    token = kept.put((chat, 3, True))
    assert len(token) >= 32 and kept.put((chat,)) != token  # unguessable, one per switch
    assert kept.take("not-" + token) is None and kept.take("") is None
    assert kept.take(token) == (chat, 3, True)
    assert kept.take(token) is None  # one use: a second page cannot replay it


def test_handover_forgets_late_and_oldest_values() -> None:
    from ui.handover import Handover

    late = Handover(seconds=-1, limit=8)
    assert late.take(late.put(("chat",))) is None  # a page that never came back
    small = Handover(seconds=60, limit=2)
    first, second, third = (small.put((n,)) for n in range(3))
    assert small.take(first) is None  # dropped to keep at most `limit`
    assert small.take(second) == (1,) and small.take(third) == (2,)


def test_handover_holds_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 point 9: 25 switches carrying a 10 M-character chat grew the UI by 550 MB, still
    held after their time; eviction was by count only and expiry happened only on `take`."""
    from ui import handover as module

    kept = module.Handover(seconds=60, limit=256)
    assert kept.put(("x" * 3_000_000,)) == "" and kept.held_bytes == 0  # too large to carry: a fresh page
    bounded = module.Handover(seconds=60, limit=256, item_bytes=1000, total_bytes=5000)
    tokens = [bounded.put(("y" * 900,)) for _ in range(20)]
    assert bounded.held_bytes <= 5000  # the oldest go first
    assert bounded.take(tokens[-1]) == ("y" * 900,) and bounded.take(tokens[0]) is None
    clock = [0.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    timed = module.Handover(seconds=10, limit=256)
    timed.put(("z" * 100_000,))
    clock[0] = 11.0  # its page never came back
    timed.put(("small",))
    assert timed.held_bytes < 100  # gone at the next put, not only at a take


@pytest.mark.parametrize("question", ["١٢٣٤٥٦", "2023", "٢٠٢٣؟!", "؟؟"])
def test_a_refused_question_without_letters_speaks_the_pages_language(seeds_pipeline: Pipeline, question: str) -> None:
    """With no letters a question has no language of its own: the refusal came in English on the
    Arabic page (a new-user test)."""
    from core.i18n import MESSAGES
    from ui.app import _ask

    for page in ("ar", "en"):
        *_, (chat, _, _) = collected(_ask(seeds_pipeline, question, [], 5, False, "extractive", [], page))
        assert escape_text(MESSAGES[page]["question_no_words"]) in chat[-1]["content"], page


def test_a_question_with_letters_is_answered_in_its_own_language() -> None:
    from ui.i18n import for_question

    assert for_question("When was it held? 2023", "ar") == "en"
    assert for_question("متى عقد؟ 2023", "en") == "ar"
    assert for_question("   ", "ar") == "ar"


def test_carried_values_that_do_not_fit_the_controls_are_not_restored() -> None:
    """A crafted switch request (passages 99, a chat of the wrong shape) left the page half in the
    old language: the load that restores them failed (a new-user test)."""
    from ui.handover import carried_values_fit

    good = ([{"role": "user", "content": "متى؟"}], [("متى؟", "2012 [1]")], "ومتى؟", 3, True, "extractive", False)
    assert carried_values_fit(good, ["extractive"], 10)
    for i, bad in [(3, 99), (3, 0), (3, "3"), (4, "yes"), (5, "llm"), (6, None), (0, "<b>x</b>"), (1, [("q",)])]:
        assert not carried_values_fit((*good[:i], bad, *good[i + 1 :]), ["extractive"], 10), (i, bad)
    for i, bad in [(2, None), (2, ["draft"]), (0, ["not a message"])]:
        assert not carried_values_fit((*good[:i], bad, *good[i + 1 :]), ["extractive"], 10), (i, bad)
    assert not carried_values_fit(good[:6], ["extractive"], 10)


def test_a_tabs_conversation_is_kept_only_under_an_id_a_page_makes_and_forgotten_on_request() -> None:
    """Issue 29: a reload lost the conversation. Kept per tab id (36 hex digits from the page),
    bounded; a crafted id keeps nothing; New conversation forgets it."""
    from ui.handover import Conversations

    kept = Conversations(seconds=60, limit=2)
    chat, turns, records = [{"role": "user", "content": "متى؟"}], [("متى؟", "2012")], {"1": {"question": "متى؟"}}
    tab = "ab" * 18
    assert kept.save(tab, chat, turns, records)
    assert kept.load(tab) == (chat, turns, records)
    assert kept.load(tab) == (chat, turns, records)  # not used up by a reload
    for crafted in ("", "../../etc", "AB" * 18, "a" * 10, "x" * 36):
        assert not kept.save(crafted, chat, turns, records)
        assert kept.load(crafted) is None
    kept.forget(tab)
    assert kept.load(tab) is None
    for n in range(3):  # the least recently saved goes first
        kept.save(f"{n:02d}" * 18, chat, turns, records)
    assert kept.load("00" * 18) is None and kept.load("02" * 18) is not None


def test_opening_the_documents_tab_never_clears_a_choice_made_meanwhile(library: DocumentLibrary) -> None:
    """CI (under load) chose a document by keyboard while the tab's refresh was in flight; the
    refresh answered value=None for the empty picker it had seen and wiped the choice, so Remove
    had nothing to confirm. Only a choice that has gone may be cleared."""
    table, documents, trash = _reopened_lists(library, "en", None, None)
    assert SEED in {value for _, value in documents["choices"]}
    assert "value" not in documents and "value" not in trash  # leave whatever the page holds now
    assert any(row[1] == SEED for row in table["data"])

    _, documents, _ = _reopened_lists(library, "en", SEED, None)
    assert "value" not in documents  # still there: kept

    library.remove(SEED)
    _, documents, trash = _reopened_lists(library, "en", SEED, "no-such-trash-entry")
    assert documents["value"] is None and trash["value"] is None  # gone: cleared
    assert SEED not in {value for _, value in documents["choices"]}


def test_the_documents_tab_says_where_uploads_go(tmp_path: Path) -> None:
    """Issue 29: uploads went to seeds/ and the screen never said where."""
    folder = tmp_path / "مستنداتي"
    translations = make_i18n(Config(docs_dir=folder)).translations
    for lang in ("en", "ar"):
        assert str(folder.resolve()) in translations[lang]["docs_folder"]


@pytest.mark.parametrize("lang", ["ar", "en"])
def test_the_upload_progress_bar_counts_in_the_page_language(lang: str) -> None:
    """Issue 29, seen in CI: under load the Arabic page showed Gradio's progress bar as
    «قراءة 2/2: سوق.txt: 1 / 2 steps»: gr.Progress names its unit "steps" unless told. Each stage
    gives the bar a unit in the page's language (files while reading, passages while indexing)."""
    from index.library import UploadStep
    from ui.app import UploadLines

    lines = UploadLines(lang, ["سوق.txt", "b.txt"])
    for step in (UploadStep("reading", 1, 2, "سوق.txt"), UploadStep("embedding", 3, 7)):
        shown = lines.advance(step)
        assert shown.unit and shown.unit != "steps"
        assert bool(re.search("[A-Za-z]", shown.unit)) == (lang == "en"), shown
