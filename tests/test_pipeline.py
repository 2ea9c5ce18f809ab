"""The whole chain over the seeds: questions from eval/questions/seeds.jsonl, JSON shape, citations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eval.metrics import contains
from eval.questions import Question, load_jsonl
from index.arabic import language
from rag.answer import ABSTAIN_MESSAGE, Answer
from rag.chain import Pipeline, QuestionError, clean_question
from tests.helpers import QUESTIONS_DIR, SeedsIndex

QUESTIONS = {q.id: q for q in load_jsonl(QUESTIONS_DIR / "seeds.jsonl")}
OFF_TOPIC = {q.id: q for q in load_jsonl(QUESTIONS_DIR / "arcd-unanswerable.jsonl")}

# Questions the pipeline answers today, covering every kind of question in the set.
ANSWERABLE = [
    "s01",  # date
    "s04",  # date
    "s05",  # number
    "s08",  # number (ordinal)
    "s09",  # name
    "s10",  # name, from the opinion piece (000_...)
    "s21",  # paraphrase, opinion piece
    "s27",  # fact
    "s28",  # fact
    "s29",  # no diacritics, no hamza, taa marbuta written as haa
    "s31",  # no diacritics
    "s32",  # no diacritics
    "s37",  # dialect (Gulf/Iraqi "منو اللي")
    "s40",  # dialect (Levantine "قديش")
    "s41",  # dialect ("شنو")
    "s42",  # English question, Arabic documents
    "s43",  # English
    "s44",  # English
    "s49",  # English
]
# Questions the seeds do not answer: off-topic ones (Arabic and English) from the unanswerable set.
# Near-miss questions on the seeds' own topic (s55-s66) are not reliably caught by the extractive
# answerer; eval/RESULTS.md reports that rate instead of a test pretending otherwise.
OFF_TOPIC_IDS = ["u01", "u03", "u09", "u17", "u23", "u35"]

_answers: dict[str, Answer] = {}


def ask(pipeline: Pipeline, question: Question) -> Answer:
    if question.id not in _answers:  # each question is asked once per session
        _answers[question.id] = pipeline.ask(question.question)
    return _answers[question.id]


def top_sources(pipeline: Pipeline, question: str, k: int = 3) -> list[str]:
    return [d.metadata["source"] for d in pipeline.retriever.invoke(question, k=k)]


def test_question_set_kinds_are_covered() -> None:
    kinds = {QUESTIONS[q].kind for q in ANSWERABLE}
    assert {
        "date",
        "number",
        "name",
        "paraphrase",
        "fact",
        "no_diacritics",
        "dialect",
        "english",
    } <= kinds
    assert len(ANSWERABLE + OFF_TOPIC_IDS) >= 12
    assert {language(OFF_TOPIC[q].question) for q in OFF_TOPIC_IDS} == {"ar", "en"}


@pytest.mark.parametrize("qid", ANSWERABLE)
def test_answerable_question(seeds_pipeline: Pipeline, qid: str) -> None:
    question = QUESTIONS[qid]
    assert question.doc in top_sources(seeds_pipeline, question.question)
    answer = ask(seeds_pipeline, question)
    assert not answer.abstained, answer.answer
    assert contains(answer.answer, question.answers), (answer.answer, question.answers)
    assert any(contains(c.text, question.answers) and c.source == question.doc for c in answer.citations)


@pytest.mark.parametrize("qid", OFF_TOPIC_IDS)
def test_off_topic_question_abstains_in_its_language(seeds_pipeline: Pipeline, qid: str) -> None:
    question = OFF_TOPIC[qid]
    answer = ask(seeds_pipeline, question)
    assert answer.abstained, (answer.confidence, answer.answer)
    assert answer.citations == []
    assert answer.answer == ABSTAIN_MESSAGE[language(question.question)]
    assert answer.related  # the closest passages are still offered


# --- question validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    ["", "   ", "\n\t", "\x00\x01", "؟؟؟ ، ؛", "ـــ", "١٢٣٤٥٦", "2023؟", "15/8/2023 - 76"],
    ids=["empty", "spaces", "whitespace", "controls", "punctuation", "tatweel", "arabic-digits", "year", "numbers"],
)
def test_question_without_words_is_refused(seeds_pipeline: Pipeline, question: str) -> None:
    # Numbers alone are no question: every passage with a digit matches, and both answerers
    # returned a confident span about something else ("١٢٣٤٥٦" -> a 14-word reader span).
    with pytest.raises(QuestionError):
        seeds_pipeline.ask(question)


def test_a_question_with_a_number_and_one_word_is_asked() -> None:
    assert clean_question("2023 موسكو", 2000) == "2023 موسكو"
    assert clean_question("G20?", 2000) == "G20?"


def test_question_over_2000_chars_is_refused(seeds_pipeline: Pipeline) -> None:
    with pytest.raises(QuestionError, match="2,001"):
        seeds_pipeline.ask("س" * 2001)
    assert clean_question("  " + "س" * 2000 + "\n", 2000) == "س" * 2000


def test_clean_question_strips_controls() -> None:
    assert clean_question("\x07متى\x00 عقد المؤتمر؟\x1b ", 2000) == "متى  عقد المؤتمر؟"


# --- output shape and citations --------------------------------------------------------------------


def test_answer_json_fields(seeds_pipeline: Pipeline) -> None:
    answer = ask(seeds_pipeline, QUESTIONS["s01"])
    data = json.loads(json.dumps(answer.to_json(), ensure_ascii=False))
    assert {"question", "answer", "abstained", "citations", "timings_ms"} <= set(data)
    assert data["question"] == QUESTIONS["s01"].question
    assert isinstance(data["answer"], str) and data["answer"]
    assert data["abstained"] is False
    assert data["citations"]
    for citation in data["citations"]:
        assert {"n", "source", "title", "start", "end", "text", "score"} <= set(citation)
        assert (
            isinstance(citation["n"], int) and isinstance(citation["start"], int) and isinstance(citation["end"], int)
        )
        assert (
            isinstance(citation["score"], float)
            and isinstance(citation["text"], str)
            and isinstance(citation["title"], str)
        )
        assert citation["end"] - citation["start"] == len(citation["text"])
    assert {"retrieval", "answer", "total"} <= set(data["timings_ms"])
    assert all(isinstance(v, float) and v >= 0 for v in data["timings_ms"].values())


def test_abstained_answer_json(seeds_pipeline: Pipeline) -> None:
    data = ask(seeds_pipeline, OFF_TOPIC["u01"]).to_json()
    assert data["abstained"] is True and data["citations"] == []
    assert data["short_answer"] == "" and data["short_answer_citation"] == {}
    json.dumps(data, ensure_ascii=False)


@pytest.mark.parametrize("qid", ["s01", "s10", "s28", "s40"])
def test_citation_markers_and_spans(seeds_pipeline: Pipeline, seeds_copy: Path, qid: str) -> None:
    answer = ask(seeds_pipeline, QUESTIONS[qid])
    numbers = [c.n for c in answer.citations]
    assert numbers == list(range(1, len(numbers) + 1))
    markers = {int(m) for m in re.findall(r"\[(\d+)\]", answer.answer)}
    assert markers and markers == set(numbers)
    for citation in answer.citations:
        source_text = (seeds_copy / citation.source).read_text(encoding="utf-8")
        assert source_text[citation.start : citation.end] == citation.text
        assert citation.highlights
        for start, end in citation.highlights:
            assert 0 <= start < end <= len(citation.text)
            # The answer is made of the highlighted sentences, copied verbatim.
            assert citation.text[start:end] in answer.answer
    for related in answer.related:
        source_text = (seeds_copy / related.source).read_text(encoding="utf-8")
        assert source_text[related.start : related.end] == related.text


def test_k_limits_related_passages(seeds_pipeline: Pipeline) -> None:
    answer = seeds_pipeline.ask(QUESTIONS["s09"].question, k=2)
    assert len(answer.related) == 2
    assert [r.n for r in answer.related] == [1, 2]


# --- the short answer -------------------------------------------------------------------------------
# How spans are chosen and placed is tested with every short answer shown (the gate off,
# RAG_SHORT_ANSWER_THRESHOLD=0); whether one is shown is tests/test_short_gate.py's and test_examples.py's.


@pytest.fixture(scope="module")
def all_shown(seeds_index: SeedsIndex) -> Pipeline:
    return Pipeline(seeds_index.config.replace(short_answer_threshold=0.0), index=seeds_index.index)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("كم دولة جاء منها المندوبون إلى مؤتمر موسكو 2023؟", "76"),
        ("متى عُقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟", "15 أغسطس 2023"),
        ("قديش مندوب حضر مؤتمر موسكو 2023؟", "800"),
    ],
)
def test_short_answer_to_factoid_questions(all_shown: Pipeline, question: str, expected: str) -> None:
    # The span ranker's question words, dialect ones too ("قديش"): the reader, the default, answers
    # "قديش مندوب…" with a date, which the gate withholds (tests/test_examples.py holds it to that).
    answer = all_shown.ask(question, reader=False)
    assert expected in answer.short_answer, answer.answer
    assert len(answer.short_answer.split()) <= 8
    assert answer.answer.startswith(answer.short_answer)


@pytest.mark.parametrize("qid", ANSWERABLE)
def test_short_answer_is_verbatim_at_its_offsets_and_highlighted(all_shown: Pipeline, qid: str) -> None:
    answer = all_shown.ask(QUESTIONS[qid].question)
    where = answer.short_answer_citation
    (citation,) = [c for c in answer.citations if c.n == where["n"]]
    assert citation.text[where["start"] : where["end"]] == answer.short_answer
    assert (where["start"], where["end"]) in citation.highlights
    assert answer.short_answer in answer.answer
    # One evidence sentence, two at most: the answer stays short.
    assert len(re.findall(r"\[\d+\]", answer.answer)) <= 2


@pytest.fixture(scope="module")
def reader_pipeline(seeds_index: SeedsIndex) -> Pipeline:
    """The seeds with the shipped fine-tuned reader (the default) and every short answer shown."""
    return Pipeline(seeds_index.config.replace(answer_reader=True, short_answer_threshold=0.0), index=seeds_index.index)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("كم دولة جاء منها المندوبون إلى مؤتمر موسكو 2023؟", "76"),
        ("متى انعقد مؤتمر موسكو للأمن الدولي؟", "15 أغسطس 2023"),
        ("من ألقى الكلمة الافتتاحية في المؤتمر؟", "فلاديمير بوتين"),
        # English questions about the Arabic text: read too (the span ranker answers these two
        # with "اللعب بالنار" and «القضايا الاستراتيجية»).
        ('Which Chinese defense minister warned against "playing with fire" over Taiwan?', "لي شانغفو"),
        ("Which country did the Chinese defense minister also visit?", "بيلاروسيا"),
    ],
)
def test_the_shipped_reader_answers_with_a_verbatim_span(
    reader_pipeline: Pipeline, question: str, expected: str
) -> None:
    answer = reader_pipeline.ask(question)
    assert expected in answer.short_answer and len(answer.short_answer.split()) <= 8, answer.answer
    where = answer.short_answer_citation
    (citation,) = [c for c in answer.citations if c.n == where["n"]]
    assert citation.text[where["start"] : where["end"]] == answer.short_answer
    assert answer.answer.startswith(f"{answer.short_answer} — ")


def test_a_question_switches_the_reader_on_or_off(seeds_index: SeedsIndex, reader_pipeline: Pipeline) -> None:
    plain = Pipeline(
        seeds_index.config.replace(answer_reader=False, short_answer_threshold=0.0), index=seeds_index.index
    )
    question = 'Which Chinese defense minister warned against "playing with fire" over Taiwan?'
    ranked = plain.ask(question).short_answer
    assert plain.reader is None and "لي شانغفو" not in ranked  # the span ranker misses it
    assert "لي شانغفو" in plain.ask(question, reader=True).short_answer  # loaded on first use
    assert plain.ask(question, reader=False).short_answer == ranked  # the config's default stays
    assert plain.ask(question).short_answer == ranked
    # After a reload (an upload), the switched chain is rebuilt over the new index.
    plain.reload(seeds_index.index)
    assert "لي شانغفو" in plain.ask(question, reader=True).short_answer
    # And the other way: a reader-on pipeline answers one question without it.
    assert reader_pipeline.ask(question, reader=False).short_answer == ranked
    assert "لي شانغفو" in reader_pipeline.ask(question).short_answer


@pytest.mark.parametrize(
    "question", ["متى عقد المؤتمر؟", "Who opened the conference?", "كم عدد الدول المشاركة في المؤتمر؟"]
)
def test_the_evidence_of_one_passage_reads_in_the_documents_order(seeds_pipeline: Pipeline, question: str) -> None:
    """A new user got "وحتى عام 2014، … [1] يعقد المؤتمر بشكل سنوي…، [1] مُنذ تأسيسه عام 2012، [1]":
    three pieces of one passage in ranked order, reading backwards (highlights too)."""
    answer = seeds_pipeline.ask(question)
    evidence = answer.answer.split(" — ", 1)[-1] if answer.short_answer else answer.answer
    for citation in answer.citations:
        assert citation.highlights == sorted(citation.highlights), (question, citation.highlights)
        pieces = [evidence.find(citation.text[a:b]) for a, b in citation.highlights]
        shown = [at for at in pieces if at >= 0]
        assert shown == sorted(shown), (question, answer.answer)
