"""The real UI server (`python -m ui`) in a subprocess, driven through gradio_client's API."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from eval.metrics import contains
from eval.questions import load_jsonl
from tests.helpers import QUESTIONS_DIR, SeedsIndex, UIServer, child_env, start_ui

STARTUP_TIMEOUT = 120
CALL_TIMEOUT = 180

QUESTIONS = {q.id: q for q in load_jsonl(QUESTIONS_DIR / "seeds.jsonl")}
# Seeds questions the pipeline answers (see tests/test_pipeline.py), Arabic and English.
ANSWERABLE = ["s01", "s04", "s05", "s08", "s09", "s10", "s21", "s27", "s28", "s29", "s31", "s32", "s37", "s40", "s41"]
ANSWERABLE += ["s42", "s43", "s44", "s49"]
ClientFactory = Callable[[], Any]
DELEGATES = ("كم عدد المندوبين الذين حضروا المؤتمر؟", ["800"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeds_index: SeedsIndex) -> Iterator[UIServer]:
    root = tmp_path_factory.mktemp("ui-server")
    docs, index = root / "docs", root / "index"
    shutil.copytree(seeds_index.config.docs_dir, docs)
    shutil.copytree(seeds_index.config.index_dir, index)  # the server may write; the session index stays as is
    running = start_ui(child_env(RAG_INDEX_DIR=str(index), RAG_DOCS_DIR=str(docs)), root, timeout=STARTUP_TIMEOUT)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client_factory(server: UIServer) -> Iterator[ClientFactory]:
    pytest.importorskip("gradio_client")
    from gradio_client import Client

    clients: list[Client] = []

    def make() -> Client:
        client = Client(server.url, verbose=False, analytics_enabled=False, download_files=False)
        clients.append(client)
        return client

    with pytest.MonkeyPatch.context() as mp:
        # The client sends telemetry unless this is "False", whatever analytics_enabled says.
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield make
    # close() waits up to 1 s for each client's heartbeat thread: close them all at once.
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        list(pool.map(lambda client: client.close(), clients))


def questions_20() -> list[tuple[str, list[str]]]:
    items = [(QUESTIONS[i].question, list(QUESTIONS[i].answers)) for i in ANSWERABLE]
    items.append(DELEGATES)
    assert len(items) == 20
    return items


def check_answer(result: object, question: str, gold: list[str], server: UIServer) -> None:
    assert isinstance(result, dict), f"{question}: {result!r}\n{server.stderr()}"
    assert "error" not in result, result
    assert result["question"] == question  # each caller gets its own question's answer
    assert result["abstained"] is False, f"{question}: {result['answer']}"
    assert contains(result["answer"], gold), f"{question}: {result['answer']!r} lacks {gold}"
    assert result["citations"], question


def test_one_question(server: UIServer, client_factory: ClientFactory) -> None:
    question, gold = DELEGATES
    result = client_factory().predict(question, api_name="/answer")
    check_answer(result, question, gold, server)
    assert result["citations"][0]["source"].endswith(".txt")
    assert result["mode"] == "extractive"


def test_20_concurrent_questions_shared_client(server: UIServer, client_factory: ClientFactory) -> None:
    client = client_factory()
    items = questions_20()
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(client.predict, q, api_name="/answer") for q, _ in items]
        results = [f.result(timeout=CALL_TIMEOUT) for f in futures]
    assert len(results) == 20
    for (question, gold), result in zip(items, results, strict=True):
        check_answer(result, question, gold, server)


def test_20_concurrent_questions_own_clients(server: UIServer, client_factory: ClientFactory) -> None:
    items = questions_20()

    def ask(question: str) -> Any:
        return client_factory().predict(question, api_name="/answer")

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(ask, q) for q, _ in items]
        results = [f.result(timeout=CALL_TIMEOUT) for f in futures]
    assert len(results) == 20
    for (question, gold), result in zip(items, results, strict=True):
        check_answer(result, question, gold, server)


@pytest.mark.parametrize("question", ["", "   ", "؟؟!!"], ids=["empty", "blank", "punctuation"])
def test_unaskable_question_returns_error(server: UIServer, client_factory: ClientFactory, question: str) -> None:
    result = client_factory().predict(question, api_name="/answer")
    assert isinstance(result, dict), result
    assert result.get("error"), result
    assert "Traceback" not in str(result)


def test_server_still_serves_after_the_load(server: UIServer) -> None:
    assert server.process.poll() is None, server.stderr()
    with urllib.request.urlopen(server.url, timeout=30) as response:
        assert response.status == 200
    assert "Traceback" not in server.stderr()
