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
from rag.llm import MAX_HISTORY_TURNS, TokenFn
from ui.documents import DocumentLibrary
from ui.render import answer_message, notice_message, stream_message, user_message

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
sup.cite { color: #2563eb; font-weight: 600; margin: 0 2px; }
.sources-label { margin-top: .6em; font-size: .85em; color: #6b7280; }
details.source { border: 1px solid #e5e7eb; border-radius: 8px; padding: .3em .6em; margin: .3em 0; }
details.source .where { color: #6b7280; font-size: .85em; }
.passage mark { background: #fde68a; padding: 0 2px; }
.notice-error { color: #b91c1c; }
.notice-warn { color: #92400e; }
"""


Turns = list[tuple[str, str]]


def _reply(
    pipeline: Pipeline, question: str, k: int, mode: str, turns: Turns, show_scores: bool, on_token: TokenFn | None
) -> tuple[str, str]:
    """(HTML reply, plain answer for the history); every failure becomes a friendly message."""
    try:
        answer = pipeline.ask(question, k=int(k), history=turns, on_token=on_token, mode=mode)
        return answer_message(answer, show_scores), answer.answer
    except QuestionError as exc:
        return notice_message(str(exc)), ""
    except IndexProblem as exc:
        return notice_message(f"The index cannot be used: {exc}"), ""
    except Exception:  # the user sees a message, the log keeps the traceback
        log.exception("question failed")
        return notice_message("Something went wrong while answering; please try again."), ""


def _ask(
    pipeline: Pipeline, question: str, history: list[dict[str, Any]], k: int, show_scores: bool, mode: str, turns: Turns
) -> Iterator[tuple[list[dict[str, Any]], str, Turns]]:
    """Chat handler: yields the conversation as the answer streams in (LLM mode) or once."""
    history = [*list(history or []), {"role": "user", "content": user_message(question if question.strip() else " ")}]
    turns = list(turns or [])
    if mode != "llm":
        reply, plain = _reply(pipeline, question, k, mode, turns, show_scores, None)
    else:
        tokens: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        result: list[tuple[str, str]] = []

        def work() -> None:
            result.append(_reply(pipeline, question, k, mode, turns, show_scores, tokens.put))
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


def build_app(pipeline: Pipeline) -> gr.Blocks:
    """The whole UI, bound to one loaded pipeline."""
    config = pipeline.config
    library = DocumentLibrary(pipeline, config.upload_max_mb * 2**20)
    llm_ready = bool(config.llm_base_url and config.llm_model)

    with gr.Blocks(title="Arabic document Q&A") as app:
        gr.Markdown("## اسأل مستنداتك · Ask your documents")
        with gr.Tab("Chat / المحادثة"):
            chat = gr.Chatbot(label="Chat", height=680, elem_id="chat", sanitize_html=True, buttons=["copy"])
            with gr.Row():
                question = gr.Textbox(
                    placeholder="اكتب سؤالك هنا… / Type your question…",
                    show_label=False,
                    scale=8,
                    elem_id="question",
                    rtl=False,
                    max_lines=6,
                )
                send = gr.Button("Ask / اسأل", variant="primary", scale=1, elem_id="ask")
            gr.Examples(EXAMPLES, inputs=question, label="Examples / أمثلة")
            with gr.Accordion("Settings / الإعدادات", open=False):
                k = gr.Slider(1, 10, value=config.k, step=1, label="Passages to retrieve")
                mode = gr.Radio(
                    ["llm", "extractive"] if llm_ready else ["extractive"],
                    value=pipeline.default_mode,
                    label="Answer mode" + ("" if llm_ready else " (LLM: set RAG_LLM_BASE_URL and RAG_LLM_MODEL)"),
                    elem_id="mode",
                )
                show_scores = gr.Checkbox(value=False, label="Show retrieval scores")
                gr.Markdown(f"Questions are limited to {config.max_question_chars:,} characters.")
            clear = gr.Button("New conversation", size="sm")
            turns = gr.State([])

            def ask(
                q: str, history: list[dict[str, Any]], k_: int, scores: bool, mode_: str, turns_: Turns
            ) -> Iterator[tuple[list[dict[str, Any]], str, Turns]]:
                yield from _ask(pipeline, q, history, k_, scores, mode_, turns_)

            for trigger in (send.click, question.submit):
                trigger(ask, [question, chat, k, show_scores, mode, turns], [chat, question, turns], api_name=False)
            clear.click(lambda: ([], "", []), None, [chat, question, turns], api_name=False)
            # A plain endpoint for scripts and load tests: question in, answer JSON out.
            api_in = gr.Textbox(visible=False)
            api_out = gr.JSON(visible=False)
            api_in.submit(lambda q: _api_answer(pipeline, q), api_in, api_out, api_name="answer")

        with gr.Tab("Documents / المستندات"):
            table = gr.Dataframe(
                value=library.rows(),
                headers=["title", "file", "chunks", "KB"],
                interactive=False,
                elem_id="documents",
            )
            gr.Markdown(
                f"Upload `.txt`/`.md` (up to {config.upload_max_mb} MB), PDF (scans are OCR'd; up to 50 MB), "
                "Word `.docx`, saved web pages `.html` or page images (up to 20 MB)."
            )
            upload = gr.File(
                file_count="multiple", file_types=list(SUPPORTED_SUFFIXES), label="Add documents", elem_id="upload"
            )
            status = gr.Textbox(label="Status", interactive=False, elem_id="upload-status", lines=3)
            with gr.Row():
                to_remove = gr.Dropdown(choices=library.names(), label="Remove a document", scale=4)
                remove = gr.Button("Remove", variant="stop", scale=1)

            def on_upload(files: list[Any] | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
                if not files:
                    return library.rows(), gr.update(), gr.update(choices=library.names()), None
                progress(0.1, desc="Indexing…")
                pairs = [(Path(_path(f)), _original_name(f)) for f in files]
                try:
                    message = library.add(pairs).message()
                except Exception:
                    log.exception("upload failed")
                    message = "Indexing failed; the existing index is unchanged."
                return library.rows(), message, gr.update(choices=library.names()), None

            def on_remove(name: str | None) -> tuple[Any, ...]:
                message = library.remove(name) if name else "Choose a document first."
                return library.rows(), message, gr.update(choices=library.names(), value=None)

            upload.upload(on_upload, upload, [table, status, to_remove, upload], api_name=False)
            remove.click(on_remove, to_remove, [table, status, to_remove], api_name=False)
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
    except Exception:
        log.exception("API question failed")
        return {"question": shown, "error": "Something went wrong while answering; please try again."}


def theme() -> gr.themes.Base:
    """System fonts only: the page must not fetch web fonts (it runs offline)."""
    return gr.themes.Soft(
        font=("Noto Naskh Arabic", "Noto Sans Arabic", "Noto Sans", "Tahoma", "sans-serif"),
        font_mono=("Noto Sans Mono", "monospace"),
    )
