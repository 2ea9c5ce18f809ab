"""Issue 29: the user's documents live in a folder of their own (data/docs), not in the repository's
seeds/. Uploads landed in seeds/ (`git status` showed them) and `make eval` then measured whatever a
user had uploaded. These tests point the default folder and seeds/ at throwaway copies."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from core.config import SEEDS_DIR, Config
from eval.runner import Corpus, for_corpus
from index import build, store
from index.build import adopt_seeds, build_folder, resolve_docs_dir
from rag.chain import open_index
from tests.helpers import HashEmbedder, child_env, start_ui, write_docs

SEEDS = {"a.txt": "مؤتمر موسكو للأمن الدولي عقد في أغسطس.\n", "b.md": "# النيل\nأطول أنهار أفريقيا.\n"}


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(seeds copy, default documents folder not yet made)."""
    seeds = write_docs(tmp_path / "seeds", SEEDS)
    user = tmp_path / "data" / "docs"
    monkeypatch.setattr(build, "SEEDS_DIR", seeds)
    monkeypatch.setattr(build, "USER_DOCS_DIR", user)
    return seeds, user


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_the_default_folder_starts_as_a_copy_of_the_seeds(layout: tuple[Path, Path], tmp_path: Path) -> None:
    seeds, user = layout
    assert adopt_seeds(Config(docs_dir=user, index_dir=tmp_path / "i"))
    assert listing(user) == listing(seeds)
    (user / "a.txt").unlink()  # the user's own change to their folder is never undone
    assert not adopt_seeds(Config(docs_dir=user, index_dir=tmp_path / "i"))
    assert set(listing(user)) == {"b.md"}
    assert listing(seeds) == {k: v.encode() for k, v in SEEDS.items()}  # seeds/ untouched


def test_a_copy_cut_short_is_made_again_and_no_other_folder_is_ever_made(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    seeds, user = layout
    partial = user.with_name(f".{user.name}.partial")
    write_docs(partial, {"a.txt": "half"})  # a run killed while copying
    assert adopt_seeds(Config(docs_dir=user, index_dir=tmp_path / "i"))
    assert listing(user) == listing(seeds) and not partial.exists()
    elsewhere = tmp_path / "mine"
    assert not adopt_seeds(Config(docs_dir=elsewhere, index_dir=tmp_path / "i"))
    assert not elsewhere.exists()


def test_an_index_of_seeds_moves_to_the_users_folder_with_its_uploads(
    layout: tuple[Path, Path], tmp_path: Path
) -> None:
    """An index built by an earlier version from seeds/ (with a user's upload in it): opened with the
    default folder, the folder becomes data/docs holding all of it, nothing is embedded again, the
    index records the new folder, and seeds/ keeps every file."""
    seeds, user = layout
    embedder = HashEmbedder()
    old = Config(docs_dir=seeds, index_dir=tmp_path / "index")
    write_docs(seeds, {"upload.txt": "ملف رفعه المستخدم عن صيد السمك.\n"})
    before, _ = build_folder(old, embedder)
    generation = store.read_manifest(old.index_dir)["generation"]

    config = resolve_docs_dir(old.replace(docs_dir=user), given=False)
    assert config.docs_dir == user  # not sent back to seeds/ by the index's record
    index, drift = open_index(config, embedder)
    assert listing(user) == listing(seeds)
    assert set(index.files) == set(before.files) and not drift.stale
    manifest = store.read_manifest(old.index_dir)
    assert Path(manifest["docs_dir"]) == user.resolve()
    assert manifest["generation"] == generation + 1
    assert [c.id for c in index.chunks] == [c.id for c in before.chunks]
    assert "upload.txt" in listing(seeds)


def test_a_missing_index_is_built_only_where_asked(tmp_path: Path) -> None:
    """`python -m ui --docs D --index NEW` served 503 "no index"; a mistyped --index alone must
    still fail rather than become a new index."""
    docs = write_docs(tmp_path / "docs", SEEDS)
    config = Config(docs_dir=docs, index_dir=tmp_path / "new-index")
    with pytest.raises(store.IndexMissing):
        open_index(config, HashEmbedder())
    index, drift = open_index(config, HashEmbedder(), build_missing=True)
    assert set(index.files) == set(SEEDS) and not drift.stale


def test_evaluation_of_a_folder_reads_that_folder_not_the_users(tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "eval-docs", SEEDS)
    config = for_corpus(Config(docs_dir=tmp_path / "uploads"), Corpus("docs-x", folder=folder))
    assert config.docs_dir == folder and config.index_dir != Config.default("index_dir")


@pytest.mark.integration
def test_the_ui_given_a_folder_and_a_new_index_builds_it_and_answers(tmp_path: Path) -> None:
    """Issue 29: `python -m ui --docs D --index EMPTY` served "no index" (503) instead of building it."""
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    index = tmp_path / "new-index"
    index.mkdir()  # an empty folder, as a user makes one
    running = start_ui(child_env(), tmp_path, args=["--docs", str(docs), "--index", str(index)])
    try:
        with urllib.request.urlopen(running.url + "healthz", timeout=30) as response:
            health = json.loads(response.read())
        assert health["index_loaded"] and health["chunks"] > 0, health
        assert set(store.read_manifest(index)["files"]) == {p.name for p in docs.iterdir()}
    finally:
        running.stop()
