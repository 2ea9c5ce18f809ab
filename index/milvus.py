"""The Milvus store: chunks, vectors and the manifest live in Milvus collections (pymilvus).

`uri` is a local file path (embedded Milvus Lite, from PyPI `milvus-lite`) or a server URL such as
http://host:19530 (Milvus standalone or cluster). Nothing is kept in local side files, so several
app processes on several machines can share one collection. Dense search runs in Milvus; each
process also holds the chunk rows in memory for BM25 and exact re-scoring, as with FAISS.

Updates are incremental: a changed or removed file's chunks are deleted by source and the new
chunks inserted; the manifest rows are written last, and a load that finds the row count and the
manifest disagreeing reports it with the rebuild command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document

from index.formats import LOCATION_KEYS
from index.store import (
    FORMAT_VERSION,
    REBUILD_HINT,
    Changes,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    StoredIndex,
    StoreUnavailable,
    check_embedder,
)

# pymilvus logs every failed call with a traceback and gRPC prints keep-alive chatter; the
# store reports failures itself, in one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

_MANIFEST_ID = "__manifest__"
_FILE_PREFIX = "file:"
_TEXT_MAX = 65_535
_LOCATION_MAX = 4_096  # a section name is cut at 300 characters (index.formats.locate)
_TIMEOUT_S = 10.0
_FIELDS = ["id", "vector", "text", "source", "title", "start", "end", "position", "location"]


class MilvusVectors:
    """The FAISS-index subset the retriever uses (search, reconstruct, ntotal, d), over Milvus."""

    def __init__(self, store: MilvusStore, ids: list[str], vectors: np.ndarray) -> None:
        self.store = store
        self.row_of = {chunk_id: row for row, chunk_id in enumerate(ids)}
        self.vectors = vectors
        self.ntotal = len(ids)
        self.d = vectors.shape[1]

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.store.call(
            "search",
            self.store.collection,
            data=[q.tolist() for q in queries],
            limit=max(1, n),
            output_fields=["id"],
            search_params={"metric_type": "IP"},
        )
        sims = np.full((len(queries), n), -1.0, dtype=np.float32)
        rows = np.full((len(queries), n), -1, dtype=np.int64)
        for qi, result in enumerate(hits):
            known = [(h["distance"], self.row_of.get(h["id"])) for h in result]
            for j, (distance, row) in enumerate(x for x in known if x[1] is not None):
                sims[qi, j], rows[qi, j] = distance, row
        return sims, rows

    def reconstruct(self, row: int) -> np.ndarray:
        return self.vectors[row]

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        return self.vectors[start : start + n]


class MilvusStore:
    """Chunks collection `<name>` plus manifest collection `<name>_meta` at `uri`."""

    def __init__(self, uri: str, collection: str = "rag_chunks", token: str = "") -> None:
        self.uri, self.collection, self.token = uri, collection, token
        self.meta = f"{collection}_meta"
        self.description = f"Milvus collection {collection!r} at {uri}"
        self._client: Any = None

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    def client(self) -> Any:
        if self._client is None:
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise StoreUnavailable("the milvus store needs `pip install pymilvus milvus-lite`") from exc
            if self.is_local:
                Path(self.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = MilvusClient(uri=self.uri, token=self.token, timeout=_TIMEOUT_S)
            except Exception as exc:
                raise StoreUnavailable(f"cannot connect to Milvus at {self.uri}: {_reason(exc)}") from exc
        return self._client

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call with a timeout; failures become StoreUnavailable with the reason."""
        try:
            return getattr(self.client(), method)(*args, timeout=_TIMEOUT_S, **kwargs)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"Milvus at {self.uri} failed ({method}): {_reason(exc)}") from exc

    # --- manifest --------------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any]:
        if not self.call("has_collection", self.meta) or not self.call("has_collection", self.collection):
            raise IndexMissing(
                f"no index in {self.description}: build it with `python -m index build DOCS_DIR --store milvus`"
            )
        for name in (self.collection, self.meta):
            self.call("load_collection", name)  # a restarted server holds collections released
        rows = self.call("query", self.meta, filter='id != ""', output_fields=["id", "body"], limit=16_384)
        bodies = {r["id"]: r["body"] for r in rows}
        if _MANIFEST_ID not in bodies:
            raise IndexCorrupt(f"{self.description} has no manifest row; rebuild with `{REBUILD_HINT} --store milvus`")
        try:
            manifest = json.loads(bodies[_MANIFEST_ID])
            manifest["files"] = {k[len(_FILE_PREFIX) :]: json.loads(v) for k, v in bodies.items() if k != _MANIFEST_ID}
        except ValueError as exc:
            raise IndexCorrupt(
                f"{self.description}: manifest is not valid JSON; rebuild with `{REBUILD_HINT}`"
            ) from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(
                f"{self.description} has index format {manifest.get('format_version')!r}, this version reads "
                f"{FORMAT_VERSION}; rebuild with `{REBUILD_HINT} --store milvus`"
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
        existing = {
            r["id"] for r in self.call("query", self.meta, filter='id != ""', output_fields=["id"], limit=16_384)
        }
        stale = sorted(existing - {r["id"] for r in rows})
        if stale:
            self.call("delete", self.meta, ids=stale)
        self.call("upsert", self.meta, data=rows)

    # --- load ------------------------------------------------------------------------------------

    def load(self, embedder: str | None = None) -> StoredIndex:
        manifest = self.read_manifest()
        if embedder is not None:
            check_embedder(manifest, embedder, self.description, f"{REBUILD_HINT} --store milvus")
        records = []
        iterator = self.call("query_iterator", self.collection, batch_size=1000, output_fields=_FIELDS)
        try:
            while batch := iterator.next():
                records.extend(batch)
        except Exception as exc:
            raise StoreUnavailable(f"Milvus at {self.uri} failed while reading chunks: {_reason(exc)}") from exc
        finally:
            iterator.close()
        records.sort(key=lambda r: (r["source"], r["position"], r["start"]))
        if len(records) != manifest["count"]:
            raise IndexCorrupt(
                f"{self.description} holds {len(records)} chunks but its manifest says {manifest['count']} "
                f"(an interrupted update?); rebuild with `{REBUILD_HINT} --store milvus`"
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
        return StoredIndex(
            manifest=manifest, chunks=chunks, vectors=MilvusVectors(self, [r["id"] for r in records], vectors)
        )  # type: ignore[arg-type]

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
        with open(path.with_name(path.name + ".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def tidy(self) -> None:
        """Nothing to tidy: Milvus writes are row-level; a mismatch is reported at load."""

    def _create(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        for name in (self.collection, self.meta):
            if self.call("has_collection", name):
                self.call("drop_collection", name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_MAX)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=2048)
        for name in ("start", "end", "position"):
            schema.add_field(name, DataType.INT64)
        # page / page_end / section / ocr as JSON ("{}" for plain text): optional keys, one column.
        schema.add_field("location", DataType.VARCHAR, max_length=_LOCATION_MAX)
        index = self.client().prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self.call("create_collection", self.collection, schema=schema, index_params=index, consistency_level="Strong")
        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("id", DataType.VARCHAR, is_primary=True, max_length=1100)
        meta.add_field("body", DataType.VARCHAR, max_length=_TEXT_MAX)
        meta.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        meta_index = self.client().prepare_index_params()
        meta_index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        self.call("create_collection", self.meta, schema=meta, index_params=meta_index, consistency_level="Strong")

    def commit(self, manifest: dict[str, Any], changes: Changes, old: StoredIndex | None) -> StoredIndex:
        if old is None:
            self._create(int(manifest["dim"]))
        elif changes.drop:
            sources = json.dumps(sorted(changes.drop), ensure_ascii=False)
            self.call("delete", self.collection, filter=f"source in {sources}")
        rows = [
            {
                "id": c.metadata["id"],
                "vector": v.tolist(),
                "text": c.page_content,
                "source": c.metadata["source"],
                "title": c.metadata["title"][:2000],
                "start": int(c.metadata["start"]),
                "end": int(c.metadata["end"]),
                "position": int(c.metadata["position"]),
                "location": json.dumps(
                    {k: c.metadata[k] for k in LOCATION_KEYS if k in c.metadata}, ensure_ascii=False
                ),
            }
            for c, v in zip(changes.chunks, changes.vectors)
        ]
        for start in range(0, len(rows), 500):
            self.call("upsert", self.collection, data=rows[start : start + 500])
        kept = sum(1 for c in old.chunks if c.metadata["source"] not in changes.drop) if old else 0
        manifest.update(index_type="milvus", count=kept + len(rows), generation=int(manifest.get("generation", 0)) + 1)
        self._write_manifest(manifest)
        return self.load()


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]
