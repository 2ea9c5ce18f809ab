"""The Gradio app: a right-to-left-aware chat with cited sources, and a documents tab.

The pipeline (model and index) is created once per process and shared by every request; the
queue lets many people ask at once while the embedding engine serialises its own calls.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from index.load import SUPPORTED_SUFFIXES
from index.store import IndexProblem
from rag.chain import Pipeline, QuestionError
from rag.config import Config
from rag.llm import MAX_HISTORY_TURNS, TokenFn
from ui.documents import DocumentLibrary
from ui.i18n import MESSAGES, for_question, t
from ui.render import answer_message, escape_text, notice_message, stream_message, user_message

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
.answer.abstained { font-style: italic; }
sup.cite { color: #1e40af; font-weight: 600; margin: 0 2px; }
.sources-label { margin-top: .6em; font-size: .85em; color: #374151; }
details.source { border: 1px solid #e5e7eb; border-radius: 8px; padding: .3em .6em; margin: .3em 0; }
details.source .where { color: #374151; font-size: .85em; }
.passage mark { background: #fde68a; padding: 0 2px; }
.notice-error { color: #b91c1c; }
.notice-warn { color: #92400e; }
sup.cite { cursor: pointer; }
button.copy-answer { border: 1px solid #d1d5db; border-radius: 6px; padding: 0 .5em; font-size: .85em; color: #374151; background: #fff; }
button.copy-answer.copied { border-color: #15803d; color: #15803d; }
details.source.flash { animation: flash 1.6s ease-out; }
@keyframes flash { 0% { background: #fde68a; } 100% { background: transparent; } }
#question textarea { unicode-bidi: plaintext; text-align: start; }
#documents td, #documents th { font-family: inherit; white-space: normal; }
/* WCAG AA contrast (axe): Gradio's indigo and grey on white are just under 4.5:1. */
#ask, button.primary { background: #4338ca !important; color: #fff !important; }
[data-testid="upload-text"] { color: #4338ca !important; }
[data-testid="upload-text"] .or { color: #4b5563 !important; }
#heading { overflow: visible !important; }
input[role="combobox"], input[role="combobox"]::placeholder, textarea::placeholder { color: #4b5563 !important; opacity: 1; }
*:focus-visible { outline: 2px solid #2563eb !important; outline-offset: 2px; }
@media (max-width: 700px) {
  #documents th:nth-child(n+3), #documents td:nth-child(n+3) { display: none; }
}
"""

# Runs as the page loads: the page language is a stored choice (the header switch) or the
# browser's, normalised to 'ar' or 'en' so Gradio's own translations follow it; the whole page then
# reads right-to-left in Arabic. Clicking a [n] badge opens source n of that answer and flashes it.
HEAD = r"""<script>
(() => {
  const stored = localStorage.getItem('rag-lang');
  const lang = (stored || navigator.language || 'en').toLowerCase().startsWith('ar') ? 'ar' : 'en';
  Object.defineProperty(navigator, 'language', {get: () => lang});
  Object.defineProperty(navigator, 'languages', {get: () => [lang]});
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === 'ar' ? 'rtl' : 'ltr';
  // Gradio reads the browser language before it runs this script; a stored choice is applied
  // through the changeLocale export of its core module (what its own settings panel calls).
  const core = performance.getEntriesByType('resource').find((e) => /\/core-[^/]*\.js$/.test(e.name));
  if (stored && core) import(core.name).then((m) => m.changeLocale && m.changeLocale(lang));
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
</script>"""
CURRENT_LANGUAGE = "() => document.documentElement.lang || 'en'"
SWITCH_LANGUAGE = """(lang) => {
  if (lang && lang !== document.documentElement.lang) { localStorage.setItem('rag-lang', lang); location.reload(); }
  return lang;
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


Turns = list[tuple[str, str]]


def _reply(
    pipeline: Pipeline,
    question: str,
    k: int,
    mode: str,
    turns: Turns,
    show_scores: bool,
    on_token: TokenFn | None,
    page_lang: str,
) -> tuple[str, str]:
    """(HTML reply, plain answer for the history); every failure becomes a friendly message in the
    question's language (the page's, for an empty question)."""
    lang = for_question(question or "", page_lang)
    try:
        answer = pipeline.ask(question, k=int(k), history=turns, on_token=on_token, mode=mode)
        return answer_message(answer, show_scores), answer.answer
    except QuestionError as exc:
        return notice_message(t(lang, f"question_{exc.key}", **exc.params)), ""
    except IndexProblem as exc:
        return notice_message(t(lang, "index_unusable", reason=exc)), ""
    except Exception:  # the user sees a message, the log keeps the traceback
        log.exception("question failed")
        return notice_message(t(lang, "answer_failed")), ""


def _ask(
    pipeline: Pipeline,
    question: str,
    history: list[dict[str, Any]],
    k: int,
    show_scores: bool,
    mode: str,
    turns: Turns,
    page_lang: str,
) -> Iterator[tuple[list[dict[str, Any]], str, Turns]]:
    """Chat handler: yields the conversation as the answer streams in (LLM mode) or once."""
    history = [*list(history or []), {"role": "user", "content": user_message(question if question.strip() else " ")}]
    turns = list(turns or [])
    if mode != "llm":
        reply, plain = _reply(pipeline, question, k, mode, turns, show_scores, None, page_lang)
    else:
        tokens: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        result: list[tuple[str, str]] = []

        def work() -> None:
            result.append(_reply(pipeline, question, k, mode, turns, show_scores, tokens.put, page_lang))
            tokens.put(None)

        threading.Thread(target=work, daemon=True).start()
        streamed = ""
        while (token := tokens.get()) is not None:
            streamed += token
            yield [*history, {"role": "assistant", "content": stream_message(question, streamed)}], "", turns
        reply, plain = result[0]
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
            }
            for lang, messages in MESSAGES.items()
        }
    )


def build_app(pipeline: Pipeline, i18n: gr.I18n) -> gr.Blocks:
    """The whole UI, bound to one loaded pipeline; every label is a key of `i18n` (ui/i18n.py)."""
    config = pipeline.config
    library = DocumentLibrary(pipeline, config.upload_max_mb * 2**20)
    llm_ready = bool(config.llm_base_url and config.llm_model)

    with gr.Blocks(title="اسأل مستنداتك · Ask your documents") as app:
        with gr.Row(elem_id="header"):
            gr.Markdown("## اسأل مستنداتك · Ask your documents", elem_id="heading")
            page_lang = gr.Radio(
                [("العربية", "ar"), ("English", "en")],
                value="en",
                label=i18n("interface_language"),
                elem_id="lang",
                scale=0,
                min_width=220,
            )
        with gr.Tab(i18n("tab_chat"), elem_id="tab-chat"):
            chat = gr.Chatbot(
                label=i18n("chat"),
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
                )
                send = gr.Button(i18n("ask"), variant="primary", scale=1, elem_id="ask")
                # Shown while an LLM answer streams in; cancels it (the extractive answer is instant).
                stop = gr.Button(i18n("stop"), variant="stop", scale=1, visible=False, elem_id="stop")
            gr.Examples(EXAMPLES, inputs=question, label=i18n("examples"))
            with gr.Accordion(i18n("settings"), open=False):
                k = gr.Slider(1, 10, value=config.k, step=1, label=i18n("passages"))
                mode = gr.Radio(
                    ["llm", "extractive"] if llm_ready else ["extractive"],
                    value=pipeline.default_mode,
                    label=i18n("answer_mode" if llm_ready else "answer_mode_no_llm"),
                    elem_id="mode",
                )
                show_scores = gr.Checkbox(value=False, label=i18n("show_scores"))
                gr.Markdown(i18n("question_limit"))
            clear = gr.Button(i18n("new_conversation"), size="sm")
            turns = gr.State([])

            def ask(
                q: str, history: list[dict[str, Any]], k_: int, scores: bool, mode_: str, turns_: Turns, lang: str
            ) -> Iterator[tuple[list[dict[str, Any]], str, Turns]]:
                yield from _ask(pipeline, q, history, k_, scores, mode_, turns_, lang)

            answering = []
            for trigger in (send.click, question.submit):
                started = trigger(lambda m: gr.update(visible=m == "llm"), mode, stop, api_name=False)
                answering.append(
                    started.then(
                        ask,
                        [question, chat, k, show_scores, mode, turns, page_lang],
                        [chat, question, turns],
                        api_name=False,
                    )
                )
                answering[-1].then(lambda: gr.update(visible=False), None, stop, api_name=False).then(
                    None, js=SHOW_NEW_ANSWER
                )
            stop.click(lambda: gr.update(visible=False), None, stop, cancels=answering, api_name=False)
            clear.click(lambda: ([], "", []), None, [chat, question, turns], api_name=False)
            # A plain endpoint for scripts and load tests: question in, answer JSON out.
            api_in = gr.Textbox(visible=False)
            api_out = gr.JSON(visible=False)
            api_in.submit(lambda q: _api_answer(pipeline, q), api_in, api_out, api_name="answer")

        with gr.Tab(i18n("tab_documents"), elem_id="tab-documents"):
            # Callables, so every page load shows the index as it is now, not as it was at start-up.
            table = gr.Dataframe(
                value=library.rows,
                headers=[i18n("col_title"), i18n("col_file"), i18n("col_chunks"), i18n("col_kb")],
                interactive=False,
                wrap=True,
                label=i18n("documents_table"),
                elem_id="documents",
            )
            gr.Markdown(i18n("upload_note"))
            upload = gr.File(
                file_count="multiple", file_types=list(SUPPORTED_SUFFIXES), label=i18n("upload"), elem_id="upload"
            )
            status = gr.Textbox(label=i18n("status"), interactive=False, elem_id="upload-status", lines=3)
            with gr.Row():
                to_remove = gr.Dropdown(
                    choices=library.choices(), value=None, label=i18n("remove_pick"), scale=4, elem_id="to-remove"
                )
                remove = gr.Button(i18n("remove"), variant="stop", scale=1, elem_id="remove")
            with gr.Column(visible=False, elem_id="confirm-remove") as confirm_remove:
                confirm_text = gr.Markdown()
                with gr.Row():
                    really_remove = gr.Button(i18n("remove_yes"), variant="stop", elem_id="confirm-remove-yes")
                    keep = gr.Button(i18n("cancel"), elem_id="confirm-remove-no")
            with gr.Accordion(i18n("trash"), open=False, elem_id="trash"):
                gr.Markdown(i18n("trash_note"))
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
                    gr.Markdown(i18n("empty_confirm"))
                    with gr.Row():
                        really_empty = gr.Button(i18n("empty_yes"), variant="stop", elem_id="confirm-empty-yes")
                        keep_trash = gr.Button(i18n("cancel"), elem_id="confirm-empty-no")

            def refreshed() -> tuple[Any, ...]:
                """Table, remove picker and trash picker as they are now, nothing selected."""
                return (
                    library.rows(),
                    gr.update(choices=library.choices(), value=None),
                    gr.update(choices=library.trash_choices(), value=None),
                )

            lists = [table, to_remove, trashed]

            def on_upload(files: list[Any] | None, lang: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
                if not files:
                    return *refreshed(), gr.update(), None
                progress(0.1, desc=t(lang, "indexing"))
                # Only files Gradio received may be read: a crafted request can name any path on the
                # server (seen through the API-mounted app), which must never reach the index.
                uploads = Path(gr.utils.get_upload_folder()).resolve()
                pairs, foreign = [], []
                for f in files:
                    path = Path(_path(f))
                    (pairs if path.resolve().is_relative_to(uploads) else foreign).append((path, _original_name(f)))
                try:
                    report = library.add(pairs)
                    report.rejected += [f"{name}: not a file uploaded to this server" for _, name in foreign]
                    message = report.message(lang)
                except Exception:
                    log.exception("upload failed")
                    message = t(lang, "indexing_failed")
                return *refreshed(), message, None

            def on_remove(name: str | None, lang: str) -> tuple[Any, ...]:
                if not name:
                    return gr.update(visible=False), gr.update(), t(lang, "choose_document")
                question = t(lang, "remove_confirm", title=escape_text(library.title(name)), name=escape_text(name))
                return gr.update(visible=True), question, gr.update()

            def on_confirm_remove(name: str | None, lang: str) -> tuple[Any, ...]:
                message = library.remove(name, lang) if name else t(lang, "choose_document")
                return *refreshed(), message, gr.update(visible=False)

            def on_restore(item_id: str | None, lang: str) -> tuple[Any, ...]:
                message = library.restore(item_id, lang) if item_id else t(lang, "choose_trashed")
                return *refreshed(), message

            def on_empty(lang: str) -> tuple[Any, ...]:
                return *refreshed(), library.empty_trash(lang), gr.update(visible=False)

            hidden = (lambda: gr.update(visible=False), None)
            upload.upload(on_upload, [upload, page_lang], [*lists, status, upload], api_name=False)
            remove.click(on_remove, [to_remove, page_lang], [confirm_remove, confirm_text, status], api_name=False)
            really_remove.click(
                on_confirm_remove, [to_remove, page_lang], [*lists, status, confirm_remove], api_name=False
            )
            keep.click(*hidden, confirm_remove, api_name=False)
            restore.click(on_restore, [trashed, page_lang], [*lists, status], api_name=False)
            empty.click(lambda: gr.update(visible=True), None, confirm_empty, api_name=False)
            really_empty.click(on_empty, page_lang, [*lists, status, confirm_empty], api_name=False)
            keep_trash.click(*hidden, confirm_empty, api_name=False)
        # The switch shows the page's language (chosen by HEAD from the browser or a stored choice);
        # changing it stores the choice and reloads the page in the other language.
        app.load(None, None, page_lang, js=CURRENT_LANGUAGE, api_name=False)
        page_lang.change(None, page_lang, None, js=SWITCH_LANGUAGE)
        app.load(refreshed, None, lists, api_name=False)
    return app


def _path(file: Any) -> str:
    return file if isinstance(file, str) else getattr(file, "name", None) or file["path"]


def _original_name(file: Any) -> str:
    orig = getattr(file, "orig_name", None) or (file.get("orig_name") if isinstance(file, dict) else None)
    return orig or Path(_path(file)).name


def _api_answer(pipeline: Pipeline, question: str) -> dict[str, Any]:
    shown = (question or "").encode("utf-8", "replace").decode("utf-8")
    try:
        return pipeline.ask(question).to_json()
    except QuestionError as exc:
        return {"question": shown, "error": str(exc)}
    except IndexProblem as exc:  # the chat's and the HTTP API's message, word for word
        return {"question": shown, "error": t("en", "index_unusable", reason=exc)}
    except Exception:
        log.exception("API question failed")
        return {"question": shown, "error": "Something went wrong while answering; please try again."}


def theme() -> gr.themes.Base:
    """System fonts only: the page must not fetch web fonts (it runs offline)."""
    return gr.themes.Soft(
        font=("Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", "Tahoma", "sans-serif"),
        font_mono=("Noto Sans Mono", "monospace"),
    )
