"""Retrieved passages -> a short answer with citations, without an LLM (grounded extraction).

The answer is made only of sentences copied from the retrieved passages, each followed by the
[n] marker of the passage it came from, so every word of it can be checked against its source.
When no sentence is a convincing answer it abstains rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables import RunnableSerializable
from langchain_core.runnables.config import RunnableConfig
from pydantic import ConfigDict

from index.arabic import clause_spans, language, normalize, sentence_spans, terms, trim_span
from index.embed import VectorEmbeddings
from rag.config import Config

ABSTAIN_MESSAGE = {
    "ar": "لا أجد إجابة لهذا السؤال في المستندات المتاحة.",
    "en": "I could not find an answer to this question in the documents.",
}
_YEAR_OR_DATE_RE = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})\b|[0-9٠-٩]{1,2}\s*(يناير|فبراير|مارس|أبريل|ابريل|مايو|يونيو|يوليو|أغسطس|اغسطس|سبتمبر|أكتوبر|اكتوبر|نوفمبر|ديسمبر)"
)
_MIN_ANSWER_WORDS = 4
_NUMBER_RE = re.compile(r"[0-9٠-٩]")
_WHEN = re.compile(
    r"(^|\s)(متى|متي|امتى|إمتى|امتي|when|what year|which year|في اي عام|في أي عام|في اي سنة|في أي سنة)(\s|$)", re.I
)
_HOW_MANY = re.compile(r"(^|\s)(كم|قديش|how many|how much|what number)(\s|$)", re.I)
# A citation marker as the UI turns it into a badge ([3], also with Arabic-Indic digits: [٣]).
MARKER_RE = re.compile(r"\[(\d+)\]")
_FOOTNOTE_RE = re.compile(r"\[(\d+(?:\s*[,،]\s*\d+)*)\]")  # also [3, 4], which an LLM reply may use


def quote_markers(text: str) -> str:
    """Document text copied into an answer keeps its footnotes (`…سبتمبر.[3]`), but in fullwidth
    brackets (`［3］`): only the answerer's own markers may read as citations of a passage."""
    return _FOOTNOTE_RE.sub("\uff3b\\1\uff3d", text)


@dataclass
class Citation:
    """A cited passage: where it is, what it says, and which part of it the answer used."""

    n: int
    source: str
    title: str
    start: int
    end: int
    text: str
    score: float
    highlights: list[tuple[int, int]] = field(default_factory=list)  # offsets within `text`
    page: int | None = None  # 1-based, documents with pages (PDF, scans)
    page_end: int | None = None  # set only when the passage runs onto later pages
    section: str = ""  # nearest heading before the passage (DOCX, HTML, Markdown, PDF)
    ocr: bool = False  # text read by OCR from a scan: may hold recognition errors
    paragraph: int = 0  # 1-based paragraph of the document the passage starts in (0: unknown)


@dataclass
class Answer:
    """The chain's output, shared by the CLI, the UI and the evaluation script."""

    question: str
    answer: str
    abstained: bool
    citations: list[Citation]
    related: list[Citation] = field(default_factory=list)
    confidence: float = 0.0
    mode: str = "extractive"
    grounded: bool = True
    notice: str = ""
    standalone_question: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("citations", "related"):
            for item in data[key]:
                item["highlights"] = [list(h) for h in item["highlights"]]
        return data


def to_citation(n: int, passage: Document, highlights: list[tuple[int, int]] | None = None) -> Citation:
    meta = passage.metadata
    return Citation(
        n=n,
        source=meta["source"],
        title=meta["title"],
        start=int(meta["start"]),
        end=int(meta["end"]),
        text=passage.page_content,
        score=round(float(meta.get("score", 0.0)), 4),
        highlights=highlights or [],
        page=meta.get("page"),
        page_end=meta.get("page_end"),
        section=meta.get("section", ""),
        ocr=bool(meta.get("ocr", False)),
        paragraph=int(meta.get("paragraph", 0)),
    )


@dataclass(frozen=True)
class _Candidate:
    passage: int
    start: int
    end: int
    text: str
    words: int


def _candidates(passages: list[Document], max_words: int) -> list[_Candidate]:
    """Sentences of each passage; a sentence longer than the answer budget is split at commas."""
    out: list[_Candidate] = []
    for p, passage in enumerate(passages):
        text = passage.page_content
        title_key = normalize(passage.metadata.get("title", ""))
        for s_start, s_end in sentence_spans(text):
            spans = [(s_start, s_end)]
            if len(text[s_start:s_end].split()) > max_words:
                spans = clause_spans(text, s_start, s_end)
            for start, end in spans:
                start, end = trim_span(text, start, end)
                words = len(text[start:end].split())
                # Headings and fragments ("أهداف المؤتمر") are not answers.
                if words >= _MIN_ANSWER_WORDS and normalize(text[start:end]) not in title_key:
                    out.append(_Candidate(p, start, end, text[start:end], words))
    return out


class ExtractiveAnswerer(RunnableSerializable[dict[str, Any], Answer]):
    """Runnable: {"question", "documents"} -> Answer, choosing sentences from the passages.

    A sentence's score mixes lexical coverage of the question's content words (IDF-weighted,
    stemmed), its embedding similarity to the question (what makes English questions work on
    Arabic text), the rank of its passage, and whether it has the kind of token the question asks
    for (a year for "when", a number for "how many"). Weights were tuned on ARCD.
    """

    embedder: VectorEmbeddings
    term_weight: Callable[[str], float]
    max_words: int = 60
    abstain_threshold: float = 0.2
    cross_language_abstain_threshold: float = 0.24
    passages_considered: int = 3
    # lexical coverage, dense similarity, passage rank prior, answer-type match, passage fused score
    sentence_weights: tuple[float, float, float, float, float] = (0.45, 0.1, 0.2, 0.1, 0.2)
    runner_up_ratio: float = 0.1
    confidence_mix: float = 1.0
    # Sentences embedded per question. Each costs ~30 ms on 2 cores; on ARCD two are as good as
    # ten (answer containment 0.799 vs 0.801: `python -m eval --squad ...` with
    # RAG_ANSWER_DENSE_SENTENCES=2 / 10). Across languages there are no shared words to pick the
    # promising ones by, so more are embedded (English containment 0.22 -> 0.67 on seeds).
    dense_candidates: int = 2
    cross_language_dense_candidates: int = 8

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @classmethod
    def from_config(
        cls, config: Config, embedder: VectorEmbeddings, term_weight: Callable[[str], float]
    ) -> ExtractiveAnswerer:
        return cls(
            embedder=embedder,
            term_weight=term_weight,
            max_words=config.answer_max_words,
            abstain_threshold=config.abstain_threshold,
            cross_language_abstain_threshold=config.cross_language_abstain_threshold,
            dense_candidates=config.answer_dense_sentences,
        )

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Answer:
        question: str = input["question"]
        passages: list[Document] = input["documents"]
        lang = language(question)
        related = [to_citation(i + 1, p) for i, p in enumerate(passages)]
        if not passages:
            return Answer(question, ABSTAIN_MESSAGE[lang], True, [], related)
        considered = passages[: self.passages_considered]
        candidates = _candidates(considered, self.max_words)
        scores, own, confidence = self._score(question, considered, candidates)
        if confidence < self.threshold(question, considered) or not candidates:
            return Answer(question, ABSTAIN_MESSAGE[lang], True, [], related, confidence=round(confidence, 4))
        chosen = self._choose(candidates, scores, own)
        return self._compose(question, considered, candidates, chosen, related, confidence)

    def features(self, question: str, passages: list[Document], candidates: list[_Candidate]) -> np.ndarray:
        """Per-candidate features (columns as in `sentence_weights`); exposed for tuning."""
        q_terms = set(terms(question))
        q_weight = {t: self.term_weight(t) for t in q_terms}
        total = sum(q_weight.values()) or 1.0
        lexical = np.array([sum(q_weight[t] for t in q_terms & set(terms(c.text))) / total for c in candidates])
        wants_date, wants_number = bool(_WHEN.search(question)), bool(_HOW_MANY.search(question))
        kind = np.array(
            [
                (wants_date and bool(_YEAR_OR_DATE_RE.search(c.text)))
                or (wants_number and bool(_NUMBER_RE.search(c.text)))
                for c in candidates
            ],
            dtype=np.float32,
        )
        rank_prior = np.array([1.0 / (1 + c.passage) for c in candidates])
        passage_score = np.array([float(passages[c.passage].metadata.get("score", 0.0)) for c in candidates])
        cross_language = _cross_language(question, passages)
        # Embedding sentences is the answerer's main cost, so only the most promising ones are
        # embedded: by the cheap features, or (no shared words across languages) by position.
        w = self.sentence_weights
        cheap = rank_prior * w[2] + passage_score * w[4] + (0 if cross_language else lexical * w[0] + kind * w[3])
        budget = self.cross_language_dense_candidates if cross_language else self.dense_candidates
        order = np.argsort(-cheap, kind="stable")[:budget]
        dense = np.zeros(len(candidates), dtype=np.float32)
        dense[order] = self.embedder.encode_cached([candidates[i].text for i in order]) @ self.embedder.encode_query(
            question
        )
        # e5 similarities run lower across languages; the floor is calibrated per case.
        dense_part = np.clip((dense - (0.70 if cross_language else 0.75)) / 0.15, 0.0, 1.0)
        if cross_language:
            # English question about Arabic text: no shared words to count, so embedding
            # similarity stands in for lexical coverage.
            lexical = dense_part
        return np.column_stack([lexical, dense_part, rank_prior, kind, passage_score]).astype(np.float32)

    def threshold(self, question: str, passages: list[Document]) -> float:
        """The confidence under which to abstain. Across languages the confidence rests on
        embedding similarity alone (no shared words to count), a different scale, so it has its
        own cut: set between English questions about the seeds and English off-topic ones."""
        if _cross_language(question, passages):
            return self.cross_language_abstain_threshold
        return self.abstain_threshold

    def split_scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ranking score, sentence-only evidence): the second leaves out the passage-level
        columns, which every sentence of a passage shares and so cannot tell them apart."""
        weights = np.array(self.sentence_weights, dtype=np.float32)
        own = weights.copy()
        own[[2, 4]] = 0.0
        return features @ weights, features @ own

    def _score(
        self, question: str, passages: list[Document], candidates: list[_Candidate]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        if not candidates:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), 0.0
        scores, own = self.split_scores(self.features(question, passages, candidates))
        return scores, own, self.confidence(scores, own, float(passages[0].metadata.get("dense_score", 0.0)))

    def confidence(self, scores: np.ndarray, own: np.ndarray, passage_dense: float) -> float:
        """How sure the evidence is: the best sentence's ranking score, or (with `confidence_mix`)
        its own evidence, backed by the top passage's absolute similarity to the question."""
        passage = float(np.clip((passage_dense - 0.78) / 0.1, 0.0, 1.0))
        if self.confidence_mix == 0.0:
            # A strong passage-level match vouches for the passage even when no single sentence does.
            return max(float(scores.max()), passage * 0.5)
        return float(own.max()) + self.confidence_mix * 0.3 * passage

    def _choose(self, candidates: list[_Candidate], scores: np.ndarray, own: np.ndarray) -> list[int]:
        """The best sentence, then runners-up whose own evidence is close to the best's, in budget."""
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        best = order[0]
        chosen = [best]
        words = candidates[best].words
        for i in order[1:]:
            if own[i] < self.runner_up_ratio * own[best]:
                continue
            if words + candidates[i].words <= self.max_words:
                chosen.append(i)
                words += candidates[i].words
        return chosen

    def _compose(
        self,
        question: str,
        passages: list[Document],
        candidates: list[_Candidate],
        chosen: list[int],
        related: list[Citation],
        confidence: float,
    ) -> Answer:
        numbers: dict[int, int] = {}
        spans: list[tuple[int, int, int]] = []  # (passage, start, end), adjacent pieces merged
        for i in sorted(chosen, key=lambda i: (candidates[i].passage, candidates[i].start)):
            c = candidates[i]
            if (
                spans
                and spans[-1][0] == c.passage
                and not passages[c.passage].page_content[spans[-1][2] : c.start].strip()
            ):
                spans[-1] = (c.passage, spans[-1][1], c.end)
            else:
                spans.append((c.passage, c.start, c.end))
        parts: list[str] = []
        highlights: dict[int, list[tuple[int, int]]] = {}
        for p, start, end in spans:
            n = numbers.setdefault(p, len(numbers) + 1)
            parts.append(f"{quote_markers(_clip_words(passages[p].page_content[start:end], self.max_words))} [{n}]")
            highlights.setdefault(p, []).append((start, end))
        citations = [to_citation(n, passages[p], highlights[p]) for p, n in numbers.items()]
        return Answer(question, " ".join(parts), False, citations, related, confidence=round(confidence, 4))


def _cross_language(question: str, passages: list[Document]) -> bool:
    return language(question) != language(" ".join(p.page_content[:500] for p in passages))


def _clip_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + " …"
