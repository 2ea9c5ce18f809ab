"""The Gradio app: a right-to-left-aware chat with cited sources, and a documents tab.

The pipeline (model and index) is created once per process and shared by every request; the
queue lets many people ask at once while the embedding engine serialises its own calls.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import gradio as gr

from core.config import Config
from core.errors import UserError
from core.i18n import LANGUAGE_NAMES, LANGUAGES, MESSAGES, normalise_language, t
from index.library import DocumentLibrary, FileResult, UploadStep
from index.store import IndexProblem
from rag.answer import Answer
from rag.chain import Pipeline, reader_available
from rag.feedback import Feedback, FeedbackLog, answer_record
from rag.llm import MAX_HISTORY_TURNS
from ui.gate import LANGUAGE_COOKIE
from ui.handover import HANDOVER_LIMIT, HANDOVER_SECONDS, Conversations, Handover, carried_values_fit
from ui.i18n import for_question
from ui.render import answer_message, escape_text, notice_message, stream_message, upload_results, user_message

log = logging.getLogger(__name__)

EXAMPLES = [
    "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟",
    "كم عدد المندوبين الذين حضروا المؤتمر؟",
    "من هو وزير الدفاع الصيني الذي شارك في المؤتمر؟",
    "ما هي المنظمة التي أعلنت الصين استعدادها لتعزيز العمل الأمني داخلها؟",
    "How many delegates attended the 2023 conference?",
    "Which ministry organizes the Moscow Conference on International Security?",
]

CSS = """
.gradio-container { font-family: "Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", Tahoma, sans-serif; }
.msg, .answer, .passage, .notice { unicode-bidi: plaintext; line-height: 1.8; }
.answer { font-size: 1.05em; }
#chat .answer, #chat .notice { scroll-margin-top: 12px; }  /* a new answer lands just below the top edge */
.answer.abstained { font-style: italic; }
sup.cite { color: #1e40af; font-weight: 600; margin: 0 2px; }
.sources-label { margin-top: .6em; font-size: .85em; color: #374151; }
details.source { border: 1px solid #e5e7eb; border-radius: 8px; padding: .3em .6em; margin: .3em 0; }
details.source .where { color: #374151; font-size: .85em; }
.passage mark { background: #fde68a; padding: 0 2px; }
.notice-error { color: #b91c1c; }
a.page-link { display: inline-block; margin-top: .3em; font-size: .85em; color: #1e40af; }
.notice-warn { color: #92400e; }
sup.cite { cursor: pointer; }
button.copy-answer { border: 1px solid #d1d5db; border-radius: 6px; padding: 0 .5em; font-size: .85em; color: #374151; background: #fff; }
button.copy-answer.copied { border-color: #15803d; color: #15803d; }
details.source.flash { animation: flash 1.6s ease-out; }
@keyframes flash { 0% { background: #fde68a; } 100% { background: transparent; } }
#question textarea { unicode-bidi: plaintext; text-align: start; }
/* The placeholder reads in the page's direction (issue 29: "(Enter …) …اكتب سؤالك" was scrambled). */
html[dir="rtl"] #question textarea::placeholder { direction: rtl; text-align: right; unicode-bidi: isolate; }
.upload-results { list-style: none; padding: 0; margin: .3em 0; }
.upload-file { padding: .15em 0; }
.upload-file.outcome-rejected { color: #b91c1c; }
.upload-file.outcome-duplicate { color: #92400e; }
.upload-file.outcome-indexed, .upload-file.outcome-reindexed, .upload-file.outcome-renamed,
.upload-file.outcome-replaced { color: #15803d; }
#documents td, #documents th { font-family: inherit; white-space: normal; }
/* Gradio sets table cells in its monospace font, which has no Arabic (issue 29); the rows it
   shows are divs (.virtual-row .body-cell), the td and th only its measuring table. */
#documents td, #documents th, #documents td *, #documents th *, #documents .virtual-row,
#documents .virtual-row * {
  font-family: "Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", Tahoma, sans-serif !important;
}
/* The table, the status and each file's line read right to left on the Arabic page (Gradio marks
   its boxes ltr): "txt.نادي_الشطرنج :تمت فهرسته" was a file's line scrambled. */
html[dir="rtl"] #documents .table-wrap, html[dir="rtl"] #upload-status textarea,
html[dir="rtl"] #upload-results { direction: rtl; text-align: right; }
/* A cell takes its direction from its own text: "000_b5c9….txt" stays in order in an Arabic row. */
#documents .body-cell .cell-wrap, #documents .body-cell .cell-wrap > * { unicode-bidi: plaintext; }
html[dir="rtl"] #documents .body-cell .cell-wrap { text-align: right; }
/* Our own notes read in the page's direction: ".txt/.md" came out as "txt/.md." on the Arabic page. */
html[dir="rtl"] .page-text, html[dir="rtl"] .page-text * { direction: rtl; text-align: right; }
.page-text code { direction: ltr !important; unicode-bidi: isolate; }
/* WCAG AA contrast (axe): Gradio's indigo and grey on white are just under 4.5:1. */
#ask, button.primary { background: #4338ca !important; color: #fff !important; }
[data-testid="upload-text"] { color: #4338ca !important; }
[data-testid="upload-text"] .or { color: #4b5563 !important; }
#heading { overflow: visible !important; }
/* Gradio marks an accordion's blocks dir="ltr" (the settings, the trash, whose row then ran the
   other way from the remove row's); in the Arabic page they read right-to-left too, except the
   slider, whose filled track Gradio draws left to right. */
html[dir="rtl"] #settings [dir="ltr"]:not(:has(input[type="range"])):not(input),
html[dir="rtl"] #settings > .label-wrap, html[dir="rtl"] #trash[dir="ltr"],
html[dir="rtl"] #trash [dir="ltr"]:not(input) { direction: rtl; text-align: right; }
input[role="combobox"], input[role="combobox"]::placeholder, textarea::placeholder { color: #4b5563 !important; opacity: 1; }
*:focus-visible { outline: 2px solid #2563eb !important; outline-offset: 2px; }
@media (max-width: 700px) {
  #documents th:nth-child(n+3), #documents td:nth-child(n+3) { display: none; }
  #documents td, #documents td * { overflow-wrap: anywhere; }  /* long file names wrap, not cut */
  /* A phone's first screen shows the question box (issue 29: an empty 680 px chat pushed it below). */
  #chat { height: max(240px, calc(100dvh - 340px)) !important; }
}
"""

# The page's language, in one place for the three scripts that work it out: the stored choice (the
# header switch), else the browser's; 'ar' for any Arabic locale, else 'en'.
LANGUAGE_EXPRESSION = (
    "((localStorage.getItem('rag-lang') || navigator.language || 'en').toLowerCase().startsWith('ar') ? 'ar' : 'en')"
)
# Runs as the page loads: the page language is a stored choice (the header switch) or the
# browser's, normalised to 'ar' or 'en' so Gradio's own translations follow it; the whole page then
# reads right-to-left in Arabic. Clicking a [n] badge opens source n of that answer and flashes it.
HEAD = r"""<script>
(() => {
  const stored = localStorage.getItem('rag-lang');
  const lang = __LANGUAGE__;
  Object.defineProperty(navigator, 'language', {get: () => lang});
  Object.defineProperty(navigator, 'languages', {get: () => [lang]});
  document.documentElement.lang = lang;
  // The login page is served without script: it reads the choice from this cookie (ui/gate.py).
  document.cookie = '__LANGUAGE_COOKIE__=' + lang + '; Path=/; Max-Age=31536000; SameSite=Strict';
  document.documentElement.dir = lang === 'ar' ? 'rtl' : 'ltr';
  // Gradio reads the browser language before it runs this script; a stored choice is applied
  // through the changeLocale export of its core module (what its own settings panel calls).
  const core = performance.getEntriesByType('resource').find((e) => /\/core-[^/]*\.js$/.test(e.name));
  if (stored && core) import(core.name).then((m) => m.changeLocale && m.changeLocale(lang));
  // A badge is a button for the keyboard too: reachable with Tab, opened with Enter or Space.
  // Gradio's own labels that its Arabic catalogue leaves in English are said in Arabic, and a
  // message's label is its plain text: Gradio put the message's raw HTML there (issue 29).
  const arabicLabels = {
    'More tabs': 'تبويبات أخرى', 'chatbot conversation': 'المحادثة', 'Table actions': 'إجراءات الجدول',
    'Copy table data': 'نسخ بيانات الجدول', 'Fullscreen': 'ملء الشاشة', 'Open cell menu': 'قائمة الخلية',
    'File upload': 'رفع الملفات', 'Click to upload or drop files': 'انقر لاختيار الملفات أو أفلتها هنا',
    'Clear': 'مسح', 'Like': 'إعجاب', 'Dislike': 'عدم الإعجاب', 'Liked': 'أعجبني', 'Disliked': 'لم يعجبني',
    'Copy': 'نسخ', 'Copied!': 'نُسخ', 'Reset': 'إعادة الضبط', 'Reset to default value': 'إعادة القيمة الافتراضية',
  };
  const arabicPatterns = [[/^number input for (.*)$/, 'حقل رقمي: $1'], [/^range slider for (.*)$/, 'منزلق: $1']];
  const said = (label) => {
    const message = label.match(/^(user|bot)'s message: ([\s\S]*)$/);
    if (message) {
      const text = new DOMParser().parseFromString(message[2], 'text/html').body.textContent.replace(/\s+/g, ' ').trim();
      const who = lang === 'ar' ? (message[1] === 'user' ? 'سؤالك: ' : 'الجواب: ') : (message[1] === 'user' ? 'Your question: ' : 'Answer: ');
      return who + text.slice(0, 300);
    }
    if (lang !== 'ar') return undefined;
    const pattern = arabicPatterns.find(([re]) => re.test(label));
    return pattern ? label.replace(pattern[0], pattern[1]) : arabicLabels[label];
  };
  const relabel = () => {
    document.querySelectorAll('[aria-label], [title]').forEach((el) => {
      for (const name of ['aria-label', 'title']) {
        const value = el.getAttribute(name);
        const better = value && said(value);
        if (better && better !== value) el.setAttribute(name, better);
      }
    });
  };
  // Gradio's queue status, shown while the server is busy, is English in its Arabic catalogue
  // ("In queue: 1 of 2") or written into the page as it is ("queue: 1/2 |", "processing |"). Its
  // status tracker also shows the key of a message no catalogue holds, "common.complete", when an
  // event ends (seen on the Arabic page after an upload, in CI): said in both languages.
  const texts = lang === 'ar' ? [
    [/^In queue: (\d+) of (\d+)$/, 'في الانتظار: $1 من $2'],
    [/^queue: (\d+)\/(\d*) \|$/, 'في الانتظار: $1/$2 |'],
    [/^processing \|$/, 'قيد المعالجة |'],
    [/^common\.complete$/, 'اكتمل'],
  ] : [[/^common\.complete$/, 'Done']];
  const retext = (node) => {
    const value = (node.nodeValue || '').trim();
    const rule = value && texts.find(([re]) => re.test(value));
    if (rule) node.nodeValue = value.replace(rule[0], rule[1]);
  };
  const retextAll = (root) => {
    if (root.nodeType === Node.TEXT_NODE) return retext(root);
    if (root.nodeType !== Node.ELEMENT_NODE) return;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) retext(walker.currentNode);
  };
  new MutationObserver((records) => {
    document.querySelectorAll('sup.cite:not([tabindex])').forEach((badge) => {
      badge.tabIndex = 0;
      badge.setAttribute('role', 'button');
    });
    relabel();
    for (const record of records) {
      if (record.type === 'characterData') retext(record.target);
      else record.addedNodes.forEach(retextAll);
    }
  }).observe(document.documentElement, {
    childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ['aria-label', 'title'],
  });
  document.addEventListener('keydown', (event) => {
    if ((event.key === 'Enter' || event.key === ' ') && event.target.matches && event.target.matches('sup.cite')) {
      event.preventDefault();
      event.target.click();
    }
  });
  document.addEventListener('click', (event) => {
    const badge = event.target.closest && event.target.closest('sup.cite');
    if (!badge) return;
    const n = (badge.className.match(/cite-(\d+)/) || [])[1];
    const message = badge.closest('.message, .message-wrap, .bot, [data-testid="bot"]') || document;
    const source = n && message.querySelector('details.source.src-' + n);
    if (!source) return;
    source.open = true;
    source.scrollIntoView({block: 'nearest', behavior: 'smooth'});
    source.classList.remove('flash');
    void source.offsetWidth;
    source.classList.add('flash');
  });
  // Copy: the answer as plain text, then its sources listed under it ([n] title — file · where).
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('button.copy-answer');
    if (!button) return;
    const message = button.parentElement;
    const answer = message.querySelector('.answer');
    const sources = Array.from(message.querySelectorAll('details.source')).map((d) => {
      const head = d.querySelector('summary').innerText.replace(/\s+/g, ' ').trim();
      return head + '\n    ' + d.querySelector('.passage').innerText.trim();
    });
    const text = [answer ? answer.innerText.trim() : '', ...sources].join('\n\n');
    navigator.clipboard.writeText(text).then(() => { button.classList.add('copied'); });
  });
  document.addEventListener('focusin', (event) => {
    if (event.target.matches && event.target.matches('#question textarea')) event.target.setAttribute('dir', 'auto');
  });
})();
</script>""".replace("__LANGUAGE__", LANGUAGE_EXPRESSION).replace("__LANGUAGE_COOKIE__", LANGUAGE_COOKIE)
# The page's language worked out again rather than read from <html lang>: Gradio injects HEAD
# itself, and under load the page's first event ran before HEAD had set the attribute, so an Arabic
# page was served English column headers and messages now and then (seen in a full browser run).
# With it, the token of a conversation carried across a language switch (ui/handover.py), once.
# And the id of this tab's conversation (ui/handover.py's Conversations), made on its first load.
CURRENT_LANGUAGE = """() => {
  const carried = sessionStorage.getItem('rag-carry') || '';
  sessionStorage.removeItem('rag-carry');
  let conversation = sessionStorage.getItem('rag-conversation');
  if (!conversation) {
    const bytes = crypto.getRandomValues(new Uint8Array(18));
    conversation = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem('rag-conversation', conversation);
  }
  return [__LANGUAGE__, carried, conversation];
}""".replace("__LANGUAGE__", LANGUAGE_EXPRESSION)
# The same choice set on the switch at once, in the browser: until the load event that takes
# CURRENT_LANGUAGE came back from the server, the switch said "en", so on a busy server a file
# uploaded in the first seconds got its results in English on the Arabic page (seen in a parallel
# test run).
PAGE_LANGUAGE = f"() => {LANGUAGE_EXPRESSION}"
SWITCH_LANGUAGE = """(lang, carried) => {
  if (lang && lang !== document.documentElement.lang) {
    localStorage.setItem('rag-lang', lang);
    if (carried) sessionStorage.setItem('rag-carry', carried);
    location.reload();
  }
  return [lang, carried];
}"""
# After an answer: bring its start into view (not the end of its last source), and on a narrow
# screen keep the sources folded so the answer is what the reader sees.
SHOW_NEW_ANSWER = """() => {
  const answers = document.querySelectorAll('#chat .answer, #chat .notice');
  const last = answers[answers.length - 1];
  if (!last) return;
  if (window.innerWidth < 700) last.closest('.message, .bot, div').parentElement
    .querySelectorAll('details.source[open]').forEach((d) => { d.open = false; });
  last.scrollIntoView({block: 'start'});
}"""

# The conversation as a file (issue 29), from the answers' records (rag/feedback.py's
# answer_record): each question with the conversation before it, the answer, its short answer and
# the cited passages. FORMAT is "md" or "json".
EXPORT_CONVERSATION = r"""(records) => {
  const turns = Object.entries(records || {}).sort((a, b) => Number(a[0]) - Number(b[0])).map((e) => e[1]);
  const format = 'FORMAT';
  let text;
  if (format === 'json') {
    text = JSON.stringify({exported: new Date().toISOString(), turns}, null, 1);
  } else {
    text = turns.map((r) => {
      const sources = (r.citations || []).map((c) =>
        `[${c.n}] ${c.title} (${c.source})\n\n> ${c.text.replace(/\n+/g, ' ')}`).join('\n\n');
      const short = r.short_answer ? `**${r.short_answer}**\n\n` : '';
      return `## ${r.question}\n\n${short}${r.answer}\n\n${sources}`;
    }).join('\n\n---\n\n') + '\n';
  }
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], {type: format === 'json' ? 'application/json' : 'text/markdown'}));
  link.download = 'conversation.' + format;
  document.body.appendChild(link);
  link.click();
  link.remove();
  return [];
}"""

Turns = list[tuple[str, str]]
MAX_PASSAGES = 10  # the Settings slider's top: more passages only lengthen the list of sources
E = TypeVar("E")
R = TypeVar("R")
Y = TypeVar("Y")


async def _replies(
    pipeline: Pipeline,
    question: str,
    k: int,
    mode: str,
    turns: Turns,
    show_scores: bool,
    page_lang: str,
    read: bool | None = None,
) -> AsyncIterator[str | tuple[str, str, Answer | None]]:
    """The answer as it comes (an LLM's text, piece by piece), then (HTML reply, plain answer for
    the history, the Answer); every failure becomes a friendly message in the question's language (the page's,
    for an empty question). Closing it early (the Stop button) closes the LLM request."""
    lang = for_question(question or "", page_lang)
    try:
        async for event in pipeline.astream(question, k=int(k), history=turns, mode=mode, reader=read):
            yield (answer_message(event, show_scores), event.answer, event) if isinstance(event, Answer) else event
    except IndexProblem as exc:
        yield notice_message(t(lang, "index_unusable", reason=exc)), "", None
    except UserError as exc:  # in the question's language where it has a code (QuestionError's do)
        yield notice_message(exc.localized(lang)), "", None
    except Exception:  # the user sees a message, the log keeps the traceback
        log.exception("question failed")
        yield notice_message(t(lang, "answer_failed")), "", None


def _preload_reader(pipeline: Pipeline, ticked: bool) -> None:
    """Load the reader while the user types, not after they ask; a failure to load is shown when
    a question asks for it (its message names the fix)."""
    if ticked:
        try:
            pipeline.preload_reader()
        except UserError as exc:
            log.warning("the answer reader could not be loaded: %s", exc)


async def _ask(
    pipeline: Pipeline,
    question: str,
    history: list[dict[str, Any]],
    k: int,
    show_scores: bool,
    mode: str,
    turns: Turns,
    page_lang: str,
    read: bool | None = None,
    on_answer: Callable[[Answer], None] | None = None,
) -> AsyncIterator[tuple[list[dict[str, Any]], str, Turns]]:
    """Chat handler: yields the conversation as the answer streams in (LLM mode) or once, and
    hands the final Answer to `on_answer`. A blank question gets its notice without a bubble of
    its own (issue 29: it added an empty one)."""
    history = list(history or [])
    if question.strip():
        history.append({"role": "user", "content": user_message(question)})
    turns = list(turns or [])
    streamed, reply, plain = "", "", ""
    async for event in _replies(pipeline, question, k, mode, turns, show_scores, page_lang, read):
        if isinstance(event, tuple):
            reply, plain, answer = event
            if answer is not None and on_answer is not None:
                on_answer(answer)
        else:
            streamed += event
            yield [*history, {"role": "assistant", "content": stream_message(question, streamed)}], "", turns
    if plain:
        turns = [*turns, (question, plain)][-MAX_HISTORY_TURNS:]
    yield [*history, {"role": "assistant", "content": reply}], "", turns


def make_i18n(config: Config) -> gr.I18n:
    """The catalogue as Gradio's translations, with the settings' numbers filled in."""
    numbers = {"limit": f"{config.max_question_chars:,}"}
    return gr.I18n(
        **{
            lang: {
                **messages,
                "question_limit": messages["question_limit"].format(**numbers),
                "upload_note": messages["upload_note"].format(limit=config.upload_max_mb),
                "docs_folder": messages["docs_folder"].format(folder=config.docs_dir.resolve()),
            }
            for lang, messages in MESSAGES.items()
        }
    )


def build_app(pipeline: Pipeline, i18n: gr.I18n) -> gr.Blocks:
    """The whole UI, bound to one loaded pipeline; every label is a key of `i18n` (ui/i18n.py)."""
    config = pipeline.config
    library = DocumentLibrary(pipeline)
    modes = ["llm", "extractive"] if config.llm_enabled else ["extractive"]
    handover = Handover(HANDOVER_SECONDS, HANDOVER_LIMIT)
    conversations = Conversations()
    feedback = FeedbackLog(config.index_dir)

    with gr.Blocks(title="اسأل مستنداتك · Ask your documents") as app:
        with gr.Row(elem_id="header"):
            gr.Markdown(i18n("heading"), elem_id="heading")
            page_lang = gr.Radio(
                [(LANGUAGE_NAMES[lang], lang) for lang in LANGUAGES],
                value="en",
                label=i18n("interface_language"),
                elem_id="lang",
                scale=0,
                min_width=220,
            )
        with gr.Tab(i18n("tab_chat"), elem_id="tab-chat") as chat_tab:
            chat = gr.Chatbot(
                label=i18n("chat"),
                show_label=False,  # on a phone the label sat on the answer's first line (issue 29)
                height=680,
                elem_id="chat",
                sanitize_html=True,
                buttons=[],  # Gradio's copy takes the HTML; each answer has its own plain-text copy button
                autoscroll=False,  # the client scrolls to the start of the new answer (HEAD script)
            )
            with gr.Row():
                question = gr.Textbox(
                    placeholder=i18n("question_placeholder"),
                    label=i18n("question_label"),
                    show_label=False,
                    scale=8,
                    elem_id="question",
                    lines=1,
                    max_lines=6,
                    # The keyboard starts in the question box: Tab reached every earlier answer first.
                    autofocus=True,
                )
                send = gr.Button(i18n("ask"), variant="primary", scale=1, elem_id="ask")
                # Shown while an LLM answer streams in; cancels it (the extractive answer is instant).
                stop = gr.Button(i18n("stop"), variant="stop", scale=1, visible=False, elem_id="stop")
            examples = gr.Examples(EXAMPLES, inputs=question, label=i18n("examples"))
            with gr.Accordion(i18n("settings"), open=False, elem_id="settings"):
                k = gr.Slider(1, MAX_PASSAGES, value=config.k, step=1, label=i18n("passages"))
                mode = gr.Radio(
                    [(i18n(f"mode_{m}"), m) for m in modes],
                    value=pipeline.default_mode,
                    label=i18n("answer_mode" if config.llm_enabled else "answer_mode_no_llm"),
                    elem_id="mode",
                )
                show_scores = gr.Checkbox(value=False, label=i18n("show_scores"))
                use_reader = gr.Checkbox(
                    value=pipeline.reads,
                    label=i18n("use_reader"),
                    visible=reader_available(),
                    elem_id="use-reader",
                )
                use_reader.change(partial(_preload_reader, pipeline), use_reader, None, api_visibility="private")
                gr.Markdown(i18n("question_limit"), elem_classes="page-text")
            with gr.Row():
                clear = gr.Button(i18n("new_conversation"), size="sm", elem_id="new-conversation")
                export_md = gr.Button(i18n("export_markdown"), size="sm", elem_id="export-markdown")
                export_json = gr.Button(i18n("export_json"), size="sm", elem_id="export-json")
            turns = gr.State([])
            conversation = gr.State("")  # this tab's id, set by app.load below
            # Each answer's feedback record (rag/feedback.py), by its index in the chat; a hidden
            # component rather than a State because the browser builds the download from it.
            records = gr.JSON({}, visible=False)
            # After a 👎: the right answer, if the user knows it (issue 29: feedback becomes a test set).
            feedback_note = gr.Markdown(visible=False, elem_id="feedback-note", elem_classes="page-text")
            with gr.Row(visible=False, elem_id="feedback-correction") as correction_row:
                correction = gr.Textbox(
                    label=i18n("feedback_correction"), scale=6, max_lines=2, elem_id="feedback-correction-text"
                )
                send_correction = gr.Button(i18n("feedback_send"), scale=1, elem_id="feedback-send")
            rated = gr.State(None)  # the record the correction belongs to

            async def ask(
                q: str,
                history: list[dict[str, Any]],
                k_: int,
                scores: bool,
                mode_: str,
                turns_: Turns,
                lang: str,
                read: bool,
                tab: str,
                records_: dict[str, Any],
            ) -> AsyncIterator[tuple[Any, ...]]:
                """The answer, its feedback record, and the conversation kept for a reload of this
                tab. Each update is sent when the next one comes, so the last carries the record."""
                answered: list[Answer] = []
                last: tuple[Any, ...] | None = None
                async for shown in _ask(pipeline, q, history, k_, scores, mode_, turns_, lang, read, answered.append):
                    if last is not None:
                        yield *last, gr.update()
                    last = shown
                assert last is not None
                records_ = dict(records_ or {})
                if answered:
                    records_[str(len(last[0]) - 1)] = answer_record(answered[-1], turns_ or [])
                conversations.save(tab, last[0], list(last[2]), records_)
                yield *last, records_

            answering = []
            # An example asks at once (issue 29: it filled the box and waited).
            for trigger in (send.click, question.submit, examples.load_input_event.then):
                started = trigger(lambda m: gr.update(visible=m == "llm"), mode, stop, api_visibility="private")
                answering.append(
                    started.then(
                        ask,
                        [question, chat, k, show_scores, mode, turns, page_lang, use_reader, conversation, records],
                        [chat, question, turns, records],
                        api_visibility="private",
                    )
                )
                answering[-1].then(lambda: gr.update(visible=False), None, stop, api_visibility="private").then(
                    None, js=SHOW_NEW_ANSWER
                )
            stop.click(lambda: gr.update(visible=False), None, stop, cancels=answering, api_visibility="private")

            def new_conversation(tab: str) -> tuple[Any, ...]:
                conversations.forget(tab)
                return [], "", [], {}

            clear.click(new_conversation, conversation, [chat, question, turns, records], api_visibility="private")
            # The chat's own bin icon clears it too: the kept conversation goes with it.
            chat.clear(new_conversation, conversation, [chat, question, turns, records], api_visibility="private")

            def keep_feedback(record: dict[str, Any], lang: str) -> str:
                """One line in the feedback file; "" when kept, else why not, in `lang`."""
                try:
                    feedback.append(Feedback.from_record(record))
                except UserError as exc:
                    return exc.localized(lang)
                except OSError as exc:
                    return str(exc)
                return ""

            def on_rate(records_: dict[str, Any], lang: str, data: gr.LikeData) -> tuple[Any, ...]:
                """👍/👎 on an answer: one line in the feedback file; after 👎 the user may add the
                right answer."""
                record = (records_ or {}).get(str(data.index))
                if record is None or not isinstance(data.liked, bool):
                    note = t(lang, "feedback_unknown") if record is None else ""
                    return gr.update(value=note, visible=bool(note)), gr.update(visible=False), None
                verdict = "right" if data.liked else "wrong"
                if failed := keep_feedback({**record, "verdict": verdict}, lang):
                    return gr.update(value=failed, visible=True), gr.update(visible=False), None
                note = t(lang, f"feedback_thanks_{verdict}")
                return gr.update(value=note, visible=True), gr.update(visible=not data.liked), record

            # Made in the browser from the answers' records: nothing is written on the server.
            export_md.click(None, records, None, js=EXPORT_CONVERSATION.replace("FORMAT", "md"))
            export_json.click(None, records, None, js=EXPORT_CONVERSATION.replace("FORMAT", "json"))

            chat.like(on_rate, [records, page_lang], [feedback_note, correction_row, rated], api_visibility="private")

            def on_correct(text: str, record: dict[str, Any] | None, lang: str) -> tuple[Any, ...]:
                if record is None or not text.strip():
                    return gr.update(), gr.update(), text, record
                if failed := keep_feedback({**record, "verdict": "wrong", "correction": text.strip()}, lang):
                    return gr.update(value=failed, visible=True), gr.update(), text, record
                return gr.update(value=t(lang, "feedback_saved"), visible=True), gr.update(visible=False), "", None

            for trigger in (send_correction.click, correction.submit):
                trigger(
                    on_correct,
                    [correction, rated, page_lang],
                    [feedback_note, correction_row, correction, rated],
                    api_visibility="private",
                )
            # A plain endpoint for scripts and load tests: question in, answer JSON out.
            api_in = gr.Textbox(visible=False)
            api_out = gr.JSON(visible=False)
            api_in.submit(lambda q: _api_answer(pipeline, q), api_in, api_out, api_name="answer")

        with gr.Tab(i18n("tab_documents"), elem_id="tab-documents") as documents_tab:
            # Filled on every page load (app.load below) with the index as it is now, and with
            # column headers in the page's language: Gradio does not translate Dataframe headers.
            table = gr.Dataframe(
                value=library.rows,
                headers=_table_headers("en"),
                interactive=False,
                wrap=True,
                label=i18n("documents_table"),
                elem_id="documents",
            )
            gr.Markdown(i18n("upload_note"), elem_classes="page-text")
            # Where uploads go, so nobody has to guess (issue 29: they landed unannounced in seeds/).
            gr.Markdown(i18n("docs_folder"), elem_id="docs-folder", elem_classes="page-text")
            # No file_types: Gradio's check of them answers in English only, and drops the file before
            # the library can say why in the page's language (the note above lists the types).
            upload = gr.File(file_count="multiple", label=i18n("upload"), elem_id="upload")
            # Each file's line, live during an upload and kept until the next one.
            results = gr.HTML(elem_id="upload-results", label=i18n("upload_results"))
            status = gr.Textbox(label=i18n("status_label"), interactive=False, elem_id="upload-status", lines=3)
            with gr.Row():
                to_remove = gr.Dropdown(
                    choices=library.choices(), value=None, label=i18n("remove_pick"), scale=4, elem_id="to-remove"
                )
                remove = gr.Button(i18n("remove"), variant="stop", scale=1, elem_id="remove")
            with gr.Column(visible=False, elem_id="confirm-remove") as confirm_remove:
                confirm_text = gr.Markdown(elem_classes="page-text")
                with gr.Row():
                    really_remove = gr.Button(i18n("remove_yes"), variant="stop", elem_id="confirm-remove-yes")
                    keep = gr.Button(i18n("cancel"), elem_id="confirm-remove-no")
            with gr.Accordion(i18n("trash"), open=False, elem_id="trash"):
                gr.Markdown(i18n("trash_note"), elem_classes="page-text")
                with gr.Row():
                    trashed = gr.Dropdown(
                        choices=library.trash_choices(),
                        value=None,
                        label=i18n("trash_pick"),
                        scale=4,
                        elem_id="trashed",
                    )
                    restore = gr.Button(i18n("restore"), scale=1, elem_id="restore")
                empty = gr.Button(i18n("empty_trash"), variant="stop", size="sm", elem_id="empty-trash")
                with gr.Column(visible=False, elem_id="confirm-empty") as confirm_empty:
                    empty_question = gr.Markdown(
                        i18n("empty_confirm"), elem_id="confirm-empty-text", elem_classes="page-text"
                    )
                    with gr.Row():
                        really_empty = gr.Button(i18n("empty_yes"), variant="stop", elem_id="confirm-empty-yes")
                        keep_trash = gr.Button(i18n("cancel"), elem_id="confirm-empty-no")

            refreshed = partial(_library_lists, library)
            lists = [table, to_remove, trashed]

            # Another tab (or the API) may have added, removed or emptied since this page loaded:
            # opening the Documents tab shows the library as it is now (issue 29: an emptied trash
            # still offered its documents, and Restore then said they were gone).
            reopened = partial(_reopened_lists, library)
            documents_tab.select(reopened, [page_lang, to_remove, trashed], lists, api_visibility="private")

            def on_upload(
                files: list[Any] | None,
                lang: str,
                progress: gr.Progress = gr.Progress(),  # noqa: B008
            ) -> Iterator[tuple[Any, ...]]:
                """Shows each file's line as the upload goes (read one by one, then embedded as one
                batch), then its result; the list stays until the next upload."""
                if not files:
                    yield *refreshed(lang), gr.update(), gr.update(), None
                    return
                # Only files Gradio received may be read: a crafted request can name any path on the
                # server (seen through the API-mounted app), which must never reach the index.
                uploads = Path(gr.utils.get_upload_folder()).resolve()
                given = [(Path(_path(f)), _original_name(f)) for f in files]
                pairs = [(path, name) for path, name in given if path.resolve().is_relative_to(uploads)]
                lines = UploadLines(lang, [name for _, name in pairs])
                unchanged = (gr.update(),) * len(lists)

                def shown(step: UploadStep) -> tuple[Any, ...]:
                    bar = lines.advance(step)
                    progress(bar.done_total, desc=bar.desc, unit=bar.unit)
                    return *unchanged, t(lang, "indexing"), lines.html(), gr.update()

                try:
                    report = yield from _in_thread(lambda on_step: library.add(pairs, on_step), shown)
                except UserError as exc:
                    yield *refreshed(lang), exc.localized(lang), lines.failed(), None
                    return
                except Exception:
                    log.exception("upload failed")
                    yield *refreshed(lang), t(lang, "indexing_failed"), lines.failed(), None
                    return
                for path, name in given:
                    if (path, name) not in pairs:
                        report.reject(FileResult(name).reject("reason_foreign"))
                results = [(f.outcome, f.name, f.text(lang)) for f in report.files]
                yield *refreshed(lang), report.message(lang), upload_results(results), None

            # What the open confirmation is about, kept on the server: Gradio's routes run any
            # handler by its index, so a confirming handler called on its own (no confirmation
            # shown in this session, or one about another document) removes nothing (issue 27).
            asked_remove = gr.State(None)
            asked_empty = gr.State(False)

            def on_remove(name: str | None, lang: str) -> tuple[Any, ...]:
                if not name:
                    return gr.update(visible=False), gr.update(), t(lang, "choose_document"), None
                question = t(lang, "remove_confirm", title=escape_text(library.title(name)), name=escape_text(name))
                return gr.update(visible=True), question, gr.update(), name

            def on_confirm_remove(name: str | None, asked: str | None, lang: str) -> tuple[Any, ...]:
                if not name:
                    message = t(lang, "choose_document")
                elif name != asked:
                    message = t(lang, "confirm_first")
                else:
                    message = library.remove(name, lang)
                return *refreshed(lang), message, gr.update(visible=False), None

            def on_restore(item_id: str | None, lang: str) -> tuple[Any, ...]:
                message = library.restore(item_id, lang) if item_id else t(lang, "choose_trashed")
                return *refreshed(lang), message

            def on_empty(asked: bool, lang: str) -> tuple[Any, ...]:
                message = library.empty_trash(lang) if asked is True else t(lang, "confirm_first")
                return *refreshed(lang), message, gr.update(visible=False), False

            hidden = (lambda: (gr.update(visible=False), None), None)
            # When a confirmation closes, the keyboard user is back on the button that opened it
            # (the focus would otherwise fall to the page, and Tab start again from the top).
            back_to_remove, back_to_empty = (
                f"() => document.querySelector('#{i}').focus()" for i in ("remove", "empty-trash")
            )
            upload.upload(
                on_upload,
                [upload, page_lang],
                [*lists, status, results, upload],
                api_visibility="private",
                show_progress_on=[upload],  # the bar over the drop area; the per-file list stays readable
            )
            remove.click(
                on_remove,
                [to_remove, page_lang],
                [confirm_remove, confirm_text, status, asked_remove],
                api_visibility="private",
            )
            really_remove.click(
                on_confirm_remove,
                [to_remove, asked_remove, page_lang],
                [*lists, status, confirm_remove, asked_remove],
                api_visibility="private",
            ).then(None, js=back_to_remove)
            keep.click(*hidden, [confirm_remove, asked_remove], api_visibility="private").then(None, js=back_to_remove)
            # Gradio's dropdown drops the focus when an option is chosen with Enter: it moves on to
            # the button that acts on the choice.
            to_remove.input(None, js=back_to_remove)
            trashed.input(None, js="() => document.querySelector('#restore').focus()")
            restore.click(on_restore, [trashed, page_lang], [*lists, status], api_visibility="private")

            def on_empty_asked(lang: str) -> tuple[Any, ...]:
                """The confirmation says how many documents go for good (issue 29); none: nothing to ask."""
                count = len(library.trash.items())
                if not count:
                    return gr.update(visible=False), gr.update(), t(lang, "trash_already_empty"), False
                return gr.update(visible=True), t(lang, "empty_confirm_count", count=count), gr.update(), True

            empty.click(
                on_empty_asked,
                [page_lang],
                [confirm_empty, empty_question, status, asked_empty],
                api_visibility="private",
            )
            really_empty.click(
                on_empty,
                [asked_empty, page_lang],
                [*lists, status, confirm_empty, asked_empty],
                api_visibility="private",
            ).then(None, js=back_to_empty)
            keep_trash.click(*hidden, [confirm_empty, asked_empty], api_visibility="private").then(
                None, js=back_to_empty
            )

        # The switch shows the page's language (chosen by HEAD from the browser or a stored choice);
        # changing it stores the choice and reloads the page in the other language.
        # The tab labels are set from the server in the page's language: Gradio translates a tab's
        # label once, when the tab first renders, so a tab not yet opened kept the language the page
        # started in after a stored choice was applied.
        # The conversation and settings survive the switch's reload (ui/handover.py).
        # So do an unsent question and, after any reload, the tab's conversation (issue 29).
        carried = [chat, turns, question, k, show_scores, mode, use_reader]
        token = gr.Textbox(visible=False)
        tab_id = gr.Textbox(visible=False)

        def on_load(lang: str, handed: str, tab: str) -> tuple[Any, ...]:
            lang = normalise_language(lang)
            tabs = (gr.update(label=t(lang, "tab_chat")), gr.update(label=t(lang, "tab_documents")))
            values = handover.take(handed)
            saved = conversations.load(tab)
            if values is not None and carried_values_fit(values, modes, MAX_PASSAGES):
                kept = [gr.update(value=v) for v in values]
            elif saved is not None:
                kept = [gr.update(value=saved[0]), gr.update(value=saved[1])] + [gr.update() for _ in carried[2:]]
            else:
                kept = [gr.update() for _ in carried]
            return lang, *tabs, *refreshed(lang), *kept, tab, saved[2] if saved else {}

        app.load(None, None, page_lang, js=PAGE_LANGUAGE, api_visibility="private")
        app.load(
            on_load,
            [page_lang, token, tab_id],
            [page_lang, chat_tab, documents_tab, *lists, *carried, conversation, records],
            js=CURRENT_LANGUAGE,
            api_visibility="private",
        )
        # `input`, not `change`: on_load setting the switch to the page's language is no switch.
        page_lang.input(lambda *values: handover.put(values), carried, token, api_visibility="private").then(
            None, [page_lang, token], None, js=SWITCH_LANGUAGE
        )
    return app


class ProgressBar(NamedTuple):
    """gr.Progress's arguments for one upload step. The unit is given because Gradio's default,
    "steps", is English on every page (seen on the Arabic page in CI)."""

    done_total: tuple[int, int]
    desc: str
    unit: str


class UploadLines:
    """The per-file list while an upload runs: files before the one being read are read, later
    ones wait; while the accepted files are embedded (one batch) each says how far it is."""

    def __init__(self, lang: str, names: list[str]) -> None:
        self.lang, self.names = lang, names
        self.states = ["waiting"] * len(names)
        self.embedded: tuple[int, int] = (0, 0)

    def advance(self, step: UploadStep) -> ProgressBar:
        """Moves the list to `step`; returns what gr.Progress shows for it."""
        if step.stage == "reading":
            current = step.done - 1
            self.states = ["read"] * current + ["reading"] + ["waiting"] * (len(self.names) - current - 1)
            desc = t(self.lang, "upload_reading", **vars(step))
            return ProgressBar((step.done - 1, step.total), desc, t(self.lang, "unit_files"))
        self.states = ["embedding"] * len(self.names)
        self.embedded = (step.done, step.total)
        desc = t(self.lang, "upload_embedding", done=step.done, total=step.total)
        return ProgressBar((step.done, step.total), desc, t(self.lang, "unit_passages"))

    def html(self) -> str:
        done, total = self.embedded
        return upload_results(
            [
                (state, name, t(self.lang, f"file_{state}", done=done, total=total))
                for state, name in zip(self.states, self.names)
            ]
        )

    def failed(self) -> str:
        return upload_results([("rejected", "", t(self.lang, "indexing_failed"))])


def _in_thread(work: Callable[[Callable[[E], None]], R], show: Callable[[E], Y]) -> Generator[Y, None, R]:
    """Runs `work(emit)` in a thread and yields `show(event)` for each event it emits, as it emits
    it; returns what `work` returned (or raises what it raised). A Gradio generator handler thus
    updates the page while a blocking call (an upload, a streamed LLM answer) is under way."""
    events: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, work(lambda event: events.put((False, event)))))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))
        events.put((True, None))

    threading.Thread(target=run, daemon=True).start()
    while not (item := events.get())[0]:
        yield show(item[1])
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _library_lists(library: DocumentLibrary, lang: str) -> tuple[Any, ...]:
    """Table, remove picker and trash picker as they are now, nothing selected (after the page's
    own upload, removal or restore, whose choice is spent)."""
    return (
        {"data": library.rows(), "headers": _table_headers(lang)},
        gr.update(choices=library.choices(), value=None),
        gr.update(choices=library.trash_choices(lang), value=None),
    )


def _reopened_lists(
    library: DocumentLibrary, lang: str, removing: str | None, restoring: str | None
) -> tuple[Any, ...]:
    """The lists as they are now when the Documents tab opens. A picker's value is cleared only
    when its choice has gone; otherwise the update carries no value at all, because the user may
    already have chosen in this tab before this answer arrives (CI under load: the keyboard chose
    a document, the late refresh cleared it, and Remove then had nothing to confirm)."""
    table_now, documents, trash = _library_lists(library, lang)
    kept = []
    for update, chosen in ((documents, removing), (trash, restoring)):
        gone = chosen is not None and chosen not in {value for _, value in update["choices"]}
        kept.append(gr.update(choices=update["choices"], value=None) if gone else gr.update(choices=update["choices"]))
    return table_now, *kept


def _table_headers(lang: str) -> list[str]:
    return [t(lang, key) for key in ("col_title", "col_file", "col_chunks", "col_kb")]


def _path(file: Any) -> str:
    return file if isinstance(file, str) else getattr(file, "name", None) or file["path"]


def _original_name(file: Any) -> str:
    orig = getattr(file, "orig_name", None) or (file.get("orig_name") if isinstance(file, dict) else None)
    return orig or Path(_path(file)).name


def _api_answer(pipeline: Pipeline, question: str) -> dict[str, Any]:
    shown = (question or "").encode("utf-8", "replace").decode("utf-8")
    try:
        return pipeline.ask(question).to_json()
    except IndexProblem as exc:  # the chat's and the HTTP API's message, word for word
        return {"question": shown, "error": t("en", "index_unusable", reason=exc)}
    except UserError as exc:
        return {"question": shown, "error": str(exc)}
    except Exception:
        log.exception("API question failed")
        return {"question": shown, "error": "Something went wrong while answering; please try again."}


def theme() -> gr.themes.Base:
    """System fonts only: the page must not fetch web fonts (it runs offline)."""
    return gr.themes.Soft(
        font=("Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", "Tahoma", "sans-serif"),
        font_mono=("Noto Sans Mono", "monospace"),
    )
