"""End-to-end in a real browser: Debian's Chromium driven by Playwright against `python -m ui`.

The app runs as a subprocess on a free loopback port over a copy of the seeds. Screenshots go to
test-output/. Set RAG_SKIP_BROWSER=1 to skip locally when Chromium is not installed; CI installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from core.i18n import t
from rag.feedback import FeedbackLog
from tests.helpers import REPO_ROOT, SEEDS_DIR, start_ui
from ui.app import EXAMPLES

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

NEW_DOC = """مهرجان التمور في بريدة
أقيم مهرجان التمور السنوي في مدينة بريدة في شهر سبتمبر. وبلغ عدد زوار المهرجان هذا العام خمسة وأربعين ألف زائر.
وفازت مزرعة النخيل الذهبية بجائزة أفضل تمر سكري في المهرجان.
"""

HOSTILE_DOC = """نشرة مكتبة الحي
افتتحت مكتبة الحي قاعة مطالعة جديدة تتسع لمئة وعشرين قارئا. <script>window.__pwned = 1</script>
<img src=x onerror="window.__pwned = 2"> وللتسجيل [اضغط هنا](http://evil.example/) أو زر **الموقع**.
"""


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away copy of the seeds: the UI's documents folder."""
    folder = tmp_path_factory.mktemp("ui-docs") / "docs"
    shutil.copytree(SEEDS_DIR, folder)
    return folder


@contextlib.contextmanager
def serving(
    tmp_path_factory: pytest.TempPathFactory, docs: Path, index: Path | None = None, **settings: str
) -> Iterator[str]:
    """`python -m ui` over `docs` with an index of its own (in `index` if given) and these RAG_*
    settings; yields its URL."""
    index = index or tmp_path_factory.mktemp("ui-index")
    # Every short answer shown unless a test says otherwise: these tests are about the page (the
    # gate that withholds unsure ones is tests/test_short_gate.py's and tests/test_examples.py's).
    env = {
        **os.environ,
        "RAG_INDEX_DIR": str(index),
        "RAG_DOCS_DIR": str(docs),
        "RAG_SHORT_ANSWER_THRESHOLD": "0",
        **settings,
    }
    subprocess.run(
        [sys.executable, "-m", "index", "build", "--quiet"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    key = settings.get("RAG_API_KEY")
    running = start_ui(
        env, tmp_path_factory.mktemp("ui-log"), headers={"Authorization": f"Bearer {key}"} if key else None
    )
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The index folder of `server` (its trash and feedback file live there)."""
    return tmp_path_factory.mktemp("ui-index")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docs: Path, index_dir: Path) -> Iterator[str]:
    with serving(tmp_path_factory, docs, index_dir) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or set RAG_SKIP_BROWSER=1)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    pg = _page(browser, server, "en-US")
    yield pg
    pg.context.close()


def click_until(
    target: Locator, happened: Callable[[float], object], reset: Callable[[], object] = lambda: None
) -> None:
    """Clicks `target` until `happened(timeout_ms)` passes, three tries of 5 s (`reset` undoes a
    half-done try first): under load a click while Gradio re-renders was lost, or the redraw
    after it undid what it did (CI, three times). A user who clicks again sees it work."""
    for attempt in range(3):
        reset()
        target.click()
        try:
            happened(5_000)
            return
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise


def open_settings(opener: Locator, inside: Locator) -> Locator:
    """Opens the Settings panel with `opener` until `inside` (a control in it) shows; returns it."""
    click_until(opener, lambda ms: inside.wait_for(state="visible", timeout=ms))
    return inside


def ask(page: Page, question: str) -> Locator:
    """Type a question, send it, and return the locator of the newest bot message."""
    before = page.locator("#chat .answer, #chat .notice").count()
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.wait_for_function(
        "n => document.querySelectorAll('#chat .answer, #chat .notice').length > n", arg=before, timeout=60_000
    )
    return page.locator("#chat .answer, #chat .notice").last


def shot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / name), full_page=True)


def test_arabic_question_gets_cited_answer(page: Page) -> None:
    answer = ask(page, "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟")
    assert "15 أغسطس 2023" in answer.inner_text()
    assert answer.get_attribute("dir") == "rtl"
    chat = page.locator("#chat")
    assert "001_e9389b4ffc57ddb8.txt" in chat.inner_text()
    assert chat.locator("mark").count() >= 1  # the answer sentence is highlighted in its passage
    shot(page, "ui-arabic-answer.png")


def test_english_question_finds_arabic_passage(page: Page) -> None:
    answer = ask(page, "How many delegates attended the 2023 conference?")
    assert answer.get_attribute("dir") == "ltr"
    assert "800 مندوب" in answer.inner_text()
    assert "001_e9389b4ffc57ddb8.txt" in page.locator("#chat").inner_text()
    shot(page, "ui-english-answer.png")


def test_the_reader_switch_in_settings_reaches_the_short_answer(page: Page) -> None:
    """The reader is the default; unticking its box in Settings gives the span ranker's answer.
    (It had a server of its own while the reader was off by default, to keep torch out of the
    shared one; the shared one loads the reader now.)"""
    question = 'Which Chinese defense minister warned against "playing with fire" over Taiwan?'
    assert ask(page, question).locator(".short-answer").inner_text() == "لي شانغفو"
    open_settings(page.get_by_text("Settings"), page.get_by_label("Short answer by the fine-tuned reader")).uncheck()
    assert "لي شانغفو" not in ask(page, question).locator(".short-answer").inner_text()


def test_with_a_key_the_browser_signs_in_once_then_asks(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory, docs: Path
) -> None:
    """Issue 27, point 1: with RAG_API_KEY set, the page asks for it first (in the browser's
    language), and once it is typed every call the page makes carries the session."""
    key = "browser-key-" + os.urandom(6).hex()
    with serving(tmp_path_factory, docs, RAG_API_KEY=key) as url:
        page = browser.new_context(viewport={"width": 1200, "height": 1100}, locale="ar").new_page()
        try:
            page.goto(url)
            assert page.url.endswith("/login")
            assert page.locator("html").get_attribute("dir") == "rtl"
            page.locator("#key").fill("not-" + key)
            page.locator("button[type=submit]").click()
            assert "المفتاح غير صحيح" in page.locator(".error").inner_text()
            page.locator("#key").fill(key)
            page.locator("button[type=submit]").click()
            page.locator("#question textarea").wait_for(state="visible", timeout=60_000)
            assert "800" in ask(page, "كم عدد المندوبين الذين حضروا المؤتمر؟").inner_text()
        finally:
            page.context.close()


def test_empty_question_gets_friendly_message(page: Page) -> None:
    reply = ask(page, "   ")
    assert "Please type a question" in reply.inner_text()
    assert "Traceback" not in page.content()
    assert page.locator("#chat .msg").count() == 0  # issue 29: no blank bubble for the blank question


FINAL = ("indexed", "reindexed", "renamed", "replaced", "duplicate", "rejected")
# True once the per-file list is a new one (not the list of an earlier upload) and every line in it
# is a final result (lines of a running upload say waiting / reading / read / embedding).
UPLOAD_FINISHED = """finals => {
  const list = document.querySelector('#upload-results ul.upload-results');
  if (!list || list.dataset.old) return false;
  const lines = Array.from(list.querySelectorAll('li'));
  return lines.length > 0 && lines.every((li) => finals.some((f) => li.classList.contains('outcome-' + f)));
}"""


def _upload(page: Page, files: list[Path]) -> str:
    """Upload `files` on the Documents tab, wait for every file's result; returns the status line."""
    page.get_by_role("tab", name="Documents").click()
    page.evaluate("() => document.querySelectorAll('#upload-results ul').forEach((u) => { u.dataset.old = '1'; })")
    page.locator("#upload input[type=file]").set_input_files([str(f) for f in files])
    page.wait_for_function(UPLOAD_FINISHED, arg=list(FINAL), timeout=120_000)
    return str(page.locator("#upload-status textarea").input_value())


def _result_lines(page: Page) -> list[str]:
    return page.locator("#upload-results li").all_inner_texts()


def test_upload_shows_each_files_progress_then_its_result(page: Page, tmp_path: Path, docs: Path) -> None:
    """Issue 15: an upload showed one overall "Indexing…" and one status text for all files; now each
    file has its own line, live while it is read and indexed, and its result stays until the next upload."""
    good = tmp_path / "سوق الكتب.txt"
    good.write_text(
        "سوق الكتب المستعملة\nيفتح سوق الكتب المستعملة أبوابه كل جمعة في ساحة البلدة القديمة.\n" * 30, encoding="utf-8"
    )
    other = tmp_path / "notes.md"
    other.write_text("# ملاحظات الرحلة\nزار الطلاب متحف العلوم وشاهدوا عرض القبة الفلكية.\n", encoding="utf-8")
    bad = tmp_path / "broken2.txt"
    bad.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 50)
    copy = tmp_path / "copy.txt"
    copy.write_bytes((docs / "001_e9389b4ffc57ddb8.txt").read_bytes())
    page.get_by_role("tab", name="Documents").click()
    page.locator("#upload-results").wait_for(state="attached")
    # Every state the list shows is recorded, however briefly it is shown.
    page.evaluate(
        """() => { window.__seen = [];
        new MutationObserver(() => { const l = document.querySelector('#upload-results');
          if (l) window.__seen.push(Array.from(l.querySelectorAll('li')).map((li) => li.className)); })
          .observe(document.querySelector('#upload-results'), {childList: true, subtree: true}); }"""
    )
    _upload(page, [good, other, bad, copy])
    lines = _result_lines(page)
    assert len(lines) == 4, lines
    assert lines[0].startswith("سوق الكتب.txt") and "indexed" in lines[0]
    assert lines[1].startswith("notes.md") and "indexed" in lines[1]
    assert lines[2].startswith("broken2.txt") and "rejected" in lines[2]
    assert lines[3].startswith("copy.txt") and "already indexed" in lines[3] and "001_e9389b4ffc57ddb8.txt" in lines[3]
    seen = page.evaluate("() => window.__seen")
    running = {c for snapshot in seen for c in snapshot if not any(f"outcome-{f}" in c for f in FINAL)}
    assert running, seen  # the list was shown while the upload ran, not only at the end
    shot(page, "ui-upload-results.png")
    # The results stay while the user does something else on the tab…
    assert "Choose a document first" in _status_after(page, "#remove")
    assert _result_lines(page) == lines
    # …until the next upload, which shows only its own files.
    again = tmp_path / "again.txt"
    again.write_text("نشرة قصيرة\nافتتحت حديقة جديدة في الحي الشمالي.\n", encoding="utf-8")
    _upload(page, [again])
    assert [line.split(":")[0] for line in _result_lines(page)] == ["again.txt"]


def test_upload_results_speak_the_page_language(browser: Browser, server: str, tmp_path: Path) -> None:
    """Also a type the tool does not read: Gradio's own check of the picker's types answered a new
    user's setup.exe with an English toast ("Invalid file type: setup.exe. Only .txt, … allowed.")
    on the Arabic page, and nothing in the results; the library's check says it in Arabic."""
    bad = tmp_path / "تالف.txt"
    bad.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 50)
    program = tmp_path / "setup.exe"
    program.write_bytes(b"MZ\x90\x00" + b"\x00" * 60)
    page = _page(browser, server, "ar")
    try:
        page.get_by_role("tab", name="المستندات").click()
        page.locator("#upload input[type=file]").set_input_files([str(bad), str(program)])
        page.wait_for_function(UPLOAD_FINISHED, arg=list(FINAL), timeout=120_000)
        lines = _result_lines(page)
        assert len(lines) == 2, lines
        assert lines[0].startswith("تالف.txt") and "مرفوض" in lines[0], lines
        assert lines[1].startswith("setup.exe") and "مرفوض" in lines[1] and "exe" in lines[1], lines
        assert "Invalid file type" not in page.locator("body").inner_text()
    finally:
        page.context.close()


def test_the_switch_holds_the_page_language_before_the_server_answers_the_page_load(
    browser: Browser, server: str
) -> None:
    """On a busy server the page's load event came back late, and until then the language switch
    said "en", which every event sends as the page's language: a file uploaded meanwhile got its
    results in English on the Arabic page (seen in a parallel test run). Here the load event is
    accepted and never answered."""
    [load_id] = [
        d["id"]
        for d in httpx.get(f"{server.rstrip('/')}/config").json()["dependencies"]
        if "rag-conversation" in (d.get("js") or "")
    ]
    context = browser.new_context(viewport={"width": 1200, "height": 1100}, locale="ar")
    held: list[int] = []

    def hold_the_load_event(route: Route) -> None:
        if (route.request.post_data_json or {}).get("fn_index") == load_id:
            held.append(load_id)
            route.fulfill(json={"event_id": "held"})
        else:
            route.continue_()

    context.route("**/gradio_api/queue/join*", hold_the_load_event)
    page = context.new_page()
    try:
        page.goto(server)
        page.wait_for_selector("#question textarea")
        page.wait_for_function("() => document.querySelector('#lang input[value=ar]')?.checked", timeout=10_000)
        assert held, "the page's load event was not seen"
    finally:
        context.close()


GRADIO_STATUS_TEXTS = """async (texts) => {
              const box = document.createElement('div');
              document.body.append(box);
              const nodes = texts.map((text) => box.appendChild(document.createElement('span')));
              nodes.forEach((node, i) => { node.textContent = texts[i]; });
              await new Promise((done) => setTimeout(done, 100));
              nodes[0].firstChild.nodeValue = 'In queue: 2 of 3';  // Gradio updates a node in place
              await new Promise((done) => setTimeout(done, 100));
              return nodes.map((node) => node.textContent);
            }"""


def test_gradio_queue_status_reads_arabic_on_the_arabic_page(browser: Browser, server: str) -> None:
    """Gradio's queue status, shown while the server is busy, came out in English on the Arabic page
    ("In queue: 1 of 1", seen in a parallel test run); these are the three forms its frontend writes.
    Its status tracker showed the bare key "common.complete" after an upload (seen in CI)."""
    page = _page(browser, server, "ar")
    try:
        shown = page.evaluate(
            GRADIO_STATUS_TEXTS, ["In queue: 1 of 1", "queue: 1/2 |", "processing |", "common.complete"]
        )
        assert shown == ["في الانتظار: 2 من 3", "في الانتظار: 1/2 |", "قيد المعالجة |", "اكتمل"], shown
    finally:
        page.context.close()
    page = _page(browser, server, "en")
    try:
        shown = page.evaluate(GRADIO_STATUS_TEXTS, ["In queue: 1 of 1", "common.complete"])
        assert shown == ["In queue: 2 of 3", "Done"], shown
    finally:
        page.context.close()


# Every piece of text a user can read or hear: visible text nodes and the labels, titles and
# placeholders a screen reader says.
SHOWN_TEXT = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!el || el.closest('script, style') || !el.checkVisibility()) continue;
    if (node.textContent.trim()) out.push(node.textContent.trim());
  }
  document.querySelectorAll('[aria-label], [title], [placeholder]').forEach((el) => {
    for (const a of ['aria-label', 'title', 'placeholder']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
  });
  return out;
}"""
# Latin words that belong on an Arabic page: names of formats and keys, the other language's
# name on the switch, and the English example questions (there on purpose).
LATIN_ALLOWED = {"PDF", "Word", "Markdown", "JSON", "Enter", "Shift", "English", "OCR"}


def _latin_left(texts: list[str], allowed: set[str]) -> set[str]:
    """The Latin words in `texts` that are neither allowed nor part of an allowed text."""
    from core.i18n import MESSAGES

    keys = set(MESSAGES["en"])
    left = set()
    for text in texts:
        cut = text.rstrip(".…")  # Gradio shortens a long example to its first characters
        if text in allowed or (len(cut) > 10 and any(a.startswith(cut) for a in allowed)):
            continue
        for name in sorted(allowed, key=len, reverse=True):  # a file name inside a line
            text = text.replace(name, " ")
        text = re.sub(r"\bRAG_[A-Z_]+", " ", text)  # a setting's name is the same in both languages
        for word in re.findall(r"[A-Za-z][A-Za-z'_]+", text):
            if word not in allowed:
                left.add(word)
        left |= {text for key in keys if text == key}  # a catalogue key shown instead of its text
    return left


def test_the_arabic_page_shows_no_english_in_any_state(
    browser: Browser, server: str, docs: Path, tmp_path: Path
) -> None:
    """Issue 29: English was left on the Arabic page: upload results, trash entries, scores, a raw
    key in the live region, raw HTML in each answer's aria-label, Gradio's own labels. The page is
    walked through an answer, an upload (one rejected), a removal, the trash and a restore, and
    everything it shows or says is read."""
    from index.formats import FORMATS

    allowed = (
        LATIN_ALLOWED | {e for e in EXAMPLES if e.isascii()} | {p.name for p in docs.iterdir()} | {str(docs.resolve())}
    )
    allowed |= {s.lstrip(".") for s in FORMATS} | {"txt", "md"}
    bad = tmp_path / "تالف.txt"
    bad.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 50)
    good = tmp_path / "سوق.txt"
    good.write_text("سوق الكتب المستعملة\nيفتح سوق الكتب أبوابه كل جمعة في ساحة البلدة القديمة.\n", encoding="utf-8")
    allowed |= {bad.name, good.name}
    page = _page(browser, server, "ar")
    seen: list[str] = []
    try:
        ask(page, "كم عدد المندوبين الذين حضروا المؤتمر؟")
        opener = page.locator("#settings").get_by_text(t("ar", "settings"))
        open_settings(opener, page.get_by_label(t("ar", "show_scores"))).check()
        ask(page, "من هو وزير الدفاع الصيني الذي شارك في المؤتمر؟")
        page.locator("#chat button[aria-label='عدم الإعجاب']").last.click()
        page.locator("#feedback-correction").wait_for(state="visible")
        seen += page.evaluate(SHOWN_TEXT)
        page.get_by_role("tab", name="المستندات").click()
        page.locator("#upload input[type=file]").set_input_files([str(bad), str(good)])
        page.wait_for_function(UPLOAD_FINISHED, arg=list(FINAL), timeout=120_000)
        seen += page.evaluate(SHOWN_TEXT)
        page.locator("#to-remove input").fill(good.name[:3])
        page.get_by_role("option").filter(has_text=good.name).first.click()
        page.locator("#remove").click()
        page.locator("#confirm-remove").wait_for(state="visible")
        seen += page.evaluate(SHOWN_TEXT)
        page.locator("#confirm-remove-yes").click()
        page.locator("#confirm-remove").wait_for(state="hidden")
        page.locator("#trash").get_by_text(t("ar", "trash")).first.click()
        page.locator("#trashed").wait_for(state="visible")
        page.locator("#trashed input").click()
        page.get_by_role("option").first.wait_for()
        seen += page.evaluate(SHOWN_TEXT)
        page.keyboard.press("Escape")
        page.locator("#empty-trash").click()
        page.locator("#confirm-empty").wait_for(state="visible")
        seen += page.evaluate(SHOWN_TEXT)
        page.locator("#confirm-empty-no").click()
    finally:
        page.context.close()
    assert any("مرفوض" in text for text in seen) and any(good.name in text for text in seen)
    left = _latin_left(seen, allowed)
    assert not left, (sorted(left), [text for text in seen if any(word in text for word in left)][:20])


def test_upload_then_ask_question_only_it_answers(page: Page, tmp_path: Path) -> None:
    doc = tmp_path / "مهرجان التمور.txt"
    doc.write_text(NEW_DOC, encoding="utf-8")
    status = _upload(page, [doc])
    assert "Indexed" in status and "مهرجان" in status
    assert "مهرجان التمور" in page.locator("#documents").inner_text()
    shot(page, "ui-documents-after-upload.png")
    page.get_by_role("tab", name="Chat").click()
    answer = ask(page, "كم بلغ عدد زوار مهرجان التمور في بريدة؟")
    assert "خمسة وأربعين ألف زائر" in answer.inner_text()
    assert "مهرجان التمور.txt" in page.locator("#chat").inner_text()
    # The same file again is recognised as a duplicate.
    assert "Already indexed" in _upload(page, [doc])


def test_undecodable_upload_is_rejected_by_name(page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "broken.txt"
    bad.write_bytes(b"\x00\x01\x02binary\xff\xfe\x00" * 50)
    status = _upload(page, [bad])
    assert "Rejected" in status and "broken.txt" in status


def test_html_in_documents_is_shown_escaped(page: Page, tmp_path: Path) -> None:
    doc = tmp_path / "hostile.md"
    doc.write_text(HOSTILE_DOC, encoding="utf-8")
    assert "Indexed" in _upload(page, [doc])
    page.get_by_role("tab", name="Chat").click()
    ask(page, "كم قارئا تتسع قاعة المطالعة الجديدة في مكتبة الحي؟")
    chat = page.locator("#chat")
    text = chat.inner_text()
    assert "<script>window.__pwned = 1</script>" in text  # shown as text…
    assert page.evaluate("() => window.__pwned") is None  # …never run
    assert chat.locator("script").count() == 0
    assert chat.locator("img[src='x']").count() == 0
    assert chat.locator("a[href*='evil.example']").count() == 0
    assert "[اضغط هنا](http://evil.example/)" in text
    shot(page, "ui-escaped-html.png")


def _pick(page: Page, dropdown: str, text: str) -> None:
    """Choose the option containing `text` in a Gradio dropdown."""
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option").filter(has_text=text).first.click()


def _status_after(page: Page, click: str) -> str:
    status = page.locator("#upload-status textarea")
    previous = status.input_value()
    page.locator(click).click()
    page.wait_for_function(
        "prev => document.querySelector('#upload-status textarea').value !== prev", arg=previous, timeout=60_000
    )
    return str(status.input_value())


def test_remove_asks_first_then_trash_and_restore(page: Page, docs: Path) -> None:
    """One click never deletes: nothing is pre-selected, removal needs a confirmation naming the
    document, the file goes to the trash, and Restore brings it back into the folder and the index."""
    seed = "000_b5c95c8664f5005e.txt"
    original = (docs / seed).read_bytes()
    page.get_by_role("tab", name="Documents").click()
    assert page.locator("#to-remove input").input_value() == ""
    assert "Choose a document first" in _status_after(page, "#remove")
    assert (docs / seed).read_bytes() == original

    _pick(page, "#to-remove", seed)
    page.locator("#remove").click()
    confirm = page.locator("#confirm-remove")
    confirm.wait_for(state="visible")
    assert seed in confirm.inner_text()
    shot(page, "ui-remove-confirm.png")
    page.locator("#confirm-remove-no").click()
    confirm.wait_for(state="hidden")
    assert (docs / seed).read_bytes() == original

    _pick(page, "#to-remove", seed)
    page.locator("#remove").click()
    confirm.wait_for(state="visible")
    assert "Removed" in _status_after(page, "#confirm-remove-yes")
    assert not (docs / seed).exists()
    assert seed not in page.locator("#documents").inner_text()

    page.locator("#trash").get_by_text("Trash").first.click()
    _pick(page, "#trashed", seed)
    assert "Restored" in _status_after(page, "#restore")
    assert (docs / seed).read_bytes() == original
    page.wait_for_function(
        "name => document.querySelector('#documents').innerText.includes(name)", arg=seed, timeout=30_000
    )


def test_a_fresh_page_lists_documents_uploaded_after_start(page: Page, tmp_path: Path) -> None:
    """The table and the remove list were fixed at server start: a later upload was missing from
    them on a new page, and removing it was refused."""
    doc = tmp_path / "late.txt"
    doc.write_text("وثيقة متأخرة\nرفعت هذه الوثيقة بعد تشغيل الخادم لاختبار تحديث القائمة.\n", encoding="utf-8")
    assert "Indexed" in _upload(page, [doc])
    page.reload()
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_function("() => document.querySelector('#documents').innerText.includes('late.txt')", timeout=30_000)
    _pick(page, "#to-remove", "late.txt")
    page.locator("#remove").click()
    assert "Removed" in _status_after(page, "#confirm-remove-yes")


# --- UI v2: language, sources, phone, accessibility -----------------------------------------------

# Screenshots for docs/ (copied there by hand after a look: a test run leaves the tree clean).
DOCS_SHOTS = OUTPUT


def _page(browser: Browser, server: str, locale: str, width: int = 1200, height: int = 1100) -> Page:
    OUTPUT.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    page = context.new_page()
    page.goto(server)
    page.wait_for_selector("#question textarea")
    return page


def test_arabic_browser_gets_an_arabic_right_to_left_interface(browser: Browser, server: str) -> None:
    page = _page(browser, server, "ar-EG")
    try:
        assert page.evaluate("() => document.documentElement.dir") == "rtl"
        assert page.get_by_role("tab", name="المستندات").count() == 1
        assert page.get_by_role("button", name="اسأل").count() == 1
        reply = ask(page, "س" * 2001)  # an Arabic question that is too long gets an Arabic error
        assert "طول السؤال" in reply.inner_text() and "2,000" in reply.inner_text()
        page.get_by_role("button", name="محادثة جديدة").click()
        page.wait_for_function("() => !document.querySelector('#chat .notice')")
        ask(page, "كم عدد الدول التي جاء منها المندوبون إلى المؤتمر؟")
        page.wait_for_timeout(800)  # the scroll to the new answer
        page.screenshot(path=str(DOCS_SHOTS / "screenshot-chat-ar.png"))
        # Settings read right to left too (Gradio marks its blocks ltr), the reader's box included.
        page.get_by_text("الإعدادات").click()
        reader_box = page.get_by_label("الإجابة القصيرة من القارئ المدرَّب")
        assert reader_box.evaluate("e => getComputedStyle(e.closest('label')).direction") == "rtl"
        # The answer modes by name in the page's language, not as their values ("extractive").
        assert "extractive" not in page.locator("#mode").inner_text()
        assert page.get_by_label("استخراجية").is_checked()
        page.get_by_text("الإعدادات").click()
        # The switch in the header changes the whole interface, and the choice sticks.
        page.locator("#lang").get_by_text("English").click()
        page.wait_for_function("() => document.documentElement.dir === 'ltr'", timeout=30_000)
        # The open tab and every other label follow at once (Gradio re-labels an unopened tab only
        # when it is next shown).
        page.get_by_role("button", name="Ask").wait_for(timeout=30_000)
        assert page.get_by_role("tab", name="Chat").count() == 1
        page.reload()
        page.wait_for_selector("#question textarea")
        assert page.evaluate("() => document.documentElement.lang") == "en"
    finally:
        page.context.close()


def test_the_documents_tab_reads_right_to_left_in_its_own_font_on_the_arabic_page(
    browser: Browser, server: str
) -> None:
    """A new user saw the documents table run left to right (العنوان on the left, ك.ب on the
    right) with Arabic titles drawn in the monospace font, and the status and per-file lines
    scrambled ("txt.نادي_الشطرنج :تمت فهرسته"): Gradio draws the table's visible rows as divs, which
    the rules for td missed, and marks its boxes ltr."""
    page = _page(browser, server, "ar")
    try:
        page.get_by_role("tab", name="المستندات").click()
        page.locator("#documents .body-cell").first.wait_for()
        cells = page.locator("#documents .virtual-row").first.locator(".body-cell")
        title, file = cells.nth(0).bounding_box(), cells.nth(1).bounding_box()
        assert title and file and title["x"] > file["x"], (title, file)  # the first column on the right
        fonts = page.evaluate(
            "() => Array.from(document.querySelectorAll('#documents .body-cell, #documents .body-cell *'))"
            ".map((e) => getComputedStyle(e).fontFamily)"
        )
        assert fonts and not any("mono" in f.lower() for f in fonts), set(fonts)
        for box in ("#upload-status textarea", "#upload-results"):
            assert page.locator(box).evaluate("e => getComputedStyle(e).direction") == "rtl", box
        # The trash's row reads as the remove row does: the button left of its list, not right.
        page.locator("#trash").get_by_text(t("ar", "trash")).first.click()
        page.locator("#restore").wait_for()
        boxes = {e: page.locator(e).bounding_box() for e in ("#to-remove", "#remove", "#trashed", "#restore")}
        x = {e: box["x"] for e, box in boxes.items() if box}
        assert len(x) == 4 and x["#remove"] < x["#to-remove"] and x["#restore"] < x["#trashed"], boxes
    finally:
        page.context.close()


def test_english_interface_answers_and_typed_arabic_reads_right_to_left(browser: Browser, server: str) -> None:
    page = _page(browser, server, "en-US")
    try:
        assert page.evaluate("() => document.documentElement.dir") == "ltr"
        box = page.locator("#question textarea")
        box.click()
        box.fill("متى عقد المؤتمر؟")
        assert box.evaluate("t => getComputedStyle(t).direction === 'rtl' || t.getAttribute('dir') === 'auto'")
        # Enter sends; Shift+Enter would add a line.
        before = page.locator("#chat .answer, #chat .notice").count()
        box.press("Enter")
        page.wait_for_function(
            "n => document.querySelectorAll('#chat .answer, #chat .notice').length > n", arg=before, timeout=60_000
        )
        ask(page, "How many delegates attended the 2023 conference?")
        page.wait_for_timeout(800)  # the scroll to the new answer
        page.screenshot(path=str(DOCS_SHOTS / "screenshot-chat-en.png"))
    finally:
        page.context.close()


def test_clicking_a_badge_opens_and_flashes_its_source(page: Page) -> None:
    answer = ask(page, "كم عدد المندوبين الذين حضروا المؤتمر؟")
    badges = answer.locator("sup.cite")
    assert badges.count() >= 1
    n = badges.first.inner_text().strip("[]")
    message = page.locator("#chat details.source.src-" + n).last
    opened_and_flashed = (
        "n => { const all = document.querySelectorAll('#chat details.source.src-' + n);"
        " const d = all[all.length - 1]; return d.open && d.classList.contains('flash'); }"
    )
    # The answer's last update (its feedback record) may redraw the chat just after it shows.
    click_until(
        badges.first,
        lambda ms: page.wait_for_function(opened_and_flashed, arg=n, timeout=ms),
        lambda: message.evaluate("d => { d.open = false; d.classList.remove('flash'); }"),
    )


def test_phone_view_shows_the_start_of_the_answer(browser: Browser, server: str) -> None:
    page = _page(browser, server, "ar", width=390, height=844)
    try:
        # Issue 29: the first screen was an empty chat, the question box below the fold.
        box = page.locator("#question textarea").bounding_box()
        assert box is not None and box["y"] + box["height"] <= 844, box
        answer = ask(page, "من هو وزير الدفاع الصيني الذي شارك في المؤتمر؟")
        page.wait_for_timeout(500)
        top = answer.evaluate("a => a.getBoundingClientRect().top")
        assert 0 <= top < 844, top  # the answer's first line is on screen, not scrolled past
        page.screenshot(path=str(DOCS_SHOTS / "screenshot-phone.png"))
        page.get_by_role("tab", name="المستندات").click()
        hidden = page.locator("#documents th").nth(2).evaluate("th => getComputedStyle(th).display")
        assert hidden == "none"
    finally:
        page.context.close()


@pytest.mark.parametrize("view", ["chat", "documents"])
def test_no_serious_accessibility_violations(browser: Browser, server: str, view: str) -> None:
    from axe_playwright_python.sync_playwright import Axe

    page = _page(browser, server, "ar")
    try:
        if view == "documents":
            page.get_by_role("tab", name="المستندات").click()
        else:
            ask(page, "كم عدد المندوبين الذين حضروا المؤتمر؟")
        results = Axe().run(page)
        bad = [
            (
                v["id"],
                v["impact"],
                [(n["target"], n["html"][:120], n.get("failureSummary", "")[-160:]) for n in v["nodes"][:4]],
            )
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not bad, bad
    finally:
        page.context.close()


def test_pdf_upload_is_answered_with_its_page_and_section(page: Page, tmp_path: Path) -> None:
    from eval.pdf_fixtures import Section, print_pdf, rtl_html

    sections = [
        Section("مهرجان الزيتون", ["أقيم مهرجان الزيتون في مدينة جرش بمشاركة المزارعين من كل المحافظات."]),
        Section("الجوائز", ["فازت معصرة الوادي الأخضر بجائزة أفضل زيت زيتون بكر في المهرجان."], new_page=True),
    ]
    pdf = print_pdf(rtl_html("نشرة المهرجان", sections), tmp_path / "نشرة المهرجان.pdf")
    status = _upload(page, [pdf])
    assert "Indexed" in status and "نشرة المهرجان.pdf" in status
    page.get_by_role("tab", name="Chat").click()
    answer = ask(page, "من فاز بجائزة أفضل زيت زيتون بكر في مهرجان الزيتون؟")
    assert "الوادي الأخضر" in answer.inner_text()
    sources = page.locator("#chat .source").all_inner_texts()
    assert any("نشرة المهرجان.pdf · ص 2 · الجوائز" in s for s in sources), sources
    shot(page, "ui-pdf-answer.png")


def test_copy_gives_plain_text_with_the_sources_under_it(browser: Browser, server: str) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1100}, locale="en-US")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    try:
        page.goto(server)
        page.wait_for_selector("#question textarea")
        answer = ask(page, "كم عدد المندوبين الذين حضروا المؤتمر؟")
        page.locator("#chat button.copy-answer").last.click()
        page.wait_for_selector("#chat button.copy-answer.copied")
        copied = page.evaluate("() => navigator.clipboard.readText()")
        first_line = answer.inner_text().strip().splitlines()[0]
        assert copied.startswith(first_line), copied[:200]
        assert "[1]" in copied and "001_e9389b4ffc57ddb8.txt" in copied
        assert "<" not in copied and "&#" not in copied  # plain text, not the HTML
    finally:
        context.close()


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory, docs: Path) -> Iterator[str]:
    """The UI in LLM mode against a scripted OpenAI-compatible server that streams slowly."""
    from tests.fake_openai import FakeOpenAI, Trickle

    with (
        FakeOpenAI(default=Trickle("المؤتمر عقد في موسكو في أغسطس [1]", delay=1.5, pieces=20)) as llm,
        serving(tmp_path_factory, docs, RAG_LLM_BASE_URL=llm.base_url, RAG_LLM_MODEL="fake") as url,
    ):
        yield url


def test_stop_button_cancels_a_streaming_llm_answer(browser: Browser, llm_server: str) -> None:
    page = _page(browser, llm_server, "en-US")
    try:
        stop = page.locator("#stop")
        assert not stop.is_visible()
        page.locator("#question textarea").fill("متى عقد المؤتمر؟")
        page.locator("#ask").click()
        page.wait_for_selector("#chat .streaming", timeout=60_000)
        stop.wait_for(state="visible")
        stop.click()
        stop.wait_for(state="hidden")
        streamed = page.locator("#chat .streaming").last.inner_text()
        page.wait_for_timeout(4_000)  # longer than two more pieces
        assert page.locator("#chat .streaming").last.inner_text() == streamed
        assert page.locator("#chat .answer:not(.streaming)").count() == 0
    finally:
        page.context.close()


def _labels_left_in(page: Page, other: str) -> list[str]:
    """Catalogue labels of language `other` still shown on the page, on every tab (each opened in
    turn), plus any label that did not translate."""
    from core.i18n import MESSAGES

    left = []
    for tab in range(page.locator("[role=tab]").count()):
        page.locator("[role=tab]").nth(tab).click()
        page.wait_for_timeout(300)
        text = page.locator("body").inner_text()
        left += [label for label in MESSAGES[other].values() if "{" not in label and label in text]
        # A key Gradio's own catalogue holds as a group of strings shows as "[object Object]".
        left += [raw for raw in ("__i18n__", "[object Object]") if raw in text]
    return left


@pytest.mark.parametrize(("start", "switch_to", "other"), [("ar-EG", "English", "ar"), ("en-US", "العربية", "en")])
def test_switching_the_language_relabels_every_tab(
    browser: Browser, server: str, start: str, switch_to: str, other: str
) -> None:
    """Switching in the header left the tab not yet opened (and the documents table's column
    headers) in the old language: Gradio translated them only when first rendered."""
    page = _page(browser, server, start)
    try:
        page.locator("#lang").get_by_text(switch_to).click()
        lang = "ar" if other == "en" else "en"
        page.wait_for_function("lang => document.documentElement.lang === lang", arg=lang, timeout=30_000)
        page.wait_for_selector("#question textarea")
        page.wait_for_timeout(1_000)  # the stored choice is applied after load
        tabs = page.locator("[role=tab]").all_inner_texts()
        from core.i18n import MESSAGES

        assert tabs == [MESSAGES[lang]["tab_chat"], MESSAGES[lang]["tab_documents"]], tabs
        # On busy CI cores the documents table relabels after the tabs do: poll, up to 20 s.
        deadline = time.monotonic() + 20
        while (left := _labels_left_in(page, other)) and time.monotonic() < deadline:
            page.wait_for_timeout(500)
        assert not left
    finally:
        page.context.close()


def test_switching_the_language_keeps_the_conversation_and_the_settings(browser: Browser, server: str) -> None:
    """The switch reloads the page (Gradio translates a page as it loads): that reload cleared the
    chat and every setting, the reader box too (a new-user test)."""
    page = _page(browser, server, "en-US")
    try:
        first = ask(page, "ما الجهة التي تنظم مؤتمر موسكو للأمن الدولي كل سنة؟").inner_text()
        open_settings(page.get_by_text("Settings"), page.get_by_label("Show retrieval scores")).check()
        passages = page.locator("#settings input[type=number]")
        passages.fill("3")
        passages.press("Enter")
        page.wait_for_timeout(500)
        page.locator("#lang").get_by_text("العربية").click()
        page.wait_for_function("() => document.documentElement.lang === 'ar'", timeout=30_000)
        page.wait_for_function(
            "first => document.querySelector('#chat .answer')?.innerText === first", arg=first, timeout=30_000
        )
        page.get_by_text("الإعدادات").click()
        assert page.get_by_label("إظهار درجات الاسترجاع").is_checked()
        assert page.locator("#settings input[type=number]").input_value() == "3"
        # The conversation goes on: the follow-up is read against the question asked before the
        # switch (alone, "and when was it founded?" finds no answer).
        assert "2012" in ask(page, "ومتى تأسس؟").locator(".short-answer").inner_text()
        # An unsent question goes across the switch too (issue 29 lost it).
        page.locator("#question textarea").fill("سؤال لم يرسل بعد")
        page.locator("#lang").get_by_text("English").click()
        page.wait_for_function("() => document.documentElement.lang === 'en'", timeout=30_000)
        page.wait_for_function(
            # ?. : right after the switch the page is still being built and has no box yet.
            "() => document.querySelector('#question textarea')?.value === 'سؤال لم يرسل بعد'",
            timeout=30_000,
        )
        assert page.locator("#chat .answer").count() == 2
    finally:
        page.context.close()


def test_a_reload_keeps_the_tabs_conversation_until_a_new_one_is_started(browser: Browser, server: str) -> None:
    """Issue 29: a reload lost the whole conversation. Each tab keeps its own; another tab starts
    empty; "New conversation" forgets it for good."""
    page = _page(browser, server, "en-US")
    other = None
    try:
        first = ask(page, "ما الجهة التي تنظم مؤتمر موسكو للأمن الدولي كل سنة؟").inner_text()
        page.reload()
        page.wait_for_function(
            "first => document.querySelector('#chat .answer')?.innerText === first", arg=first, timeout=30_000
        )
        # The history came back too: the follow-up is read against the question before the reload.
        assert "2012" in ask(page, "ومتى تأسس؟").locator(".short-answer").inner_text()
        other = _page(browser, server, "en-US")
        other.wait_for_timeout(1_500)
        assert other.locator("#chat .answer").count() == 0
        page.locator("#new-conversation").click()
        page.wait_for_function("() => !document.querySelector('#chat .answer')", timeout=10_000)
        page.reload()
        page.wait_for_selector("#question textarea")
        page.wait_for_timeout(1_500)
        assert page.locator("#chat .answer").count() == 0
    finally:
        page.context.close()
        if other:
            other.context.close()


def test_an_answer_is_rated_corrected_and_downloaded(browser: Browser, server: str, index_dir: Path) -> None:
    """Issue 29: 👍/👎 on each answer, the right answer after a 👎, kept in the index folder's
    feedback file (what `python -m eval --feedback` reads); the conversation downloads as
    Markdown and JSON with its sources. In Arabic, with the page's own words."""
    page = _page(browser, server, "ar")
    try:
        question = "كم عدد المندوبين الذين حضروا المؤتمر؟"
        ask(page, question)
        before = len(FeedbackLog(index_dir).read()[0])
        page.locator("#chat button[aria-label='عدم الإعجاب']").last.click()  # Gradio's own Arabic label
        page.locator("#feedback-correction").wait_for(state="visible")
        assert "شكرا" in page.locator("#feedback-note").inner_text()
        page.locator("#feedback-correction-text textarea").fill("أكثر من 800 مندوب")
        page.locator("#feedback-send").click()
        page.wait_for_function(
            "() => document.querySelector('#feedback-note').innerText.includes('حُفظ')", timeout=30_000
        )
        page.locator("#feedback-correction").wait_for(state="hidden")
        given, unreadable = FeedbackLog(index_dir).read()
        assert unreadable == 0 and [f.verdict for f in given[before:]] == ["wrong", "wrong"]
        assert given[-1].question == question and given[-1].correction == "أكثر من 800 مندوب"
        assert given[-1].citations and given[-1].answer_id == given[-2].answer_id
        with page.expect_download() as download:
            page.locator("#export-json").click()
        exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert exported["turns"][0]["question"] == question
        assert exported["turns"][0]["citations"][0]["source"] == given[-1].citations[0]["source"]
        with page.expect_download() as download:
            page.locator("#export-markdown").click()
        markdown = Path(download.value.path()).read_text(encoding="utf-8")
        assert markdown.startswith(f"## {question}") and f"({given[-1].citations[0]['source']})" in markdown
    finally:
        page.context.close()


def test_a_pdf_answer_opens_its_page_with_the_answer_marked(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 29: "Show on the page" under a PDF source opens the page itself, the sentence shaded and
    the answer outlined (the link survives Gradio's sanitiser; the image is served on the UI's port)."""
    from eval.pdf_fixtures import Section, chromium, print_pdf, rtl_html

    if chromium() is None:
        pytest.skip("chromium is needed to print the PDF")
    docs = tmp_path_factory.mktemp("pdf-docs")
    opening = "افتتح الوزير معرض الكتاب في الرياض يوم الأحد. وشارك في المعرض أكثر من 900 دار نشر من 32 دولة."
    print_pdf(rtl_html("معرض الكتاب", [Section("الافتتاح", [opening])]), docs / "book-fair.pdf")
    with serving(tmp_path_factory, docs) as url:
        page = _page(browser, url, "ar")
        try:
            ask(page, "كم دار نشر شاركت في معرض الكتاب؟")
            link = page.locator("#chat a.page-link").first
            assert link.inner_text() == "اعرضها في الصفحة"
            with page.context.expect_page() as opened:
                link.click()
            shown = opened.value
            shown.wait_for_load_state()
            assert "/api/page?" in shown.url and "book-fair.pdf" in unquote(shown.url)
            response = page.request.get(shown.url)
            assert response.status == 200 and response.headers["content-type"] == "image/png"
            assert response.headers["x-matched"] == "1.00"
            shown.close()
        finally:
            page.context.close()


def test_an_example_asks_at_once_and_the_keyboard_starts_in_the_question_box(browser: Browser, server: str) -> None:
    """Issue 29: an example filled the box and waited; Tab went through every answer before
    reaching the box."""
    page = _page(browser, server, "en-US")
    try:
        page.wait_for_function("() => document.activeElement.matches('#question textarea')", timeout=10_000)
        page.get_by_text("How many delegates attended the 2023 conference?").first.click()
        page.wait_for_selector("#chat .answer", timeout=60_000)
        assert "How many delegates" in page.locator("#chat .msg").first.inner_text()
    finally:
        page.context.close()


# --- keyboard only -------------------------------------------------------------------------------

FOCUSED = """() => { const e = document.activeElement; const s = getComputedStyle(e);
  return {tag: e.tagName, id: e.id, text: (e.innerText || e.value || '').slice(0, 40),
          visible: e !== document.body && e.matches(':focus-visible')
                   && (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0 || s.boxShadow !== 'none')}; }"""


def _tab_to(page: Page, selector: str, back: bool = False, limit: int = 40) -> None:
    """Press Tab (Shift+Tab when `back`) until the focused element matches `selector`; every element
    passed on the way, and the one reached, must show that it has focus."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        focused = page.evaluate(FOCUSED)
        if focused["tag"] != "BODY":
            assert focused["visible"], f"focus is not visible on {focused}"
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def test_keyboard_only_asks_opens_sources_and_removes_and_restores(browser: Browser, server: str, docs: Path) -> None:
    """Issue 15: every step of asking and of the remove-confirm-restore cycle with the keyboard alone,
    focus always visible. A [n] badge could not be reached, and after the confirmation closed the
    focus fell to the page (a keyboard user started again from the top)."""
    seed = "000_b5c95c8664f5005e.txt"
    page = _page(browser, server, "en-US")
    try:
        _tab_to(page, "#question textarea")
        page.keyboard.type("كم عدد المندوبين الذين حضروا المؤتمر؟")
        page.keyboard.press("Enter")
        page.wait_for_selector("#chat .answer", timeout=60_000)
        _tab_to(page, "#ask")
        # Back into the answer: a badge opens and flashes its source, a source header folds it.
        _tab_to(page, "#chat sup.cite", back=True)
        n = page.evaluate("() => document.activeElement.className.match(/cite-(\\d+)/)[1]")
        page.locator(f"#chat details.source.src-{n}").evaluate("d => { d.open = false; }")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "n => { const d = document.querySelector('#chat details.source.src-' + n); return d.open && d.classList.contains('flash'); }",
            arg=n,
            timeout=10_000,
        )
        _tab_to(page, "#chat details.source summary")
        was_open = page.evaluate("() => document.activeElement.parentElement.open")
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.parentElement.open") is not was_open
        _tab_to(page, "#lang input")
        # The documents tab, its picker, and the remove → confirm → cancel / confirm → restore cycle.
        _tab_to(page, "[role=tab]:not(.selected)")
        page.keyboard.press("Enter")
        page.locator("#to-remove").wait_for(state="visible")
        _tab_to(page, "#to-remove input")
        _choose_by_keyboard(page, "#to-remove", seed, then="#remove")
        page.keyboard.press("Enter")
        page.locator("#confirm-remove").wait_for(state="visible")
        _tab_to(page, "#confirm-remove-no")
        page.keyboard.press("Enter")
        page.locator("#confirm-remove").wait_for(state="hidden")
        page.wait_for_function("() => document.activeElement.matches('#remove')", timeout=10_000)
        assert (docs / seed).exists()
        page.keyboard.press("Enter")
        page.locator("#confirm-remove").wait_for(state="visible")
        _tab_to(page, "#confirm-remove-yes")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#upload-status textarea').value.startsWith('Removed')", timeout=60_000
        )
        assert not (docs / seed).exists()
        page.wait_for_function("() => document.activeElement.matches('#remove')", timeout=10_000)
        _tab_to(page, "#trash button, #trash .label-wrap")
        page.keyboard.press("Enter")
        page.locator("#trashed").wait_for(state="visible")
        _tab_to(page, "#trashed input")
        _choose_by_keyboard(page, "#trashed", seed, then="#restore")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#upload-status textarea').value.startsWith('Restored')", timeout=60_000
        )
        assert (docs / seed).exists()
        # Last, the language switch: Space on the other language reloads the page in it.
        _tab_to(page, "#lang input[value=ar]")
        page.keyboard.press("Space")
        page.wait_for_function("() => document.documentElement.lang === 'ar'", timeout=30_000)
    finally:
        page.context.close()


def test_keyboard_only_rates_corrects_and_downloads(browser: Browser, server: str, index_dir: Path) -> None:
    """Issue 29's new controls with the keyboard alone, focus always visible: 👎 on an answer, the
    right answer typed and sent with Enter, the conversation downloaded."""
    page = _page(browser, server, "en-US")
    try:
        page.wait_for_function("() => document.activeElement.matches('#question textarea')", timeout=10_000)
        page.keyboard.type("كم عدد المندوبين الذين حضروا المؤتمر؟")
        page.keyboard.press("Enter")
        page.wait_for_selector("#chat .answer", timeout=60_000)
        before = len(FeedbackLog(index_dir).read()[0])
        _tab_to(page, "#question textarea")
        _tab_to(page, "#chat button[aria-label='Dislike']", back=True, limit=60)
        page.keyboard.press("Enter")
        page.locator("#feedback-correction").wait_for(state="visible")
        _tab_to(page, "#feedback-correction-text textarea")
        page.keyboard.type("أكثر من 800 مندوب")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#feedback-note').innerText.startsWith('Saved')", timeout=30_000
        )
        assert [f.correction for f in FeedbackLog(index_dir).read()[0][before:]] == ["", "أكثر من 800 مندوب"]
        _tab_to(page, "#export-json")
        with page.expect_download() as download:
            page.keyboard.press("Enter")
        turns = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))["turns"]
        assert [t["question"] for t in turns] == ["كم عدد المندوبين الذين حضروا المؤتمر؟"]
    finally:
        page.context.close()


def _choose_by_keyboard(page: Page, dropdown: str, text: str, then: str) -> None:
    """In a focused Gradio dropdown: type to filter, arrow down to the option, Enter to choose it;
    the focus then moves on to the button that acts on the choice (Gradio's dropdown drops it)."""
    page.keyboard.type(text[:8])
    page.get_by_role("option").filter(has_text=text).first.wait_for()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([s, text]) => document.querySelector(s + ' input').value.includes(text)", arg=[dropdown, text], timeout=10_000
    )
    page.wait_for_function("s => document.activeElement.matches(s)", arg=then, timeout=10_000)
    assert page.evaluate(FOCUSED)["visible"]


def test_keyboard_reaches_and_presses_stop_while_an_answer_streams(browser: Browser, llm_server: str) -> None:
    page = _page(browser, llm_server, "en-US")
    try:
        _tab_to(page, "#question textarea")
        page.keyboard.type("متى عقد المؤتمر؟")
        page.keyboard.press("Enter")
        page.wait_for_selector("#chat .streaming", timeout=60_000)
        page.locator("#stop").wait_for(state="visible")
        _tab_to(page, "#ask")
        _tab_to(page, "#stop")
        page.keyboard.press("Enter")
        page.locator("#stop").wait_for(state="hidden")
        assert page.locator("#chat .answer:not(.streaming)").count() == 0
    finally:
        page.context.close()


def test_an_emptied_trash_offers_nothing_to_restore(browser: Browser, server: str, tmp_path: Path) -> None:
    """Issue 29: remove → Trash → empty (confirmed) left the list offering the document, and Restore
    then said it was gone. In the tab that emptied it the list is empty; a second tab opened before
    shows the trash as it is whenever its Documents tab is opened again, not as it was at load."""
    museum = tmp_path / "museum.html"
    museum.write_text(
        "<html><body><h1>متحف الخزف</h1><p>افتتح متحف الخزف في مدينة الرماد عام ١٩٩٧ ويضم ثلاثة آلاف قطعة.</p>"
        "</body></html>",
        encoding="utf-8",
    )
    page, other = _page(browser, server, "en-US"), _page(browser, server, "en-US")
    try:
        assert "Indexed" in _upload(page, [museum])
        page.wait_for_function("() => document.querySelector('#documents').innerText.includes('museum.html')")
        _pick(page, "#to-remove", "museum.html")
        page.locator("#remove").click()
        page.locator("#confirm-remove").wait_for(state="visible")
        assert "Removed" in _status_after(page, "#confirm-remove-yes")
        # The other tab sees the removed document in its trash once it opens its Documents tab.
        other.get_by_role("tab", name="Documents").click()
        other.locator("#trash").get_by_text("Trash").first.click()
        _pick(other, "#trashed", "museum.html")
        other.get_by_role("tab", name="Chat").click()

        page.locator("#trash").get_by_text("Trash").first.click()
        _pick(page, "#trashed", "museum.html")  # chosen, as a user about to restore it would
        page.locator("#empty-trash").click()
        page.locator("#confirm-empty").wait_for(state="visible")
        # The confirmation says how many go for good, and that many do.
        asked = re.search(r"Delete the (\d+) documents", page.locator("#confirm-empty-text").inner_text())
        assert asked and int(asked.group(1)) >= 1
        assert f"({asked.group(1)} deleted for good)" in _status_after(page, "#confirm-empty-yes")
        assert "The trash is empty." in _status_after(page, "#empty-trash")  # nothing left to ask about
        for tab in (page, other):
            tab.get_by_role("tab", name="Documents").click()
            tab.wait_for_function("() => document.querySelector('#trashed input').value === ''", timeout=30_000)
            tab.locator("#trashed input").click()
            tab.wait_for_timeout(500)  # the options list would be open now if any were left
            assert tab.get_by_role("option").filter(has_text="museum.html").count() == 0
    finally:
        page.context.close()
        other.context.close()
