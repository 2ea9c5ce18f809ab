"""`python -m eval`: run question sets through the full pipeline and score every stage.

    python -m eval --questions eval/questions/seeds.jsonl [--docs seeds] [--k 5] [--json OUT]
    python -m eval --squad ../shared/data/arcd-train.json [--questions extra.jsonl] [--retriever bm25]
    python -m eval --questions eval/questions/followups.jsonl [--no-history]

The pipeline is the same `Pipeline` the CLI and UI use, with the same defaults; only the flags given
change. Indexes for evaluation are cached under data/eval/ and updated incrementally.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from tqdm import tqdm

from core.config import PROJECT_ROOT, Config, add_arguments
from eval.metrics import (
    contains,
    exact_match,
    first_hit,
    mean,
    percentile,
    recall_at,
    reciprocal_rank,
    token_f1,
)
from eval.questions import Question, QuestionFileError, load_jsonl, load_squad
from index import store
from index.build import apply_changes, build_folder, store_for
from index.embed import EmbedderUnavailable, load_embedder
from rag.chain import Pipeline

EVAL_ROOT = PROJECT_ROOT / "data" / "eval"
RANK_CUTOFF = 10
_MARKER_RE = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Corpus:
    """What to index for a run: a folder, or documents parsed from a SQuAD file."""

    name: str
    folder: Path | None = None
    documents: tuple[Document, ...] = ()


def index_dir_for(corpus: Corpus, embedder: str) -> Path:
    key = hashlib.sha256(
        f"{corpus.folder.resolve() if corpus.folder else corpus.name}|{embedder}".encode()
    ).hexdigest()[:10]
    return EVAL_ROOT / f"{corpus.name}-{key}"


def for_corpus(config: Config, corpus: Corpus) -> Config:
    """The config pointed at the corpus's own evaluation index (never the user's index or collection)."""
    folder = index_dir_for(corpus, config.embedder)
    if config.store == "milvus":
        return config.replace(index_dir=folder, milvus_collection=f"eval_{folder.name.replace('-', '_')}")
    return config.replace(index_dir=folder)


def prepare_index(config: Config, corpus: Corpus, show_progress: bool) -> store.StoredIndex:
    """Build or incrementally update the evaluation index for the corpus."""
    embedder = load_embedder(config.embedder, config.embed_batch_size)
    with tqdm(total=0, unit="chunk", desc="indexing", disable=not show_progress, file=sys.stderr, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        if corpus.folder is not None:
            index, _ = build_folder(config, embedder, progress=progress, log=lambda m: tqdm.write(m, file=sys.stderr))
            return index
        try:
            known = set(store_for(config).read_manifest()["files"])
        except store.IndexProblem:
            known = set()
        wanted = {d.metadata["source"] for d in corpus.documents}
        rebuild = not known
        index, _ = apply_changes(config, embedder, list(corpus.documents), sorted(known - wanted), rebuild, progress)
        return index


def evaluate_question(pipeline: Pipeline, question: Question, k: int) -> dict[str, Any]:
    """Run one question through retrieval (top 10, for ranking metrics) and the full chain.

    A question's `history` (earlier questions) reaches the chain as turns with empty answers: the
    extractive follow-up resolver reads only earlier questions, and not answering them keeps each
    follow-up's score independent of how well the question before it was answered.
    """
    # The answer goes first, cold, so its timings are what a user would see; the ranking pass for
    # the retrieval metrics (top 10) comes after and is not timed.
    answer = pipeline.ask(question.question, k=k, history=[(earlier, "") for earlier in question.history])
    searched = answer.standalone_question or question.question
    ranked = pipeline.retriever.invoke(searched, k=max(RANK_CUTOFF, k))

    def relevant(passage_source: str, passage_text: str) -> bool:
        if question.gold_sources:
            return passage_source in question.gold_sources
        return contains(passage_text, question.answers)

    rank = first_hit([relevant(d.metadata["source"], d.page_content) for d in ranked]) if question.answerable else None
    cited_ok = [contains(c.text, question.answers) for c in answer.citations] if question.answerable else []
    scored = question.answerable and not answer.abstained
    return {
        "id": question.id,
        "question": question.question,
        "history": list(question.history),
        "standalone_question": searched,
        "kind": question.kind,
        "gold": question.answers,
        "answerable": question.answerable,
        "answer": answer.answer,
        "abstained": answer.abstained,
        "mode": answer.mode,
        "grounded": answer.grounded,
        "confidence": answer.confidence,
        "rank": rank,
        "contains": contains(answer.answer, question.answers)
        if question.answerable and not answer.abstained
        else False,
        "exact_match": exact_match(answer.answer, question.answers)
        if question.answerable and not answer.abstained
        else 0.0,
        "f1": token_f1(answer.answer, question.answers) if question.answerable and not answer.abstained else 0.0,
        "answer_words": len(_MARKER_RE.sub(" ", answer.answer).split()) if not answer.abstained else 0,
        "short_answer": answer.short_answer,
        **short_answer_scores(answer.short_answer, question.answers if scored else []),
        "citations": [
            {"source": c.source, "start": c.start, "end": c.end, "page": c.page, "section": c.section, "correct": ok}
            for c, ok in zip(answer.citations, cited_ok)
        ],
        "retrieved": [d.metadata["source"] for d in ranked[:k]],
        "retrieval_ms": answer.timings_ms.get("retrieval", 0.0),
        "total_ms": answer.timings_ms.get("total", 0.0),
    }


def short_answer_scores(short_answer: str, gold: list[str]) -> dict[str, float]:
    """SQuAD F1 / exact match / containment of the short answer (all 0 with no gold to score)."""
    return {
        "short_f1": token_f1(short_answer, gold),
        "short_exact_match": exact_match(short_answer, gold),
        "short_contains": float(contains(short_answer, gold)),
        "short_words": float(len(short_answer.split())),
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, float]:
    answerable = [r for r in records if r["answerable"]]
    unanswerable = [r for r in records if not r["answerable"]]
    answered = [r for r in answerable if not r["abstained"]]
    citations = [c["correct"] for r in answered for c in r["citations"]]
    return {
        "questions": len(records),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "recall@1": mean([recall_at(r["rank"], 1) for r in answerable]),
        "recall@5": mean([recall_at(r["rank"], 5) for r in answerable]),
        "mrr@10": mean([reciprocal_rank(r["rank"], RANK_CUTOFF) for r in answerable]),
        "answer_contains": mean([float(r["contains"]) for r in answerable]),
        "exact_match": mean([r["exact_match"] for r in answerable]),
        "f1": mean([r["f1"] for r in answerable]),
        "answer_words": mean([float(r["answer_words"]) for r in records if not r["abstained"]]),
        "short_f1": mean([r["short_f1"] for r in answerable]),
        "short_exact_match": mean([r["short_exact_match"] for r in answerable]),
        "short_contains": mean([r["short_contains"] for r in answerable]),
        "short_words_median": percentile([r["short_words"] for r in records if not r["abstained"]], 50),
        "citation_precision": mean([float(c) for c in citations]),
        "answered_with_correct_citation": mean([float(any(c["correct"] for c in r["citations"])) for r in answered]),
        "abstain_on_unanswerable": mean([float(r["abstained"]) for r in unanswerable]),
        "wrong_abstain_on_answerable": mean([float(r["abstained"]) for r in answerable]),
        "retrieval_p50_ms": percentile([r["retrieval_ms"] for r in records], 50),
        "retrieval_p95_ms": percentile([r["retrieval_ms"] for r in records], 95),
        "answer_p50_ms": percentile([r["total_ms"] for r in records], 50),
        "answer_p95_ms": percentile([r["total_ms"] for r in records], 95),
        "llm_fallbacks": float(sum(r["mode"] == "extractive-fallback" for r in records)),
        "ungrounded_answers": float(sum(not r["grounded"] and not r["abstained"] for r in records)),
    }


def format_table(metrics: dict[str, float], title: str) -> str:
    width = max(len(k) for k in metrics)
    lines = [title, "-" * (width + 12)]
    for key, value in metrics.items():
        counts = ("questions", "answerable", "unanswerable", "llm_fallbacks", "ungrounded_answers")
        shown = f"{value:.0f}" if key in counts else f"{value:.3f}"
        lines.append(f"{key:<{width}}  {shown:>9}")
    return "\n".join(lines)


def run(
    config: Config, corpus: Corpus, questions: list[Question], k: int, show_progress: bool = True
) -> dict[str, Any]:
    """Index the corpus, answer every question, and return metrics plus per-question records."""
    index = prepare_index(config, corpus, show_progress)
    pipeline = Pipeline(config, index=index)
    pipeline.embedder.clear_cache()  # runs in one process must not inherit each other's warm cache
    records = [
        evaluate_question(pipeline, q, k)
        for q in tqdm(questions, desc="questions", unit="q", disable=not show_progress, file=sys.stderr)
    ]
    return {
        "corpus": corpus.name,
        "chunks": len(index.chunks),
        "retriever": config.retriever,
        "answer_mode": pipeline.default_mode,
        "embedder": config.embedder,
        "k": k,
        "metrics": summarise(records),
        "records": records,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description="Evaluate the QA pipeline on question sets.")
    parser.add_argument("--questions", type=Path, action="append", default=[], help="JSONL question file (repeatable)")
    parser.add_argument("--squad", type=Path, help="SQuAD-format JSON: its paragraphs are the corpus")
    parser.add_argument("--json", type=Path, dest="json_out", help="write metrics and per-question records here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-history", action="store_true", help="ask every question alone, ignoring its 'history' (the baseline)"
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
    )
    args = parser.parse_args(argv)
    if not args.questions and not args.squad:
        parser.error("give --questions FILE.jsonl and/or --squad FILE.json")
    try:
        questions: list[Question] = []
        if args.squad:
            documents, questions = load_squad(args.squad)
            corpus = Corpus(f"squad-{args.squad.stem}", documents=tuple(documents))
        else:
            base = Config.from_args(args)
            corpus = Corpus(f"docs-{base.docs_dir.name}", folder=base.docs_dir)
        for path in args.questions:
            questions.extend(load_jsonl(path))
        if args.no_history:
            questions = [replace(q, history=()) for q in questions]
        config = Config.from_args(args)
        config = for_corpus(config, corpus)
        result = run(config, corpus, questions, config.k, show_progress=not args.quiet)
    except (QuestionFileError, store.IndexProblem, EmbedderUnavailable, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(str(p) for p in ([args.squad] if args.squad else []) + args.questions)
    names += " (history ignored)" if args.no_history else ""
    title = (
        f"{names} | retriever={config.retriever} answers={result['answer_mode']} k={config.k} chunks={result['chunks']}"
    )
    print(format_table(result["metrics"], title))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
