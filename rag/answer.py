"""Retrieved passages -> a short answer with its evidence and citations, without an LLM.

The answer is a short span copied verbatim from one passage ("76 دولة"), then the sentence it
came from, followed by the [n] marker of that passage, so every word can be checked against its
source. When no sentence is a convincing answer it abstains rather than guess.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables import RunnableSerializable
from langchain_core.runnables.config import RunnableConfig
from pydantic import ConfigDict

from core.config import Config
from index.arabic import language, skeleton, terms
from index.embed import VectorEmbeddings
from rag.extract import Sentence, Span, SpanReader, sentence_candidates, span_candidates
from rag.scoring import AnswerScoring
from rag.short_gate import gate_features, type_mismatch
from rag.wording import question_type, trim_answer

ABSTAIN_MESSAGE = {
    "ar": "لا أجد إجابة لهذا السؤال في المستندات المتاحة.",
    "en": "I could not find an answer to this question in the documents.",
}
_YEAR_OR_DATE_RE = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})\b|[0-9٠-٩]{1,2}\s*(يناير|فبراير|مارس|أبريل|ابريل|مايو|يونيو|يوليو|أغسطس|اغسطس|سبتمبر|أكتوبر|اكتوبر|نوفمبر|ديسمبر)"
)
_NUMBER_RE = re.compile(r"[0-9٠-٩]")
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
    page_breaks: list[int] = field(default_factory=list)  # offsets in `text` where pages page+1.. start
    section: str = ""  # nearest heading before the passage (DOCX, HTML, Markdown, PDF)
    ocr: bool = False  # text read by OCR from a scan: may hold recognition errors
    paragraph: int = 0  # 1-based paragraph of the document the passage starts in (0: unknown)


def cited_pages(citation: Citation) -> tuple[int | None, int | None]:
    """The page (and last page) of what the answer used from a passage: the highlighted text's,
    when the passage runs across pages and records where they break (a sentence on page 2 of a
    passage over pages 1–2 was cited «ص 1–2»: issue 29); else the passage's own pages."""
    if not (citation.page and citation.page_end and citation.page_breaks and citation.highlights):
        return citation.page, citation.page_end
    first = citation.page + bisect.bisect_right(citation.page_breaks, min(h[0] for h in citation.highlights))
    last = citation.page + bisect.bisect_right(citation.page_breaks, max(h[1] for h in citation.highlights) - 1)
    return first, last if last != first else None


@dataclass(frozen=True)
class Answer:
    """The chain's output, shared by the CLI, the UI and the evaluation script. Frozen: a stage
    that adds to it (the chain's timings, LLM mode's fallback notice) makes a new one with
    `dataclasses.replace`, so an answer handed on is never changed behind its reader's back."""

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
    # The span that answers the question, verbatim from citation n's text[start:end]; empty when
    # abstaining or (LLM mode) when the model's answer cannot be found in a cited passage.
    short_answer: str = ""
    short_answer_citation: dict[str, int] = field(default_factory=dict)
    # What chose the short answer: "reader" (the fine-tuned reader), "span_ranker", "sentence"
    # (no shorter span: the evidence sentence itself) or "llm"; empty when there is none.
    short_answer_by: str = ""
    # Whether the short answer is shown (rag/short_gate.py): its calibrated probability of being
    # right, the threshold, "withheld" ("" when shown, "low_probability" or "wrong_type": the
    # evidence is then shown without a short answer), and the features behind the probability.
    short_answer_check: dict[str, Any] = field(default_factory=dict)

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
        page_breaks=list(meta.get("page_breaks") or []),
        section=meta.get("section", ""),
        ocr=bool(meta.get("ocr", False)),
        paragraph=int(meta.get("paragraph", 0)),
    )


@dataclass(frozen=True)
class AnswerRequest:
    """One question put to an answerer: the typed input of every answer mode. Everything a request
    carries is here (it used to travel partly in the run's `configurable` and a ContextVar)."""

    question: str  # as asked
    passages: Sequence[Document]  # what retrieval found, best first
    # The question made stand-alone for retrieval (a follow-up rewritten with its topic); "" when
    # it is the question itself.
    standalone: str = ""
    # time.monotonic() by which an LLM must have answered, shared with the follow-up rewrite of the
    # same request; None: the configured timeout from the answer's start.
    deadline: float | None = None
    # Per-request LLM options from the API (max_tokens, temperature); extractive mode ignores them.
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def searched(self) -> str:
        """The stand-alone question, which retrieval searched with."""
        return self.standalone or self.question


class Answerer(Protocol):
    """What every answer mode is (core/registry.py ANSWER_MODES): a Runnable from an
    `AnswerRequest` to an `Answer`; streamed, it may yield the reply's text first, the Answer last.
    Each mode reads the question it answers best: the extractive one the question as asked, an LLM
    the stand-alone one it wrote itself."""

    def invoke(self, input: AnswerRequest, config: RunnableConfig | None = None, **kwargs: Any) -> Answer: ...

    def stream(
        self, input: AnswerRequest, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[str | Answer]: ...


class ExtractiveAnswerer(RunnableSerializable[AnswerRequest, Answer]):
    """Runnable: AnswerRequest -> Answer: a short answer span and its evidence sentence.

    A sentence's score mixes lexical coverage of the question's content words (IDF-weighted,
    stemmed), its embedding similarity to the question (what makes English questions work on
    Arabic text), the rank of its passage, and whether it has the kind of token the question asks
    for (a year for "when", a number for "how many"). The short answer is the best span of the
    best few sentences by the trained span ranker; its sentence is the evidence. Every weight
    and threshold lives in `scoring` (rag/scoring.py).
    """

    embedder: VectorEmbeddings
    term_weight: Callable[[str], float]
    scoring: AnswerScoring
    max_words: int
    # The fine-tuned reader (Config.answer_reader): when set, it picks the short answer in the
    # best passages instead of the span ranker; None: the span ranker alone.
    reader: SpanReader | None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @staticmethod
    def for_mode(config: Config, extractive: ExtractiveAnswerer, chat: Any) -> ExtractiveAnswerer:
        """The "extractive" entry of core/registry.py's ANSWER_MODES: the answerer itself."""
        return extractive

    @classmethod
    def from_config(
        cls,
        config: Config,
        embedder: VectorEmbeddings,
        term_weight: Callable[[str], float],
        reader: SpanReader | None,
    ) -> ExtractiveAnswerer:
        scoring = AnswerScoring.from_config(config)
        return cls(
            embedder=embedder,
            term_weight=term_weight,
            scoring=scoring,
            max_words=config.answer_max_words,
            reader=reader,
        )

    def invoke(self, input: AnswerRequest, config: RunnableConfig | None = None, **kwargs: Any) -> Answer:
        # Through `_call_with_config`, so callbacks and tracing see the answerer as a run of its own.
        return self._call_with_config(self._answer, input, config)

    def _answer(self, request: AnswerRequest) -> Answer:
        # It reads the question as asked. Retrieval searches with the stand-alone question, but its
        # inherited topic words pulled the span back to the previous answer ("ومن مثّلها؟" answered
        # with the message instead of the envoy). Follow-up set: containment 0.714 -> 0.786, short
        # F1 0.27 -> 0.34; seeds unchanged.
        question = request.question
        passages = list(request.passages)
        lang = language(question)
        related = [to_citation(i + 1, p) for i, p in enumerate(passages)]
        if not passages:
            return Answer(question, ABSTAIN_MESSAGE[lang], True, [], related)
        considered = passages[: self.scoring.passages_considered]
        sentences = sentence_candidates(considered, self.max_words)
        if not sentences:
            return Answer(question, ABSTAIN_MESSAGE[lang], True, [], related)
        features = self.features(question, considered, sentences)
        scores, own = self.scoring.sentence_scores(features)
        confidence = self.scoring.confidence(scores, own, float(considered[0].metadata.get("dense_score", 0.0)))
        cross_language = _cross_language(question, considered)
        if confidence < self.scoring.threshold(cross_language):
            return Answer(question, ABSTAIN_MESSAGE[lang], True, [], related, confidence=round(confidence, 4))
        short = self.short_answer(question, considered, sentences, features, scores)
        check = self.scoring.short_gate.check(
            gate_features(
                question,
                short.text,
                short.by,
                short.probability,
                confidence,
                cross_language,
                self.scoring.ranked(scores).index(short.sentence),
                short.margin,
            )
        )
        # A withheld reader span: the evidence starts from the span ranker's sentence, as without
        # the reader, and the reader's own sentence follows when both fit (eval/ANSWERS.md: the
        # reader's sentence first lost the follow-ups' "ومن مثّلها؟", the ranker's alone lost seeds
        # and dialogs the reader's holds).
        lead = short.sentence
        if check["withheld"] and short.by == "reader":
            lead = self._ranked_span(question, considered, sentences, features, scores).sentence
        return self._compose(considered, sentences, short, scores, own, related, confidence, question, check, lead)

    def features(self, question: str, passages: list[Document], sentences: list[Sentence]) -> np.ndarray:
        """Per-sentence features (columns as in `AnswerScoring.sentence_weights`)."""
        q_terms = set(terms(question))
        q_weight = {t: self.term_weight(t) for t in q_terms}
        q_shapes = {t: skeleton(t) for t in q_terms}
        total = sum(q_weight.values()) or 1.0
        lexical = np.array([self._coverage(q_weight, q_shapes, set(terms(c.text))) / total for c in sentences])
        kind_asked = question_type(question)
        wants_date, wants_number = kind_asked == "when", kind_asked == "how_many"
        kind = np.array(
            [
                (wants_date and bool(_YEAR_OR_DATE_RE.search(c.text)))
                or (wants_number and bool(_NUMBER_RE.search(c.text)))
                for c in sentences
            ],
            dtype=np.float32,
        )
        rank_prior = np.array([1.0 / (1 + c.passage) for c in sentences])
        passage_score = np.array([float(passages[c.passage].metadata.get("score", 0.0)) for c in sentences])
        cross_language = _cross_language(question, passages)
        columns = [lexical, np.zeros(len(sentences)), rank_prior, kind, passage_score]
        # Embedding sentences is the answerer's main cost, so only the most promising ones are
        # embedded: by the cheap features, or (no shared words across languages) by position.
        cheap = self.scoring.cheap_scores(np.column_stack(columns).astype(np.float32), cross_language)
        budget = self.scoring.cross_language_dense_candidates if cross_language else self.scoring.dense_candidates
        order = np.argsort(-cheap, kind="stable")[:budget]
        dense = np.zeros(len(sentences), dtype=np.float32)
        dense[order] = self.embedder.encode_cached([sentences[i].text for i in order]) @ self.embedder.encode_query(
            question
        )
        columns[1] = self.scoring.dense_part(dense, cross_language)
        if cross_language:
            # English question about Arabic text: no shared words to count, so embedding
            # similarity stands in for lexical coverage.
            columns[0] = columns[1]
        return np.column_stack(columns).astype(np.float32)

    def _coverage(self, q_weight: dict[str, float], q_shapes: dict[str, str], sentence_terms: set[str]) -> float:
        """Weight of the question's terms found in a sentence; a term found only as another form of
        the same action (تأسس asked, تأسيسه written) earns `soft_match_credit` of its weight."""
        exact = sum(w for t, w in q_weight.items() if t in sentence_terms)
        credit = self.scoring.soft_match_credit
        if not credit:
            return exact
        shapes = {skeleton(t) for t in sentence_terms} - {""}
        soft = sum(w for t, w in q_weight.items() if t not in sentence_terms and q_shapes[t] in shapes)
        return exact + credit * soft

    def short_answer(
        self,
        question: str,
        passages: list[Document],
        sentences: list[Sentence],
        features: np.ndarray,
        scores: np.ndarray,
    ) -> Span:
        """The reader's best span (when a reader is loaded), else the best span among the best
        `span_sentences` sentences (the best sentence itself if none of them has a candidate span).

        English questions about Arabic text are read too: the reader saw only Arabic questions in
        training, but its encoder is multilingual, and on the 16 English questions of the seeds
        and follow-ups its short F1 is 0.44 against the span ranker's 0.26 (eval/ANSWERS.md)."""
        if self.reader is not None:
            read = self._read(self.reader, question, passages, sentences)
            if read is not None:
                return read
        return self._ranked_span(question, passages, sentences, features, scores)

    def _ranked_span(
        self,
        question: str,
        passages: list[Document],
        sentences: list[Sentence],
        features: np.ndarray,
        scores: np.ndarray,
    ) -> Span:
        """The span ranker's choice (rag/extract.py), or the best sentence when no sentence near
        the top has a candidate span."""
        chosen = self.scoring.ranked(scores)[: self.scoring.span_sentences]
        candidates = span_candidates(
            question, passages, sentences, chosen, features, scores, self.term_weight, self.scoring.span_max_words
        )
        if not len(candidates):
            best = sentences[chosen[0]]
            return Span(chosen[0], best.passage, best.start, best.end, best.text, best.words, "sentence")
        k, probability = self.scoring.best_span(candidates.features)
        return replace(candidates.span(k), probability=probability)

    def _read(
        self, reader: SpanReader, question: str, passages: list[Document], sentences: list[Sentence]
    ) -> Span | None:
        """The reader's best span over the best `reader_passages` passages (the best of the kind
        the question asks for, when it offers one: a count for "how many", a date for "when"),
        inside the evidence sentence it overlaps most (None if it overlaps none: a title or a fragment)."""
        texts = [p.page_content for p in passages[: self.scoring.reader_passages]]
        found = reader.read(question, texts, self.scoring.reader_enough)
        if not found:
            return None
        ranked = sorted(found, key=lambda r: r.score - self.scoring.reader_rank_penalty * r.passage, reverse=True)
        typed = [r for r in ranked if not type_mismatch(question, passages[r.passage].page_content[r.start : r.end])]
        best = (typed or ranked)[0]
        text = passages[best.passage].page_content
        start, end = trim_answer(text, best.start, best.end)
        overlap = [
            (min(end, c.end) - max(start, c.start), i) for i, c in enumerate(sentences) if c.passage == best.passage
        ]
        most, sentence = max(overlap, default=(0, -1))
        if most <= 0:
            return None
        words = len(text[start:end].split())
        margin = best.score - best.no_answer
        return Span(
            sentence, best.passage, start, end, text[start:end], words, "reader", float(np.exp(best.score)), margin
        )

    def _compose(
        self,
        passages: list[Document],
        sentences: list[Sentence],
        short: Span,
        scores: np.ndarray,
        own: np.ndarray,
        related: list[Citation],
        confidence: float,
        question: str,
        check: dict[str, Any],
        lead: int,
    ) -> Answer:
        """The evidence, with the short answer before it and marked inside it unless the gate
        withheld it (then the evidence alone, whole sentences highlighted, led by `lead`, with the
        withheld span's sentence after it when that is another and both fit)."""
        shown = not check["withheld"]
        budget = max(1, self.max_words - (short.words if shown else 0))
        words = [c.words for c in sentences]
        chosen = self.scoring.evidence(short.sentence if shown else lead, words, scores, own, budget)
        # Overlapping chunks hold some sentences twice: a sentence is shown once, the words it took
        # left for the withheld span's own sentence below.
        chosen = [i for n, i in enumerate(chosen) if all(sentences[j].text != sentences[i].text for j in chosen[:n])]
        other = short.sentence
        if (
            not shown
            and all(sentences[i].text != sentences[other].text for i in chosen)
            and sum(words[i] for i in chosen) + words[other] <= budget
        ):
            chosen.append(other)
        # Pieces of one passage read in the document's order ("مُنذ تأسيسه عام 2012، [1] يعقد المؤتمر
        # بشكل سنوي…، [1]", not the reverse); the passages stay in the order they were chosen.
        passage_order = {p: n for n, p in enumerate(dict.fromkeys(sentences[i].passage for i in chosen))}
        chosen.sort(key=lambda i: (passage_order[sentences[i].passage], sentences[i].start))
        numbers: dict[int, int] = {}
        highlights: dict[int, list[tuple[int, int]]] = {}
        evidence = []
        for i in chosen:
            c = sentences[i]
            n = numbers.setdefault(c.passage, len(numbers) + 1)
            evidence.append(f"{quote_markers(_clip_words(c.text, self.max_words))} [{n}]")
            # The short answer's sentence is highlighted in pieces, the middle one the short
            # answer itself, so the UI can mark the span inside its evidence.
            pieces = [(c.start, short.start), (short.start, short.end), (short.end, c.end)]
            highlights.setdefault(c.passage, []).extend(
                (a, b) for a, b in (pieces if shown and i == short.sentence else [(c.start, c.end)]) if b > a
            )
        text = " ".join(evidence)
        if shown and short.text != sentences[short.sentence].text:
            text = f"{quote_markers(short.text)} — {text}"
        citations = [to_citation(n, passages[p], highlights[p]) for p, n in numbers.items()]
        return Answer(
            question,
            text,
            False,
            citations,
            related,
            confidence=round(confidence, 4),
            short_answer=short.text if shown else "",
            short_answer_citation={"n": numbers[short.passage], "start": short.start, "end": short.end}
            if shown
            else {},
            short_answer_by=short.by if shown else "",
            short_answer_check={**check, "candidate": short.text, "by": short.by},
        )


def _cross_language(question: str, passages: list[Document]) -> bool:
    return language(question) != language(" ".join(p.page_content[:500] for p in passages))


def _clip_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + " …"
