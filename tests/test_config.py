"""The settings object and the layering: typed values checked at start-up, one source of defaults
and CLI choices, no upward imports, and only user errors reported as one line."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Config, add_arguments, choices
from core.errors import ConfigError, UserError
from rag.retrieve import HybridRetriever
from rag.scoring import AnswerScoring
from tests.helpers import REPO_ROOT, child_env, run_cli

# The layers, bottom up: a package may import itself and the layers below it. The UI serves the
# API (ui above api); the document service both use is index/library.py, so the API never imports
# the UI. eval sits beside the UI: neither imports the other. Nothing imports tests.
LAYERS = {"core": 0, "index": 1, "rag": 2, "api": 3, "ui": 4, "eval": 4, "tests": 5}


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("0", False), ("no", False), ("1", True), ("on", True)]
)
def test_bool_settings_are_parsed_not_truthy_strings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("RAG_FOLLOW_EXTERNAL_SYMLINKS", raw)
    assert Config.from_env().follow_external_symlinks is expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RAG_INDEX_TYPE": "bogus"}, ["RAG_INDEX_TYPE", "--index-type", "'auto'"]),
        ({"RAG_K": "0"}, ["RAG_K", "--k", "greater than or equal to 1"]),
        ({"RAG_K": "five"}, ["RAG_K", "integer"]),
        ({"RAG_DENSE_WEIGHT": "1.5"}, ["RAG_DENSE_WEIGHT", "less than or equal to 1"]),
        ({"RAG_STORE": "postgres"}, ["RAG_STORE", "'faiss'", "'milvus'"]),
        ({"RAG_FOLLOW_EXTERNAL_SYMLINKS": "maybe"}, ["RAG_FOLLOW_EXTERNAL_SYMLINKS", "boolean"]),
        ({"RAG_MILVUS_COLLECTION": "bad name;drop"}, ["RAG_MILVUS_COLLECTION"]),
        ({"RAG_K": "9", "RAG_CANDIDATES": "5"}, ["candidates (5) must be at least k (9)"]),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        Config.from_env()
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_flags_override_env_and_replace_validates_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_K", "7")
    assert Config.from_env().k == 7
    assert Config.from_env(k=3).k == 3
    with pytest.raises(ConfigError, match="RAG_K"):
        Config().replace(k=0)


def test_cli_choices_come_from_the_settings_types() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, "index_type", "store", "retriever", "k")
    assert parser.parse_args(["--index-type", "hnsw", "--k", "4"]).k == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["--index-type", "bogus"])
    assert choices("retriever") == ("hybrid", "dense", "bm25")
    assert choices("index_type") == ("auto", "flat", "hnsw")


def test_a_switch_flag_turns_a_setting_on_and_leaves_the_env_alone_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, "answer_reader")
    assert Config.from_args(parser.parse_args(["--reader"])).answer_reader is True
    assert Config.from_args(parser.parse_args(["--no-reader"])).answer_reader is False
    monkeypatch.setenv("RAG_ANSWER_READER", "1")
    assert Config.from_args(parser.parse_args([])).answer_reader is True
    assert Config.from_args(parser.parse_args(["--no-reader"])).answer_reader is False
    monkeypatch.setenv("RAG_ANSWER_READER", "0")
    assert Config.from_args(parser.parse_args([])).answer_reader is False
    assert Config.from_args(parser.parse_args(["--reader"])).answer_reader is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--reader", "yes"])


def test_components_keep_no_defaults_of_their_own() -> None:
    """A default written twice drifts (the retriever once fused with 0.5 while the product ran 0.6)."""
    for name in ("mode", "k", "candidates", "dense_weight"):
        assert HybridRetriever.model_fields[name].is_required(), name
    with pytest.raises(TypeError):
        AnswerScoring()  # type: ignore[call-arg]
    scoring = AnswerScoring.from_config(Config(abstain_threshold=0.33, answer_dense_sentences=4))
    assert (scoring.abstain_threshold, scoring.dense_candidates) == (0.33, 4)


def test_bad_setting_stops_the_build_before_any_embedding(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("نص قصير للاختبار.", encoding="utf-8")
    env = child_env(RAG_INDEX_TYPE="bogus")
    result = run_cli(["-m", "index", "build", str(docs), "--index", str(tmp_path / "index"), "--quiet"], env)
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: invalid setting: index_type (RAG_INDEX_TYPE")
    assert not (tmp_path / "index").exists()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_module_imports_a_layer_above_its_own(package: str) -> None:
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        for imported in _imports(path) & LAYERS.keys():
            allowed = imported == package or LAYERS[imported] < LAYERS[package]
            assert allowed, f"{path.relative_to(REPO_ROOT)} imports {imported}"


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(tmp_path: Path) -> None:
    """The CLIs catch the user-facing base only: a programming error is not disguised as 'error: ...'."""
    script = (
        "import sys\n"
        "from rag import __main__ as cli\n"
        "class Broken:\n"
        "    def __init__(self, *a, **k):\n"
        "        raise KeyError('a bug')\n"
        "cli.Pipeline = Broken\n"
        "sys.exit(cli.main(['ask', 'متى عقد المؤتمر؟']))\n"
    )
    bug = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'a bug'" in bug.stderr
    missing = run_cli(["-m", "rag", "ask", "متى عقد المؤتمر؟", "--index", str(tmp_path / "nowhere")], child_env())
    stderr = missing.stderr.decode()
    assert missing.returncode == 1 and "Traceback" not in stderr and stderr.startswith("error: ")


def test_user_error_hint_is_shown_with_the_message() -> None:
    assert str(UserError("the index is missing", hint="run `make run`")) == "the index is missing (run `make run`)"
    assert str(UserError("plain")) == "plain"
