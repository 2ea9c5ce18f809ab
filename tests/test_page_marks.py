"""Issue 29: the cited page with the answer marked on it. The marked boxes are compared with the
characters' own positions: on a text PDF the text inside each box (read back by pdfium) must be
the word marked; on a scan of the same page, and on a page image, Tesseract's boxes must sit on
the boxes of the same words in the text layer. Arabic lines run right to left, and the cited
sentence is broken across two lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from eval.pdf_fixtures import Section, chromium, print_pdf, rtl_html
from index.formats.marks import RENDER_DPI, Box, keys, mark_words, marked_page
from index.formats.pdf import page_words

if chromium() is None:
    pytest.skip("chromium is needed to print the test PDFs", allow_module_level=True)

pdfium = pytest.importorskip("pypdfium2")

OPENING = (
    "افتتح وزير الدفاع الروسي سيرغي شويغو المؤتمر في الخامس عشر من أغسطس 2023، وحضره أكثر من 800 مندوب من 76 دولة."
)
CHINA = "وقال وزير الدفاع الصيني لي شانغ فو إن بلاده مستعدة لتعزيز التعاون الأمني داخل منظمة شنغهاي للتعاون."
SENTENCE = "وحضره أكثر من 800 مندوب من 76 دولة."
ANSWER = "أكثر من 800 مندوب"
SCALE = RENDER_DPI / 72


@pytest.fixture(scope="module")
def text_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("marks")
    page = rtl_html("مؤتمر موسكو", [Section("الافتتاح", [OPENING, CHINA])])
    return print_pdf(page, folder / "report.pdf").read_bytes()


def text_in(page: object, box: Box) -> str:
    """What pdfium reads inside a box given in shown pixels (its own text, not ours)."""
    textpage = page.get_textpage()  # type: ignore[attr-defined]
    height = page.get_height()  # type: ignore[attr-defined]
    left, top, right, bottom = (v / SCALE for v in box)
    try:
        return str(textpage.get_text_bounded(left - 0.5, height - bottom - 0.5, right + 0.5, height - top + 0.5))
    finally:
        textpage.close()


def same_word(read: str, expected: set[str]) -> bool:
    """pdfium may read an Arabic word's letters in visual order: either way round counts."""
    key = "".join(keys(read))
    return key in expected or key[::-1] in expected


def overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def test_the_marked_boxes_hold_the_sentence_and_the_answer_on_a_text_pdf(text_pdf: bytes) -> None:
    png, shown, marks = marked_page(text_pdf, ".pdf", [1], SENTENCE, ANSWER)
    assert png.startswith(b"\x89PNG") and shown == 1 and marks.matched == 1.0
    document = pdfium.PdfDocument(text_pdf)
    try:
        page = document[0]
        answer_words, sentence_words = set(keys(ANSWER)), set(keys(SENTENCE))
        assert len(marks.answer) == len(keys(ANSWER))  # "من" twice in the sentence, once in the answer
        assert all(same_word(text_in(page, box), answer_words) for box in marks.answer)
        assert len(marks.sentence) == len(keys(SENTENCE))
        assert all(same_word(text_in(page, box), sentence_words) for box in marks.sentence)
        # The sentence is broken across two lines: boxes on both, the first line's at its left end
        # (where an Arabic line ends), the second's at the right (where the next line starts).
        tops = sorted({round(box[1]) for box in marks.sentence})
        assert tops[-1] - tops[0] > 10
        page.close()
    finally:
        document.close()


def test_an_answer_in_another_sentence_is_not_marked(text_pdf: bytes) -> None:
    """ "وزير الدفاع" is in both sentences: only the cited sentence's words are marked."""
    _, _, marks = marked_page(text_pdf, ".pdf", [1], CHINA, "وزير الدفاع الصيني")
    document = pdfium.PdfDocument(text_pdf)
    try:
        page = document[0]
        words = {tuple(round(v) for v in w.box) for w in page_words(page)}
        assert len(marks.answer) == 3
        first_line_top = min(box[1] for box in marks.sentence)
        assert all(box[1] >= first_line_top - 1 for box in marks.answer)
        assert all(same_word(text_in(page, box), set(keys("وزير الدفاع الصيني"))) for box in marks.answer)
        assert words  # the page's words were read
        page.close()
    finally:
        document.close()


def _scaled(box: Box, factor: float) -> Box:
    return (box[0] * factor, box[1] * factor, box[2] * factor, box[3] * factor)


def _scan(text_pdf: bytes) -> tuple[object, list[tuple[str, Box]]]:
    """The page as a 300 dpi image, and the text layer's words in 150 dpi pixels."""
    document = pdfium.PdfDocument(text_pdf)
    try:
        page = document[0]
        image = page.render(scale=300 / 72).to_pil().convert("RGB")
        words = [(w.text, tuple(v * SCALE for v in w.box)) for w in page_words(page)]
        page.close()
    finally:
        document.close()
    return image, words  # type: ignore[return-value]


@pytest.mark.parametrize("kind", [".pdf", ".png"])
def test_a_scan_and_a_page_image_are_marked_where_the_words_are(text_pdf: bytes, kind: str) -> None:
    image, layer = _scan(text_pdf)
    expected = mark_words(layer, SENTENCE, ANSWER)  # where the text layer says the words are
    out = io.BytesIO()
    if kind == ".pdf":
        image.save(out, format="PDF", resolution=300)  # type: ignore[attr-defined]
    else:
        image.save(out, format="PNG", dpi=(300, 300))  # type: ignore[attr-defined]
    _, _, marks = marked_page(out.getvalue(), kind, [1], SENTENCE, ANSWER)
    assert marks.matched == 1.0
    # A page image is shown as it is (300 dpi); a scanned PDF at the display resolution.
    factor = 300 / RENDER_DPI if kind == ".png" else 1.0
    truth = [_scaled(box, factor) for box in expected.answer]
    assert len(marks.answer) == len(truth)
    for box in marks.answer:
        assert max(overlap(box, t) for t in truth) > 0.6, (box, truth)
    sentence_truth = [_scaled(box, factor) for box in expected.sentence]
    assert all(max(overlap(box, t) for t in sentence_truth) > 0.6 for box in marks.sentence)


def test_the_best_page_of_a_span_is_shown_and_a_missing_page_is_refused(tmp_path: Path) -> None:
    page = rtl_html("تقرير", [Section("أولا", ["نص الصفحة الأولى عن الزراعة."]), Section("ثانيا", [OPENING], True)])
    data = print_pdf(page, tmp_path / "two.pdf").read_bytes()
    _, shown, marks = marked_page(data, ".pdf", [1, 2], SENTENCE, ANSWER)
    assert shown == 2 and marks.matched == 1.0
    from index.formats import FormatError

    with pytest.raises(FormatError) as raised:
        marked_page(data, ".pdf", [7], SENTENCE, ANSWER)
    assert raised.value.code == "page_missing"


def test_a_word_the_next_sentence_shares_is_not_marked_there(text_pdf: bytes) -> None:
    """ "وزير" opens the next line's sentence too: seen shaded there in the first version."""
    _, _, marks = marked_page(text_pdf, ".pdf", [1], OPENING, "وزير الدفاع الروسي سيرغي شويغو")
    _, _, china = marked_page(text_pdf, ".pdf", [1], CHINA, "")
    assert marks.matched == 1.0 and len(marks.sentence) == len(keys(OPENING))
    china_top = min(box[1] for box in china.sentence)
    assert all(box[3] < china_top for box in marks.sentence + marks.answer)
    assert len(marks.answer) == 5
