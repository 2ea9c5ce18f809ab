"""The Milvus store against a real Milvus server (issue 18): the server index and consistency level,
and every way a server fails (frozen, killed mid-batch, restarting, refusing the credentials) gives
one clear line per question, the same message in the UI and the API, and a clean stderr.

The server is the session's (tests/conftest.py); these tests skip, saying why, outside a
loopback-only network namespace. The restart test runs last: it kills the session's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Config
from eval.milvus_server import Server
from eval.questions import load_jsonl
from index import store
from index.build import build_folder, store_for
from index.embed import VectorEmbeddings
from rag.chain import Pipeline
from tests.helpers import QUESTIONS_DIR, REPO_ROOT, SEEDS_DIR, write_docs

QUESTIONS = [q.question for q in load_jsonl(QUESTIONS_DIR / "seeds.jsonl")]
NILE = (
    "نهر النيل\n"
    "نهر النيل أطول أنهار القارة الأفريقية. ينبع النيل الأبيض من بحيرة فيكتوريا، "
    "وينبع النيل الأزرق من بحيرة تانا في إثيوبيا، ويلتقي الرافدان في الخرطوم.\n"
)
NILE_QUESTION = "من أين ينبع النيل الأزرق؟"


def server_config(server: Server, docs: Path, tmp: Path, collection: str) -> Config:
    return Config(
        docs_dir=docs,
        index_dir=tmp / "index",
        store="milvus",
        milvus_uri=server.uri,
        milvus_token=server.token,
        milvus_collection=collection,
    )


@pytest.fixture(scope="module")
def served(milvus_server: Server, tmp_path_factory: pytest.TempPathFactory, embedder: VectorEmbeddings) -> Config:
    tmp = tmp_path_factory.mktemp("served")
    shutil.copytree(SEEDS_DIR, tmp / "docs")
    config = server_config(milvus_server, tmp / "docs", tmp, "served")
    build_folder(config, embedder)
    return config


def cli_env(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_STORE="milvus",
        RAG_MILVUS_URI=config.milvus_uri,
        RAG_MILVUS_TOKEN=config.milvus_token,
        RAG_MILVUS_COLLECTION=config.milvus_collection,
        RAG_INDEX_DIR=str(config.index_dir),
        RAG_DOCS_DIR=str(config.docs_dir),
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


class Batch:
    """`python -m rag ask --json -` fed one question at a time, each reply read before the next."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag", "ask", "--json", "-"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def ask(self, question: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(question + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"no reply to {question!r} within {timeout} s"
        line = self.proc.stdout.readline()
        assert line.endswith("\n"), f"the batch stopped: {line!r}; stderr: {self.proc.stderr.read()}"  # type: ignore[union-attr]
        return json.loads(line)

    def finish(self) -> tuple[int, list[str]]:
        """Exit status and the non-empty stderr lines."""
        assert self.proc.stdin and self.proc.stderr
        self.proc.stdin.close()
        status = self.proc.wait(120)
        return status, [line for line in self.proc.stderr.read().splitlines() if line.strip()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def batch(served: Config) -> Iterator[Batch]:
    running = Batch(cli_env(served))
    yield running
    running.close()


def answered(reply: dict[str, Any]) -> bool:
    return "error" not in reply and bool(reply.get("citations"))


def assert_clean(stderr: list[str], summary: str) -> None:
    """Nothing on stderr but the batch's one-line summary: no traceback, no pymilvus warning."""
    assert stderr == [summary], stderr


RECOVER_S = 30  # how long a resumed server gets to serve again
# The store's timeout while the server is frozen: the freeze lasts as long as the frozen call waits,
# and a server frozen for ~20 s exits when it is resumed (measured: alive after a 10 s freeze, gone
# after 22 s). With the default 10 s, two freezes on a loaded CI machine left a server whose loads
# failed with "nodes not enough" until it exited; 3 s keeps every freeze far from that bound.
FREEZE_TIMEOUT_S = "3"


@contextlib.contextmanager
def frozen(server: Server) -> Iterator[None]:
    """The server process stopped (SIGSTOP): connections stay open, nothing answers."""
    pid = server.server_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        # The next test gets a server that loads and searches, restarted on the same data when the
        # resumed one does not.
        deadline = time.monotonic() + RECOVER_S
        while not server.ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not server.ready():
            server.kill()
            server.start()


# --- the server collection ------------------------------------------------------------------------


def test_server_collection_is_hnsw_searched_without_waiting_for_a_time_tick(
    served: Config, embedder: VectorEmbeddings
) -> None:
    """Collections were FLAT and searched at their "Strong" level: every search waited for the
    server's next time tick (~400 ms a search); the index type was recorded as "milvus"."""
    from pymilvus import MilvusClient

    index = store_for(served).load(embedder.name)
    assert index.manifest["index_type"] == "hnsw"
    client = MilvusClient(uri=served.milvus_uri, token=served.milvus_token)
    try:
        described = client.describe_index(served.milvus_collection, "vector")
        assert described["index_type"] == "HNSW"
        assert int(described["M"]) == store.HNSW_M
    finally:
        client.close()
    milvus = index.corpus.store  # type: ignore[union-attr]
    calls: list[dict[str, Any]] = []
    search = milvus.client().search

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return search(*args, **kwargs)

    milvus.client().search = recorded
    Pipeline(served, index=index).retriever.invoke(QUESTIONS[0])
    assert calls and all(c["consistency_level"] == "Session" for c in calls)
    dense = [c for c in calls if c["anns_field"] == "vector"]
    assert dense and all(c["search_params"]["params"]["ef"] >= index.manifest["ef_search"] for c in dense)


# --- failures -------------------------------------------------------------------------------------


def test_frozen_server_gives_one_line_per_question_and_the_batch_goes_on(served: Config, milvus_server: Server) -> None:
    batch = Batch(cli_env(served, RAG_MILVUS_TIMEOUT_S=FREEZE_TIMEOUT_S))
    try:
        first = batch.ask(QUESTIONS[0])
        assert answered(first), first
        with frozen(milvus_server):
            stuck = batch.ask(QUESTIONS[1])
        assert set(stuck) == {"question", "error"}
        assert stuck["question"] == QUESTIONS[1]
        assert milvus_server.uri in stuck["error"] and f"no reply within {FREEZE_TIMEOUT_S} s" in stuck["error"]
        assert "\n" not in stuck["error"] and "Rpc" not in stuck["error"]
        after = batch.ask(QUESTIONS[2])
        assert answered(after), after
        status, stderr = batch.finish()
        assert status == 1
        assert_clean(stderr, "error: 1 of 3 questions could not be answered (the index store failed)")
    finally:
        batch.close()


def test_wrong_credentials_are_one_clear_line(served: Config, embedder: VectorEmbeddings) -> None:
    with pytest.raises(store.StoreUnavailable) as info:
        store_for(served.replace(milvus_token="root:wrong")).load(embedder.name)
    assert "RAG_MILVUS_TOKEN" in str(info.value) and "\n" not in str(info.value)
    result = subprocess.run(
        [sys.executable, "-m", "rag", "ask", "--json", "-"],
        cwd=REPO_ROOT,
        env=cli_env(served, RAG_MILVUS_TOKEN="root:wrong"),
        input=QUESTIONS[0] + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"error: {info.value}"]


def test_ui_and_api_show_the_same_message(served: Config, milvus_server: Server) -> None:
    from api.app import create_app, running
    from ui.app import _api_answer

    # The 3 s bound is for the freezes below; loading before them is not what this test is about,
    # and on a loaded CI machine reading the manifest once took longer (a red run, 2026-12-06).
    for attempt in range(3):
        try:
            pipeline = Pipeline(served.replace(milvus_timeout_s=float(FREEZE_TIMEOUT_S)))
            break
        except store.StoreUnavailable:
            if attempt == 2:
                raise
    # One freeze per call: a server frozen for ~20 s exits when it is resumed (its session expired).
    with running(create_app(pipeline)) as url:
        with frozen(milvus_server):
            ui_error = _api_answer(pipeline, QUESTIONS[3])["error"]
        with frozen(milvus_server):
            reply = httpx.post(f"{url}/api/ask", json={"question": QUESTIONS[4]}, timeout=120)
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == ui_error
    assert "no reply within" in ui_error and milvus_server.uri in ui_error and "\n" not in ui_error


# --- several processes, one collection --------------------------------------------------------------


def test_one_process_builds_while_two_answer(milvus_server: Server, tmp_path: Path, embedder: VectorEmbeddings) -> None:
    shutil.copytree(SEEDS_DIR, tmp_path / "docs")
    config = server_config(milvus_server, tmp_path / "docs", tmp_path, "shared")
    build_folder(config, embedder)
    answerers = [Batch(cli_env(config)) for _ in range(2)]
    try:
        for answerer in answerers:
            assert answered(answerer.ask(QUESTIONS[0]))
        write_docs(config.docs_dir, {"nile.txt": NILE})
        build = subprocess.Popen(
            [sys.executable, "-m", "index", "build", str(config.docs_dir), "--quiet"],
            cwd=REPO_ROOT,
            env=cli_env(config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        asked = 0
        while build.poll() is None or asked < 2:
            for answerer in answerers:
                reply = answerer.ask(QUESTIONS[1 + asked % (len(QUESTIONS) - 1)])
                assert answered(reply), reply
            asked += 1
        _, err = build.communicate()
        assert build.returncode == 0, err
        assert err == ""
        for answerer in answerers:
            assert answerer.finish() == (0, [])
        fresh = Batch(cli_env(config))
        try:
            reply = fresh.ask(NILE_QUESTION)
            assert reply["citations"][0]["source"] == "nile.txt", reply
            assert fresh.finish() == (0, [])
        finally:
            fresh.close()
    finally:
        for answerer in answerers:
            answerer.close()


# --- last: it kills the session's server and starts it again ---------------------------------------


def test_server_killed_mid_batch_then_restarted(batch: Batch, milvus_server: Server) -> None:
    """A server that died mid-batch printed a 240-line traceback and ended the batch."""
    assert answered(batch.ask(QUESTIONS[0]))
    milvus_server.kill()
    failures = [batch.ask(q) for q in QUESTIONS[1:3]]
    for question, reply in zip(QUESTIONS[1:3], failures):
        assert reply == {"question": question, "error": reply["error"]}
        assert "not reachable" in reply["error"] and milvus_server.uri in reply["error"]
    milvus_server.start()
    deadline, asked, failed = time.monotonic() + 240, 3, 2
    while True:
        reply = batch.ask(QUESTIONS[asked % len(QUESTIONS)])
        asked += 1
        if answered(reply):
            break
        failed += 1
        assert "\n" not in reply["error"] and milvus_server.uri in reply["error"], reply
        assert time.monotonic() < deadline, f"no answer {asked} questions after the restart: {reply}"
        time.sleep(2)
    status, stderr = batch.finish()
    assert status == 1
    assert_clean(stderr, f"error: {failed} of {asked} questions could not be answered (the index store failed)")
