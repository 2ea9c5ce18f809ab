"""`python -m eval.tune --squad FILE [--questions UNANSWERABLE.jsonl]`: grid-search the tunable weights.

Prints, for the fusion weight, recall@5 / MRR@10, and for the extractive answerer's sentence weights
and runner-up ratio, containment of the evidence sentences; then the abstention trade-off by threshold; and both
against the number of answer sentences embedded per question. Features are
computed once per question, so a grid costs seconds. The chosen values live in `core/config.py` and
`rag/scoring.py` (`AnswerScoring`, the object this script varies); this script is how they were
chosen. The short answer span ranker is trained separately, by `python -m eval.train_span`.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from tqdm import tqdm

from core.config import Config
from eval.metrics import contains, first_hit, mean, recall_at, reciprocal_rank
from eval.questions import Question, load_jsonl, load_squad
from eval.runner import Corpus, for_corpus, prepare_index
from rag.chain import Pipeline, clean_question
from rag.extract import Sentence, sentence_candidates
from rag.scoring import AnswerScoring


def tune_fusion(pipeline: Pipeline, questions: list[Question]) -> None:
    for weight in (0.3, 0.4, 0.5, 0.6, 0.7):
        pipeline.retriever.dense_weight = weight
        ranks = []
        for q in questions:
            docs = pipeline.retriever.invoke(clean_question(q.question, 10_000), k=10)
            ranks.append(first_hit([d.metadata["source"] in q.gold_sources for d in docs]))
        print(
            f"dense_weight={weight:.1f}  recall@1={mean([recall_at(r, 1) for r in ranks]):.3f}  "
            f"recall@5={mean([recall_at(r, 5) for r in ranks]):.3f}  mrr@10={mean([reciprocal_rank(r) for r in ranks]):.3f}"
        )


Retrieved = list[tuple[Question, str, list[Document], list[Sentence]]]


def retrieve_all(pipeline: Pipeline, questions: list[Question]) -> Retrieved:
    """(question, cleaned text, passages the answerer considers, their candidate sentences), once
    per question: the answer grids below only re-score these."""
    answerer = pipeline.answerer
    out = []
    for q in tqdm(questions, desc="retrieval", leave=False):
        text = clean_question(q.question, 10_000)
        passages = pipeline.retriever.invoke(text, k=pipeline.config.k)[: answerer.scoring.passages_considered]
        out.append((q, text, passages, sentence_candidates(passages, answerer.max_words)))
    return out


def evidence(
    scoring: AnswerScoring, candidates: list[Sentence], s: np.ndarray, own: np.ndarray, budget: int
) -> list[int]:
    """The evidence sentences the answerer would show when the short answer is in the best
    sentence (its usual case): what sentence weights are tuned for."""
    return scoring.evidence(scoring.ranked(s)[0], [c.words for c in candidates], s, own, budget)


def tune_answers(pipeline: Pipeline, retrieved: Retrieved) -> None:
    answerer = pipeline.answerer
    scoring = answerer.scoring
    cases = []
    for q, text, passages, candidates in retrieved:
        features = answerer.features(text, passages, candidates) if candidates else np.zeros((0, 5), np.float32)
        dense0 = float(passages[0].metadata["dense_score"]) if passages else 0.0
        cases.append((q, candidates, features, dense0))

    words_used = [0, 0]

    def score(weights: tuple[float, ...], ratio: float) -> tuple[float, list[float]]:
        scoring.runner_up_ratio = ratio
        hits, confidences = [], []
        words_used[:] = [0, 0]
        for q, candidates, features, dense0 in cases:
            if not candidates:
                hits.append(0.0)
                confidences.append(0.0)
                continue
            scoring.sentence_weights = weights  # type: ignore[assignment]
            s, own = scoring.sentence_scores(features)
            chosen = evidence(scoring, candidates, s, own, answerer.max_words)
            text = " ".join(candidates[i].text for i in chosen)
            words_used[0] += sum(candidates[i].words for i in chosen)
            words_used[1] += 1
            if q.answerable:
                hits.append(float(contains(text, q.answers)))
            confidences.append(scoring.confidence(s, own, dense0))
        return mean(hits), confidences

    results = []
    grid = itertools.product((0.3, 0.45, 0.6), (0.1, 0.2, 0.35), (0.0, 0.1, 0.2), (0.0, 0.1), (0.0, 0.2))
    for weights in grid:
        for ratio in (0.5, 0.8, 1.0):
            containment, _ = score(weights, ratio)
            results.append((containment, weights, ratio, words_used[0] / max(1, words_used[1])))
    results.sort(reverse=True)
    for containment, weights, ratio, words in results[:10]:
        print(f"containment={containment:.3f} mean_words={words:.1f} weights={weights} runner_up_ratio={ratio}")
    best_weights, best_ratio = results[0][1], results[0][2]
    for mix in (0.0, 0.5, 1.0):
        scoring.confidence_mix = mix
        _, confidences = score(best_weights, best_ratio)
        abstention_table(cases, confidences, f"confidence_mix={mix}")


def tune_dense_sentences(pipeline: Pipeline, cases: Retrieved) -> None:
    """Containment and abstention against the number of answer sentences embedded per question
    (each costs ~30 ms on 2 cores, the answerer's main cost)."""
    answerer = pipeline.answerer
    scoring = answerer.scoring
    default = scoring.dense_candidates
    for n in (0, 1, 2, 4, 10):
        scoring.dense_candidates = n
        hits, confidences = [], []
        for q, text, passages, candidates in cases:
            if not candidates:
                hits += [0.0] if q.answerable else []
                confidences.append(0.0)
                continue
            s, own = scoring.sentence_scores(answerer.features(text, passages, candidates))
            chosen = evidence(scoring, candidates, s, own, answerer.max_words)
            if q.answerable:
                hits.append(float(contains(" ".join(candidates[i].text for i in chosen), q.answers)))
            confidences.append(scoring.confidence(s, own, float(passages[0].metadata.get("dense_score", 0.0))))
        print(f"dense_candidates={n}  containment={mean(hits):.3f}")
        abstention_table(cases, confidences, f"dense_candidates={n}", [scoring.abstain_threshold])
    scoring.dense_candidates = default


def abstention_table(
    cases: Sequence[tuple[Any, ...]], confidences: list[float], label: str, thresholds: list[float] | None = None
) -> None:
    answerable = [c for (q, *_), c in zip(cases, confidences) if q.answerable]
    unanswerable = [c for (q, *_), c in zip(cases, confidences) if not q.answerable]
    print(label)
    for threshold in np.arange(0.1, 0.62, 0.03) if thresholds is None else thresholds:
        print(
            f"threshold={threshold:.2f}  abstain_on_unanswerable={mean([float(c < threshold) for c in unanswerable]):.3f}  "
            f"wrong_abstain={mean([float(c < threshold) for c in answerable]):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.tune", description=__doc__)
    parser.add_argument("--squad", type=Path, required=True)
    parser.add_argument("--questions", type=Path, action="append", default=[], help="extra (unanswerable) questions")
    args = parser.parse_args()
    documents, questions = load_squad(args.squad)
    corpus = Corpus(f"squad-{args.squad.stem}", documents=tuple(documents))
    config = Config.from_env()
    config = for_corpus(config, corpus)
    pipeline = Pipeline(config, index=prepare_index(config, corpus, show_progress=True))
    tune_fusion(pipeline, questions)
    pipeline.retriever.dense_weight = config.dense_weight
    extra = [q for path in args.questions for q in load_jsonl(path)]
    retrieved = retrieve_all(pipeline, questions + extra)
    tune_dense_sentences(pipeline, retrieved)
    tune_answers(pipeline, retrieved)


if __name__ == "__main__":
    main()
