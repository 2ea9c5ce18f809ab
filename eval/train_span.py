"""`python -m eval.train_span [--squad FILE] [--folds 5] [--out rag/span_weights.json] [--scoring NAME=VALUE]`: train the
short answer span ranker and report its held-out quality.

For every answerable question the pipeline retrieves passages and ranks sentences exactly as at
answer time; the candidate spans of the best sentences get features (rag/extract.py) and a
label, their SQuAD token F1 against the gold answers. A linear ranker (softmax over a question's
spans, target: spans weighted by their F1; L2-regularised, fitted with L-BFGS) is trained by
k-fold cross-validation grouped by article, so no question is scored by a model that saw its
article, and each held-out question is then answered by the real answerer with that fold's model.
Only these held-out numbers are reported. The shipped weights are then fitted on all questions.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from langchain_core.documents import Document
from scipy.optimize import minimize
from tqdm import tqdm

from core.config import Config
from eval.metrics import contains, mean, percentile, token_f1
from eval.questions import Question, load_squad
from eval.results import ARCD
from eval.runner import MARKER_RE as _MARKER_RE
from eval.runner import Corpus, for_corpus, prepare_index, short_answer_scores
from rag.answer import AnswerRequest, ExtractiveAnswerer
from rag.chain import Pipeline, clean_question
from rag.extract import FEATURES, Sentence, SpanModel, sentence_candidates, span_candidates
from rag.scoring import SPAN_WEIGHTS, AnswerScoring

# L2 strength: held-out short F1 on ARCD 0.301 / 0.300 at 0.001 / 0.01 (python -m eval.train_span --l2 ...).
L2 = 0.01
# Held-out short F1 on ARCD: 0.299 with only the best spans as target, 0.321 with this soft target.
TARGET_SHARPNESS = 4.0


@dataclass
class Case:
    """One question as the answerer sees it: passages, sentences and their scores, and then the
    candidate spans' features and F1 against the gold answers."""

    question: Question
    text: str
    passages: list[Document]
    sentences: list[Sentence]
    sentence_features: np.ndarray
    scores: np.ndarray
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(FEATURES)), np.float32))
    f1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def article(self) -> str:
        return article(self.question)


def retrieve(pipeline: Pipeline, questions: list[Question]) -> list[Case]:
    """Retrieve and rank sentences for each question, as the answerer does (the slow part)."""
    answerer = pipeline.answerer
    cases = []
    for q in tqdm(questions, desc="retrieval", leave=False):
        text = clean_question(q.question, 10_000)
        passages = pipeline.retriever.invoke(text, k=pipeline.config.k)[: answerer.scoring.passages_considered]
        sentences = sentence_candidates(passages, answerer.max_words)
        if sentences:
            features = answerer.features(text, passages, sentences)
            scores = answerer.scoring.sentence_scores(features)[0]
            cases.append(Case(q, text, passages, sentences, features, scores))
    return cases


def label(answerer: ExtractiveAnswerer, cases: list[Case]) -> None:
    """Candidate spans of each case's best sentences, their features and their F1."""
    scoring = answerer.scoring
    for c in cases:
        chosen = scoring.ranked(c.scores)[: scoring.span_sentences]
        candidates = span_candidates(
            c.text,
            c.passages,
            c.sentences,
            chosen,
            c.sentence_features,
            c.scores,
            answerer.term_weight,
            scoring.span_max_words,
        )
        c.features = candidates.features
        c.f1 = np.array([token_f1(t, c.question.answers) for t in candidates.texts()], dtype=np.float32)


def fit(cases: list[Case], l2: float) -> SpanModel:
    """Softmax ranker over each question's spans; questions with no overlapping span are skipped."""
    usable = [c for c in cases if len(c.f1) and c.f1.max() > 0]
    x = np.vstack([c.features for c in usable]).astype(np.float64)
    mean_, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = (x - mean_) / scale
    starts = np.cumsum([0] + [len(c.f1) for c in usable[:-1]])
    group = np.repeat(np.arange(len(usable)), [len(c.f1) for c in usable])
    # Soft target: each span in proportion to (F1 / best F1) ** TARGET_SHARPNESS, so near misses
    # ("مايو 2012 تم" for "مايو 2012") count too, less than the best.
    credit = np.concatenate([(c.f1 / c.f1.max()).astype(np.float64) ** TARGET_SHARPNESS for c in usable])
    target = credit / np.add.reduceat(credit, starts)[group]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        z = z - np.maximum.reduceat(z, starts)[group]
        log_norm = np.log(np.add.reduceat(np.exp(z), starts))
        log_p = z - log_norm[group]
        value = -float(target @ log_p) / len(usable) + 0.5 * l2 * float(w @ w)
        grad = x.T @ (np.exp(log_p) - target) / len(usable) + l2 * w
        return value, grad

    result = minimize(loss, np.zeros(len(FEATURES)), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    info = {"questions": len(usable), "l2": l2, "loss": round(float(result.fun), 4)}
    return SpanModel(FEATURES, mean_.astype(np.float32), scale.astype(np.float32), result.x.astype(np.float32), info)


def article_folds(articles: set[str], folds: int) -> dict[str, int]:
    """Each article's fold (seeded), shared by every trainer so their held-out numbers compare."""
    ordered = sorted(articles)
    return dict(zip(ordered, (int(f) for f in np.random.default_rng(0).permutation(len(ordered)) % folds)))


def article(question: Question) -> str:
    """A SQuAD question's article: its gold paragraph's source is "<article>-<paragraph>.txt"."""
    return next(iter(question.gold_sources)).split("-")[0]


def cross_validate(
    pipeline: Pipeline,
    cases: list[Case],
    folds: int,
    l2: float,
    reader_folds: Path | None = None,
    only_fold: int | None = None,
) -> dict[str, float]:
    """Held-out metrics: each article's questions are answered with a model trained without it
    (and, with `reader_folds`, by the reader `python -m eval.train_reader --save-folds` trained
    without it: the same folds)."""
    fold_of = article_folds({c.article for c in cases}, folds)
    scoring = pipeline.answerer.scoring
    shipped = scoring.span_model
    rows: list[dict[str, float]] = []
    try:
        for fold in range(folds) if only_fold is None else [only_fold]:
            scoring.span_model = fit([c for c in cases if fold_of[c.article] != fold], l2)
            if reader_folds is not None:
                from rag.reader import AnswerReader  # torch: only for this comparison (~2 s to import)

                pipeline.answerer.reader = AnswerReader.load(reader_folds / f"fold{fold}.npz")
            for c in (c for c in cases if fold_of[c.article] == fold):
                answer = pipeline.answerer.invoke(AnswerRequest(c.text, c.passages))
                gold = [] if answer.abstained else c.question.answers
                row = short_answer_scores(answer.short_answer, gold)
                row["contains"] = float(contains(answer.answer, gold)) if gold else 0.0
                row["answer_words"] = float(len(_MARKER_RE.sub(" ", answer.answer).split()))
                row["oracle_f1"] = float(c.f1.max()) if len(c.f1) else 0.0
                rows.append(row)
    finally:
        scoring.span_model = shipped
        pipeline.answerer.reader = pipeline.reader
    return {
        "questions": float(len(rows)),
        "short_f1": mean([r["short_f1"] for r in rows]),
        "short_exact_match": mean([r["short_exact_match"] for r in rows]),
        "short_contains": mean([r["short_contains"] for r in rows]),
        "short_words_median": percentile([r["short_words"] for r in rows], 50),
        "answer_contains": mean([r["contains"] for r in rows]),
        "answer_words": mean([r["answer_words"] for r in rows]),
        "best_candidate_f1": mean([r["oracle_f1"] for r in rows]),
    }


def scoring_change(text: str) -> tuple[str, float]:
    """`NAME=VALUE` for a numeric `AnswerScoring` field (argparse type), so a comparison run varies
    exactly what the answerer runs with."""
    name, _, value = text.partition("=")
    numeric = {f.name for f in fields(AnswerScoring) if f.type in ("float", "int")}
    if name not in numeric:
        raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(sorted(numeric))}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number") from None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.train_span", description=__doc__)
    parser.add_argument("--squad", type=Path, default=ARCD)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-fold", type=int, help="report one fold's held-out questions only (a quick signal)")
    parser.add_argument("--l2", type=float, action="append", help=f"L2 strength(s) to compare (default {L2})")
    parser.add_argument("--out", type=Path, default=SPAN_WEIGHTS, help="where to write the weights")
    parser.add_argument("--no-write", action="store_true", help="only report the cross-validation")
    parser.add_argument(
        "--scoring",
        type=scoring_change,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a numeric AnswerScoring field for this run (e.g. soft_match_credit=0), to compare",
    )
    parser.add_argument(
        "--reader-folds",
        type=Path,
        metavar="DIR",
        help="answer with the fine-tuned reader of each fold (DIR/foldK.npz from eval.train_reader --save-folds)",
    )
    args = parser.parse_args()
    if (args.reader_folds or args.only_fold is not None) and not args.no_write:
        parser.error("--reader-folds and --only-fold are for comparisons: add --no-write")
    if args.scoring and not args.no_write:
        parser.error("--scoring is for comparisons: add --no-write (the shipped weights go with the shipped scoring)")
    documents, questions = load_squad(args.squad)
    corpus = Corpus(f"squad-{args.squad.stem}", documents=tuple(documents))
    config = for_corpus(Config.from_env(), corpus)
    pipeline = Pipeline(config, index=prepare_index(config, corpus, show_progress=True))
    for name, value in args.scoring:
        kind = type(getattr(pipeline.answerer.scoring, name))
        setattr(pipeline.answerer.scoring, name, kind(value))
    answerable = [q for q in questions if q.answerable]
    cases = retrieve(pipeline, answerable)
    if args.reader_folds and {c.article for c in cases} != {article(q) for q in answerable}:
        parser.error("some article has no retrieved sentences, so folds would differ from eval.train_reader's")
    label(pipeline.answerer, cases)
    for l2 in args.l2 or [L2]:
        metrics = cross_validate(pipeline, cases, args.folds, l2, args.reader_folds, args.only_fold)
        shown = "  ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        print(f"{args.folds}-fold by article, held out, l2={l2}: {shown}", flush=True)
    if not args.no_write:
        model = fit(cases, (args.l2 or [L2])[0])
        replace(model, info={**model.info, "command": "python -m eval.train_span", "data": args.squad.name}).save(
            args.out
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
