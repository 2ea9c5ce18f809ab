"""Every number that decides an extractive answer, in one public object.

`AnswerScoring` holds the weights, floors and thresholds that rank evidence sentences, decide
whether to abstain, pick the short answer span and compose the answer; `ExtractiveAnswerer` and
`python -m eval.tune` both use its methods, so what is tuned is exactly what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core.config import Config
from rag.extract import SpanModel
from rag.short_gate import GATE_WEIGHTS, ShortAnswerGate

SPAN_WEIGHTS = Path(__file__).resolve().with_name("span_weights.json")


@dataclass(kw_only=True)
class AnswerScoring:
    """Weights, floors and thresholds of the extractive answerer, with the measurement behind each.

    Sentence features (columns of `ExtractiveAnswerer.features`): lexical coverage of the
    question's content words, dense similarity to the question, passage rank prior, answer-type
    match, passage fused score. Tuned on ARCD with `python -m eval.tune`, which prints the grid it chose from.
    """

    # lexical coverage, dense similarity, passage rank prior, answer-type match, passage fused score
    sentence_weights: tuple[float, float, float, float, float] = (0.45, 0.1, 0.2, 0.1, 0.2)
    # Columns every sentence of a passage shares, so they cannot tell its sentences apart.
    passage_columns: tuple[int, ...] = (2, 4)
    # e5 cosine similarity is mapped to 0..1 between floor and floor + range; across languages
    # similarities run lower, so the floor is lower (English seeds questions vs Arabic passages).
    dense_floor: float = 0.75
    cross_language_dense_floor: float = 0.70
    dense_range: float = 0.15
    # The top passage's own similarity backs the confidence: 0 at 0.78, full at 0.88.
    passage_dense_floor: float = 0.78
    passage_dense_range: float = 0.1
    passage_confidence_weight: float = 0.3
    confidence_mix: float = 1.0
    # Abstain below these confidences (Config.abstain_threshold / cross_language_abstain_threshold:
    # across languages the confidence rests on embeddings alone, a different scale).
    abstain_threshold: float
    cross_language_abstain_threshold: float
    # Sentences embedded per question. Each costs ~30 ms on 2 cores; on ARCD two are as good as
    # ten (answer containment 0.799 vs 0.801). Across languages there are no shared words to pick
    # the promising ones by, so more are embedded (English containment 0.22 -> 0.67 on seeds).
    dense_candidates: int  # Config.answer_dense_sentences
    cross_language_dense_candidates: int = 8
    passages_considered: int = 3
    # Share of a question term's weight earned by a sentence holding only another form of it
    # (verb asked, verbal noun written: index.arabic.skeleton). ARCD held out (train_span's folds),
    # 0.5 vs 0: short F1 0.327 / 0.324, answer containment 0.739 / 0.734; follow-up set
    # containment 0.821 / 0.786 ("ومتى تأسس؟" found "مُنذ تأسيسه عام 2012").
    soft_match_credit: float = 0.5
    # A second evidence sentence is added only when its own evidence is at least this share of the
    # best sentence's and both fit the answer budget. ARCD, held-out spans: containment 0.737 /
    # 0.722 / 0.704 at mean 42 / 40 / 37 answer words for 0.5 / 0.8 / never.
    runner_up_ratio: float = 0.5
    # Short answer: spans are looked for in the best `span_sentences` sentences, up to
    # `span_max_words` words (or a whole phrase), ranked by the trained `span_model`.
    span_sentences: int = 3
    span_max_words: int = 10
    # With the fine-tuned reader (Config.answer_reader): passages it reads together, and the
    # log-probability a passage's span gives up per rank below the first when choosing among them.
    # Reader v4 was trained to compare spans across passages (shared normalisation): ARCD 5-fold
    # held out through the pipeline, short F1 0.467 reading the top 3 (eval/ANSWERS.md). Readers
    # before it were not (v1, fold 0: 0.393 reading 1, 0.304 reading 2 with no penalty).
    reader_passages: int = 3
    # Below 1: the top passage is read alone first, and the others only when its best span's
    # probability under its own softmax is below this (rag/readernet.py's `read`).
    reader_enough: float = 1.0
    reader_rank_penalty: float = 0.0
    # Loaded on first use, so `python -m eval.train_span` can build a pipeline before any weights
    # exist for the current features.
    span_weights: Path = SPAN_WEIGHTS
    _span_model: SpanModel | None = field(default=None, repr=False)
    # Whether a short answer is shown in bold (rag/short_gate.py), loaded on first use like the span model.
    gate_weights: Path = GATE_WEIGHTS
    short_answer_threshold: float = -1.0  # Config.short_answer_threshold: -1 keeps the fitted one
    _short_gate: ShortAnswerGate | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config, **changes: object) -> AnswerScoring:
        """The scoring the product runs: the settings' thresholds, everything else as measured here."""
        settings: dict[str, object] = {
            "short_answer_threshold": config.short_answer_threshold,
            "abstain_threshold": config.abstain_threshold,
            "cross_language_abstain_threshold": config.cross_language_abstain_threshold,
            "dense_candidates": config.answer_dense_sentences,
        }
        return cls(**{**settings, **changes})  # type: ignore[arg-type]

    @property
    def span_model(self) -> SpanModel:
        if self._span_model is None:
            self._span_model = SpanModel.load(self.span_weights)
        return self._span_model

    @span_model.setter
    def span_model(self, model: SpanModel) -> None:
        self._span_model = model

    @property
    def short_gate(self) -> ShortAnswerGate:
        if self._short_gate is None:
            gate = ShortAnswerGate.load(self.gate_weights)
            if self.short_answer_threshold >= 0:
                gate = replace(gate, threshold=self.short_answer_threshold)
            self._short_gate = gate
        return self._short_gate

    @short_gate.setter
    def short_gate(self, gate: ShortAnswerGate) -> None:
        self._short_gate = gate

    def dense_part(self, similarity: np.ndarray, cross_language: bool) -> np.ndarray:
        floor = self.cross_language_dense_floor if cross_language else self.dense_floor
        return np.clip((similarity - floor) / self.dense_range, 0.0, 1.0)

    def sentence_scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ranking score, sentence-only evidence): the second leaves out the passage-level columns."""
        weights = np.array(self.sentence_weights, dtype=np.float32)
        own = weights.copy()
        own[list(self.passage_columns)] = 0.0
        return features @ weights, features @ own

    def cheap_scores(self, features: np.ndarray, cross_language: bool) -> np.ndarray:
        """The ranking score without the dense column (zero there) and, across languages, without
        the lexical and type columns (no shared words): which sentences are worth embedding."""
        weights = np.array(self.sentence_weights, dtype=np.float32)
        weights[1] = 0.0
        if cross_language:
            weights[[0, 3]] = 0.0
        return features @ weights

    def confidence(self, scores: np.ndarray, own: np.ndarray, passage_dense: float) -> float:
        """How sure the evidence is: the best sentence's ranking score, or (with `confidence_mix`)
        its own evidence, backed by the top passage's absolute similarity to the question."""
        if not len(scores):
            return 0.0
        passage = float(np.clip((passage_dense - self.passage_dense_floor) / self.passage_dense_range, 0.0, 1.0))
        if self.confidence_mix == 0.0:
            # A strong passage-level match vouches for the passage even when no single sentence does.
            return max(float(scores.max()), passage * 0.5)
        return float(own.max()) + self.confidence_mix * self.passage_confidence_weight * passage

    def threshold(self, cross_language: bool) -> float:
        """The confidence under which to abstain."""
        return self.cross_language_abstain_threshold if cross_language else self.abstain_threshold

    def ranked(self, scores: np.ndarray) -> list[int]:
        return [int(i) for i in np.argsort(-scores, kind="stable")]

    def evidence(self, first: int, words: list[int], scores: np.ndarray, own: np.ndarray, max_words: int) -> list[int]:
        """The sentence holding the short answer, then at most one more: the best other sentence
        if its own evidence is close to the first's and both fit in `max_words`."""
        other = next((i for i in self.ranked(scores) if i != first), None)
        if (
            other is not None
            and own[other] >= self.runner_up_ratio * own[first] > 0
            and words[first] + words[other] <= max_words
        ):
            return [first, other]
        return [first]

    def best_span(self, span_features: np.ndarray) -> tuple[int, float]:
        """Index of the best short answer candidate (the first on ties), and its probability under
        the span model's softmax over the question's candidates (what the short-answer gate reads)."""
        logits = self.span_model.score(span_features)
        k = int(np.argmax(logits))
        return k, float(1.0 / np.exp(logits - logits[k]).sum())
