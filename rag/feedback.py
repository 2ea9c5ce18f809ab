"""What users say about answers, kept so that their complaints become measured cases.

Each 👍/👎 (and an optional "the right answer is …") from the UI or `POST /api/feedback` is one
JSON line appended to `feedback.jsonl` in the index folder: the question, the conversation before
it, the answer and its citations as shown, the verdict, the correction and the time. Nothing is
ever rewritten: a later line about the same answer (`answer_id`) supersedes an earlier one when
read. `python -m eval --feedback INDEX` turns the lines into a question set (`regression_questions`):
a correction is the gold answer, a 👍 on a short answer keeps that answer as gold, a 👍 on a refusal
makes an unanswerable question; a 👎 without a correction cannot be scored and is only counted.

One line is written with one `write` on a file opened for appending, under a lock; a line torn by a
crash is skipped (and counted) when read, and the next line starts on a line of its own, so it can
never take the others with it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from core.errors import UserError
from index.store import claim
from rag.answer import Answer

FEEDBACK_FILE = "feedback.jsonl"
Verdict = Literal["right", "wrong"]
VERDICTS: tuple[str, ...] = ("right", "wrong")
# Bounds on what one line may hold (a question is capped at 2,000 characters where it is asked;
# an answer with its cited passages is a few KB): a crafted request cannot grow the file by
# megabytes a line.
MAX_TEXT_CHARS = 4_000
MAX_CORRECTION_CHARS = 500
MAX_HISTORY_TURNS = 10
MAX_CITATIONS = 10


class FeedbackError(UserError):
    """Feedback that cannot be kept as sent; the message names the field."""


@dataclass(frozen=True)
class Feedback:
    """One verdict on one shown answer."""

    question: str
    answer: str
    verdict: str
    short_answer: str = ""
    abstained: bool = False
    correction: str = ""
    history: tuple[tuple[str, str], ...] = ()  # (question, answer) of the earlier turns, oldest first
    citations: tuple[dict[str, Any], ...] = ()  # as shown: n, source, title, text
    answer_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise FeedbackError(code="feedback_bad_field", params={"field": "verdict"})
        if not isinstance(self.question, str) or not self.question.strip() or len(self.question) > MAX_TEXT_CHARS:
            raise FeedbackError(code="feedback_bad_field", params={"field": "question"})
        for name, limit in (("answer", MAX_TEXT_CHARS), ("short_answer", MAX_TEXT_CHARS)):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > limit:
                raise FeedbackError(code="feedback_bad_field", params={"field": name})
        if not isinstance(self.correction, str) or len(self.correction) > MAX_CORRECTION_CHARS:
            raise FeedbackError(code="feedback_correction_long", params={"limit": MAX_CORRECTION_CHARS})
        if not isinstance(self.answer_id, str) or not 8 <= len(self.answer_id) <= 64:
            raise FeedbackError(code="feedback_bad_field", params={"field": "answer_id"})
        turns_ok = all(
            isinstance(t, (list, tuple))
            and len(t) == 2
            and all(isinstance(x, str) and len(x) <= MAX_TEXT_CHARS for x in t)
            for t in self.history
        )
        if len(self.history) > MAX_HISTORY_TURNS or not turns_ok:
            raise FeedbackError(code="feedback_bad_field", params={"field": "history"})
        if len(self.citations) > MAX_CITATIONS or not all(isinstance(c, dict) for c in self.citations):
            raise FeedbackError(code="feedback_bad_field", params={"field": "citations"})
        if len(json.dumps(self.citations, ensure_ascii=False, default=str)) > MAX_CITATIONS * MAX_TEXT_CHARS:
            raise FeedbackError(code="feedback_bad_field", params={"field": "citations"})

    @classmethod
    def from_record(cls, record: object) -> Feedback:
        """A Feedback from a JSON object (a line of the file, an API body); FeedbackError when it is not one."""
        if not isinstance(record, dict):
            raise FeedbackError(code="feedback_bad_field", params={"field": "body"})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise FeedbackError(code="feedback_bad_field", params={"field": unknown[0]})
        values = dict(record)
        history = values.get("history", ())
        citations = values.get("citations", ())
        if not isinstance(history, (list, tuple)) or not isinstance(citations, (list, tuple)):
            raise FeedbackError(code="feedback_bad_field", params={"field": "history" if history else "citations"})
        values["history"] = tuple(tuple(t) if isinstance(t, (list, tuple)) else t for t in history)
        values["citations"] = tuple(citations)
        if not isinstance(values.get("abstained", False), bool):
            raise FeedbackError(code="feedback_bad_field", params={"field": "abstained"})
        try:
            return cls(**values)
        except TypeError as exc:  # a required field missing
            missing = next((f for f in ("question", "answer", "verdict") if f not in values), "body")
            raise FeedbackError(code="feedback_bad_field", params={"field": missing}) from exc

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["history"] = [list(t) for t in self.history]
        out["citations"] = list(self.citations)
        return out


def answer_record(answer: Answer, history: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """What a verdict on this shown answer will record (all of Feedback but the verdict), with a
    new answer_id; the UI keeps it beside the message until the user rates it."""
    cited = answer.citations or answer.related  # a refusal shows related passages
    return {
        "question": answer.question[:MAX_TEXT_CHARS],
        "answer": answer.answer[:MAX_TEXT_CHARS],
        "short_answer": (answer.short_answer or "")[:MAX_TEXT_CHARS],
        "abstained": answer.abstained,
        "history": [[q[:MAX_TEXT_CHARS], a[:MAX_TEXT_CHARS]] for q, a in list(history)[-MAX_HISTORY_TURNS:]],
        "citations": [
            {"n": c.n, "source": c.source, "title": c.title, "text": c.text[:MAX_TEXT_CHARS]}
            for c in cited[:MAX_CITATIONS]
        ],
        "answer_id": uuid.uuid4().hex,
    }


# One lock per file in this process: the UI and the API in one server write the same file.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class FeedbackLog:
    """The append-only feedback file of one index folder."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self.path = index_dir / FEEDBACK_FILE
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.path.absolute(), threading.Lock())

    def append(self, feedback: Feedback) -> None:
        """One line, written whole with one call and flushed to disk before returning."""
        line = (json.dumps(feedback.record(), ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            claim(self.index_dir)  # the index folder is ours before anything is written into it
            handle = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(handle).st_size
                if size and os.pread(handle, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a line torn by a crash ends there; it never swallows this one
                os.write(handle, line)
                os.fsync(handle)
            finally:
                os.close(handle)

    def read(self) -> tuple[list[Feedback], int]:
        """Every readable line in order, and how many lines could not be read (torn or edited)."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return [], 0
        kept: list[Feedback] = []
        bad = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                kept.append(Feedback.from_record(json.loads(line)))
            except (ValueError, UserError):
                bad += 1
        return kept, bad


@dataclass(frozen=True)
class RegressionSet:
    """Question-file records (eval/questions.py's format) made from feedback, and what was left out."""

    questions: list[dict[str, Any]]
    unscored: int  # 👎 without a correction: nothing to score against


def regression_questions(feedback: Sequence[Feedback]) -> RegressionSet:
    """The latest verdict per answer as a question: the correction, else the 👍'd short answer, is
    the gold answer; a 👍'd refusal is an unanswerable question (answers: [])."""
    latest: dict[str, Feedback] = {}
    for item in feedback:
        latest.pop(item.answer_id, None)
        latest[item.answer_id] = item  # keeps the order of the latest line
    questions: list[dict[str, Any]] = []
    unscored = 0
    for item in latest.values():
        if item.correction.strip():
            answers = [item.correction.strip()]
        elif item.verdict == "right" and item.abstained:
            answers = []
        elif item.verdict == "right" and item.short_answer.strip():
            answers = [item.short_answer.strip()]
        else:
            unscored += 1
            continue
        record: dict[str, Any] = {"id": f"fb-{item.answer_id}", "question": item.question, "answers": answers}
        if item.history:
            record["history"] = [q for q, _ in item.history if q.strip()]
        # The cited document is the gold one only where the user agreed with the answer.
        if item.verdict == "right" and item.citations and isinstance(item.citations[0].get("source"), str):
            record["doc"] = item.citations[0]["source"]
        record["kind"] = "feedback"
        questions.append(record)
    return RegressionSet(questions, unscored)
