"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.build import BuildReport
from index.embed import VectorEmbeddings
from index.store import StoredIndex
from rag.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
SEEDS_DIR = REPO_ROOT / "seeds"
QUESTIONS_DIR = REPO_ROOT / "eval" / "questions"


@dataclass
class SeedsIndex:
    """The session's index over a copy of seeds/, with the config that built it."""

    config: Config
    index: StoredIndex
    report: BuildReport


class CountingEmbedder(VectorEmbeddings):
    """Wraps another embedder under the same name and records every passage it is asked to embed."""

    def __init__(self, inner: VectorEmbeddings) -> None:
        super().__init__(inner.batch_size)
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.passages: list[str] = []

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not is_query:
            self.passages.extend(texts)
        return self.inner._encode(texts, is_query)

    def reset(self) -> None:
        self.passages.clear()


def write_docs(folder: Path, docs: dict[str, str | bytes]) -> Path:
    """Write {name: text or raw bytes} into folder (created), UTF-8 for text."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def uncovered_non_space(text: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Offsets of non-whitespace characters of text that no span covers."""
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    return [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
