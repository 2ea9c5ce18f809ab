"""PDF (text layer and scanned), DOCX and HTML documents: loading, bad files, and cited answers.

Fixtures are made here: Chromium prints seeds/ text to a multi-page Arabic PDF, that PDF is
rasterised into a scan (an image-only PDF), python-docx writes a Word file, and an HTML page comes
wrapped in navigation, script, cookie banner and footer noise. Tests needing Chromium or Tesseract
skip with the package to install when those are missing.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from langchain_core.documents import Document

from core.config import Config
from core.i18n import LANGUAGES, MESSAGES
from eval.pdf_fixtures import Section, chromium, print_pdf, rtl_html
from index import formats
from index.arabic import normalize
from index.build import build_folder
from index.chunk import ChunkSettings, split_document
from index.embed import VectorEmbeddings
from index.formats import ocr as ocr_module
from index.formats import pdf as pdf_module
from index.formats.repair import repair_extracted, visual_to_logical
from index.load import UnreadableFile, load_file, load_folder
from rag.answer import Answer, cited_pages, to_citation
from rag.chain import Pipeline
from tests.helpers import SEEDS_DIR

needs_chromium = pytest.mark.skipif(chromium() is None, reason="needs Chromium to print PDFs: apt-get install chromium")


def _has_arabic_ocr() -> bool:
    try:
        ocr_module.check()
    except ocr_module.OcrUnavailable:
        return False
    return True


needs_ocr = pytest.mark.skipif(not _has_arabic_ocr(), reason=f"needs Tesseract with Arabic: {ocr_module.INSTALL_HINT}")

SEED_000 = [p for p in (SEEDS_DIR / "000_b5c95c8664f5005e.txt").read_text(encoding="utf-8").split("\n") if p.strip()]
SEED_001 = [p for p in (SEEDS_DIR / "001_e9389b4ffc57ddb8.txt").read_text(encoding="utf-8").split("\n") if p.strip()]


def _report_sections() -> list[Section]:
    """seeds/001 on three pages: its opening, then its headed parts each on a fresh page."""
    goals = SEED_001.index("أهداف المؤتمر")
    issues = SEED_001.index("أبرز القضايا")
    return [
        Section("دلالات انعقاد مؤتمر موسكو", SEED_001[1:goals]),
        Section("أهداف المؤتمر", SEED_001[goals + 1 : issues], new_page=True),
        Section("أبرز القضايا", SEED_001[issues + 1 : issues + 3], new_page=True),
    ]


OLIVE_SECTIONS = [
    ("زراعة الزيتون", ["تزرع أشجار الزيتون في المناطق ذات الشتاء الماطر والصيف الجاف، وتعيش الشجرة مئات السنين."]),
    (
        "موسم القطاف",
        [
            "يبدأ موسم قطف الزيتون في فلسطين في منتصف شهر أكتوبر من كل عام، وتشارك فيه العائلات كلها.",
            "تنقل الثمار إلى المعصرة في اليوم نفسه حتى لا تفسد جودة الزيت.",
        ],
    ),
]
HTML_PAGE = """<!doctype html><html lang="ar" dir="rtl"><head><meta charset="utf-8">
<title>فن الصقارة | موقع التراث</title><script>var note = "سكربت التتبع لا يظهر";</script>
<style>.x{color:red}</style></head><body>
<nav><a href="/">الرئيسية</a> <a href="/about">من نحن</a> <a href="/contact">اتصل بنا</a></nav>
<div class="cookie-banner">نستخدم ملفات تعريف الارتباط لتحسين تجربتك. موافق</div>
<article><h1>فن الصقارة</h1>
<p>الصقارة هواية عربية قديمة يتوارثها الأبناء عن الآباء، وتقوم على تربية الصقور وتدريبها على الصيد في البادية.</p>
<h2>تدريب الصقور</h2>
<p>يستغرق تدريب الصقر على الصيد نحو أربعين يوما، يتعود فيها على صاحبه وعلى الطعم والنداء.</p>
<p>ويبدأ المدرب بتعويد الصقر على البرقع حتى يهدأ، ثم يطلقه تدريجيا لمسافات أطول في كل مرة.</p>
</article>
<footer>جميع الحقوق محفوظة لموقع التراث منذ عام 1999</footer></body></html>"""


def _olive_docx() -> bytes:
    import docx

    document = docx.Document()
    for heading, paragraphs in OLIVE_SECTIONS:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("المحافظة", "الإنتاج بالطن"), ("جنين", "أربعة آلاف")]):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _scan_of(pdf: Path, out: Path, pages: int = 1) -> Path:
    """An image-only PDF: the first `pages` pages rendered at 200 dpi and re-wrapped as a PDF."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    images = [document[i].render(scale=200 / 72, grayscale=True).to_pil() for i in range(pages)]
    document.close()
    images[0].save(out, save_all=True, append_images=images[1:], resolution=200)
    return out


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if chromium() is None:
        pytest.skip("needs Chromium to print PDFs: apt-get install chromium")
    folder = tmp_path_factory.mktemp("pdf")
    # With the browser's header (date, title) and footer (file URL, "2/3") on every page.
    page = rtl_html("مؤتمر موسكو للأمن الدولي", _report_sections())
    return print_pdf(page, folder / "report.pdf", header_footer=True)


# --- Loading ------------------------------------------------------------------------------------


@needs_chromium
def test_text_pdf_has_pages_sections_and_no_running_header(report_pdf: Path) -> None:
    doc = load_file(report_pdf)
    text, meta = doc.page_content, doc.metadata
    assert meta["format"] == "pdf" and meta["encoding"] == "pdf"
    assert len(meta["pages"]) == 3 and meta["pages"][0] == 0
    pages = [text[a:b] for a, b in zip(meta["pages"], [*meta["pages"][1:], len(text)])]
    # Running header and footer are gone: pages start with their heading, no URL, no "2/3", no clock.
    assert pages[0].startswith("مؤتمر موسكو للأمن الدولي\nدلالات انعقاد")
    assert pages[1].startswith("أهداف المؤتمر\n") and pages[2].startswith("أبرز القضايا\n")
    assert "file:" not in text and not re.search(r"\b[123]\s*/\s*3\b|\d{1,2}:\d\d", text)
    # Each page holds its own section's text and not the next one's.
    assert normalize("جاء انعقاد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشر في 15 أغسطس 2023") in normalize(pages[0])
    assert normalize("منذ تأسيسه عام 2012، يعقد المؤتمر بشكل سنوي") in normalize(pages[1])
    assert "2012" not in pages[0]
    headings = [h for _, h in meta["sections"]]
    assert headings[:1] == ["مؤتمر موسكو للأمن الدولي"] and "أهداف المؤتمر" in headings
    offset = dict((h, o) for o, h in meta["sections"])["أهداف المؤتمر"]
    assert text[offset : offset + len("أهداف المؤتمر")] == "أهداف المؤتمر"
    assert meta["title"] == "مؤتمر موسكو للأمن الدولي"
    # Nearly everything of the source survives, in logical order (whole sentences match).
    source = normalize(" ".join(p for s in _report_sections() for p in s.paragraphs))
    words = source.split()
    found = normalize(text)
    windows = [" ".join(words[i : i + 6]) for i in range(0, len(words) - 6, 6)]
    assert sum(w in found for w in windows) / len(windows) > 0.95


@needs_chromium
def test_chunks_carry_page_and_section(report_pdf: Path) -> None:
    doc = load_file(report_pdf)
    chunks = split_document(doc, ChunkSettings(max_words=60, overlap_words=10))
    for chunk in chunks:
        assert chunk.page_content == doc.page_content[chunk.metadata["start"] : chunk.metadata["end"]]
        page = chunk.metadata["page"]
        last = chunk.metadata.get("page_end", page)
        assert 1 <= page < last <= 3 if "page_end" in chunk.metadata else 1 <= page <= 3
        assert doc.metadata["pages"][page - 1] <= chunk.metadata["start"]
        assert chunk.metadata["end"] <= ([*doc.metadata["pages"], len(doc.page_content) + 1][last])
    with_2012 = [c for c in chunks if "تأسيسه عام 2012" in c.page_content]
    assert with_2012 and all(c.metadata["page"] == 2 and c.metadata["section"] == "أهداف المؤتمر" for c in with_2012)


@needs_chromium
def test_two_column_pdf_reads_each_column_in_order(tmp_path: Path) -> None:
    right, left = [SEED_001[1], SEED_001[3]], SEED_000[:3]
    pdf = print_pdf(
        rtl_html("عمودان", [Section("العمود الأول", right), Section("العمود الثاني", left)], columns=2),
        tmp_path / "c.pdf",
    )
    text = normalize(load_file(pdf).page_content)
    for paragraph in right + left:
        words = normalize(paragraph).split()
        windows = [" ".join(words[i : i + 5]) for i in range(0, len(words) - 5, 5)]
        assert sum(w in text for w in windows) / len(windows) > 0.9, paragraph[:60]


@needs_ocr
@needs_chromium
def test_image_of_a_page_is_read_by_ocr(report_pdf: Path, tmp_path: Path) -> None:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(report_pdf)
    image = document[1].render(scale=200 / 72, grayscale=True).to_pil()
    document.close()
    image.crop((0, 0, image.width, image.height // 3)).save(tmp_path / "page.png")  # the top third: quick OCR
    doc = load_file(tmp_path / "page.png")
    assert doc.metadata["format"] == "image" and doc.metadata["ocr_pages"] == [1]
    assert "2012" in doc.page_content and normalize("أهداف المؤتمر") in normalize(doc.page_content)
    chunk = split_document(doc, ChunkSettings.from_config(Config()))[0]
    assert chunk.metadata["ocr"] is True and chunk.metadata["page"] == 1


def test_locate_maps_spans_to_pages_and_sections() -> None:
    meta = {"pages": [0, 100, 250], "sections": [[0, "أ"], [120, "ب"]], "ocr_pages": [3]}
    assert formats.locate(meta, 10, 90) == {"page": 1, "section": "أ"}
    assert formats.locate(meta, 90, 130) == {"page": 1, "page_end": 2, "page_breaks": [10], "section": "أ"}
    assert formats.locate(meta, 130, 300) == {
        "page": 2,
        "page_end": 3,
        "page_breaks": [120],
        "ocr": True,
        "section": "ب",
    }
    assert formats.locate(meta, 50, 300)["page_breaks"] == [50, 200]
    assert formats.locate(meta, 100, 101) == {"page": 2, "section": "أ"}
    assert formats.locate({}, 0, 10) == {}
    md = "# عنوان\nنص.\n\n## القسم الثاني ##\nنص آخر."
    assert formats.markdown_sections(md) == [[0, "عنوان"], [md.index("## القسم"), "القسم الثاني"]]


def test_a_citation_names_the_page_of_the_sentence_it_uses() -> None:
    """A passage over pages 1–2 whose cited sentence is on page 2 was headed «ص 1–2» (issue 29):
    the header names the page of the highlighted text, and both pages when it crosses the break."""
    text = "الجملة الأولى في الصفحة الأولى. " + "الجملة الثانية في الصفحة الثانية."
    second = text.index("الجملة الثانية")
    meta = {"pages": [0, 1000 + second], "source": "a.pdf", "title": "t", "start": 1000, "end": 1000 + len(text)}
    location = formats.locate(meta, 1000, 1000 + len(text))
    assert location == {"page": 1, "page_end": 2, "page_breaks": [second]}
    passage = Document(page_content=text, metadata={**meta, **location, "id": "a"})
    on_two = dataclasses.replace(to_citation(1, passage), highlights=[(second, len(text))])
    on_one = dataclasses.replace(to_citation(1, passage), highlights=[(0, second - 1)])
    across = dataclasses.replace(to_citation(1, passage), highlights=[(5, second + 5)])
    assert cited_pages(on_two) == (2, None) and cited_pages(on_one) == (1, None) and cited_pages(across) == (1, 2)
    assert cited_pages(to_citation(1, passage)) == (1, 2)  # nothing highlighted: the passage's pages
    assert formats.describe_location(*cited_pages(on_two), "", False, arabic=True) == "ص 2"
    # An index built before page breaks were recorded keeps its range.
    old = Document(page_content=text, metadata={**meta, "page": 1, "page_end": 2, "id": "a"})
    assert cited_pages(dataclasses.replace(to_citation(1, old), highlights=[(second, len(text))])) == (1, 2)


def test_markdown_chunks_name_their_section(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# مقدمة\nنص المقدمة هنا.\n\n## الخاتمة\nنص الخاتمة هنا.\n", encoding="utf-8")
    doc = load_file(tmp_path / "notes.md")
    chunks = split_document(doc, ChunkSettings(max_words=4, overlap_words=0))
    by_text = {c.page_content: c.metadata.get("section") for c in chunks}
    assert by_text["نص الخاتمة هنا."] == "الخاتمة" and by_text["نص المقدمة هنا."] == "مقدمة"
    assert all("page" not in c.metadata for c in chunks)


def test_docx_paragraphs_tables_and_headings(tmp_path: Path) -> None:
    (tmp_path / "olive.docx").write_bytes(_olive_docx())
    doc = load_file(tmp_path / "olive.docx")
    assert doc.metadata["format"] == "docx" and doc.metadata["title"] == "زراعة الزيتون"
    assert "جنين | أربعة آلاف" in doc.page_content
    sections = dict((h, o) for o, h in doc.metadata["sections"])
    assert set(sections) == {"زراعة الزيتون", "موسم القطاف"}
    assert doc.page_content[sections["موسم القطاف"] :].startswith("موسم القطاف\nيبدأ موسم قطف")


def test_docx_without_core_properties_is_not_titled_word_document(tmp_path: Path) -> None:
    """Issue 27 point 11: python-docx makes up a title "Word Document" when docProps/core.xml is
    missing; the document's first heading is its title then."""
    source = zipfile.ZipFile(io.BytesIO(_olive_docx()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            if info.filename != "docProps/core.xml":
                data = source.read(info)
                if info.filename == "_rels/.rels":
                    data = re.sub(rb"<Relationship [^>]*core-properties[^>]*/>", b"", data)
                archive.writestr(info, data)
    (tmp_path / "olive.docx").write_bytes(out.getvalue())
    assert load_file(tmp_path / "olive.docx").metadata["title"] == "زراعة الزيتون"


def test_docx_headings_by_style_id_or_outline_level(tmp_path: Path) -> None:
    """Issue 27 point 11: a heading whose style styles.xml does not define (python-docx reports it
    as Normal) or that carries only an outline level was not seen as a section."""
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    document.add_paragraph("مقدمة عن زراعة الزيتون في فلسطين منذ قرون طويلة.")
    by_id = document.add_paragraph("موسم القطاف")
    by_id._p.get_or_add_pPr().style = "Heading2Arabic"  # an id the template's styles.xml lacks
    document.add_paragraph("يبدأ موسم القطف في تشرين الأول من كل عام.")
    by_outline = document.add_paragraph("عصر الزيت")
    level = OxmlElement("w:outlineLvl")
    level.set(qn("w:val"), "1")
    by_outline._p.get_or_add_pPr().append(level)
    document.add_paragraph("تنقل الثمار إلى المعصرة في اليوم نفسه.")
    body = document.add_paragraph("نص عادي")
    body_level = OxmlElement("w:outlineLvl")
    body_level.set(qn("w:val"), "9")  # level 9 is body text
    body._p.get_or_add_pPr().append(body_level)
    document.save(str(tmp_path / "olive.docx"))
    sections = [h for _, h in load_file(tmp_path / "olive.docx").metadata["sections"]]
    assert sections == ["موسم القطاف", "عصر الزيت"]


@pytest.mark.parametrize("name", ["long.txt", "long.md", "olive.docx", "page.html"])
def test_text_over_the_per_document_cap_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Issue 27 point 10: a 7.8 MB DOCX within every byte cap expanded to 24.6 M characters
    (83 s to read, ~55 minutes of embedding). Every format is capped in characters."""
    monkeypatch.setattr(formats, "MAX_TEXT_CHARS", 150)
    content = {
        "long.txt": ("سطر من نص طويل جدا. " * 20).encode(),
        "long.md": ("# عنوان\n" + "فقرة من نص طويل. " * 20).encode(),
        "olive.docx": _olive_docx(),
        "page.html": HTML_PAGE.encode(),
    }[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnreadableFile, match=r"over 150 characters of text .*split it into smaller files"):
        load_file(tmp_path / name)
    monkeypatch.setattr(formats, "MAX_TEXT_CHARS", 10_000)
    assert load_file(tmp_path / name).page_content  # under the cap: read as before


def test_html_keeps_main_content_only(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(HTML_PAGE, encoding="utf-8")
    doc = load_file(tmp_path / "page.html")
    text = doc.page_content
    assert "أربعين يوما" in text and "الصقارة هواية عربية" in text
    for noise in ("سكربت", "ملفات تعريف الارتباط", "اتصل بنا", "جميع الحقوق", "color"):
        assert noise not in text, noise
    assert doc.metadata["title"] == "فن الصقارة"
    assert [h for _, h in doc.metadata["sections"]] == ["فن الصقارة", "تدريب الصقور"]


def test_repairs_of_extracted_arabic() -> None:
    assert repair_extracted("ﻣﺆﺗﻤﺮ ﻣﻮﺳﻜﻮ") == "مؤتمر موسكو"  # presentation forms
    assert repair_extracted("ﻻ") == "لا"  # lam-alef ligature glyph
    assert repair_extracted("\u202bنص\u202c\u200f") == "نص"  # bidi controls
    assert repair_extracted("فضًل ا عن") == "فضلًا عن"  # split ligature with its mark
    assert repair_extracted("ُي عقد") == "يُعقد"  # mark before its letter, word cut
    assert repair_extracted("x² ﬁ ２") == "x² ﬁ ２"  # NFKC only on Arabic presentation forms
    # Visual (left-to-right glyph) order back to logical; numbers keep their direction, brackets mirror.
    assert visual_to_logical("(اقباس) 2023 ةنس يف") == "في سنة 2023 (سابقا)"
    assert visual_to_logical("English only") == "English only"


# --- Bad files ----------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _encrypted_pdf(source: Path) -> bytes:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=source)
    writer.encrypt("secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@needs_chromium
def test_bad_files_are_skipped_with_a_reason_and_the_rest_indexes(report_pdf: Path, tmp_path: Path) -> None:
    data = report_pdf.read_bytes()
    bad = {
        "encrypted.pdf": (_encrypted_pdf(report_pdf), "encrypted"),
        "truncated.pdf": (data[: len(data) // 3], "damaged"),
        "page.pdf": (HTML_PAGE.encode(), "looks like HTML"),
        "renamed.docx": (_zip({"mimetype": b"application/epub+zip", "content.opf": b"<x/>"}), "not a Word document"),
        "bomb.docx": (_zip({"word/document.xml": b"\0" * (8 * 2**20)}), "zip bomb"),
        "broken.docx": (b"PK\x03\x04" + b"\0" * 100, "damaged"),
        "empty.html": (b"<html><body><nav>menu</nav></body></html>", "no "),
        "old.docx": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "encrypted Word file"),
        "photo.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, ""),
    }
    for name, (content, _) in bad.items():
        (tmp_path / name).write_bytes(content)
    shutil.copy(report_pdf, tmp_path / "good.pdf")
    docs, skipped = load_folder(tmp_path)
    assert [d.metadata["source"] for d in docs] == ["good.pdf"]
    reasons = {s.path.name: str(s) for s in skipped}
    assert set(reasons) == set(bad)
    for name, (_, expected) in bad.items():
        assert expected in reasons[name] and "\n" not in reasons[name], reasons[name]


@needs_chromium
def test_page_cap(report_pdf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_module, "MAX_PAGES", 2)
    with pytest.raises(UnreadableFile, match="3 pages is over the 2-page limit"):
        load_file(report_pdf)


def test_size_cap_per_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(formats.FORMATS, ".pdf", dataclasses.replace(formats.FORMATS[".pdf"], max_bytes=1000))
    (tmp_path / "big.pdf").write_bytes(b"%PDF-1.7\n" + b"0" * 2000)
    with pytest.raises(UnreadableFile, match=r"over the 0 MB limit for \.pdf files"):
        load_file(tmp_path / "big.pdf")


def test_garbage_text_layer_is_detected() -> None:
    """Private-use glyph codes (a font without a Unicode map) read as no text: the page goes to OCR."""
    junk = [pdf_module._Line("\ue001\ue002\ue003 \ue004\ue005 " * 20, 700.0, 12.0)]
    prose = [pdf_module._Line("في مرحلة مفصلية من تاريخ أنظمة وحكومات وشعوب تقيم روسيا مؤتمرا.", 700.0, 12.0)]
    symbols = [pdf_module._Line("\x03\x11 ¦§¨ ©ª« ¬®¯ °±² " * 10, 700.0, 12.0)]
    assert not pdf_module._usable(junk) and not pdf_module._usable(symbols)
    assert pdf_module._usable(prose)


def _with_junk_text_layer(pdf: Path, out: Path) -> Path:
    """Page 1 of `pdf` gains a hidden text layer of symbols: a scan whose earlier OCR layer (or font
    mapping) is junk."""
    import ctypes

    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    document = pdfium.PdfDocument(pdf)
    page = document[0]
    font = raw.FPDFText_LoadStandardFont(document.raw, b"Helvetica")
    for line in range(12):
        obj = raw.FPDFPageObj_CreateTextObj(document.raw, font, 12.0)
        text = ctypes.create_string_buffer(("§¤¦ ¨© ª«¬ ®¯° ±² ³´ ¶·¸ ¹º» " * 3 + "\0").encode("utf-16-le"))
        raw.FPDFText_SetText(obj, ctypes.cast(text, ctypes.POINTER(raw.FPDF_WCHAR)))
        raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, 700 - 20 * line)
        raw.FPDFTextObj_SetTextRenderMode(obj, raw.FPDF_TEXTRENDERMODE_INVISIBLE)  # a hidden layer, as OCR'd scans have
        raw.FPDFPage_InsertObject(page.raw, obj)
    raw.FPDFPage_GenerateContent(page.raw)
    document.save(out)
    document.close()
    return out


@needs_ocr
@needs_chromium
def test_garbage_text_layer_falls_back_to_ocr(report_pdf: Path, tmp_path: Path) -> None:
    junk = _with_junk_text_layer(_scan_of(report_pdf, tmp_path / "scan.pdf"), tmp_path / "junk.pdf")
    doc = load_file(junk)
    assert doc.metadata["ocr_pages"] == [1] and doc.metadata["encoding"] == "pdf+ocr"
    assert "§" not in doc.page_content and "1/3" not in doc.page_content  # OCR'd page number dropped too
    assert normalize("مؤتمر موسكو للأمن الدولي") in normalize(doc.page_content)


@needs_chromium
def test_scan_without_tesseract_names_the_package_and_rest_indexes(
    report_pdf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scan_of(report_pdf, tmp_path / "scan.pdf")
    (tmp_path / "page.html").write_text(HTML_PAGE, encoding="utf-8")
    monkeypatch.setattr(ocr_module.shutil, "which", lambda _name: None)
    docs, skipped = load_folder(tmp_path)
    assert [d.metadata["source"] for d in docs] == ["page.html"]
    assert len(skipped) == 1 and "apt-get install tesseract-ocr tesseract-ocr-ara" in str(skipped[0])


# --- Through the pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(report_pdf: Path, tmp_path_factory: pytest.TempPathFactory, embedder: VectorEmbeddings) -> Pipeline:
    """A folder with a text PDF, a scanned PDF, a DOCX and an HTML page, indexed."""
    if not _has_arabic_ocr():
        pytest.skip(f"needs Tesseract with Arabic: {ocr_module.INSTALL_HINT}")
    docs = tmp_path_factory.mktemp("mixed")
    shutil.copy(report_pdf, docs / "report.pdf")
    scan_source = print_pdf(
        rtl_html("مقال رأي", [Section("مؤتمر موسكو والنظام الدولي", SEED_000[:2])]), docs.parent / "opinion.pdf"
    )
    _scan_of(scan_source, docs / "scan.pdf")
    (docs / "olive.docx").write_bytes(_olive_docx())
    (docs / "page.html").write_text(HTML_PAGE, encoding="utf-8")
    config = Config(docs_dir=docs, index_dir=tmp_path_factory.mktemp("mixed-index"))
    index, report = build_folder(config, embedder)
    assert not report.skipped and sorted(report.added) == ["olive.docx", "page.html", "report.pdf", "scan.pdf"]
    return Pipeline(config, index=index)


def _cited(answer: Answer, source: str, expected: str) -> list:
    assert not answer.abstained, answer
    hits = [c for c in answer.citations if c.source == source and normalize(expected) in normalize(c.text)]
    assert hits, [(c.source, c.text[:80]) for c in answer.citations]
    return hits


@needs_ocr
def test_answers_from_text_pdf_cite_page_and_section(mixed: Pipeline) -> None:
    # Where the passage is, from the retrieved passages (which answer sentence is chosen is the
    # answerer's business, measured in eval/RESULTS.md, not this loader's).
    answer = mixed.ask("في أي سنة تأسس مؤتمر موسكو للأمن الدولي؟")
    hits = [c for c in answer.citations + answer.related if c.source == "report.pdf" and "2012" in c.text]
    assert hits, [(c.source, c.text[:80]) for c in answer.citations + answer.related]
    assert hits[0].page == 2 and hits[0].section == "أهداف المؤتمر" and not hits[0].ocr
    first = _cited(mixed.ask("متى عُقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟"), "report.pdf", "15 أغسطس 2023")
    assert first[0].page == 1


@needs_ocr
def test_answers_from_scanned_pdf_are_marked_ocr(mixed: Pipeline) -> None:
    answer = mixed.ask("حسب مقال الرأي، ما رقم الدورة التي يعقدها المنتدى هذا العام؟")
    (hit, *_) = _cited(answer, "scan.pdf", "العاشرة")
    assert hit.ocr and hit.page == 1
    assert answer.to_json()["citations"][0]["ocr"] is True


@needs_ocr
def test_answers_from_docx_and_html_cite_their_section(mixed: Pipeline) -> None:
    olive = mixed.ask("متى يبدأ موسم قطف الزيتون في فلسطين؟")
    assert "أكتوبر" in olive.answer
    assert _cited(olive, "olive.docx", "أكتوبر")[0].section == "موسم القطاف"
    falcon = mixed.ask("كم يوما يستغرق تدريب الصقر على الصيد؟")
    assert "أربعين" in falcon.answer
    hit = _cited(falcon, "page.html", "أربعين")[0]
    assert hit.section == "تدريب الصقور" and hit.page is None


@needs_ocr
def test_citation_location_is_shown_in_ui_and_cli(mixed: Pipeline) -> None:
    from rag.__main__ import render
    from ui.render import answer_message

    answer = mixed.ask("في أي سنة تأسس مؤتمر موسكو للأمن الدولي؟")
    html = answer_message(answer)
    assert "ص 2" in html and "أهداف المؤتمر" in html
    assert "ص 2 · أهداف المؤتمر" in render(answer)  # in the question's language, on the CLI too


# --- Stores and incremental updates ---------------------------------------------------------------


@needs_chromium
@pytest.mark.parametrize("kind", ["faiss", "milvus"])
def test_stores_keep_page_and_section_and_update_only_the_changed_file(
    kind: str, report_pdf: Path, tmp_path: Path, embedder: VectorEmbeddings
) -> None:
    from index.build import store_for
    from tests.test_stores import make_config

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(report_pdf, docs / "report.pdf")
    (docs / "olive.docx").write_bytes(_olive_docx())
    (docs / "notes.md").write_text("# مقدمة\nنص المقدمة عن الزيتون.\n\n## خاتمة\nنص الخاتمة.\n", encoding="utf-8")
    config = make_config(kind, docs, tmp_path)
    build_folder(config, embedder)
    chunks = list(store_for(config).load(embedder.name).serving(config).scan())
    located = {(c.metadata["source"], c.metadata.get("page"), c.metadata.get("section")) for c in chunks}
    assert ("report.pdf", 2, "أهداف المؤتمر") in located
    assert ("olive.docx", None, "موسم القطاف") in located and ("notes.md", None, "خاتمة") in located
    # A changed PDF re-indexes only itself.
    print_pdf(rtl_html("تقرير", [Section("قسم", ["نص جديد في التقرير بعد التعديل."])]), docs / "report.pdf")
    _, report = build_folder(config, embedder)
    assert report.updated == ["report.pdf"] and sorted(report.unchanged) == ["notes.md", "olive.docx"]


def test_location_is_rendered_escaped_in_both_languages() -> None:
    from rag.answer import Citation
    from ui.render import _passage

    cited = Citation(1, "r.pdf", "ت", 0, 9, "نص عربي هنا", 0.5, page=3, page_end=4, section="<b>قسم</b>", ocr=True)
    html = _passage(cited, show_scores=False, open_=True, arabic=True)
    assert "ص 3–4 · &#60;b&#62;قسم&#60;&#47;b&#62; · OCR" in html and "<b>قسم" not in html
    assert formats.describe_location(3, None, "", False, arabic=False) == "p. 3"
    assert formats.describe_location(3, 4, "Intro", False, arabic=False) == "pp. 3–4 · Intro"
    assert formats.describe_location(None, None, "", False, arabic=True) == ""


@pytest.mark.parametrize(
    "data",
    [b"<html><body>x</body></html>", b"PK\x03\x04rest", b"\xd0\xcf\x11\xe0rest", b"%PDF-1.7 rest", b"MZ\x90\x00"],
)
def test_what_the_bytes_look_like_is_said_in_both_languages(data: bytes) -> None:
    """`sniff` names a catalogue key (the reason reads in the page's language, not English inside
    Arabic): each one it can return has both messages."""
    key = formats.sniff(data)
    assert key.startswith("unreadable_looks_") and all(key in MESSAGES[lang] for lang in LANGUAGES)
    assert (key == "unreadable_looks_other") == data.startswith(b"MZ")  # each known kind named as such
