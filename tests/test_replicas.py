"""Stateless replicas (issue 30): two API processes serve one Milvus collection and one shared
documents folder. An upload through one is listed, searched and cited by the other within
`REPLICA_BOUND_S`, a removal likewise, and two writers never write the collection at once (the
second is told who writes).

The collection is served by Milvus Lite's own gRPC server (`milvus-lite server`, a process of its
own, as in a deployment) and, inside `make test`'s loopback namespace, by the real 2.3.5 server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.config import Config
from eval import milvus_server
from index.build import build_folder
from index.embed import VectorEmbeddings
from index.store import milvus
from tests.helpers import SEEDS_DIR, UIServer, child_env, launch_api

# What the deployment page promises: a replica serves another's change within this many seconds
# (its manifest check runs at most every milvus.SYNC_S; searches read "Session" consistency).
REPLICA_BOUND_S = 5.0
STARTUP_TIMEOUT = 180.0
NILE = (
    "نهر النيل\n"
    "نهر النيل أطول أنهار القارة الأفريقية. ينبع النيل الأبيض من بحيرة فيكتوريا، "
    "وينبع النيل الأزرق من بحيرة تانا في إثيوبيا، ويلتقي الرافدان في الخرطوم.\n"
)
NILE_QUESTION = "من أين ينبع النيل الأزرق؟"


@dataclass
class Engine:
    uri: str
    token: str
    bm25: str  # where /healthz says BM25 runs


@pytest.fixture(scope="module")
def lite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """`milvus-lite server` on a loopback port, its data in a fresh folder, stopped at the end."""
    with milvus_server.lite_server(tmp_path_factory.mktemp("lite-server")) as uri:
        yield Engine(uri, "", "BM25 in Milvus")


@pytest.fixture(params=["lite", "milvus-server"])
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "lite":
        lite: Engine = request.getfixturevalue("lite_server")
        return lite
    server = request.getfixturevalue("milvus_server")
    return Engine(server.uri, server.token, milvus.LocalBM25.description)


def start_api(config: Config, log_dir: Path, name: str) -> UIServer:
    env = child_env(
        RAG_STORE="milvus",
        RAG_MILVUS_URI=config.milvus_uri,
        RAG_MILVUS_TOKEN=config.milvus_token,
        RAG_MILVUS_COLLECTION=config.milvus_collection,
        RAG_DOCS_DIR=str(config.docs_dir),
        RAG_INDEX_DIR=str(config.index_dir),
    )
    return launch_api(env, log_dir / f"{name}.stderr")


def wait_ready(servers: list[UIServer]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for server in servers:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/healthz", timeout=5).status_code == 200:
                    break
            if server.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"python -m api did not start; its stderr:\n{server.stderr()}")
            time.sleep(0.5)


def within(bound: float, check: Callable[[], bool]) -> float:
    """Seconds until `check()` holds (each check is one or two requests), failing when a check sent
    after `bound` still sees the old state. A check sent in time but answered late proves nothing
    against the bound: in CI, the main suite beside it, one such measure took 4.62 s where a quiet
    machine takes 0.2 s, most of it the answers' own time under that load."""
    started = time.monotonic()
    while True:
        sent = time.monotonic() - started
        if check():
            return time.monotonic() - started
        assert sent < bound, (
            f"a request sent {sent:.1f} s after the change still saw the state before it (bound {bound} s)"
        )
        time.sleep(0.1)


def documents(server: UIServer) -> set[str]:
    reply = httpx.get(server.url + "/api/documents", timeout=30)
    assert reply.status_code == 200, reply.text
    return {d["name"] for d in reply.json()["documents"]}


def cited(server: UIServer, question: str) -> list[str]:
    reply = httpx.post(server.url + "/api/ask", json={"question": question}, timeout=60)
    assert reply.status_code == 200, reply.text
    return [c["source"] for c in reply.json()["citations"]]


def test_two_replicas_serve_each_others_changes(
    engine: Engine, tmp_path: Path, embedder: VectorEmbeddings, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    config = Config(
        docs_dir=docs,
        index_dir=tmp_path / "index",
        store="milvus",
        milvus_uri=engine.uri,
        milvus_token=engine.token,
        milvus_collection=f"replicas_{tmp_path.name[-12:].replace('-', '_')}",
    )
    build_folder(config, embedder)
    first, second = start_api(config, tmp_path, "first"), start_api(config, tmp_path, "second")
    try:
        wait_ready([first, second])
        assert httpx.get(first.url + "/healthz", timeout=30).json()["lexical"] == engine.bm25
        assert "nile.txt" not in documents(second)
        assert "nile.txt" not in cited(second, NILE_QUESTION)

        uploaded = httpx.post(
            first.url + "/api/documents", files=[("files", ("nile.txt", NILE.encode(), "text/plain"))], timeout=120
        )
        assert uploaded.status_code == 200, uploaded.text
        listed = within(REPLICA_BOUND_S, lambda: "nile.txt" in documents(second))
        answered = within(REPLICA_BOUND_S, lambda: cited(second, NILE_QUESTION)[:1] == ["nile.txt"])

        removed = httpx.delete(second.url + "/api/documents/nile.txt", timeout=120)
        assert removed.status_code == 200, removed.text
        unlisted = within(REPLICA_BOUND_S, lambda: "nile.txt" not in documents(first))
        forgotten = within(REPLICA_BOUND_S, lambda: "nile.txt" not in cited(first, NILE_QUESTION))
        with capsys.disabled():
            print(
                f"\n  replicas on {engine.uri}: upload listed by the other in {listed:.2f} s, cited in "
                f"{answered:.2f} s; removal unlisted in {unlisted:.2f} s, no longer cited in {forgotten:.2f} s"
            )
    finally:
        for server in (first, second):
            server.stop()
            assert "Traceback" not in server.stderr(), server.stderr()


def test_a_second_writer_waits_then_is_told_who_writes(lite_server: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus, "LEASE_WAIT_S", 1.5)
    one = milvus.MilvusStore(lite_server.uri, "lease_test")
    two = milvus.MilvusStore(lite_server.uri, "lease_test")
    order: list[str] = []
    with one.lock():
        order.append("one writes")
        with pytest.raises(milvus.StoreBusy) as info, two.lock():
            order.append("two wrote meanwhile")  # never reached
    message = str(info.value)
    assert "lease_test" in message and f"pid {os.getpid()}" in message and "\n" not in message
    with two.lock():  # released: the next writer goes on at once
        order.append("two writes")
    assert order == ["one writes", "two writes"]


def test_an_expired_lease_is_taken_over(lite_server: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that crashed holding the lease does not block the collection for ever."""
    crashed = milvus.MilvusStore(lite_server.uri, "lease_expiry")
    crashed._ensure_lease_collection()
    monkeypatch.setattr(milvus, "LEASE_S", -1.0)  # written already expired
    crashed._write_lease("a crashed writer")
    monkeypatch.setattr(milvus, "LEASE_S", 60.0)
    started = time.monotonic()
    with milvus.MilvusStore(lite_server.uri, "lease_expiry").lock():
        pass
    assert time.monotonic() - started < 5
