"""End-to-end in a real browser: Debian's Chromium driven by Playwright against `python -m ui`.

The app runs as a subprocess on a free loopback port over a copy of the seeds. Screenshots go to
test-output/. Set RAG_SKIP_BROWSER=1 to skip locally when Chromium is not installed; CI installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, SEEDS_DIR, start_ui

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
OUTPUT = REPO_ROOT / "test-output"

if os.environ.get("RAG_SKIP_BROWSER") == "1":
    pytest.skip("RAG_SKIP_BROWSER=1", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")

NEW_DOC = """مهرجان التمور في بريدة
أقيم مهرجان التمور السنوي في مدينة بريدة في شهر سبتمبر. وبلغ عدد زوار المهرجان هذا العام خمسة وأربعين ألف زائر.
وفازت مزرعة النخيل الذهبية بجائزة أفضل تمر سكري في المهرجان.
"""

HOSTILE_DOC = """نشرة مكتبة الحي
افتتحت مكتبة الحي قاعة مطالعة جديدة تتسع لمئة وعشرين قارئا. <script>window.__pwned = 1</script>
<img src=x onerror="window.__pwned = 2"> وللتسجيل [اضغط هنا](http://evil.example/) أو زر **الموقع**.
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    docs = tmp_path_factory.mktemp("ui-docs") / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    index = tmp_path_factory.mktemp("ui-index")
    env = {**os.environ, "RAG_INDEX_DIR": str(index), "RAG_DOCS_DIR": str(docs)}
    subprocess.run(
        [sys.executable, "-m", "index", "build", "--quiet"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    running = start_ui(env, tmp_path_factory.mktemp("ui-log"))
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or set RAG_SKIP_BROWSER=1)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: object, server: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1200, "height": 1100})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.goto(server)
    pg.wait_for_selector("#question textarea")
    yield pg
    context.close()


def ask(page: object, question: str) -> object:
    """Type a question, send it, and return the locator of the newest bot message."""
    before = page.locator("#chat .answer, #chat .notice").count()  # type: ignore[attr-defined]
    page.locator("#question textarea").fill(question)  # type: ignore[attr-defined]
    page.locator("#ask").click()  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "n => document.querySelectorAll('#chat .answer, #chat .notice').length > n", arg=before, timeout=60_000
    )
    return page.locator("#chat .answer, #chat .notice").last  # type: ignore[attr-defined]


def shot(page: object, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)  # type: ignore[attr-defined]


def test_arabic_question_gets_cited_answer(page: object) -> None:
    answer = ask(page, "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟")
    assert "15 أغسطس 2023" in answer.inner_text()
    assert answer.get_attribute("dir") == "rtl"
    chat = page.locator("#chat")  # type: ignore[attr-defined]
    assert "001_e9389b4ffc57ddb8.txt" in chat.inner_text()
    assert chat.locator("mark").count() >= 1  # the answer sentence is highlighted in its passage
    shot(page, "ui-arabic-answer.png")


def test_english_question_finds_arabic_passage(page: object) -> None:
    answer = ask(page, "How many delegates attended the 2023 conference?")
    assert answer.get_attribute("dir") == "ltr"
    assert "800 مندوب" in answer.inner_text()
    assert "001_e9389b4ffc57ddb8.txt" in page.locator("#chat").inner_text()  # type: ignore[attr-defined]
    shot(page, "ui-english-answer.png")


def test_empty_question_gets_friendly_message(page: object) -> None:
    reply = ask(page, "   ")
    assert "Please type a question" in reply.inner_text()
    assert "Traceback" not in page.content()  # type: ignore[attr-defined]


def _upload(page: object, files: list[Path]) -> str:
    page.get_by_role("tab", name="Documents / المستندات").click()  # type: ignore[attr-defined]
    status = page.locator("#upload-status textarea")  # type: ignore[attr-defined]
    previous = status.input_value()
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in files])  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "prev => { const t = document.querySelector('#upload-status textarea'); return t && t.value && t.value !== prev; }",
        arg=previous,
        timeout=120_000,
    )
    return str(status.input_value())


def test_upload_then_ask_question_only_it_answers(page: object, tmp_path: Path) -> None:
    doc = tmp_path / "مهرجان التمور.txt"
    doc.write_text(NEW_DOC, encoding="utf-8")
    status = _upload(page, [doc])
    assert "Indexed" in status and "مهرجان" in status
    assert "مهرجان التمور" in page.locator("#documents").inner_text()  # type: ignore[attr-defined]
    shot(page, "ui-documents-after-upload.png")
    page.get_by_role("tab", name="Chat / المحادثة").click()  # type: ignore[attr-defined]
    answer = ask(page, "كم بلغ عدد زوار مهرجان التمور في بريدة؟")
    assert "خمسة وأربعين ألف زائر" in answer.inner_text()
    assert "مهرجان التمور.txt" in page.locator("#chat").inner_text()  # type: ignore[attr-defined]
    # The same file again is recognised as a duplicate.
    assert "Already indexed" in _upload(page, [doc])


def test_undecodable_upload_is_rejected_by_name(page: object, tmp_path: Path) -> None:
    bad = tmp_path / "broken.txt"
    bad.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 50)
    status = _upload(page, [bad])
    assert "Rejected" in status and "broken.txt" in status


def test_html_in_documents_is_shown_escaped(page: object, tmp_path: Path) -> None:
    doc = tmp_path / "hostile.md"
    doc.write_text(HOSTILE_DOC, encoding="utf-8")
    assert "Indexed" in _upload(page, [doc])
    page.get_by_role("tab", name="Chat / المحادثة").click()  # type: ignore[attr-defined]
    ask(page, "كم قارئا تتسع قاعة المطالعة الجديدة في مكتبة الحي؟")
    chat = page.locator("#chat")  # type: ignore[attr-defined]
    text = chat.inner_text()
    assert "<script>window.__pwned = 1</script>" in text  # shown as text…
    assert page.evaluate("() => window.__pwned") is None  # type: ignore[attr-defined]  # …never run
    assert chat.locator("script").count() == 0
    assert chat.locator("img[src='x']").count() == 0
    assert chat.locator("a[href*='evil.example']").count() == 0
    assert "[اضغط هنا](http://evil.example/)" in text
    shot(page, "ui-escaped-html.png")


def test_pdf_upload_is_answered_with_its_page_and_section(page: object, tmp_path: Path) -> None:
    from eval.pdf_fixtures import Section, print_pdf, rtl_html

    sections = [
        Section("مهرجان الزيتون", ["أقيم مهرجان الزيتون في مدينة جرش بمشاركة المزارعين من كل المحافظات."]),
        Section("الجوائز", ["فازت معصرة الوادي الأخضر بجائزة أفضل زيت زيتون بكر في المهرجان."], new_page=True),
    ]
    pdf = print_pdf(rtl_html("نشرة المهرجان", sections), tmp_path / "نشرة المهرجان.pdf")
    status = _upload(page, [pdf])
    assert "Indexed" in status and "نشرة المهرجان.pdf" in status
    page.get_by_role("tab", name="Chat / المحادثة").click()  # type: ignore[attr-defined]
    answer = ask(page, "من فاز بجائزة أفضل زيت زيتون بكر في مهرجان الزيتون؟")
    assert "الوادي الأخضر" in answer.inner_text()
    sources = page.locator("#chat .source").all_inner_texts()  # type: ignore[attr-defined]
    assert any("نشرة المهرجان.pdf · ص 2 · الجوائز" in s for s in sources), sources
    shot(page, "ui-pdf-answer.png")
