"""Question sets: our JSONL format (validated up front) and SQuAD-format data such as ARCD."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from langchain_core.documents import Document

from core.config import PROJECT_ROOT
from core.errors import UserError

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


class QuestionFileError(UserError):
    """A question file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    doc: str | None = None
    kind: str = ""
    gold_sources: frozenset[str] = field(default_factory=frozenset)  # SQuAD: the question's own paragraph
    history: tuple[str, ...] = ()  # earlier questions of the conversation, oldest first

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def load_jsonl(path: Path) -> list[Question]:
    """Parse and validate every line before any work starts."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(f"{path}: cannot read ({exc})") from exc
    questions: list[Question] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise QuestionFileError(f"{where}: not valid JSON ({exc.args[0]})") from exc
        if not isinstance(record, dict):
            raise QuestionFileError(f"{where}: expected a JSON object")
        qid, text, answers = record.get("id"), record.get("question"), record.get("answers")
        if not isinstance(qid, str) or not qid:
            raise QuestionFileError(f"{where}: 'id' must be a non-empty string")
        if qid in seen:
            raise QuestionFileError(f"{where}: duplicate id {qid!r}")
        if not isinstance(text, str) or not text.strip():
            raise QuestionFileError(f"{where}: 'question' must be a non-empty string")
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise QuestionFileError(f"{where}: 'answers' must be a list of non-empty strings ([] = unanswerable)")
        doc = record.get("doc")
        if doc is not None and not isinstance(doc, str):
            raise QuestionFileError(f"{where}: 'doc' must be a file name string")
        history = record.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, str) and h.strip() for h in history):
            raise QuestionFileError(f"{where}: 'history' must be a list of earlier questions (non-empty strings)")
        seen.add(qid)
        questions.append(Question(qid, text, answers, doc, str(record.get("kind", "")), history=tuple(history)))
    if not questions:
        raise QuestionFileError(f"{path}: no questions")
    return questions


def load_squad(path: Path) -> tuple[list[Document], list[Question]]:
    """SQuAD v1.1 JSON -> one Document per paragraph (titled by its article) and the questions.

    Each question's gold passage is its own paragraph, so retrieval is judged against the
    paragraph the annotator wrote the question for.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        articles = data["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QuestionFileError(f"{path}: not a readable SQuAD-format file ({exc})") from exc
    documents: list[Document] = []
    questions: list[Question] = []
    for a, article in enumerate(articles):
        title = str(article.get("title", "")).replace("_", " ").strip() or f"article {a}"
        for p, paragraph in enumerate(article["paragraphs"]):
            context = paragraph["context"]
            source = f"{a:03d}-{p:03d}.txt"
            documents.append(
                Document(
                    page_content=context,
                    metadata={
                        "source": source,
                        "title": title,
                        "sha256": hashlib.sha256(context.encode()).hexdigest(),
                        "encoding": "utf-8",
                        "bytes": len(context.encode()),
                    },
                )
            )
            for qa in paragraph["qas"]:
                answers = sorted({ans["text"].strip() for ans in qa.get("answers", []) if ans["text"].strip()})
                questions.append(
                    Question(str(qa["id"]), qa["question"].strip(), answers, source, "squad", frozenset({source}))
                )
    return documents, questions


@dataclass(frozen=True)
class SquadSet:
    """A SQuAD file of Arabic paragraphs; `questions_from` replaces each question's text by the one
    with the same id in another file (XQuAD's English twin), answers and offsets staying Arabic."""

    name: str
    path: Path
    questions_from: Path | None = None

    def load(self) -> tuple[list[Document], list[Question]]:
        documents, questions = load_squad(self.path)
        if self.questions_from is not None:
            texts = question_texts(self.questions_from)
            questions = [replace(q, question=texts[q.id]) for q in questions if q.id in texts]
        return documents, questions


# The held-out question sets of ../shared/data (its README): ARCD, XQuAD Arabic, XQuAD's English
# questions over the same Arabic paragraphs (English questions about Arabic text), TyDi QA GoldP Arabic.
SQUAD_SETS = {
    "arcd": SquadSet("arcd", SHARED_DATA / "arcd-train.json"),
    "xquad-ar": SquadSet("xquad-ar", SHARED_DATA / "xquad-ar.json"),
    "xquad-en": SquadSet("xquad-en", SHARED_DATA / "xquad-ar.json", SHARED_DATA / "xquad-en.json"),
    "tydi-ar": SquadSet("tydi-ar", SHARED_DATA / "tydiqa-goldp-dev-ar.json"),
}


def squad_set(name: str) -> SquadSet:
    """A registered set by name, or any SQuAD-format file by path (named after the file)."""
    return SQUAD_SETS[name] if name in SQUAD_SETS else SquadSet(Path(name).stem, Path(name))


def question_texts(path: Path) -> dict[str, str]:
    """qa id -> question text of a SQuAD file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(qa["id"]): qa["question"].strip() for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
