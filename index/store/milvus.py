"""The Milvus store: chunks, vectors and the manifest live in Milvus collections (pymilvus).

`uri` is a local file path (embedded Milvus Lite, from PyPI `milvus-lite`) or a server URL such as
http://host:19530 (Milvus standalone or cluster). Nothing is kept in local side files, so several
app processes on several machines can share one collection. Dense search runs in Milvus; each
process also holds the chunk rows in memory for BM25 and exact re-scoring, as with FAISS. Unlike
the FAISS folder, which saves BM25's term counts with each generation (index/lexical.py), this store
counts them from the chunk rows at each load: a local copy would go stale whenever another machine
writes the shared collection, and reading every row back already costs more than counting them
(`python -m eval.bench`, sections "Milvus Lite" and "BM25 start-up").

Updates are incremental: a changed or removed file's chunks are deleted by source and the new
chunks inserted; the manifest rows are written last, and a load that finds the row count and the
manifest disagreeing reports it with the rebuild command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document

from core.config import Config
from index.chunk import MAX_CHUNK_CHARS
from index.formats import LOCATION_KEYS
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

_MANIFEST_ID = "__manifest__"
_FILE_PREFIX = "file:"
# VARCHAR limits, from the same caps the loader and chunker enforce. Milvus Lite counts characters,
# some Milvus servers count UTF-8 bytes: 4 bytes a character covers both.
_TEXT_MAX = 4 * MAX_CHUNK_CHARS
_SOURCE_MAX = 4 * MAX_SOURCE_CHARS
_TITLE_MAX = 2048
_BODY_MAX = 65_535
_BATCH = 500
_LOCATION_MAX = 4_096  # a section name is cut at 300 characters (index.formats.locate)
_TIMEOUT_S = 10.0
# Collections are "Strong" (their default for every call that names no level): a process that
# loads right after a build, its own or another process's, must see every row the manifest counts,
# and pymilvus's query iterator always reads at the collection's level. Searches name "Bounded":
# they only need the rows this process loaded at start, and "Strong" waits for the server's next
# time tick on every call (issue 18: a direct search took 201 ms "Strong", 1.9 ms "Bounded"; the
# hybrid p50 with "Bounded" is `python -m eval.bench --only milvus_server`'s).
COLLECTION_CONSISTENCY = "Strong"
SEARCH_CONSISTENCY = "Bounded"
_FIELDS = ["id", "vector", "text", "source", "title", "start", "end", "position", "location"]


class MilvusVectors:
    """The `VectorIndex` the retriever uses (search, reconstruct, ntotal, d), over Milvus."""

    def __init__(self, store: MilvusStore, ids: list[str], vectors: np.ndarray) -> None:
        self.store = store
        self.row_of = {chunk_id: row for row, chunk_id in enumerate(ids)}
        self.vectors = vectors
        self.ntotal = len(ids)
        self.d = vectors.shape[1]

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.store.search([q.tolist() for q in queries], max(1, n))
        sims = np.full((len(queries), n), -1.0, dtype=np.float32)
        rows = np.full((len(queries), n), -1, dtype=np.int64)
        for qi, result in enumerate(hits):
            known = [(h["distance"], row) for h in result if (row := self.row_of.get(h["id"])) is not None]
            for j, (distance, row) in enumerate(known):
                sims[qi, j], rows[qi, j] = distance, row
        return sims, rows

    def reconstruct(self, row: int) -> np.ndarray:
        return self.vectors[row]

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return self.vectors[start : start + n]


class MilvusStore:
    """Chunks collection `<name>` plus manifest collection `<name>_meta` at `uri`."""

    page_size = 1000  # rows per read when paging through a collection

    def __init__(self, uri: str, collection: str, token: str = "", folder: Path | None = None) -> None:
        self.uri, self.collection, self.token = uri, collection, token
        self.folder = folder or Path(uri).expanduser().with_suffix("")
        self.meta = f"{collection}_meta"
        self.description = f"Milvus collection {collection!r} at {uri}"
        self._client: Any = None
        self.search_params: dict[str, Any] = {"metric_type": "IP"}  # set from the manifest at load

    @classmethod
    def from_config(cls, config: Config) -> MilvusStore:
        """The store `milvus` of core/registry.py: milvus_uri, or a Milvus Lite file beside index_dir."""
        folder = config.index_dir
        uri = config.milvus_uri or str(folder.parent / f"{folder.name}.milvus.db")
        return cls(uri, config.milvus_collection, config.milvus_token, folder)

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
                self._client = MilvusClient(uri=self.uri, token=self.token, timeout=_TIMEOUT_S, **extra)
            except Exception as exc:
                if self.is_local and type(_LITE_FAILURES.last).__name__ == "DataDirLockedError":
                    raise StoreUnavailable(
                        f"the Milvus Lite file {self.uri} is in use by another process (the UI, a build or an "
                        "ask; Milvus Lite allows one process at a time): stop it and retry, or share the index "
                        "through a Milvus server (--milvus-uri http://host:19530)"
                    ) from None
                raise self._failure("connect", exc) from exc
        return self._client

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call with a timeout; failures become StoreUnavailable with the reason."""
        try:
            return getattr(self.client(), method)(*args, timeout=_TIMEOUT_S, **kwargs)
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
            return StoreUnavailable(f"Milvus at {self.uri} is unavailable: {reason}")
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

    def search(self, vectors: list[list[float]], limit: int) -> Any:
        """Dense search; a restarted server may hold the collection released ("collection not
        loaded"), so that failure loads it once and searches again."""
        params = self.search_params
        if "params" in params:  # Milvus refuses an HNSW ef below the number of hits asked for
            params = {**params, "params": {"ef": max(limit, params["params"]["ef"])}}
        kwargs = {
            "data": vectors,
            "limit": limit,
            "output_fields": ["id"],
            "search_params": params,
            "consistency_level": SEARCH_CONSISTENCY,
        }
        try:
            return self.call("search", self.collection, **kwargs)
        except StoreUnavailable as exc:
            if "not loaded" not in str(exc).lower():
                raise
        self.call("load_collection", self.collection)
        return self.call("search", self.collection, **kwargs)

    # --- manifest --------------------------------------------------------------------------------

    def recorded_docs_dir(self) -> Path | None:
        try:
            rows = self.call("query", self.meta, filter=f'id == "{_MANIFEST_ID}"', output_fields=["body"])
            docs = json.loads(rows[0]["body"]).get("docs_dir")
        except (IndexProblem, IndexError, KeyError, ValueError, AttributeError):
            return None
        return Path(docs) if isinstance(docs, str) else None

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
        bodies = {r["id"]: r["body"] for r in self._rows(self.meta, ["id", "body"])}
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
        existing = {r["id"] for r in self._rows(self.meta, ["id"])}
        stale = sorted(existing - {r["id"] for r in rows})
        for start in range(0, len(stale), _BATCH):
            self.call("delete", self.meta, ids=stale[start : start + _BATCH])
        self._upsert(self.meta, rows)

    def _rows(self, collection: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row of a collection, page by page: a plain query returns at most 16,384 rows, which
        broke the manifest (one row a file) of bigger collections."""
        rows: list[dict[str, Any]] = []
        iterator = self.call("query_iterator", collection, batch_size=self.page_size, output_fields=fields)
        try:
            while batch := iterator.next():
                rows.extend(batch)
        except Exception as exc:
            raise self._failure(f"reading {collection}", exc) from exc
        finally:
            iterator.close()
        return rows

    def _upsert(self, collection: str, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), _BATCH):
            self.call("upsert", collection, data=rows[start : start + _BATCH])

    # --- load ------------------------------------------------------------------------------------

    def load(self, embedder: str | None = None) -> StoredIndex:
        manifest = self.read_manifest()
        if embedder is not None:
            check_embedder(manifest, embedder, self.description, self.rebuild_hint())
        records = self._rows(self.collection, _FIELDS)
        records.sort(key=lambda r: (r["source"], r["position"], r["start"]))
        if len(records) != manifest["count"]:
            raise IndexCorrupt(
                f"{self.description} holds {len(records)} chunks but its manifest says {manifest['count']} "
                f"(an interrupted update?); rebuild with `{self.rebuild_hint()}`"
            )
        chunks = [
            Document(
                page_content=r["text"],
                id=r["id"],
                metadata={
                    **{k: r[k] for k in ("id", "source", "title", "start", "end", "position")},
                    **json.loads(r["location"]),
                },
            )
            for r in records
        ]
        vectors = np.array([r["vector"] for r in records], dtype=np.float32).reshape(len(records), manifest["dim"])
        self.search_params = _search_params(manifest)
        return StoredIndex(
            manifest=manifest, chunks=chunks, vectors=MilvusVectors(self, [r["id"] for r in records], vectors)
        )

    # --- write -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Writers on one machine take a file lock (Milvus Lite is one local file); a shared server
        relies on Milvus's own per-row atomicity and on one writer at a time by convention."""
        if not self.is_local:
            yield
            return
        path = Path(self.uri).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(path.name + ".lock")):
            yield

    def tidy(self) -> None:
        """Nothing to tidy: Milvus writes are row-level; a mismatch is reported at load."""

    def vector_index(self, requested: str) -> str:
        """HNSW on a server unless exact search is asked for; Milvus Lite searches FLAT only.

        Not FAISS's size rule (exact below 50k chunks): a shared server collection grows by other
        processes' builds, and an index type fixed at creation must stay fast when it does; at the
        manifest's ef (768) HNSW explores most of a small collection anyway.
        """
        return "flat" if self.is_local or requested == "flat" else "hnsw"

    def _create(self, dim: int, index_type: str = "flat") -> None:
        from pymilvus import DataType, MilvusClient

        for name in (self.collection, self.meta):
            if self.call("has_collection", name):
                self.call("drop_collection", name)
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
        index = self.client().prepare_index_params()
        if index_type == "hnsw":
            params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
            index.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params=params)
        else:
            index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        consistency = {"consistency_level": COLLECTION_CONSISTENCY}
        self.call("create_collection", self.collection, schema=schema, index_params=index, **consistency)
        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.VARCHAR, is_primary=True, max_length=len(_FILE_PREFIX) + _SOURCE_MAX)
        meta.add_field("body", DataType.VARCHAR, max_length=_BODY_MAX)
        meta.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        meta_index = self.client().prepare_index_params()
        meta_index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        self.call("create_collection", self.meta, schema=meta, index_params=meta_index, **consistency)

    def _check_lengths(self, rows: list[dict[str, Any]]) -> None:
        """Fail before the first write, naming the file, when a value exceeds this collection's
        limits: a collection made by an older version had a 1,024-character source field."""
        limits = _limits(self.call("describe_collection", self.collection))
        for row in rows:
            for name in ("text", "source", "title"):
                if name in limits and len(row[name]) > limits[name]:
                    raise IndexMismatch(
                        f"{_shown(row['source'])}: its {name} has {len(row[name]):,} characters, over the "
                        f"{limits[name]:,} of {self.description} (made by an older version); rebuild it with "
                        f"`{self.rebuild_hint()}`"
                    )

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        if old is None:
            manifest["index_type"] = self.vector_index(str(manifest.get("index_type_requested", "auto")))
            self._create(int(manifest["dim"]), manifest["index_type"])
        elif changes.drop:
            sources = json.dumps(sorted(changes.drop), ensure_ascii=False)
            self.call("delete", self.collection, filter=f"source in {sources}")
        rows = [
            {
                "id": c.metadata["id"],
                "vector": v.tolist(),
                "text": c.page_content,
                "source": c.metadata["source"],
                "title": c.metadata["title"][: _TITLE_MAX // 4],
                "start": int(c.metadata["start"]),
                "end": int(c.metadata["end"]),
                "position": int(c.metadata["position"]),
                "location": json.dumps(
                    {k: c.metadata[k] for k in LOCATION_KEYS if k in c.metadata}, ensure_ascii=False
                ),
            }
            for c, v in zip(changes.chunks, changes.vectors)
        ]
        self._check_lengths(rows)
        self._upsert(self.collection, rows)
        kept = sum(1 for c in old.chunks if c.metadata["source"] not in changes.drop) if old else 0
        manifest.update(count=kept + len(rows), generation=int(manifest.get("generation", 0)) + 1)
        self._write_manifest(manifest)
        return self.load()


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


_NO_REPLY = f"no reply within {_TIMEOUT_S:.0f} s (the server is frozen, overloaded or still starting); retry shortly"
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
