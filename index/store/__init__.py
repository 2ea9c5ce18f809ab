"""Where an index lives, as a small package: the protocol and errors every store shares (`base`),
the index folder's ledger, lock and atomic writes (`files`), the FAISS folder store (`folder`) and
the Milvus store (`milvus`, imported only when chosen).

Which store a setting picks is a line of core/registry.py's STORES; each store module depends on
`base` and `files` only, so no store imports another. The names below are the package's API for
the rest of the product (`from index import store`; `store.load(folder)`).
"""

from __future__ import annotations

from index.store.base import (
    APPROXIMATE_FROM,
    FORMAT_VERSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    MANIFEST,
    REBUILD_HINT,
    Changes,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    IndexProblem,
    NotAnIndex,
    Store,
    StoredIndex,
    StoreUnavailable,
    VectorIndex,
    check_embedder,
    new_manifest,
)
from index.store.files import (
    LOCK,
    OWNER,
    TMP_DIR,
    atomic_write,
    claim,
    file_lock,
    read_owner,
    rebuild_hint,
    recorded_docs_dir,
    shown_path,
    write_lock,
)
from index.store.folder import (
    FaissStore,
    build_vectors,
    choose_index_type,
    load,
    prepare,
    read_manifest,
    remove_stale,
    save,
)

__all__ = [
    "APPROXIMATE_FROM",
    "FORMAT_VERSION",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "LOCK",
    "MANIFEST",
    "OWNER",
    "REBUILD_HINT",
    "TMP_DIR",
    "Changes",
    "FaissStore",
    "IndexCorrupt",
    "IndexMismatch",
    "IndexMissing",
    "IndexProblem",
    "NotAnIndex",
    "Store",
    "StoreUnavailable",
    "StoredIndex",
    "VectorIndex",
    "atomic_write",
    "build_vectors",
    "check_embedder",
    "choose_index_type",
    "claim",
    "file_lock",
    "load",
    "new_manifest",
    "prepare",
    "read_manifest",
    "read_owner",
    "rebuild_hint",
    "recorded_docs_dir",
    "remove_stale",
    "save",
    "shown_path",
    "write_lock",
]
