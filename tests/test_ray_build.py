"""`python -m index build DOCS --ray`: reading, chunking and embedding on Ray workers write the index
a local build writes (index/fanout.py). One local Ray with 2 CPUs serves the module; the tests that
need it skip, saying why, where Ray is not installed or cannot start."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from core.config import Config
from index.build import BuildReport, build_folder, open_ingest
from index.embed import DEFAULT_EMBEDDER, VectorEmbeddings, load_embedder
from index.fanout import RayUnavailable, start_ray
from tests.helpers import SEEDS_DIR, HashEmbedder, child_env, free_port, run_cli, write_docs

# Smaller than the default so the 20-odd chunks make several embedding tasks over both workers,
# the last one short: batches must line up with the local build's wherever they fall.
BATCH = 5
WORKERS = 2


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray with 2 CPUs for the module (the builds join it), shut down at the end."""
    try:
        ray = start_ray(Config(ray_workers=WORKERS))
    except Exception as exc:  # RayUnavailable (not installed), or whatever stops Ray on this machine
        pytest.skip(f"Ray cannot start here: {exc}")
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_batches() -> VectorEmbeddings:
    return load_embedder(DEFAULT_EMBEDDER, BATCH)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """seeds/ plus a Markdown file in a subfolder, a Windows-1256 file and one that is skipped."""
    folder = tmp_path_factory.mktemp("ray-docs") / "docs"
    shutil.copytree(SEEDS_DIR, folder)
    return write_docs(
        folder,
        {
            "notes/extra.md": "# مؤتمر موسكو\n\nانعقد المؤتمر في موسكو بحضور وفود من دول كثيرة.\n",
            "legacy.txt": "ناقش المشاركون الأمن الدولي والتعاون العسكري بين الدول.".encode("cp1256"),
            "binary.txt": b"\x00\x01\x02\x03" * 64,
        },
    )


@pytest.fixture(scope="module")
def local_build(
    docs: Path, small_batches: VectorEmbeddings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Config, BuildReport]:
    config = Config(docs_dir=docs, index_dir=tmp_path_factory.mktemp("local-index"), embed_batch_size=BATCH)
    _, report = build_folder(config, small_batches)
    return config, report


def ray_build(config: Config, embedder: VectorEmbeddings) -> BuildReport:
    ingest = open_ingest(config.replace(ingest="ray", ray_workers=WORKERS), embedder)
    try:
        _, report = build_folder(config, embedder, ingest=ingest)
    finally:
        ingest.close()
    return report


def assert_same_index(local: Path, fanned: Path) -> None:
    """Chunks (text and metadata), vectors and manifest alike, then every file byte for byte."""
    manifest = read_manifest(local)
    assert read_manifest(fanned) == manifest
    assert chunk_lines(fanned) == chunk_lines(local) and chunk_lines(local)
    vectors = [read_vectors(folder) for folder in (local, fanned)]
    assert vectors[0].shape == (manifest["count"], manifest["dim"])
    assert np.array_equal(vectors[0], vectors[1])
    names = sorted(p.name for p in local.iterdir() if p.is_file())
    assert names == sorted(p.name for p in fanned.iterdir() if p.is_file())
    for name in names:
        assert (local / name).read_bytes() == (fanned / name).read_bytes(), name


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return manifest


def chunk_lines(folder: Path) -> list[str]:
    return (folder / read_manifest(folder)["chunks_file"]).read_text(encoding="utf-8").splitlines()


def read_vectors(folder: Path) -> np.ndarray:
    index = faiss.read_index(str(folder / read_manifest(folder)["vectors_file"]))
    return np.asarray(index.reconstruct_n(0, index.ntotal))


def test_a_ray_build_writes_the_index_a_local_build_writes(
    ray_address: str, local_build: tuple[Config, BuildReport], small_batches: VectorEmbeddings, tmp_path: Path
) -> None:
    config, local_report = local_build
    fanned = config.replace(index_dir=tmp_path / "ray-index")
    report = ray_build(fanned, small_batches)
    assert report == local_report
    assert [s.path.name for s in report.skipped] == ["binary.txt"] and report.total_chunks > 3 * BATCH
    assert_same_index(config.index_dir, fanned.index_dir)


def test_an_incremental_ray_build_matches_the_local_one(
    ray_address: str, docs: Path, small_batches: VectorEmbeddings, tmp_path: Path
) -> None:
    """Changed, added and removed files: only they are read into new chunks, as locally."""
    folder = tmp_path / "docs"
    shutil.copytree(docs, folder)
    local = Config(docs_dir=folder, index_dir=tmp_path / "local", embed_batch_size=BATCH)
    fanned = local.replace(index_dir=tmp_path / "ray")
    build_folder(local, small_batches)
    ray_build(fanned, small_batches)
    seed = next(folder.glob("000_*.txt"))
    seed.write_text(
        seed.read_text(encoding="utf-8") + "\nوأضاف المتحدث أن المؤتمر سيعقد مجدداً العام المقبل.\n", "utf-8"
    )
    (folder / "notes" / "extra.md").unlink()
    write_docs(folder, {"new.txt": "افتتح الوزير المعرض الدولي للكتاب في الرياض."})
    _, local_report = build_folder(local, small_batches)
    report = ray_build(fanned, small_batches)
    assert report == local_report
    assert (report.added, report.updated, report.removed) == (["new.txt"], [seed.name], ["notes/extra.md"])
    assert_same_index(local.index_dir, fanned.index_dir)


def test_the_cli_builds_on_the_ray_cluster_it_is_given(
    ray_address: str, local_build: tuple[Config, BuildReport], tmp_path: Path
) -> None:
    config, _ = local_build
    index_dir = tmp_path / "cli-index"
    env = child_env(RAG_EMBED_BATCH_SIZE=str(BATCH))
    args = ["-m", "index", "build", str(config.docs_dir), "--index", str(index_dir), "--quiet"]
    result = run_cli([*args, "--ray", ray_address, "--ray-workers", str(WORKERS)], env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    # stdout is the summary alone: Ray's messages and the workers' output stay off it.
    count = read_manifest(config.index_dir)["count"]
    summary = f"4 added, 0 updated, 0 removed, 0 unchanged, 1 skipped; embedded {count} chunks, {count} in the index"
    assert result.stdout.decode().splitlines() == [f"{index_dir}: {summary}"]
    assert_same_index(config.index_dir, index_dir)


def test_more_workers_than_the_cluster_has_cpus_stops_at_once(ray_address: str) -> None:
    with pytest.raises(RayUnavailable, match="3 Ray workers asked for, but the Ray cluster has 2 CPUs"):
        open_ingest(Config(ingest="ray", ray_workers=3), HashEmbedder())


def test_without_ray_installed_the_cli_says_how_to_install_it(tmp_path: Path) -> None:
    hide_ray = "import sys; sys.modules['ray'] = None; from index.__main__ import main; sys.exit(main(sys.argv[1:]))"
    result = run_cli(["-c", hide_ray, "build", str(SEEDS_DIR), "--index", str(tmp_path / "i"), "--ray"], child_env())
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == ["error: Ray is not installed: pip install -r requirements-scale.txt"]
    assert not (tmp_path / "i").exists()


def test_an_address_nobody_answers_at_fails_in_one_line_not_forever(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-scale.txt")
    address = f"127.0.0.1:{free_port()}"
    args = ["-m", "index", "build", str(SEEDS_DIR), "--index", str(tmp_path / "i"), "--ray", address]
    result = run_cli(args, child_env(), timeout=60)
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"error: cannot start or reach the Ray cluster at {address}") and "without --ray" in line


def test_ray_is_imported_only_when_chosen() -> None:
    """The registry entry resolves without Ray, so a local build never loads it."""
    code = "import sys, index.fanout, index.__main__; assert 'ray' not in sys.modules"
    assert run_cli(["-c", code], child_env()).returncode == 0
