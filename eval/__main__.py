"""`python -m eval`: run question sets through the full pipeline and score every stage.

    python -m eval --questions eval/questions/seeds.jsonl [--docs DIR (default seeds/)] [--k 5] [--json OUT]
    python -m eval --squad ../shared/data/arcd-train.json [--questions extra.jsonl] [--retriever bm25]
    python -m eval --questions eval/questions/followups.jsonl [--no-history]
    python -m eval --feedback data/index [--export-feedback regressions.jsonl]

The pipeline is the same `Pipeline` the CLI and UI use, with the same defaults; only the flags given
change. Indexes for evaluation are cached under data/eval/ and updated incrementally.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from core.config import SEEDS_DIR, Config, add_arguments, chosen
from eval.questions import Question, QuestionFileError, load_jsonl, squad_set
from eval.runner import Corpus, for_corpus, format_kinds, format_table, run
from index import store
from index.embed import EmbedderUnavailable
from rag.feedback import FEEDBACK_FILE, FeedbackLog, regression_questions


def from_feedback(index_dir: Path, export: Path | None) -> list[Question]:
    """The regression questions of an index's feedback file (rag/feedback.py), said how many."""
    given, unreadable = FeedbackLog(index_dir).read()
    made = regression_questions(given)
    print(
        f"feedback: {len(given)} verdicts in {index_dir / FEEDBACK_FILE} -> {len(made.questions)} questions "
        f"({made.unscored} 👎 without a right answer left out, {unreadable} unreadable lines)",
        file=sys.stderr,
    )
    if not made.questions:
        raise QuestionFileError(f"{index_dir / FEEDBACK_FILE}: no verdict that can be scored yet")
    if export:
        lines = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in made.questions)
        export.write_text(lines, encoding="utf-8")
    return [
        Question(q["id"], q["question"], q["answers"], q.get("doc"), q["kind"], history=tuple(q.get("history", ())))
        for q in made.questions
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description="Evaluate the QA pipeline on question sets.")
    parser.add_argument("--questions", type=Path, action="append", default=[], help="JSONL question file (repeatable)")
    parser.add_argument(
        "--squad",
        help="SQuAD-format JSON, or a set of ../shared/data by name (arcd, xquad-ar, xquad-en: English questions "
        "over the Arabic paragraphs, tydi-ar): its paragraphs are the corpus",
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write metrics and per-question records here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-history", action="store_true", help="ask every question alone, ignoring its 'history' (the baseline)"
    )
    parser.add_argument(
        "--answer-history",
        action="store_true",
        help="answer the earlier questions first, so a follow-up also sees the answers (what a chat does)",
    )
    parser.add_argument(
        "--feedback",
        type=Path,
        metavar="INDEX",
        help="users' verdicts on answers (INDEX/feedback.jsonl, from the UI's 👍/👎 and POST /api/feedback): "
        "corrections and confirmed answers become questions over the folder that index was built from",
    )
    parser.add_argument(
        "--export-feedback",
        type=Path,
        metavar="OUT",
        help="with --feedback: also write those questions as a JSONL file",
    )
    add_arguments(
        parser,
        "docs_dir",
        "k",
        "retriever",
        "embedder",
        "store",
        "milvus_uri",
        "llm_base_url",
        "llm_model",
        "llm_timeout_s",
        "answer_reader",
    )
    args = parser.parse_args(argv)
    if not args.questions and not args.squad and not args.feedback:
        parser.error("give --questions FILE.jsonl, --squad FILE.json and/or --feedback INDEX")
    try:
        questions: list[Question] = []
        if args.squad:
            source = squad_set(args.squad)
            documents, questions = source.load()
            corpus = Corpus(f"squad-{source.path.stem}", documents=tuple(documents))
        else:
            # seeds/ unless a folder is named: never what a user uploaded into data/docs (issue 29);
            # feedback is about the documents of the index it was given on.
            folder = Config.from_args(args).docs_dir if chosen(args, "docs_dir") else SEEDS_DIR
            if args.feedback and not chosen(args, "docs_dir"):
                folder = store.recorded_docs_dir(args.feedback) or folder
            corpus = Corpus(f"docs-{folder.name}", folder=folder)
        for path in args.questions:
            questions.extend(load_jsonl(path))
        if args.feedback:
            questions.extend(from_feedback(args.feedback, args.export_feedback))
        if args.no_history:
            questions = [replace(q, history=()) for q in questions]
        config = Config.from_args(args)
        config = for_corpus(config, corpus)
        result = run(
            config, corpus, questions, config.k, show_progress=not args.quiet, answer_history=args.answer_history
        )
    except (QuestionFileError, store.IndexProblem, EmbedderUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(str(p) for p in ([args.squad] if args.squad else []) + args.questions)
    names += " (history ignored)" if args.no_history else " (earlier questions answered)" if args.answer_history else ""
    title = (
        f"{names} | retriever={config.retriever} answers={result['answer_mode']} k={config.k} chunks={result['chunks']}"
    )
    print(format_table(result["metrics"], title))
    if set(result["by_kind"]) - {"(none)"}:
        print("\nanswerable questions by kind\n" + format_kinds(result["by_kind"]))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
