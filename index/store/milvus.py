"""The Milvus store: chunks, vectors and the manifest live in Milvus collections (pymilvus), and
Milvus serves them: the app process keeps no copy of the corpus.

`uri` is a local file path (embedded Milvus Lite, from PyPI `milvus-lite`) or a server URL such as
http://host:19530 (Milvus standalone or cluster, or `milvus-lite server`). A question's dense search
and BM25 search run in Milvus and return chunk ids; the text of the few chunks a question keeps is
fetched by id (`MilvusCorpus`). So start-up reads the manifest (one row per file) and a row count,
and does not grow with the collection (`python -m eval.bench --only milvus_scale`), and several
app processes on several machines serve one collection: an upload through one is searched by all
(within Milvus's read consistency), and each notices the new manifest within `SYNC_S`.

BM25 runs inside Milvus where the engine has it (Milvus Lite 3, servers from 2.5): each chunk's
`terms` field holds the project's own analysis (normalised, light-stemmed terms, index/arabic.py),
each term written as a short hash token so the engine's tokenizer only splits at spaces and
matching stays the project's; Milvus's BM25 function turns it into a sparse vector. On an older
server (2.3.x) the same `terms` field is read back at load and scored in the process (no stemming
at start), said in the log and in `/healthz`.

Updates are incremental: a changed or removed file's chunks are deleted by source and the new
chunks inserted; the manifest rows are written last, and a load that finds the row count and the
manifest disagreeing reports it with the rebuild command. Writers take a lease (a row of its own
collection) so two processes never write one collection at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import shlex
import socket
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document

from core.config import Config
from index.chunk import MAX_CHUNK_CHARS
from index.formats import LOCATION_KEYS
from index.lexical import BM25, LexicalFileError, LexicalIndex, chunk_terms, top_n
from index.load import MAX_SOURCE_CHARS, safe_name
from index.store.base import (
    FORMAT_VERSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Changes,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    IndexProblem,
    Key,
    StoredIndex,
    StoreUnavailable,
    check_embedder,
)
from index.store.files import file_lock, rebuild_hint

# pymilvus logs every failed call with a traceback and gRPC prints keep-alive chatter; the
# store reports failures itself, in one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def _quiet_pymilvus() -> None:
    """pymilvus configures its own loggers when it is imported (resetting any level set before), and
    its query iterator warns on every read from Milvus Lite; so this runs after the import."""
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


_quiet_pymilvus()


class _LiteFailures(logging.Handler):
    """Milvus Lite logs a failed start (its file locked by another process) as a 20-line traceback
    on stderr; this handler keeps the exception instead, for the store's one-line error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.last = record.exc_info[1]


_LITE_FAILURES = _LiteFailures()
logging.getLogger("milvus_lite").addHandler(_LITE_FAILURES)
logging.getLogger("milvus_lite").propagate = False
_LOG = logging.getLogger(__name__)

_MANIFEST_ID = "__manifest__"
_FILE_PREFIX = "file:"
_LEASE_ID = "__writer__"
_LENGTH_ID = "__length__"  # the df collection's row holding the total number of terms of all chunks
# VARCHAR limits, from the same caps the loader and chunker enforce. Milvus Lite counts characters,
# some Milvus servers count UTF-8 bytes: 4 bytes a character covers both.
_TEXT_MAX = 4 * MAX_CHUNK_CHARS
_SOURCE_MAX = 4 * MAX_SOURCE_CHARS
_TITLE_MAX = 2048
_BODY_MAX = 65_535
_BATCH = 500
# The in-app BM25's term counts (servers without BM25), saved as base64 parts of this many
# characters, fetched this many parts a call (~3 MB, far under gRPC's message cap).
_PART_CHARS = 65_000
_PARTS_PER_GET = 48
_LOCATION_MAX = 4_096  # a section name is cut at 300 characters (index.formats.locate)
# A term is at least one character and a space, so a chunk has at most MAX_CHUNK_CHARS / 2 + 1
# terms; each is written as a 12-character token and a space.
_TOKEN_CHARS = 12
_TERMS_MAX = (_TOKEN_CHARS + 1) * (MAX_CHUNK_CHARS // 2 + 1)
# Collections are "Strong" (their default for every call that names no level): a load right after
# a build, its own or another process's, must count every row the manifest counts. A question's
# searches and fetches read "Session": this process's own writes at once (an upload is answered
# from right after it commits), another process's as soon as the server has applied them, without
# waiting for the server's next time tick on every call ("Strong" took 201 ms a search on the
# 2.3.5 server, issue 18).
COLLECTION_CONSISTENCY = "Strong"
READ_CONSISTENCY = "Session"
# How often a process asks whether another process changed the collection's manifest (one row).
SYNC_S = 1.0
# A writer's lease: renewed while it writes, so only a crashed writer's lease runs out; a second
# writer waits this long for it before saying who holds it.
LEASE_S = 60.0
LEASE_WAIT_S = 30.0
# The lease is written, then read back after this pause: of two writers racing, both read the
# same last write, so exactly one goes on.
LEASE_SETTLE_S = 0.3
_PASSAGE_FIELDS = ["id", "text", "source", "title", "start", "end", "position", "location"]


class StoreBusy(IndexProblem):
    """Another process holds the collection's writer lease."""


@lru_cache(maxsize=200_000)
def lexical_token(term: str) -> str:
    """A stemmed term as the token Milvus indexes: 12 hex digits of its hash. Any engine's
    tokenizer keeps it whole and unchanged, so Milvus matches exactly the project's terms; two
    terms share a token with odds of about 1 in 10^7 even at a million distinct terms."""
    return hashlib.blake2b(term.encode("utf-8"), digest_size=_TOKEN_CHARS // 2).hexdigest()


def lexical_text(terms: Sequence[str]) -> str:
    return " ".join(lexical_token(t) for t in terms)


class EngineBM25:
    """BM25 inside Milvus: a `BM25` function over `terms` into a sparse vector with a BM25 index
    finds the lexical candidates. The candidates' scores for the fusion are then computed here,
    by the same Okapi formula and settings as the in-memory BM25, from their saved terms and the
    document frequencies (and total length) kept by each commit in `<name>_df`: the fusion stays
    the FAISS store's, and no second, filtered search runs (Milvus Lite evaluates a filter on
    every row). Those frequencies also give a term's weight for answer extraction: a TEXT_MATCH
    count in Milvus Lite scans every row (1.2 s at 10k chunks); a get by id takes milliseconds."""

    description = "BM25 in Milvus"

    def __init__(self, store: MilvusStore, size: int) -> None:
        self.store, self.size = store, size
        self._df: dict[str, int] = {}

    def top(self, query_terms: Sequence[str], n: int) -> list[tuple[Key, float]]:
        text = lexical_text(query_terms)
        if not text or n < 1:
            return []
        hits = self.store.search([text], n, "sparse", {"metric_type": "BM25"})
        # Milvus Lite reports a BM25 match as a negative distance, servers as the score itself.
        return [(str(h["id"]), abs(float(h["distance"]))) for h in hits[0]]

    def scores(self, keys: Sequence[Key], query_terms: Sequence[str], terms_of: Mapping[Key, str]) -> np.ndarray:
        weights = Counter(lexical_token(t) for t in query_terms)
        frequencies = self._frequencies([*weights, _LENGTH_ID])
        idf = {token: self._idf(frequencies[token]) for token in weights}
        average = max(frequencies[_LENGTH_ID] / max(self.size, 1), 1e-9)
        k1, b = self.store.bm25_k1, self.store.bm25_b
        out = np.zeros(len(keys), dtype=np.float32)
        for i, key in enumerate(keys):
            tokens = terms_of.get(key, "").split()
            counts = Counter(t for t in tokens if t in weights)
            norm = k1 * (1 - b + b * len(tokens) / average)
            out[i] = sum(weights[t] * idf[t] * tf * (k1 + 1) / (tf + norm) for t, tf in counts.items())
        return out

    def term_weight(self, term: str) -> float:
        token = lexical_token(term)
        return self._idf(self._frequencies([token])[token])

    def _idf(self, df: int) -> float:
        return math.log1p((self.size - df + 0.5) / (df + 0.5))

    def _frequencies(self, tokens: Sequence[str]) -> dict[str, int]:
        """Document frequencies (and the total length under _LENGTH_ID), read once per loaded index."""
        missing = [t for t in tokens if t not in self._df]
        if missing:
            rows = self.store.call(
                "get", self.store.frequencies, ids=missing, output_fields=["df"], consistency_level=READ_CONSISTENCY
            )
            found = {r["id"]: int(r["df"]) for r in rows}
            if len(self._df) > 100_000:
                self._df.clear()
            self._df.update((t, found.get(t, 0)) for t in missing)
        return {t: self._df[t] for t in tokens}


class LocalBM25:
    """BM25 in the process, for a server without Milvus's BM25 function (2.3.x): over the term
    counts each commit saves in `<name>_counts` (one read of a few parts at start: 100k chunks took
    24 s when every chunk's `terms` was read back and counted), or over the `terms` field for a
    collection written before those were saved. Nothing is stemmed at start."""

    description = "BM25 in the app (this Milvus server has no BM25 function: upgrade to 2.5 or later)"

    def __init__(self, ids: list[str], counts: LexicalIndex, config: Config) -> None:
        self.ids, self.counts = ids, counts
        self.bm25 = BM25.from_lexical(counts, config)
        self.row_of = {chunk_id: row for row, chunk_id in enumerate(ids)}

    def top(self, query_terms: Sequence[str], n: int) -> list[tuple[Key, float]]:
        scores = self.bm25.scores([lexical_token(t) for t in query_terms])
        return [(self.ids[r], float(scores[r])) for r in top_n(scores, n) if scores[r] > 0]

    def scores(self, keys: Sequence[Key], query_terms: Sequence[str], terms_of: Mapping[Key, str]) -> np.ndarray:
        """From the counts held here (`terms_of`, the candidates' fetched terms, is not needed)."""
        scores = self.bm25.scores([lexical_token(t) for t in query_terms])
        return np.array([scores[r] if (r := self.row_of.get(str(k))) is not None else 0.0 for k in keys], np.float32)

    def term_weight(self, term: str) -> float:
        return self.bm25.term_weight(lexical_token(term))


class MilvusCorpus:
    """The `Corpus` retrieval reads, served by Milvus: searches return chunk ids, and only the
    chunks a question keeps are fetched."""

    def __init__(self, store: MilvusStore, size: int, lexical: EngineBM25 | LocalBM25) -> None:
        self.store, self.size, self.lexical_side = store, size, lexical

    def dense(self, query: np.ndarray, n: int) -> list[tuple[Key, float]]:
        hits = self.store.search([query.tolist()], max(1, n), "vector", self.store.search_params)
        return [(str(h["id"]), float(h["distance"])) for h in hits[0]]

    def lexical(self, query_terms: Sequence[str], n: int) -> list[tuple[Key, float]]:
        return self.lexical_side.top(query_terms, n)

    def rescore(
        self, keys: Sequence[Key], query: np.ndarray, query_terms: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = {r["id"]: r for r in self.store.fetch(keys, ["id", "vector", "terms"])}
        cosines = np.array(
            [float(np.asarray(rows[k]["vector"], dtype=np.float32) @ query) if k in rows else -1.0 for k in keys],
            np.float32,
        )
        terms_of = {k: str(row["terms"]) for k, row in rows.items()}
        return cosines, self.lexical_side.scores(keys, query_terms, terms_of)

    def passages(self, keys: Sequence[Key]) -> dict[Key, Document]:
        return {r["id"]: _document(r) for r in self.store.fetch(keys, _PASSAGE_FIELDS)}

    def term_weight(self, term: str) -> float:
        return self.lexical_side.term_weight(term)

    def scan(self) -> Iterator[Document]:
        """Every chunk, page by page (tools and tests; never on a question's path)."""
        for row in self.store.rows(self.store.collection, _PASSAGE_FIELDS):
            yield _document(row)


def _document(row: dict[str, Any]) -> Document:
    return Document(
        page_content=row["text"],
        id=row["id"],
        metadata={
            **{k: row[k] for k in ("id", "source", "title", "start", "end", "position")},
            **json.loads(row["location"]),
        },
    )


class MilvusStore:
    """Chunks collection `<name>`, manifest collection `<name>_meta` and the writer's lease
    `<name>_lease` at `uri`."""

    page_size = 1000  # rows per read when paging through a collection

    def __init__(
        self,
        uri: str,
        collection: str,
        token: str = "",
        folder: Path | None = None,
        bm25: tuple[float, float] = (Config.default("bm25_k1"), Config.default("bm25_b")),
        timeout_s: float = Config.default("milvus_timeout_s"),
    ) -> None:
        self.uri, self.collection, self.token = uri, collection, token
        self.timeout_s = timeout_s
        self.folder = folder or Path(uri).expanduser().with_suffix("")
        self.meta = f"{collection}_meta"
        self.lease = f"{collection}_lease"
        self.frequencies = f"{collection}_df"
        self.counts = f"{collection}_counts"
        self.bm25_k1, self.bm25_b = bm25
        self.description = f"Milvus collection {collection!r} at {uri}"
        self._client: Any = None
        self._holding: str | None = None  # this process's lease owner id while it writes
        self._renewed = 0.0
        self._synced = 0.0  # when this process last asked for the live generation
        self._sync_lock = threading.Lock()
        self.search_params: dict[str, Any] = {"metric_type": "IP"}  # set from the manifest at load

    @classmethod
    def from_config(cls, config: Config) -> MilvusStore:
        """The store `milvus` of core/registry.py: milvus_uri, or a Milvus Lite file beside index_dir."""
        folder = config.index_dir
        uri = config.milvus_uri or str(folder.parent / f"{folder.name}.milvus.db")
        bm25 = (config.bm25_k1, config.bm25_b)
        return cls(uri, config.milvus_collection, config.milvus_token, folder, bm25, config.milvus_timeout_s)

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    def client(self) -> Any:
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise StoreUnavailable("the milvus store needs `pip install pymilvus milvus-lite`") from exc
            _quiet_pymilvus()
            if self.is_local:
                Path(self.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            _LITE_FAILURES.last = None
            try:
                # A connection of its own (pymilvus shares one per address): closing it after a
                # failure cannot break another store's client in the same process.
                extra = {} if self.is_local else {"dedicated": True}
                self._client = MilvusClient(uri=self.uri, token=self.token, timeout=self.timeout_s, **extra)
            except Exception as exc:
                if self.is_local and type(_LITE_FAILURES.last).__name__ == "DataDirLockedError":
                    raise StoreUnavailable(
                        f"the Milvus Lite file {self.uri} is in use by another process (the UI, a build or an "
                        "ask; Milvus Lite allows one process at a time): stop it and retry, or share the index "
                        "through a Milvus server (--milvus-uri http://host:19530, e.g. `milvus-lite server`)"
                    ) from None
                raise self._failure("connect", exc) from exc
        return self._client

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call with a timeout; failures become StoreUnavailable with the reason."""
        try:
            return getattr(self.client(), method)(*args, timeout=self.timeout_s, **kwargs)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise self._failure(method, exc) from exc

    def _failure(self, stage: str, exc: BaseException) -> StoreUnavailable:
        """The user's one line. A server that cannot be used reads the same at every stage (the UI
        and the API may meet it at different calls); other failures name the call."""
        reason = _reason(exc)
        if reason in (_UNREACHABLE, _NO_REPLY, _REFUSED):
            self._reconnect_next_time()
            return StoreUnavailable(f"Milvus at {self.uri} is unavailable: {reason.format(timeout=self.timeout_s)}")
        if stage == "connect":
            return StoreUnavailable(f"cannot connect to Milvus at {self.uri}: {reason}")
        return StoreUnavailable(f"Milvus at {self.uri} failed ({stage}): {reason}")

    def _reconnect_next_time(self) -> None:
        """Drop a client whose server went away; the next call connects afresh, so recovery does not
        depend on pymilvus's in-place channel recovery."""
        client, self._client = self._client, None
        if client is not None and not self.is_local:
            with contextlib.suppress(Exception):
                client.close()

    def search(self, data: list[Any], limit: int, field: str, params: dict[str, Any], filter: str = "") -> Any:
        """A search of `field` (dense "vector" or BM25 "sparse"); a restarted server may hold the
        collection released ("collection not loaded"), so that failure loads it once and searches
        again."""
        if "params" in params:  # Milvus refuses an HNSW ef below the number of hits asked for
            params = {**params, "params": {"ef": max(limit, params["params"]["ef"])}}
        kwargs: dict[str, Any] = {
            "data": data,
            "limit": limit,
            "anns_field": field,
            "output_fields": ["id"],
            "search_params": params,
            "consistency_level": READ_CONSISTENCY,
        }
        if filter:
            kwargs["filter"] = filter
        try:
            return self.call("search", self.collection, **kwargs)
        except StoreUnavailable as exc:
            if "not loaded" not in str(exc).lower():
                raise
        self.call("load_collection", self.collection)
        return self.call("search", self.collection, **kwargs)

    def fetch(self, keys: Sequence[Key], fields: list[str]) -> list[dict[str, Any]]:
        """The rows of these chunk ids (fewer if another process removed some meanwhile)."""
        if not keys:
            return []
        rows: list[dict[str, Any]] = self.call(
            "get", self.collection, ids=[str(k) for k in keys], output_fields=fields, consistency_level=READ_CONSISTENCY
        )
        return rows

    # --- manifest --------------------------------------------------------------------------------

    def recorded_docs_dir(self) -> Path | None:
        try:
            docs = self._head().get("docs_dir")
        except (IndexProblem, IndexError, KeyError, ValueError, AttributeError):
            return None
        return Path(docs) if isinstance(docs, str) else None

    def _head(self) -> dict[str, Any]:
        """The manifest row alone (no file rows): what a sync check and the docs folder need."""
        rows = self.call("get", self.meta, ids=[_MANIFEST_ID], output_fields=["body"])
        head: dict[str, Any] = json.loads(rows[0]["body"])
        return head

    def rebuild_hint(self) -> str:
        """The repair command with this store's own coordinates, so it rebuilds this collection."""
        return rebuild_hint(
            self.folder, self.recorded_docs_dir(), f" --store milvus --milvus-uri {shlex.quote(self.uri)}"
        )

    def read_manifest(self) -> dict[str, Any]:
        if not self.call("has_collection", self.meta) or not self.call("has_collection", self.collection):
            raise IndexMissing(
                f"no index in {self.description}: build it with `python -m index build DOCS_DIR --store milvus`"
            )
        for name in (self.collection, self.meta):
            self.call("load_collection", name)  # a restarted server holds collections released
        bodies = {r["id"]: r["body"] for r in self.rows(self.meta, ["id", "body"])}
        if _MANIFEST_ID not in bodies:
            raise IndexCorrupt(f"{self.description} has no manifest row; rebuild with `{self.rebuild_hint()}`")
        try:
            manifest = json.loads(bodies[_MANIFEST_ID])
            manifest["files"] = {k[len(_FILE_PREFIX) :]: json.loads(v) for k, v in bodies.items() if k != _MANIFEST_ID}
        except ValueError as exc:
            raise IndexCorrupt(
                f"{self.description}: manifest is not valid JSON; rebuild with `{self.rebuild_hint()}`"
            ) from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(
                f"{self.description} has index format {manifest.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}; rebuild with `{self.rebuild_hint()}`"
            )
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        files = manifest["files"]
        head = {k: v for k, v in manifest.items() if k != "files"}
        rows = [{"id": _MANIFEST_ID, "body": json.dumps(head, ensure_ascii=False), "v": [0.0, 0.0]}]
        rows += [
            {"id": _FILE_PREFIX + name, "body": json.dumps(info, ensure_ascii=False), "v": [0.0, 0.0]}
            for name, info in files.items()
        ]
        existing = {r["id"] for r in self.rows(self.meta, ["id"])}
        stale = sorted(existing - {r["id"] for r in rows})
        for start in range(0, len(stale), _BATCH):
            self.call("delete", self.meta, ids=stale[start : start + _BATCH])
        # The manifest row last: a reader that sees the new generation sees every file row.
        self._upsert(self.meta, rows[1:])
        self._upsert(self.meta, rows[:1])

    def rows(self, collection: str, fields: list[str], filter: str = "") -> Iterator[dict[str, Any]]:
        """Every row of a collection (that matches `filter`), page by page: a plain query returns at
        most 16,384 rows, which broke the manifest (one row a file) of bigger collections."""
        iterator = self.call(
            "query_iterator", collection, batch_size=self.page_size, output_fields=fields, filter=filter
        )
        try:
            while batch := iterator.next():
                yield from batch
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise self._failure(f"reading {collection}", exc) from exc
        finally:
            iterator.close()

    def _upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), _BATCH):
            self._renew()
            self.call("upsert", collection, data=rows[start : start + _BATCH])

    # --- load ------------------------------------------------------------------------------------

    def load(self, embedder: str | None = None) -> StoredIndex:
        """The manifest and a corpus served by Milvus: no chunk or vector is read here (on a server
        without BM25, the in-app BM25's saved counts are)."""
        return self._load(embedder)

    def _load(self, embedder: str | None = None, known: tuple[list[str], LexicalIndex] | None = None) -> StoredIndex:
        """`load`; `known` are the ids and counts a commit just saved for this manifest (not read back)."""
        manifest = self.read_manifest()
        if embedder is not None:
            check_embedder(manifest, embedder, self.description, self.rebuild_hint())
        fields = {f["name"] for f in self.call("describe_collection", self.collection).get("fields", [])}
        if "terms" not in fields:
            raise IndexMismatch(
                f"{self.description} was made by an older version (it holds no BM25 terms, so every process "
                f"had to copy the corpus); rebuild it with `{self.rebuild_hint()}`"
            )
        count = self._count()
        if count != manifest["count"]:
            raise IndexCorrupt(
                f"{self.description} holds {count} chunks but its manifest says {manifest['count']} "
                f"(an interrupted update?); rebuild with `{self.rebuild_hint()}`"
            )
        self.search_params = _search_params(manifest)
        lexical: EngineBM25 | LocalBM25
        if "sparse" in fields:
            lexical = EngineBM25(self, count)
        else:
            saved = known or self._read_counts(manifest, count)
            if saved is None and self._generation_moved(manifest):
                return self.load(embedder)
            lexical = LocalBM25(*(saved or self._counted()), Config(bm25_k1=self.bm25_k1, bm25_b=self.bm25_b))
        manifest["lexical"] = lexical.description
        self._synced = time.monotonic()
        return StoredIndex(manifest=manifest, corpus=MilvusCorpus(self, count, lexical))

    def _counted(self) -> tuple[list[str], LexicalIndex]:
        """The chunk ids and the in-app BM25's counts, counted from every chunk's saved `terms` (a
        collection written before its counts were saved, or whose saved counts cannot be used)."""
        ids, tokens = [], []
        for row in self.rows(self.collection, ["id", "terms"]):
            ids.append(row["id"])
            tokens.append(row["terms"].split())
        return ids, LexicalIndex.from_terms(tokens)

    def _generation_moved(self, manifest: dict[str, Any]) -> bool:
        try:
            return int(self._head().get("generation", 0)) != int(manifest.get("generation", 0))
        except (IndexProblem, IndexError, KeyError, ValueError):
            return False

    def _read_counts(self, manifest: dict[str, Any], count: int) -> tuple[list[str], LexicalIndex] | None:
        """The chunk ids and term counts the manifest's commit saved, or None when it saved none, a
        later commit has replaced them meanwhile, or they are flawed (the caller reloads or counts)."""
        parts = int(manifest.get("counts_parts", 0))
        if not parts or not self.call("has_collection", self.counts):
            return None
        self.call("load_collection", self.counts)
        ids = [_part_id(int(manifest.get("generation", 0)), i) for i in range(parts)]
        found: dict[str, str] = {}
        for start in range(0, parts, _PARTS_PER_GET):
            rows = self.call("get", self.counts, ids=ids[start : start + _PARTS_PER_GET], output_fields=["body"])
            found.update((r["id"], r["body"]) for r in rows)
        if len(found) != parts:
            return None
        # The saved counts are a cache of what the chunks hold: any flaw in them (unreadable, or not
        # matching the collection) costs a recount from the chunks, never the index.
        try:
            with np.load(io.BytesIO(base64.b64decode("".join(found[i] for i in ids))), allow_pickle=False) as saved:
                chunk_ids = json.loads(saved["ids"].tobytes().decode())
                counts = LexicalIndex.read(io.BytesIO(saved["counts"].tobytes()), count)
            if not isinstance(chunk_ids, list) or len(chunk_ids) != count:
                raise LexicalFileError(f"its ids are not the collection's {count} chunks")
        except (LexicalFileError, KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
            _LOG.warning(
                "%s: the saved term counts cannot be used (%s); counting them from the chunks", self.description, exc
            )
            return None
        return chunk_ids, counts

    def _save_counts(self, manifest: dict[str, Any], ids: list[str], counts: LexicalIndex) -> None:
        """Save the in-app BM25's counts under the coming generation, before the manifest names it:
        a reader of the manifest finds them whole."""
        self._ensure_keyed_collection(self.counts, 64, _BODY_MAX)
        packed = io.BytesIO()
        lexical = io.BytesIO()
        counts.write(lexical)
        # Compressed: 100k chunks of ARCD text take 14.6 MB of base64 instead of 49.9 MB, for 1.6 s
        # more a commit and 0.07 s more a load (most of a load was fetching the parts).
        np.savez_compressed(
            packed,
            ids=np.frombuffer(json.dumps(ids).encode(), dtype=np.uint8),
            counts=np.frombuffer(lexical.getvalue(), dtype=np.uint8),
        )
        text = base64.b64encode(packed.getvalue()).decode()
        generation = int(manifest["generation"])
        rows = [
            {"id": _part_id(generation, i), "body": text[at : at + _PART_CHARS], "v": [0.0, 0.0]}
            for i, at in enumerate(range(0, len(text), _PART_CHARS))
        ]
        self._upsert(self.counts, rows)
        manifest["counts_parts"] = len(rows)

    def _drop_old_counts(self, generation: int) -> None:
        """After the manifest moved to `generation`: the parts of earlier generations go (a reader
        still on one finds it incomplete and reloads)."""
        keep = f"{generation}:"
        stale = [r["id"] for r in self.rows(self.counts, ["id"]) if not str(r["id"]).startswith(keep)]
        for start in range(0, len(stale), _BATCH):
            self.call("delete", self.counts, ids=stale[start : start + _BATCH])

    def _count(self) -> int:
        rows = self.call("query", self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def refreshed(self, index: StoredIndex) -> StoredIndex | None:
        """The index as another process left it, when its manifest moved on since `index` was read
        (checked at most every SYNC_S: one row); None when nothing changed."""
        with self._sync_lock:
            if time.monotonic() - self._synced < SYNC_S:
                return None
            self._synced = time.monotonic()
            try:
                live = int(self._head().get("generation", 0))
            except (IndexProblem, IndexError, KeyError, ValueError):
                return None
        if live == int(index.manifest.get("generation", 0)):
            return None
        return self.load()

    # --- write -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Writers on one machine take a file lock (Milvus Lite is one local file); writers of a
        shared server take the collection's lease, so a second writer waits or is told who writes."""
        if not self.is_local:
            with self._lease():
                yield
            return
        path = Path(self.uri).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(path.name + ".lock")):
            yield

    @contextlib.contextmanager
    def _lease(self) -> Iterator[None]:
        owner = f"{socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"
        self._ensure_lease_collection()
        deadline = time.monotonic() + LEASE_WAIT_S
        holder = ""
        while True:
            held = self._lease_holder()
            if held is None or held[0] == owner or held[1] < time.time():
                self._write_lease(owner)
                time.sleep(LEASE_SETTLE_S)
                held = self._lease_holder()
                if held is not None and held[0] == owner:
                    break
            holder = held[0] if held else holder
            if time.monotonic() > deadline:
                raise StoreBusy(
                    f"{self.description} is being written by {holder or 'another process'}; "
                    "retry when it finishes (one writer at a time)"
                )
            time.sleep(0.5)
        self._holding, self._renewed = owner, time.monotonic()
        try:
            yield
        finally:
            self._holding = None
            with contextlib.suppress(IndexProblem):
                held = self._lease_holder()
                if held is not None and held[0] == owner:
                    self.call("delete", self.lease, ids=[_LEASE_ID])

    def _ensure_lease_collection(self) -> None:
        self._ensure_keyed_collection(self.lease, 64, 1024)

    def _ensure_keyed_collection(self, name: str, id_max: int, body_max: int) -> None:
        """A collection of text bodies by id (the lease, the saved counts), made when missing."""
        if self.call("has_collection", name):
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=id_max)
        schema.add_field("body", DataType.VARCHAR, max_length=body_max)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        index = self.client().prepare_index_params()
        index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        consistency = {"consistency_level": COLLECTION_CONSISTENCY}
        try:
            self.call("create_collection", name, schema=schema, index_params=index, **consistency)
        except StoreUnavailable:
            if not self.call("has_collection", name):  # else made meanwhile by another writer
                raise
        self.call("load_collection", name)

    def _lease_holder(self) -> tuple[str, float] | None:
        rows = self.call("get", self.lease, ids=[_LEASE_ID], output_fields=["body"])
        if not rows:
            return None
        body = json.loads(rows[0]["body"])
        return str(body["owner"]), float(body["until"])

    def _write_lease(self, owner: str) -> None:
        body = json.dumps({"owner": owner, "until": time.time() + LEASE_S})
        self.call("upsert", self.lease, data=[{"id": _LEASE_ID, "body": body, "v": [0.0, 0.0]}])

    def _renew(self) -> None:
        """Keep this writer's lease while a long write goes on."""
        if self._holding is not None and time.monotonic() - self._renewed > LEASE_S / 3:
            self._write_lease(self._holding)
            self._renewed = time.monotonic()

    def tidy(self) -> None:
        """Nothing to tidy: Milvus writes are row-level; a mismatch is reported at load."""

    def vector_index(self, requested: str) -> str:
        """HNSW on a server unless exact search is asked for; a Milvus Lite file searches exactly
        unless HNSW is asked for (its collections are one machine's).

        Not FAISS's size rule (exact below 50k chunks): a shared server collection grows by other
        processes' builds, and an index type fixed at creation must stay fast when it does; at the
        manifest's ef (768) HNSW explores most of a small collection anyway.
        """
        if requested == "flat" or (self.is_local and requested != "hnsw"):
            return "flat"
        return "hnsw"

    def version(self) -> str:
        """The engine's version; "" where it has no version call (Milvus Lite 2.5's C++ server)."""
        try:
            return str(self.client().get_server_version(timeout=self.timeout_s))
        except StoreUnavailable:
            raise
        except Exception as exc:
            chain = [exc, *(e for e in (exc.__cause__, exc.__context__) if e is not None)]
            if "UNIMPLEMENTED" in {_grpc_status(e) for e in chain} or "UNIMPLEMENTED" in repr(exc):
                return ""
            raise self._failure("get_server_version", exc) from exc

    def engine_bm25(self) -> bool:
        """Does this Milvus run BM25 functions (Milvus Lite 3, servers from 2.5)? An engine that
        does not say its version is asked to make a collection with one."""
        version = self.version()
        match = re.search(r"(\d+)\.(\d+)", version)
        if not version:
            return self._bm25_probe()
        if match is None:
            return False
        major, minor = int(match.group(1)), int(match.group(2))
        return major >= 3 if "lite" in version.lower() else (major, minor) >= (2, 5)

    def _bm25_probe(self) -> bool:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        probe = f"{self.collection}_probe"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("terms", DataType.VARCHAR, max_length=64, enable_analyzer=True)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function("bm25", FunctionType.BM25, ["terms"], ["sparse"]))
        try:
            self.call("create_collection", probe, schema=schema)
        except StoreUnavailable:
            return False
        self.call("drop_collection", probe)
        return True

    def _create(self, dim: int, index_type: str = "flat") -> str:
        """Make the collections; returns the vector index type made (the engine may refuse HNSW)."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        for name in (self.collection, self.meta, self.frequencies, self.counts):
            if self.call("has_collection", name):
                self.call("drop_collection", name)
        engine_bm25 = self.engine_bm25()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_MAX)
        schema.add_field("source", DataType.VARCHAR, max_length=_SOURCE_MAX)
        schema.add_field("title", DataType.VARCHAR, max_length=_TITLE_MAX)
        for name in ("start", "end", "position"):
            schema.add_field(name, DataType.INT64)
        # page / page_end / section / ocr as JSON ("{}" for plain text): optional keys, one column.
        schema.add_field("location", DataType.VARCHAR, max_length=_LOCATION_MAX)
        if engine_bm25:
            analysed = {"enable_analyzer": True, "analyzer_params": {"tokenizer": "standard"}}
            schema.add_field("terms", DataType.VARCHAR, max_length=_TERMS_MAX, **analysed)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["terms"],
                    output_field_names=["sparse"],
                )
            )
        else:
            schema.add_field("terms", DataType.VARCHAR, max_length=_TERMS_MAX)
        consistency = {"consistency_level": COLLECTION_CONSISTENCY}
        try:
            index = self._index_params(index_type, engine_bm25)
            self.call("create_collection", self.collection, schema=schema, index_params=index, **consistency)
        except StoreUnavailable as exc:
            # Milvus Lite 2.5's engine builds FLAT and IVF indexes only ("local mode only support").
            # Not IVF: its searches there found 0.41 of the exact top 10 at 100k synthetic chunks
            # whatever nlist (16 to 1,024) or nprobe (8 to 1,024) was set, and 0.286 of it over
            # 100k clustered vectors even at nprobe = nlist, where IVF must equal exact search
            # (`python -m eval.bench --only lite25_ivf`, 2026-12-05).
            if index_type != "hnsw" or "only support" not in str(exc):
                raise
            index_type = "flat"
            index = self._index_params(index_type, engine_bm25)
            self.call("create_collection", self.collection, schema=schema, index_params=index, **consistency)
        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.VARCHAR, is_primary=True, max_length=len(_FILE_PREFIX) + _SOURCE_MAX)
        meta.add_field("body", DataType.VARCHAR, max_length=_BODY_MAX)
        meta.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        meta_index = self.client().prepare_index_params()
        meta_index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        self.call("create_collection", self.meta, schema=meta, index_params=meta_index, **consistency)
        if engine_bm25:
            df = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            df.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_TOKEN_CHARS)
            df.add_field("df", DataType.INT64)
            df.add_field("v", DataType.FLOAT_VECTOR, dim=2)
            df_index = self.client().prepare_index_params()
            df_index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
            self.call("create_collection", self.frequencies, schema=df, index_params=df_index, **consistency)
        return index_type

    def _count_terms(self, added: Counter[str], gone: Counter[str], fresh: bool) -> None:
        """Bring the document frequencies in `<name>_df` in line with a commit's added and removed
        chunks (derived data: a rebuild recounts them)."""
        delta = Counter(added)
        delta.subtract(gone)
        tokens = sorted(t for t, change in delta.items() if change)
        current: dict[str, int] = {}
        for start in range(0, len(tokens) if not fresh else 0, _BATCH):
            batch = tokens[start : start + _BATCH]
            current.update(
                (r["id"], int(r["df"])) for r in self.call("get", self.frequencies, ids=batch, output_fields=["df"])
            )
        counts = {t: current.get(t, 0) + delta[t] for t in tokens}
        self._upsert(self.frequencies, [{"id": t, "df": n, "v": [0.0, 0.0]} for t, n in counts.items() if n > 0])
        unused = [t for t, n in counts.items() if n <= 0]
        for start in range(0, len(unused), _BATCH):
            self.call("delete", self.frequencies, ids=unused[start : start + _BATCH])

    def _flush_lite(self) -> None:
        """Milvus Lite searches rows still in its write buffer by copying the whole buffer on every
        search (340 ms a search at 10k chunks against 33 ms once flushed and indexed); a flush after
        each commit moves them into indexed segments. Servers index growing segments themselves."""
        if "lite" in self.version().lower():
            self.call("flush", self.collection)

    def _index_params(self, index_type: str, engine_bm25: bool) -> Any:
        index = self.client().prepare_index_params()
        if index_type == "hnsw":
            params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
            index.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params=params)
        else:
            index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        if engine_bm25:
            bm25 = {"bm25_k1": self.bm25_k1, "bm25_b": self.bm25_b}
            index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=bm25)
        return index

    def _check_lengths(self, chunks: Sequence[Document], terms: Sequence[str]) -> None:
        """Fail before the first write, naming the file, when a value exceeds this collection's
        limits: a collection made by an older version had a 1,024-character source field."""
        limits = _limits(self.call("describe_collection", self.collection))
        for chunk, tokens in zip(chunks, terms):
            values = {
                "text": chunk.page_content,
                "source": chunk.metadata["source"],
                "title": _title(chunk),
                "terms": tokens,
            }
            for name, value in values.items():
                if name in limits and len(value) > limits[name]:
                    raise IndexMismatch(
                        f"{_shown(values['source'])}: its {name} has {len(value):,} characters, over the "
                        f"{limits[name]:,} of {self.description} (made by an older version); rebuild it with "
                        f"`{self.rebuild_hint()}`"
                    )

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        if old is None:
            manifest["index_type"] = self.vector_index(str(manifest.get("index_type_requested", "auto")))
            manifest["index_type"] = self._create(int(manifest["dim"]), manifest["index_type"])
        counted = self.call("has_collection", self.frequencies)
        local = None if counted else _local_bm25(old)
        gone: Counter[str] = Counter()
        dropped_ids: set[str] = set()
        if old is not None and changes.drop:
            dropped = f"source in {json.dumps(sorted(changes.drop), ensure_ascii=False)}"
            if counted:
                for row in self.rows(self.collection, ["terms"], dropped):
                    tokens = row["terms"].split()
                    gone.update(set(tokens))
                    gone[_LENGTH_ID] += len(tokens)
            else:
                dropped_ids = {str(row["id"]) for row in self.rows(self.collection, ["id"], dropped)}
            self.call("delete", self.collection, filter=dropped)
        # Rows are made a batch at a time (a million rows of vectors as Python lists took 19 GB); the
        # lengths are checked for all of them before the first write.
        terms = [lexical_text(chunk_terms(c)) for c in changes.chunks]
        self._check_lengths(changes.chunks, terms)
        added: Counter[str] = Counter()
        for start in range(0, len(terms), _BATCH):
            end = start + _BATCH
            batch = [
                _row(c, v, t)
                for c, v, t in zip(changes.chunks[start:end], changes.vectors[start:end], terms[start:end])
            ]
            self._upsert(self.collection, batch)
            if counted:
                for row in batch:
                    tokens = row["terms"].split()
                    added.update(set(tokens))
                    added[_LENGTH_ID] += len(tokens)
        if counted:
            self._count_terms(added, gone, fresh=old is None)
        self._flush_lite()
        kept = old.size - sum(int(old.files[s]["chunks"]) for s in changes.drop if s in old.files) if old else 0
        manifest.update(count=kept + len(terms), generation=int(manifest.get("generation", 0)) + 1)
        manifest.pop("lexical", None)  # said at load, from the collection itself
        manifest.pop("counts_parts", None)
        saved = None
        if not counted and (old is None or local is not None):
            # The new counts: a fresh collection's from nothing, else this process's (an index it did
            # not load itself has none here and is counted from the chunks at the next load).
            base_ids, base = (local.ids, local.counts) if local is not None else ([], LexicalIndex.from_terms([]))
            new_ids = [str(c.metadata["id"]) for c in changes.chunks]
            gone_ids = dropped_ids | set(new_ids)
            keep = [row for row, chunk_id in enumerate(base_ids) if chunk_id not in gone_ids]
            new_ids = [base_ids[row] for row in keep] + new_ids
            if len(new_ids) == manifest["count"]:  # else counted from the chunks at the next load
                saved = (new_ids, base.update_terms(keep, (t.split() for t in terms)))
                self._save_counts(manifest, *saved)
        self._write_manifest(manifest)
        if saved is not None:
            self._drop_old_counts(int(manifest["generation"]))
        return self._load(known=saved)


def _local_bm25(index: StoredIndex | None) -> LocalBM25 | None:
    """The in-app BM25 of an index this store loaded (its counts are the next commit's base)."""
    corpus = index.corpus if index is not None else None
    return (
        corpus.lexical_side if isinstance(corpus, MilvusCorpus) and isinstance(corpus.lexical_side, LocalBM25) else None
    )


def _part_id(generation: int, part: int) -> str:
    return f"{generation}:{part:06d}"


def _title(chunk: Document) -> str:
    return str(chunk.metadata["title"])[: _TITLE_MAX // 4]


def _row(chunk: Document, vector: np.ndarray, terms: str) -> dict[str, Any]:
    """A chunk as a row of the chunks collection."""
    meta = chunk.metadata
    return {
        "id": meta["id"],
        "vector": vector.tolist(),
        "text": chunk.page_content,
        "source": meta["source"],
        "title": _title(chunk),
        "start": int(meta["start"]),
        "end": int(meta["end"]),
        "position": int(meta["position"]),
        "location": json.dumps({k: meta[k] for k in LOCATION_KEYS if k in meta}, ensure_ascii=False),
        "terms": terms,
    }


def _shown(source: str) -> str:
    """A file name for an error message: its end (the file itself) when the path is very long."""
    return safe_name(source if len(source) <= 120 else "…" + source[-120:])


def _limits(description: dict[str, Any]) -> dict[str, int]:
    """VARCHAR max_length of each field of a collection description."""
    return {
        f["name"]: int(f.get("params", {}).get("max_length", 0))
        for f in description.get("fields", [])
        if f.get("params", {}).get("max_length")
    }


def _search_params(manifest: dict[str, Any]) -> dict[str, Any]:
    """HNSW's candidate list at search time (recall vs speed), from the manifest like FAISS's."""
    if manifest.get("index_type") != "hnsw":
        return {"metric_type": "IP"}
    return {"metric_type": "IP", "params": {"ef": int(manifest.get("ef_search", Config.default("hnsw_ef_search")))}}


# The three reasons a server cannot be used at all; the first names the store's own timeout.
_NO_REPLY = "no reply within {timeout:g} s (the server is frozen, overloaded or still starting); retry shortly"
_REFUSED = "the server refused the credentials; set RAG_MILVUS_TOKEN to user:password (or an API key)"
_UNREACHABLE = "the server is not reachable (stopped, restarting, or a wrong address); start it or fix --milvus-uri"


def _reason(exc: BaseException) -> str:
    """One line for the user: gRPC's own text is a multi-line repr of an internal error object."""
    message = " ".join(str(getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
    # pymilvus reports a refused token as "Fail connecting to server" with gRPC's status as its cause.
    chain = [exc, *(e for e in (exc.__cause__, exc.__context__) if e is not None)]
    statuses = {_grpc_status(e) for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if "UNAUTHENTICATED" in statuses or "PERMISSION_DENIED" in statuses or "authorization" in text:
        return _REFUSED
    if "DEADLINE_EXCEEDED" in statuses or "deadline exceeded" in text:
        return _NO_REPLY
    if "UNAVAILABLE" in statuses or "server unavailable" in text or "fail connecting" in text:
        return _UNREACHABLE
    return message[:300]


def _grpc_status(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    try:
        return str(getattr(code() if callable(code) else code, "name", ""))
    except Exception:
        return ""
