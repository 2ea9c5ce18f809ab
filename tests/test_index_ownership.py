"""The index owns only what it wrote, repairs from the right folder, and never fails a reader mid-build.

Regressions of issue 17, points 1, 3 and 4: `--index .` in a project folder deleted `.env` and
`.gitignore`; an index sharing its folder with documents deleted `chunks.md` and `vectors.txt`; the
printed repair command rebuilt seeds/ instead of the index's own folder; a question asked during a
build now and then reported a corrupt index.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from langchain_core.documents import Document

from core.config import Config
from index import store
from index.build import build_folder
from tests.helpers import REPO_ROOT, HashEmbedder, write_docs

DOCS = {
    "nile.txt": "نهر النيل\nنهر النيل أطول أنهار القارة الأفريقية، ينبع من بحيرة فيكتوريا ويصب في البحر المتوسط.\n",
    "coffee.md": "# القهوة\nعرف اليمنيون شراب القهوة في القرن الخامس عشر وزرعوا أشجار البن في الجبال.\n",
}
# Files a user keeps in a project folder, named like the index's own files on purpose.
PROJECT = {
    ".env": "SECRET=1\n",
    ".gitignore": "*.pyc\n",
    ".python-version": "3.11\n",
    "chunks.md": "# my notes on chunks\n",
    "vectors.txt": "my vectors\n",
    "manifest.json.bak": "{}",
}


def cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "GRADIO_"))}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env={**clean, "PYTHONIOENCODING": "utf-8", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# --- point 1: the index owns only what it wrote ----------------------------------------------------


def test_building_into_a_project_folder_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    project = write_docs(tmp_path / "project", PROJECT)
    before = snapshot(project)
    result = cli(["index", "build", str(docs), "--index", str(project), "--quiet"])
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(project) in line and "not an index" in line and "--index" in line
    assert snapshot(project) == before
    assert sorted(p.name for p in project.iterdir()) == sorted(PROJECT)  # not even a lock file


def test_index_and_documents_in_one_folder_is_refused(tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "both", {**DOCS, "chunks.md": "# chunks\nملاحظات\n", "vectors.txt": "نص\n"})
    before = snapshot(folder)
    result = cli(["index", "build", str(folder), "--index", str(folder), "--quiet"])
    assert result.returncode == 1, result.stdout
    assert "not an index" in one_error_line(result)
    assert snapshot(folder) == before


def test_files_a_user_puts_in_an_index_folder_survive_builds(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    config = Config(docs_dir=docs, index_dir=tmp_path / "index")
    build_folder(config, HashEmbedder())
    write_docs(config.index_dir, PROJECT)
    # An interrupted write of ours, and a file of the user's that looks like one.
    (config.index_dir / store.TMP_DIR / ".vectors.9.faiss.abcd1234.tmp").write_bytes(b"partial")
    (config.index_dir / ".vectors.3.faiss.abcd1234.tmp").write_text("the user's", encoding="utf-8")
    for step in range(3):
        (docs / "nile.txt").write_text(DOCS["nile.txt"] + f"تحديث {step}\n", encoding="utf-8")
        build_folder(config, HashEmbedder())
        build_folder(config, HashEmbedder(), rebuild=True)
    for name, text in PROJECT.items():
        assert (config.index_dir / name).read_text(encoding="utf-8") == text, name
    assert (config.index_dir / ".vectors.3.faiss.abcd1234.tmp").is_file()
    assert not any((config.index_dir / store.TMP_DIR).iterdir())
    generations = sorted(p.name for p in config.index_dir.glob("vectors.*.faiss"))
    assert len(generations) == 2, generations  # the live one and its predecessor, nothing older


def test_an_index_built_before_ledgers_is_adopted(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    config = Config(docs_dir=docs, index_dir=tmp_path / "index")
    build_folder(config, HashEmbedder())
    (config.index_dir / store.OWNER).unlink()
    (docs / "more.txt").write_text("نص جديد عن الصحراء الكبرى\n", encoding="utf-8")
    _, report = build_folder(config, HashEmbedder())
    assert report.added == ["more.txt"]
    assert store.read_owner(config.index_dir) is not None


def test_a_damaged_ledger_does_not_make_user_files_deletable(tmp_path: Path) -> None:
    config = Config(docs_dir=write_docs(tmp_path / "docs", DOCS), index_dir=tmp_path / "index")
    build_folder(config, HashEmbedder())
    (config.index_dir / "vectors.1.txt").write_text("mine", encoding="utf-8")
    (config.index_dir / store.OWNER).write_text("{garbage", encoding="utf-8")
    build_folder(config, HashEmbedder(), rebuild=True)  # adopted again from the valid manifest
    assert (config.index_dir / "vectors.1.txt").read_text(encoding="utf-8") == "mine"


# --- point 3: the printed repair command rebuilds the index's own folder ----------------------------


def test_printed_repair_command_rebuilds_from_the_folder_the_index_was_built_from(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "my docs", DOCS)  # a space: the printed command must quote it
    index_dir = tmp_path / "index"
    built = cli(["index", "build", str(docs), "--index", str(index_dir), "--quiet"])
    assert built.returncode == 0, built.stderr
    manifest = json.loads((index_dir / store.MANIFEST).read_text(encoding="utf-8"))
    (index_dir / manifest["chunks_file"]).write_text("{broken\n", encoding="utf-8")

    broken = cli(["rag", "ask", "ما أطول أنهار أفريقيا؟", "--index", str(index_dir)])
    assert broken.returncode == 1
    fix = shlex.split(one_error_line(broken).split("`")[1])
    assert fix[:4] == ["python", "-m", "index", "build"] and "--rebuild" in fix
    repaired = cli(fix[2:])  # exactly as printed, with no RAG_DOCS_DIR to help
    assert repaired.returncode == 0, repaired.stderr
    assert set(store.load(index_dir).files) == set(DOCS)


def test_plain_build_and_rebuild_reuse_the_recorded_folder(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    index_dir = tmp_path / "index"
    assert cli(["index", "build", str(docs), "--index", str(index_dir), "--quiet"]).returncode == 0
    (docs / "more.txt").write_text("نص جديد عن الصحراء الكبرى\n", encoding="utf-8")
    again = cli(["index", "build", "--index", str(index_dir), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert "1 added" in again.stdout and "0 removed" in again.stdout
    assert set(store.load(index_dir).files) == {*DOCS, "more.txt"}


def test_rebuild_refuses_when_the_recorded_folder_is_gone(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "docs", DOCS)
    index_dir = tmp_path / "index"
    assert cli(["index", "build", str(docs), "--index", str(index_dir), "--quiet"]).returncode == 0
    docs.rename(tmp_path / "moved")
    before = snapshot(index_dir)
    result = cli(["index", "build", "--rebuild", "--index", str(index_dir), "--quiet"])
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(docs) in line and "DOCS_DIR" in line
    assert snapshot(index_dir) == before  # seeds/ was not indexed in its place


def test_rebuild_hint_names_folder_store_and_uri() -> None:
    hint = store.rebuild_hint(Path("/srv/idx"), Path("/srv/my docs"), " --store milvus --milvus-uri http://h:19530")
    assert shlex.split(hint) == [
        *("python", "-m", "index", "build", "--rebuild", "/srv/my docs", "--index", "/srv/idx"),
        *("--store", "milvus", "--milvus-uri", "http://h:19530"),
    ]


# --- point 4: readers see a consistent generation during builds ------------------------------------


def _tiny_index(generation: int) -> tuple[list[Document], np.ndarray]:
    chunks = [
        Document(
            page_content=f"نص {generation} {i}", id=f"c{i}", metadata={"id": f"c{i}", "source": "a.txt", "title": "أ"}
        )
        for i in range(3)
    ]
    return chunks, np.full((3, 4), generation, dtype=np.float32)


def test_loads_during_commits_never_report_corruption(tmp_path: Path) -> None:
    """Bounded soak (200 commits against ~2,000 loads); `python -m eval.bench` has no longer one."""
    folder = tmp_path / "index"
    manifest = store.new_manifest("hash-test", 4, {})
    with store.write_lock(folder):
        chunks, vectors = _tiny_index(0)
        store.save(folder, manifest, chunks, store.build_vectors(vectors, 4, "flat", 1))
    errors: list[BaseException] = []
    loads = [0]
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                index = store.load(folder, "hash-test")
                # Every row of a generation is that generation: no mix of two.
                assert len({float(v) for v in index.all_vectors().ravel()}) == 1
                loads[0] += 1
            except BaseException as exc:
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for generation in range(1, 201):
            chunks, vectors = _tiny_index(generation)
            with store.write_lock(folder):
                store.save(folder, manifest, chunks, store.build_vectors(vectors, 4, "flat", 1))
            while loads[0] < generation * 10 and not errors:
                threading.Event().wait(0.001)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert not errors, f"{len(errors)} of {loads[0] + len(errors)} loads failed: {errors[0]!r}"
