"""`python -m eval.bench` writes its report only when asked, never lets a quick run replace the full
one, and takes the report's facts (cores, question counts) from the run it renders."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from eval import bench
from tests.helpers import REPO_ROOT

TRACKED = [bench.HERE / name for name in bench.REPORT_FILES]
CHEAP = ["--only", "lexical", "--lexical-chunks", "40"]


def tree_state() -> tuple[str, dict[str, str]]:
    """`git status` of the checkout and the content of the report files (which may already be dirty)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return status, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in TRACKED if p.exists()}


def test_a_run_without_report_leaves_the_tree_clean(tmp_path: Path) -> None:
    before = tree_state()
    assert bench.main([*CHEAP, "--json", str(tmp_path / "run.json")]) == 0
    assert tree_state() == before
    run = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert run["lexical"]["chunks"] == 40


def test_a_quick_run_cannot_replace_the_full_report(capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_state()
    with pytest.raises(SystemExit) as refused:
        bench.main(["--quick", "--report"])
    assert refused.value.code == 2
    assert "cannot replace the full report" in capsys.readouterr().err
    assert tree_state() == before


def saved_run() -> dict[str, Any]:
    """The full run the report in eval/ was made from (its scaling rows, drawn by matplotlib, left out)."""
    results = json.loads((bench.HERE / "benchmarks.json").read_text(encoding="utf-8"))
    return {**results, "scaling": []}


def test_one_section_is_added_to_the_saved_full_run(tmp_path: Path) -> None:
    full = saved_run()
    (tmp_path / "benchmarks.json").write_text(json.dumps(full), encoding="utf-8")
    before = tree_state()
    assert bench.main([*CHEAP, "--report", "--report-dir", str(tmp_path)]) == 0
    assert tree_state() == before
    saved = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert saved["lexical"]["chunks"] == 40
    assert saved["queries"] == full["queries"] and saved["command"] == full["command"]  # the full run is kept
    text = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "## BM25 start-up (40 chunks)" in text
    assert "Measured by `python -m eval.bench --only lexical --lexical-chunks 40 --report" in text
    assert f"Measured by `{full['command']}` on {full['date']}" in text


def test_a_section_needs_a_saved_full_run_to_join(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="run the whole bench with --report first"):
        bench.main([*CHEAP, "--report", "--report-dir", str(tmp_path)])
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_the_report_takes_its_facts_from_the_run(tmp_path: Path) -> None:
    results = saved_run()
    results["cores"] = 7
    results["candidates"] = 33
    results["queries"]["retrieval"]["n"] = 13
    bench.report(results, tmp_path / "BENCHMARKS.md", tmp_path / "plot.png")
    text = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "on 7 cores" in text and "2 cores batching" not in text
    assert "seeds index (13 questions)" in text
    assert "exact top-33 + BM25 top-33" in text


def test_the_reader_section_reports_both_latencies_of_its_own_run(tmp_path: Path) -> None:
    results = saved_run()

    def timing(p50: float, n: int) -> dict[str, float]:
        return {"p50_ms": p50, "p95_ms": p50 * 2, "n": n}

    results["reader"] = {
        "chunks": 100_000,
        "seeds_reader_False": timing(31.5, 66),
        "seeds_reader_True": timing(212.5, 66),
        "scale_reader_False": timing(91.0, 200),
        "scale_reader_True": timing(301.0, 200),
    }
    results["measured"] = {
        "reader": {"command": "python -m eval.bench --only reader", "date": "2026-11-26", "machine": "m"}
    }
    bench.report(results, tmp_path / "BENCHMARKS.md", tmp_path / "plot.png")
    text = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "Measured by `python -m eval.bench --only reader` on 2026-11-26" in text
    assert "| seeds | 66 | 31.5 | 63.0 | 212.5 | 425.0 |" in text
    assert "| 100,000 chunks (HNSW) | 200 | 91.0 | 182.0 | 301.0 | 602.0 |" in text
