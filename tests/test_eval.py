"""eval.metrics on hand-made cases, question-file validation, the seeds question set, SQuAD loading."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from eval.metrics import (
    answer_key,
    contains,
    exact_match,
    first_hit,
    mean,
    percentile,
    recall_at,
    reciprocal_rank,
    token_f1,
)
from eval.questions import QuestionFileError, load_jsonl, load_squad
from eval.runner import by_kind, format_kinds
from tests.helpers import QUESTIONS_DIR, SEEDS_DIR

# --- metrics ---------------------------------------------------------------------------------------


def test_answer_key_folds_arabic_and_drops_markers() -> None:
    assert answer_key("القاهرةُ [1] عاصمةُ مِصر [2]") == "قاهره عاصمه مصر"
    assert answer_key("The Nile") == "nile"
    assert answer_key("إلى الأمم المتحدة") == answer_key("الى الامم المتحده")


def test_token_f1() -> None:
    assert token_f1("القاهرة عاصمة مصر", ["عاصمة مصر"]) == pytest.approx(0.8)
    assert token_f1("عاصمة مصر", ["عاصمة مصر"]) == pytest.approx(1.0)
    assert token_f1("عاصِمَةُ مِصْرَ", ["عاصمه مصر"]) == pytest.approx(1.0)
    assert token_f1("مؤتمر موسكو", ["عاصمة مصر"]) == 0.0
    assert token_f1("", ["عاصمة مصر"]) == 0.0
    assert token_f1("عاصمة مصر", []) == 0.0
    # Best over several gold answers; precision 1/3, recall 1/1 -> F1 = 0.5.
    assert token_f1("في 2012 تأسس", ["2012", "عام 2012 الميلادي والهجري"]) == pytest.approx(0.5)
    # Repeated tokens are counted with multiplicity.
    assert token_f1("مصر مصر", ["مصر"]) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_exact_match_ignores_diacritics_alef_forms_and_articles() -> None:
    assert exact_match("إِلَى الأُمَمِ المُتَّحِدَةِ", ["الى الامم المتحده"]) == 1.0
    assert exact_match("أحمد", ["احمد"]) == 1.0
    assert exact_match("مستشفى", ["مستشفي"]) == 1.0
    assert exact_match("٢٠١٢", ["2012"]) == 1.0
    assert exact_match("The United Nations", ["united nations"]) == 1.0
    assert exact_match("الأمم المتحدة [1]", ["الأمم المتحدة"]) == 1.0
    assert exact_match("الأمم المتحدة في نيويورك", ["الأمم المتحدة"]) == 0.0
    assert exact_match("", ["الأمم المتحدة"]) == 0.0


def test_contains_is_normalised_and_whole_word() -> None:
    answer = "عُقِدَ المؤتمرُ في ١٥ أغسطس ٢٠٢٣ [1]"
    assert contains(answer, ["15 اغسطس 2023"])
    assert contains(answer, ["المؤتمر"])
    assert contains(answer, ["لا يوجد", "أغسطس"])
    assert not contains(answer, ["أغس"])  # not a whole word
    assert not contains(answer, ["2022"])
    assert not contains(answer, [])
    assert not contains(answer, ["", "؟"])  # empty keys never match
    assert contains("وزارة الدفاع الروسية تنظم المؤتمر", ["وزاره الدفاع الروسيه"])


def test_ranking_metrics() -> None:
    assert first_hit([False, False, True, True]) == 3
    assert first_hit([True]) == 1
    assert first_hit([False, False]) is None
    assert first_hit([]) is None
    assert recall_at(1, 1) == 1.0
    assert recall_at(3, 5) == 1.0
    assert recall_at(6, 5) == 0.0
    assert recall_at(None, 5) == 0.0
    assert reciprocal_rank(1) == 1.0
    assert reciprocal_rank(4) == 0.25
    assert reciprocal_rank(10) == pytest.approx(0.1)
    assert reciprocal_rank(11) == 0.0
    assert reciprocal_rank(3, cutoff=2) == 0.0
    assert reciprocal_rank(None) == 0.0
    assert mean([]) == 0.0 and mean([1.0, 0.0, 0.5]) == pytest.approx(0.5)


def test_by_kind_scores_each_kind_of_answerable_question_apart() -> None:
    def record(kind: str, answerable: bool, contains: bool, f1: float, short: float) -> dict[str, Any]:
        return {"kind": kind, "answerable": answerable, "contains": contains, "short_f1": f1, "short_contains": short}

    records = [
        record("english", True, True, 1.0, 1.0),
        record("english", True, False, 0.5, 0.0),
        record("date", True, True, 0.25, 0.0),
        record("english", False, False, 0.0, 0.0),  # unanswerable: not scored here
        record("", True, True, 1.0, 1.0),  # no kind given
    ]
    kinds = by_kind(records)
    assert list(kinds) == ["(none)", "date", "english"]
    assert kinds["english"] == {"questions": 2, "answer_contains": 0.5, "short_f1": 0.75, "short_contains": 0.5}
    assert kinds["date"]["questions"] == 1 and kinds["date"]["short_f1"] == 0.25
    table = format_kinds(kinds).splitlines()
    assert table[0].split() == ["kind", "questions", "answer_contains", "short_f1", "short_contains"]
    assert table[-1].split() == ["english", "2", "0.500", "0.750", "0.500"]


def test_percentile_nearest_rank() -> None:
    values = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == 9.0
    assert percentile(values, 95) == 10.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 10) == 1.0
    assert percentile(values, 11) == 2.0
    assert percentile(list(range(1, 21)), 95) == 19
    assert percentile([4.2], 50) == 4.2
    assert percentile([], 50) == 0.0


def test_percentile_exact_for_every_integer_percentile() -> None:
    # Nearest rank is ceil(q * n / 100); q / 100 * n in floating point overshoots for some q
    # (7 / 100 * 100 == 7.000000000000001), which moves the answer one rank up.
    wrong = [
        (q, n)
        for n in (25, 50, 75, 100)
        for q in range(101)
        if percentile(list(range(1, n + 1)), q) != max(1, math.ceil(q * n / 100))
    ]
    assert wrong == []


# --- question files --------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"id": "q1", "question": "متى عُقد المؤتمر؟", "answers": ["2023"], "doc": "a.txt"}, ensure_ascii=False)


def test_load_jsonl_valid(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "q.jsonl",
        [GOOD, "", json.dumps({"id": "q2", "question": "سؤال بلا جواب؟", "answers": [], "kind": "unanswerable"})],
    )
    q1, q2 = load_jsonl(path)
    assert (q1.id, q1.question, q1.answers, q1.doc, q1.answerable) == (
        "q1",
        "متى عُقد المؤتمر؟",
        ["2023"],
        "a.txt",
        True,
    )
    assert (q2.id, q2.doc, q2.kind, q2.answerable) == ("q2", None, "unanswerable", False)
    assert q1.history == q2.history == ()


def test_load_jsonl_history(tmp_path: Path) -> None:
    record = {"id": "q1", "history": ["من مثّل إيران؟", "ما منصبه؟"], "question": "وإلى ماذا دعا؟", "answers": ["x"]}
    (question,) = load_jsonl(write_lines(tmp_path / "q.jsonl", [json.dumps(record, ensure_ascii=False)]))
    assert question.history == ("من مثّل إيران؟", "ما منصبه؟")


@pytest.mark.parametrize(
    ("lines", "line_no", "fragment"),
    [
        ([GOOD, '{"id": "q2", "question": "مكسور'], 2, "not valid JSON"),
        ([GOOD, json.dumps({"question": "بلا معرف؟", "answers": []})], 2, "'id'"),
        ([json.dumps({"id": "", "question": "معرف فارغ؟", "answers": []})], 1, "'id'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": []}), GOOD], 3, "duplicate id 'q1'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": "2023"})], 2, "'answers'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": ["2023", ""]})], 2, "'answers'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟"})], 2, "'answers'"),
        ([GOOD, "", json.dumps({"id": "q2", "question": "  ", "answers": []})], 3, "'question'"),
        ([GOOD, "[1, 2]"], 2, "JSON object"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": [], "doc": 7})], 2, "'doc'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": [], "history": "y؟"})], 2, "'history'"),
        ([GOOD, json.dumps({"id": "q2", "question": "x؟", "answers": [], "history": ["y؟", " "]})], 2, "'history'"),
    ],
    ids=[
        "bad-json",
        "missing-id",
        "empty-id",
        "duplicate-id",
        "answers-string",
        "empty-answer",
        "no-answers",
        "blank-question",
        "not-object",
        "doc-not-string",
        "history-string",
        "history-blank-entry",
    ],
)
def test_load_jsonl_errors_name_the_line(tmp_path: Path, lines: list[str], line_no: int, fragment: str) -> None:
    path = write_lines(tmp_path / "q.jsonl", lines)
    with pytest.raises(QuestionFileError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert f"{path}:{line_no}:" in message
    assert fragment in message


def test_load_jsonl_empty_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(QuestionFileError, match="no questions"):
        load_jsonl(write_lines(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(QuestionFileError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"id": "\xe9"}\n')
    with pytest.raises(QuestionFileError, match="cannot read"):
        load_jsonl(tmp_path / "latin.jsonl")


# --- the shipped question sets -----------------------------------------------------------------------


def test_seed_questions_are_valid_and_cover_every_kind() -> None:
    questions = load_jsonl(QUESTIONS_DIR / "seeds.jsonl")
    assert len(questions) == len({q.id for q in questions}) >= 60
    kinds = {q.kind for q in questions}
    assert {
        "date",
        "number",
        "name",
        "paraphrase",
        "fact",
        "no_diacritics",
        "dialect",
        "english",
        "cross_doc",
        "unanswerable",
    } <= kinds
    docs = {p.name for p in SEEDS_DIR.iterdir()}
    assert all(q.doc is None or q.doc in docs for q in questions)
    assert all(q.answerable for q in questions if q.kind not in ("unanswerable", "off_topic", "near_miss"))
    assert not any(q.answerable for q in questions if q.kind == "unanswerable")


def test_follow_up_set_is_valid() -> None:
    questions = load_jsonl(QUESTIONS_DIR / "followups.jsonl")
    assert len(questions) >= 20
    assert all(q.history and q.answerable and q.doc for q in questions)
    assert {"arabic", "english"} <= {q.kind for q in questions}


@pytest.mark.parametrize("name", ["seeds.jsonl", "followups.jsonl"])
def test_every_gold_answer_occurs_verbatim_in_its_document(name: str) -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in SEEDS_DIR.iterdir()}
    missing = []
    for q in load_jsonl(QUESTIONS_DIR / name):
        candidates = [texts[q.doc]] if q.doc else list(texts.values())
        missing += [(q.id, a) for a in q.answers if not any(a in t for t in candidates)]
    assert missing == []


def test_every_follow_up_gold_answer_can_be_matched_by_the_metric() -> None:
    """`contains` matches whole words: a gold that only occurs inside a longer word could never score."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in SEEDS_DIR.iterdir()}
    questions = load_jsonl(QUESTIONS_DIR / "followups.jsonl")
    assert [(q.id, a) for q in questions for a in q.answers if not contains(texts[q.doc or ""], [a])] == []


def test_arcd_unanswerable_set_is_valid() -> None:
    questions = load_jsonl(QUESTIONS_DIR / "arcd-unanswerable.jsonl")
    assert questions and not any(q.answerable for q in questions)


# --- SQuAD -----------------------------------------------------------------------------------------


def test_load_squad(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "version": "1.1",
        "data": [
            {
                "title": "نهر_النيل",
                "paragraphs": [
                    {
                        "context": "نهر النيل أطول أنهار أفريقيا، ويصب في البحر المتوسط.",
                        "qas": [
                            {
                                "id": "n1",
                                "question": " أين يصب نهر النيل؟ ",
                                "answers": [
                                    {"text": "البحر المتوسط", "answer_start": 38},
                                    {"text": "في البحر المتوسط ", "answer_start": 35},
                                    {"text": "البحر المتوسط", "answer_start": 38},
                                ],
                            }
                        ],
                    },
                    {
                        "context": "ينبع النيل الأزرق من بحيرة تانا.",
                        "qas": [
                            {
                                "id": 7,
                                "question": "من أين ينبع النيل الأزرق؟",
                                "answers": [{"text": "بحيرة تانا", "answer_start": 21}],
                            }
                        ],
                    },
                ],
            },
            {
                "title": "",
                "paragraphs": [
                    {"context": "القهوة مشروب.", "qas": [{"id": "c1", "question": "ما القهوة؟", "answers": []}]}
                ],
            },
        ],
    }
    path = tmp_path / "tiny-squad.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    documents, questions = load_squad(path)
    assert [d.metadata["source"] for d in documents] == ["000-000.txt", "000-001.txt", "001-000.txt"]
    assert [d.metadata["title"] for d in documents] == ["نهر النيل", "نهر النيل", "article 1"]
    assert documents[0].page_content == data["data"][0]["paragraphs"][0]["context"]
    assert documents[0].metadata["encoding"] == "utf-8" and len(documents[0].metadata["sha256"]) == 64
    assert [q.id for q in questions] == ["n1", "7", "c1"]
    n1 = questions[0]
    assert n1.question == "أين يصب نهر النيل؟"
    assert n1.answers == ["البحر المتوسط", "في البحر المتوسط"]
    assert n1.gold_sources == frozenset({"000-000.txt"}) and n1.doc == "000-000.txt" and n1.kind == "squad"
    assert questions[2].answers == [] and not questions[2].answerable


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": "1.1"}), json.dumps([1, 2])])
def test_load_squad_rejects_other_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QuestionFileError, match=r"bad\.json"):
        load_squad(path)
