"""rag/feedback.py: users' verdicts on answers, appended and never rewritten, turned into questions
(issue 29: feedback that becomes a test set). Hostile input: wrong verdicts, oversized fields,
unknown fields, torn lines, a folder that is not an index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eval.__main__ import from_feedback
from eval.questions import QuestionFileError, load_jsonl
from index.store import NotAnIndex
from rag.answer import Answer, Citation
from rag.feedback import (
    FEEDBACK_FILE,
    MAX_CORRECTION_CHARS,
    Feedback,
    FeedbackError,
    FeedbackLog,
    answer_record,
    regression_questions,
)
from tests.helpers import REPO_ROOT, SeedsIndex, child_env

CITATION = Citation(
    n=1, source="moscow.txt", title="مؤتمر موسكو", start=0, end=40, text="حضر المؤتمر أكثر من 800 مندوب.", score=0.8
)


def shown(short: str = "أكثر من 800 مندوب", abstained: bool = False) -> Answer:
    return Answer(
        question="كم عدد المندوبين؟",
        answer=f"{short} [1]" if not abstained else "لم أجد الجواب.",
        abstained=abstained,
        citations=[] if abstained else [CITATION],
        related=[CITATION] if abstained else [],
        short_answer="" if abstained else short,
    )


def rated(answer: Answer, verdict: str, **more: object) -> Feedback:
    return Feedback.from_record(
        {**answer_record(answer, [("متى عقد المؤتمر؟", "في أغسطس")]), "verdict": verdict, **more}
    )


def test_a_verdict_is_appended_and_read_back_whole(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "index")
    first = rated(shown(), "right")
    log.append(first)
    written = (tmp_path / "index" / FEEDBACK_FILE).read_bytes()
    second = rated(shown(), "wrong", correction="800")
    log.append(second)
    assert (tmp_path / "index" / FEEDBACK_FILE).read_bytes().startswith(written)  # never rewritten
    assert log.read() == ([first, second], 0)
    assert first.history == (("متى عقد المؤتمر؟", "في أغسطس"),) and first.citations[0]["source"] == "moscow.txt"


def test_a_torn_or_edited_line_is_skipped_and_counted(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path)
    log.append(rated(shown(), "right"))
    with open(tmp_path / FEEDBACK_FILE, "a", encoding="utf-8") as handle:
        handle.write('{"question": "x", "verdict": "maybe"}\n[1, 2]\n{"question": "كم')  # a crash mid-line
    log.append(rated(shown(), "wrong"))  # on a line of its own, not glued to the torn one
    kept, bad = log.read()
    assert [f.verdict for f in kept] == ["right", "wrong"] and bad == 3


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"verdict": "maybe"}, "feedback_bad_field"),
        ({"verdict": None}, "feedback_bad_field"),
        ({"question": "   "}, "feedback_bad_field"),
        ({"question": "س" * 5000}, "feedback_bad_field"),
        ({"correction": "ج" * (MAX_CORRECTION_CHARS + 1)}, "feedback_correction_long"),
        ({"correction": 800}, "feedback_correction_long"),
        ({"history": [["only one"]]}, "feedback_bad_field"),
        ({"history": "متى؟"}, "feedback_bad_field"),
        ({"citations": [{"text": "x" * 45_000}]}, "feedback_bad_field"),
        ({"citations": ["not a citation"]}, "feedback_bad_field"),
        ({"answer_id": "x"}, "feedback_bad_field"),
        ({"abstained": "no"}, "feedback_bad_field"),
        ({"__class__": "os.system"}, "feedback_bad_field"),
    ],
)
def test_hostile_feedback_is_refused_with_its_field_named(change: dict[str, object], code: str) -> None:
    record = {**answer_record(shown(), []), "verdict": "wrong", **change}
    with pytest.raises(FeedbackError) as raised:
        Feedback.from_record(record)
    assert raised.value.code == code
    assert raised.value.localized("ar") != raised.value.localized("en")


def test_a_missing_field_or_a_body_that_is_no_object_is_named() -> None:
    body: object
    for body in ([], "verdict", None):
        with pytest.raises(FeedbackError):
            Feedback.from_record(body)
    with pytest.raises(FeedbackError) as raised:
        Feedback.from_record({"question": "كم؟", "answer": "800"})
    assert raised.value.params == {"field": "verdict"}


def test_feedback_is_never_written_into_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SECRET=1")
    with pytest.raises(NotAnIndex):
        FeedbackLog(tmp_path).append(rated(shown(), "right"))
    assert sorted(os.listdir(tmp_path)) == [".env"]


def test_verdicts_become_questions_the_latest_one_counting() -> None:
    confirmed, corrected, refused, unscored = shown(), shown("أغسطس"), shown(abstained=True), shown("الصين")
    first = rated(corrected, "right")
    later = Feedback.from_record({**first.record(), "verdict": "wrong", "correction": "أكثر من 800 مندوب"})
    made = regression_questions(
        [rated(confirmed, "right"), first, rated(refused, "right"), rated(unscored, "wrong"), later]
    )
    assert made.unscored == 1
    by_answer = {q["answers"][0] if q["answers"] else "": q for q in made.questions}
    assert set(by_answer) == {"أكثر من 800 مندوب", ""} and len(made.questions) == 3
    corrections = [q for q in made.questions if q["id"] == f"fb-{first.answer_id}"]
    assert corrections[0]["answers"] == ["أكثر من 800 مندوب"] and "doc" not in corrections[0]  # its citation was wrong
    assert by_answer[""]["history"] == ["متى عقد المؤتمر؟"]
    kept = [q for q in made.questions if q["answers"] and q["id"] != f"fb-{first.answer_id}"]
    assert kept[0]["doc"] == "moscow.txt"


def test_the_questions_load_as_a_question_file_and_an_empty_log_says_so(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "index")
    with pytest.raises(QuestionFileError):
        from_feedback(tmp_path / "index", None)
    log.append(rated(shown(), "right"))
    log.append(rated(shown(), "wrong", correction="800"))
    out = tmp_path / "regressions.jsonl"
    questions = from_feedback(tmp_path / "index", out)
    assert [q.answers for q in load_jsonl(out)] == [q.answers for q in questions] == [["أكثر من 800 مندوب"], ["800"]]
    assert all(json.loads(line)["kind"] == "feedback" for line in out.read_text(encoding="utf-8").splitlines())


@pytest.mark.integration
def test_python_m_eval_feedback_measures_the_verdicts_over_the_index_documents(
    seeds_index: SeedsIndex, tmp_path: Path
) -> None:
    """The round trip of issue 29: verdicts in an index's feedback file, asked again by `python -m
    eval --feedback INDEX` over the folder that index was built from, and scored."""
    index = tmp_path / "index"
    shutil.copytree(seeds_index.config.index_dir, index)
    log = FeedbackLog(index)
    log.append(rated(shown(), "wrong", correction="أكثر من 800 مندوب"))
    log.append(
        Feedback(
            question="في أي سنة تأسس مؤتمر موسكو للأمن الدولي؟", answer="2012", short_answer="2012", verdict="right"
        )
    )
    log.append(rated(shown("الصين"), "wrong"))  # nothing to score against
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "eval", "--feedback", str(index), "--quiet", "--json", str(out)],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "3 verdicts" in done.stderr and "-> 2 questions" in done.stderr and "1 👎 without" in done.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["metrics"]["questions"] == 2
    assert result["metrics"]["answer_contains"] == 1.0  # both are in the seeds the index was built from
