"""Candidates the extractive answerer chooses among: evidence sentences, and short answer spans.

A sentence (or, for a long one, a clause) is the evidence unit; a span is a run of words inside
one, never crossing punctuation, that may be the short answer. Every run of up to
`max_words` words is a candidate, so the typed spans a rule-based extractor would look for
(a date "15 أغسطس 2023", a number with its counted noun "76 دولة", a title and name "وزير الدفاع
سيرجي شويجو", a quoted name, a place after في/من) are all among them; the features below say which
type each one is, and a linear ranker (`SpanModel`, trained by `python -m eval.train_span`) weighs
type against the question word, distance to the question's words in the sentence, and overlap
with the question (answers rarely repeat the question).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.documents import Document

from index.arabic import (
    STOPWORDS,
    clause_spans,
    normalize,
    phrase_break,
    sentence_spans,
    stem,
    terms,
    trim_span,
    word_spans,
)
from rag.wording import QUESTION_TYPES, question_type

# Headings and fragments ("أهداف المؤتمر") are not evidence.
MIN_SENTENCE_WORDS = 4
_YEAR_RE = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")
_MONTHS = frozenset(
    normalize(
        "يناير فبراير مارس أبريل ابريل مايو يونيو يوليو أغسطس اغسطس سبتمبر أكتوبر اكتوبر نوفمبر ديسمبر "
        "كانون شباط آذار نيسان أيار حزيران تموز آب أيلول تشرين "
        "january february march april may june july august september october november december"
    ).split()
)
# Words after which a place or a time follows ("في القاهرة", "من الرياض", "إلى موسكو").
_PREPOSITIONS = frozenset(normalize("في من إلى الى على عن منذ حتى بين خلال نحو").split())
# Words after which a person's name follows ("الرئيس فلاديمير بوتين", "وزير الدفاع لي شانغفو").
_TITLES = frozenset(
    terms(
        "الرئيس رئيس وزير الوزير الملك الأمير الشيخ الدكتور الإمام السلطان الجنرال الأمين المدير "
        "مدير الكاتب الشاعر العالم المؤرخ الفيلسوف القائد الخليفة النبي البابا السيد السيدة "
        "president minister king prince general dr mr mrs"
    )
)
# Words after which a definition or a name follows ("عاصمتها هي القاهرة", "يسمى ...").
_COPULAS = frozenset(
    normalize("هو هي هم كان كانت يكون تكون يعد تعد يعتبر تعتبر يسمى تسمى باسم اسمه اسمها بلقب لقب وهو وهي").split()
)
# Per-span properties that mean different things for different question words: each is crossed
# with the question type, so the ranker can learn "a year for when", "a number for how many" (and
# "counted": a number followed by the question's own noun, "800 مندوب" for "قديش مندوب"),
# "a name after a title for who", "a long clause for why".
PROPERTIES = (
    "digit",
    "year",
    "month",
    "len_1",
    "len_2_3",
    "len_4_6",
    "len_7_plus",
    "whole_phrase",
    "after_preposition",
    "after_title",
    "after_copula",
    "counted",
    "definite",
    "latin",
)
# Columns of the answerer's sentence features (rag/answer.py), passed on to every span of the sentence.
SENTENCE_COLUMNS = ("lexical", "dense", "passage_rank", "type_match", "passage_score")
# Windows (in words, either side of a span) in which question words are counted, IDF-weighted.
WINDOWS = (3, 10)
GENERAL = (
    "sentence_score",
    "sentence_rank_0",
    "sentence_rank_1",
    *(f"sentence_{c}" for c in SENTENCE_COLUMNS),
    *(f"question_weight_{side}_{w}" for w in WINDOWS for side in ("left", "right")),
    "overlap_fraction",
    "overlap_any",
    "stopword_fraction",
    "log_distance",
    "no_question_word_near",
    "question_word_left",
    "question_word_right",
    "question_weight_in_phrase",
    "phrase_start",
    "phrase_end",
    "position",
    "words",
)
FEATURES: tuple[str, ...] = GENERAL + tuple(f"{t}:{p}" for t in QUESTION_TYPES for p in PROPERTIES)


@dataclass(frozen=True)
class Sentence:
    """An evidence candidate: a sentence, or a clause of a sentence longer than the answer budget."""

    passage: int
    start: int
    end: int
    text: str
    words: int


@dataclass(frozen=True)
class Span:
    """A short answer candidate: words start..end of passage `passage`, inside sentence `sentence`."""

    sentence: int
    passage: int
    start: int
    end: int
    text: str
    words: int
    by: str  # what chose it: "span_ranker", "reader", or "sentence" (no candidate span: the whole sentence)
    probability: float = 0.0  # the span model's own probability of it among its candidates (0: none)
    # The reader's log-odds of this span against "no answer in the passages read" (0: no reader).
    margin: float = 0.0


@dataclass(frozen=True)
class ReadSpan:
    """A reader's best answer span in one passage: characters [start, end) of passage `passage`,
    its log-probability, and the log-probability that none of the passages read holds the
    answer, both under one normalisation over every passage read together (so they compare)."""

    passage: int
    start: int
    end: int
    score: float
    no_answer: float = float("-inf")


@runtime_checkable
class SpanReader(Protocol):
    """What the answerer needs of a reader (rag/reader.py's fine-tuned one): the best spans of each
    passage for a question, the passages read together, so the answerer does not import torch
    unless a reader is switched on."""

    def read(self, question: str, passages: list[str], enough: float = 1.0) -> list[ReadSpan]: ...


def sentence_candidates(passages: list[Document], max_words: int) -> list[Sentence]:
    """Sentences of each passage; a sentence longer than the answer budget is split at commas."""
    out: list[Sentence] = []
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
                if words >= MIN_SENTENCE_WORDS and normalize(text[start:end]) not in title_key:
                    out.append(Sentence(p, start, end, text[start:end], words))
    return out


@dataclass(frozen=True)
class _Words:
    """Per-word facts about one sentence, the raw material of every span feature."""

    spans: list[tuple[int, int]]
    matched: np.ndarray  # share of the question's term weight the word matches (0 if none)
    stop: np.ndarray
    phrase: np.ndarray  # phrase number: words in different phrases are split by punctuation
    properties: np.ndarray  # (words, len(PROPERTIES)) for the one-word properties


def _words(text: str, sentence: Sentence, question_weight: dict[str, float]) -> _Words:
    spans = word_spans(text, sentence.start, sentence.end)
    keys = [normalize(text[s:e]) for s, e in spans]
    stems = [{stem(t) for t in k.split() if t not in STOPWORDS} for k in keys]
    titled = [bool(s & _TITLES) for s in stems]
    phrase = np.zeros(len(spans), dtype=np.int32)
    for i in range(1, len(spans)):
        phrase[i] = phrase[i - 1] + phrase_break(text, spans[i - 1][1], spans[i][0])
    digit = [any(c.isdigit() for c in key) for key in keys]
    rows = []
    for i, key in enumerate(keys):
        # The two words before, in the same phrase: a title may have a complement ("وزير الدفاع").
        before = [b for b in (i - 1, i - 2) if b >= 0 and phrase[b] == phrase[i]]
        previous = keys[before[0]] if before else ""
        counted = (
            digit[i]
            and i + 1 < len(keys)
            and phrase[i + 1] == phrase[i]
            and bool(stems[i + 1] & question_weight.keys())
        )
        facts = {
            "digit": digit[i],
            "year": bool(_YEAR_RE.match(key)),
            "month": key in _MONTHS,
            "after_preposition": previous in _PREPOSITIONS,
            "after_title": any(titled[b] for b in before),
            "after_copula": previous in _COPULAS,
            "counted": counted,
            "definite": key.startswith("ال"),
            "latin": key.isascii() and key.isalpha(),
        }
        rows.append([facts.get(name, False) for name in PROPERTIES])
    props = np.array(rows, dtype=np.float32).reshape(len(keys), len(PROPERTIES))
    return _Words(
        spans,
        np.array([sum(question_weight.get(t, 0.0) for t in s) for s in stems], dtype=np.float32),
        np.array([not s for s in stems], dtype=bool),
        phrase,
        props,
    )


@dataclass(frozen=True)
class SpanCandidates:
    """A question's candidate spans as arrays (hundreds per question: a `Span` is only built for
    the ones asked for) and their features, one row per candidate."""

    sentences: list[Sentence]
    passages: list[Document]
    located: np.ndarray  # (candidates, 4): sentence, start, end, words
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.located)

    def span(self, k: int) -> Span:
        s, start, end, words = (int(v) for v in self.located[k])
        passage = self.sentences[s].passage
        return Span(s, passage, start, end, self.passages[passage].page_content[start:end], words, "span_ranker")

    def texts(self) -> list[str]:
        return [self.span(k).text for k in range(len(self))]


def span_candidates(
    question: str,
    passages: list[Document],
    sentences: list[Sentence],
    chosen: list[int],
    sentence_features: np.ndarray,
    sentence_scores: np.ndarray,
    term_weight: Callable[[str], float],
    max_words: int,
) -> SpanCandidates:
    """Candidate spans inside the `chosen` sentences (best first) and their features (FEATURES).

    A span is a run of 1..max_words words inside one phrase that neither starts nor ends with a
    stopword, or a whole phrase of any length (the answer to a why/how question is a clause).
    Question words are weighted by `term_weight` (IDF), as in sentence scoring.
    """
    raw = {t: term_weight(t) for t in set(terms(question))}
    total = sum(raw.values()) or 1.0
    question_weight = {t: v / total for t, v in raw.items()}
    kind = QUESTION_TYPES.index(question_type(question))
    top = float(max((sentence_scores[i] for i in chosen), default=0.0)) or 1.0
    located: list[np.ndarray] = []  # (sentence, start, end, words) per candidate
    rows: list[np.ndarray] = []
    for rank, s in enumerate(chosen):
        sentence = sentences[s]
        text = passages[sentence.passage].page_content
        w = _words(text, sentence, question_weight)
        n = len(w.spans)
        if not n:
            continue
        first = np.searchsorted(w.phrase, w.phrase, side="left")  # first word of each word's phrase
        last = np.searchsorted(w.phrase, w.phrase, side="right") - 1
        i, j = np.triu_indices(n)
        keep = (w.phrase[i] == w.phrase[j]) & (
            ((j - i < max_words) & ~w.stop[i] & ~w.stop[j]) | ((i == first[i]) & (j == last[j]))
        )
        i, j = i[keep], j[keep]
        if not len(i):
            continue
        length = (j - i + 1).astype(np.float32)
        matched = w.matched > 0
        cum = np.concatenate([[0.0], np.cumsum(matched)])
        weight = np.concatenate([[0.0], np.cumsum(w.matched)])
        cum_stop = np.concatenate([[0.0], np.cumsum(w.stop.astype(np.float32))])
        inside = cum[j + 1] - cum[i]
        positions = np.flatnonzero(matched)
        # Distance in words to the nearest question word outside the span, on either side.
        left = np.full(len(i), np.inf)
        right = np.full(len(i), np.inf)
        if len(positions):
            k = np.searchsorted(positions, i, side="left") - 1
            left = np.where(k >= 0, i - positions[np.maximum(k, 0)], np.inf)
            k = np.searchsorted(positions, j, side="right")
            right = np.where(k < len(positions), positions[np.minimum(k, len(positions) - 1)] - j, np.inf)
        distance = np.minimum(left, right)
        windows = []
        for size in WINDOWS:
            windows.append(weight[i] - weight[np.maximum(i - size, 0)])
            windows.append(weight[np.minimum(j + 1 + size, n)] - weight[j + 1])
        in_phrase = np.bincount(w.phrase, weights=w.matched)[w.phrase[i]]
        cum_props = np.concatenate([np.zeros((1, len(PROPERTIES)), np.float32), np.cumsum(w.properties, axis=0)])
        props = (cum_props[j + 1] - cum_props[i] > 0).astype(np.float32)
        # A counted number needs its noun inside the span too.
        counted = PROPERTIES.index("counted")
        props[:, counted] = cum_props[j, counted] - cum_props[i, counted] > 0
        # Context properties belong to the span's first word only.
        for name in ("after_preposition", "after_title", "after_copula", "definite"):
            props[:, PROPERTIES.index(name)] = w.properties[i, PROPERTIES.index(name)]
        for name, mask in (
            ("len_1", length == 1),
            ("len_2_3", (length >= 2) & (length <= 3)),
            ("len_4_6", (length >= 4) & (length <= 6)),
            ("len_7_plus", length >= 7),
            ("whole_phrase", (i == first[i]) & (j == last[j])),
        ):
            props[:, PROPERTIES.index(name)] = mask
        general = np.column_stack(
            [
                np.full(len(i), sentence_scores[s] / top),
                np.full(len(i), rank == 0),
                np.full(len(i), rank == 1),
                np.repeat(sentence_features[s][None, :], len(i), axis=0),
                *windows,
                inside / length,
                inside > 0,
                (cum_stop[j + 1] - cum_stop[i]) / length,
                np.log1p(np.minimum(distance, 30.0)),
                distance > 30,
                left == 1,
                right == 1,
                in_phrase,
                i == first[i],
                j == last[j],
                i / n,
                np.minimum(length, 30.0) / 10.0,
            ]
        ).astype(np.float32)
        crossed = np.zeros((len(i), len(QUESTION_TYPES), len(PROPERTIES)), dtype=np.float32)
        crossed[:, kind, :] = props
        rows.append(np.hstack([general, crossed.reshape(len(i), -1)]))
        located.append(
            np.column_stack([np.full(len(i), s), [w.spans[a][0] for a in i], [w.spans[b][1] for b in j], j - i + 1])
        )
    if not rows:
        return SpanCandidates(sentences, passages, np.zeros((0, 4), np.int64), np.zeros((0, len(FEATURES)), np.float32))
    return SpanCandidates(sentences, passages, np.vstack(located).astype(np.int64), np.vstack(rows))


@dataclass(frozen=True)
class SpanModel:
    """A linear span ranker: standardised features times weights (softmax over a question's spans).

    Stored as JSON (feature names, standardisation, weights, and how it was trained), never as a
    pickle, so it can be read, diffed and reproduced with `python -m eval.train_span`.
    """

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    info: dict[str, Any]

    def score(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights

    @classmethod
    def load(cls, path: Path) -> SpanModel:
        data = json.loads(path.read_text(encoding="utf-8"))
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path} was trained on other features; rerun python -m eval.train_span")
        return cls(
            FEATURES,
            np.array(data["mean"], dtype=np.float32),
            np.array(data["scale"], dtype=np.float32),
            np.array(data["weights"], dtype=np.float32),
            data.get("info", {}),
        )

    def save(self, path: Path) -> None:
        data = {
            "info": self.info,
            "features": list(self.features),
            "mean": [round(float(x), 6) for x in self.mean],
            "scale": [round(float(x), 6) for x in self.scale],
            "weights": [round(float(x), 6) for x in self.weights],
        }
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
