"""The evaluation run shared by `python -m eval`, `eval.tune`, `eval.results`, `eval.train_span` and `eval.bench`.

One module builds (or incrementally updates) the evaluation index of a corpus, asks every question
through the product's `Pipeline` and scores each stage, so the CLI, the tuning grids and the results
table measure the same thing; each of those scripts keeps only its own command line.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from tqdm import tqdm

from core.config import PROJECT_ROOT, Config
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
from eval.questions import Question
from index import store
from index.build import apply_changes, build_folder, store_for
from index.embed import load_embedder
from rag.chain import Pipeline

EVAL_ROOT = PROJECT_ROOT / "data" / "eval"
RANK_CUTOFF = 10
# Citation markers ("[1]") are not words of the answer: answer lengths are counted without them.
MARKER_RE = re.compile(r"\[\d+\]")


def cores() -> int:
    """CPUs this process may run on (a container or `taskset` can allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> str:
    """The machine a report's numbers were measured on, read at run time (never written by hand)."""
    return f"{platform.machine()}, {cores()} cores, Python {platform.python_version()}"


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
    """The config pointed at the corpus's own evaluation index (never the user's index or collection)
    and, for a folder corpus, at that folder (never the user's documents folder)."""
    if corpus.folder is not None:
        config = config.replace(docs_dir=corpus.folder)
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


def evaluate_question(pipeline: Pipeline, question: Question, k: int, answer_history: bool = False) -> dict[str, Any]:
    """Run one question through retrieval (top 10, for ranking metrics) and the full chain.

    A question's `history` (earlier questions) reaches the chain as turns with empty answers: the
    extractive follow-up resolver reads only earlier questions, and not answering them keeps each
    follow-up's score independent of how well the question before it was answered.
    """
    # The answer goes first, cold, so its timings are what a user would see; the ranking pass for
    # the retrieval metrics (top 10) comes after and is not timed.
    # With `answer_history`, the earlier questions are answered first in the same conversation, as a
    # chat would, so a follow-up can lean on what the answer named ("وما هو منصبه؟").
    turns: list[tuple[str, str]] = []
    for earlier in question.history:
        said = pipeline.ask(earlier, k=k, history=list(turns)).answer if answer_history else ""
        turns.append((earlier, said))
    answer = pipeline.ask(question.question, k=k, history=turns)
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
        "answer_words": len(MARKER_RE.sub(" ", answer.answer).split()) if not answer.abstained else 0,
        "short_answer": answer.short_answer,
        **short_answer_scores(answer.short_answer, question.answers if scored else []),
        # The gate (rag/short_gate.py): the candidate short answer whether shown or withheld, its
        # probability, and why it was withheld ("" when shown).
        "short_candidate": answer.short_answer_check.get("candidate", ""),
        "short_candidate_f1": token_f1(answer.short_answer_check.get("candidate", ""), question.answers)
        if scored
        else 0.0,
        "short_probability": answer.short_answer_check.get("probability", 0.0),
        "short_withheld": answer.short_answer_check.get("withheld", ""),
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
        # Of the short answers shown in bold, the share that is right (F1 >= 0.5); and the share of
        # answerable questions that get one. A withheld short answer scores 0 in short_f1 above;
        # short_candidate_f1 is what the bold answer would score if it were always shown.
        "short_precision": mean([float(r["short_f1"] >= 0.5) for r in answerable if r["short_answer"]]),
        "short_coverage": mean([float(bool(r["short_answer"])) for r in answerable]),
        "short_candidate_f1": mean([r["short_candidate_f1"] for r in answerable]),
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


def by_kind(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Answer metrics of the answerable questions of each kind (a question file's "kind" field),
    so a change that helps one kind of question and hurts another shows as such."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["answerable"]:
            kinds.setdefault(r["kind"] or "(none)", []).append(r)
    return {
        kind: {
            "questions": len(rs),
            "answer_contains": mean([float(r["contains"]) for r in rs]),
            "short_f1": mean([r["short_f1"] for r in rs]),
            "short_contains": mean([r["short_contains"] for r in rs]),
        }
        for kind, rs in sorted(kinds.items())
    }


def format_kinds(kinds: dict[str, dict[str, float]]) -> str:
    width = max(len("kind"), *(len(k) for k in kinds))
    columns = ["questions", "answer_contains", "short_f1", "short_contains"]
    lines = [f"{'kind':<{width}}  " + "  ".join(f"{c:>15}" for c in columns)]
    for kind, row in kinds.items():
        shown = [f"{row[c]:.0f}" if c == "questions" else f"{row[c]:.3f}" for c in columns]
        lines.append(f"{kind:<{width}}  " + "  ".join(f"{v:>15}" for v in shown))
    return "\n".join(lines)


def format_table(metrics: dict[str, float], title: str) -> str:
    width = max(len(k) for k in metrics)
    lines = [title, "-" * (width + 12)]
    for key, value in metrics.items():
        counts = ("questions", "answerable", "unanswerable", "llm_fallbacks", "ungrounded_answers")
        shown = f"{value:.0f}" if key in counts else f"{value:.3f}"
        lines.append(f"{key:<{width}}  {shown:>9}")
    return "\n".join(lines)


def run(
    config: Config,
    corpus: Corpus,
    questions: list[Question],
    k: int,
    show_progress: bool = True,
    answer_history: bool = False,
) -> dict[str, Any]:
    """Index the corpus, answer every question, and return metrics plus per-question records."""
    index = prepare_index(config, corpus, show_progress)
    pipeline = Pipeline(config, index=index)
    pipeline.embedder.clear_cache()  # runs in one process must not inherit each other's warm cache
    records = [
        evaluate_question(pipeline, q, k, answer_history)
        for q in tqdm(questions, desc="questions", unit="q", disable=not show_progress, file=sys.stderr)
    ]
    return {
        "corpus": corpus.name,
        "chunks": index.size,
        "retriever": config.retriever,
        "answer_mode": pipeline.default_mode,
        "embedder": config.embedder,
        "k": k,
        "metrics": summarise(records),
        "by_kind": by_kind(records),
        "records": records,
    }
