"""`python -m rag ask "QUESTION" [--k N] [--index DIR] [--json]`; `ask --json -` answers stdin lines.

A question the index store cannot answer (a Milvus server that is down, frozen, restarting or
refuses the credentials) gets one error line, like a refused question, and the batch goes on: a
restarting server answers again a minute later, and every call is bounded by the store's timeout.
The batch then ends with a one-line summary on stderr and exit status 1.

Follow-ups: `--history "EARLIER QUESTION"` (repeatable, oldest first) gives a question its conversation;
`ask - --conversation` makes each stdin line a follow-up of the lines before it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Iterable

from core.config import Config, add_arguments
from core.errors import ConfigError, UserError
from index.arabic import language
from index.formats import describe_location
from index.load import safe_name, terminal_safe
from rag.answer import Answer, cited_pages
from rag.chain import Pipeline, QuestionError
from rag.followup import MAX_HISTORY_TURNS


def render(answer: Answer, streamed: bool = False) -> str:
    """Human-readable answer: the short answer first, then the answer with its numbered sources
    (the answer itself is skipped when it was already streamed to the terminal, unless the LLM
    failed and the fallback answer replaced it)."""
    lines = []
    if answer.notice:
        lines.append(f"[{answer.notice}]")
    if answer.short_answer:
        lines.append(f"» {answer.short_answer}")
    if answer.standalone_question and answer.standalone_question != answer.question:
        lines.append(f"[follow-up, searched as: {answer.standalone_question}]")
    if not streamed or answer.mode != "llm" or answer.abstained:
        lines.append(answer.answer)
    if answer.mode == "llm" and not answer.grounded and not answer.abstained:
        lines.append("[warning: the answer cites no valid passage]")
    lines.append("")
    shown = answer.related if answer.abstained else answer.citations
    # Where a passage is, in the question's language ("paragraph 1" under an Arabic question was a
    # new user's complaint); the rest of these lines are the CLI's own English.
    arabic = language(answer.question) == "ar"
    if answer.abstained and shown:
        lines.append("Related passages:")
    for c in shown:
        snippet = " ".join(c.text.split())
        snippet = snippet if len(snippet) <= 200 else snippet[:200] + " …"
        page, page_end = cited_pages(c)
        where = describe_location(page, page_end, c.section, c.ocr, arabic=arabic, paragraph=c.paragraph)
        lines.append(
            f"[{c.n}] {safe_name(c.title)} — {safe_name(c.source)}{' · ' + where if where else ''} "
            f"({c.start}–{c.end})\n    {snippet}"
        )
    return terminal_safe("\n".join(lines))


def _questions(args: argparse.Namespace) -> Iterable[str]:
    if args.question == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        for line in stdin:
            if line.strip():
                yield line.rstrip("\n")
    else:
        yield args.question


def _print_token(token: str) -> None:
    print(terminal_safe(token), end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Ask questions about the indexed documents.")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question (use - to read one question per line from stdin)")
    ask.add_argument("question", help='the question, or "-" for stdin')
    ask.add_argument("--json", action="store_true", help="print one JSON object per question")
    ask.add_argument(
        "--history",
        action="append",
        default=[],
        metavar="EARLIER_QUESTION",
        help="an earlier question of the conversation, for a follow-up (repeatable, oldest first)",
    )
    ask.add_argument(
        "--conversation", action="store_true", help="with -, each stdin line is a follow-up of the lines before it"
    )
    add_arguments(
        ask,
        *("k", "index_dir", "docs_dir", "embedder", "retriever", "store", "milvus_uri"),
        *("llm_base_url", "llm_model", "llm_timeout_s", "answer_reader"),
    )
    args = parser.parse_args(argv)
    if args.conversation and args.question != "-":
        parser.error("--conversation needs questions on stdin (question -)")
    try:
        config = Config.from_args(args)
        if args.question != "-":
            # Refuse a bad question before paying for model and index loading.
            from rag.chain import clean_question

            clean_question(args.question, config.max_question_chars)
        pipeline = Pipeline(config, log=lambda m: print(m, file=sys.stderr))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (QuestionError, ConfigError)) else 1
    status, asked, failed = 0, 0, 0
    # Earlier questions given on the command line have no answer; conversation turns keep theirs
    # (the LLM rewrite reads them, the extractive resolver reads only the questions).
    history: list[tuple[str, str]] = [(earlier, "") for earlier in args.history]
    for question in _questions(args):
        stream = pipeline.config.llm_enabled and not args.json
        asked += 1
        try:
            answer = pipeline.ask(question, history=history, on_token=_print_token if stream else None)
        except UserError as exc:  # a bad question, or a store or endpoint that failed: this line only
            if isinstance(exc, QuestionError):
                status = status or 2
            else:
                status, failed = 1, failed + 1
            if args.json:
                print(json.dumps({"question": question, "error": str(exc)}, ensure_ascii=False), flush=True)
            else:
                print(f"error: {exc}", file=sys.stderr)
            continue
        if args.conversation:
            history = [*history, (question, answer.answer)][-MAX_HISTORY_TURNS:]
        if stream:
            print(flush=True)
        print(json.dumps(answer.to_json(), ensure_ascii=False) if args.json else render(answer, stream), flush=True)
    if failed and args.question == "-":
        print(f"error: {failed} of {asked} questions could not be answered (the index store failed)", file=sys.stderr)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # e.g. piped into `head`
        sys.exit(0)
