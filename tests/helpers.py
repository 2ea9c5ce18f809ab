"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from core.config import Config
from index.build import BuildReport
from index.embed import VectorEmbeddings
from index.store import StoredIndex, VectorIndex

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
SEEDS_DIR = REPO_ROOT / "seeds"
QUESTIONS_DIR = REPO_ROOT / "eval" / "questions"


@dataclass
class SeedsIndex:
    """The session's index over a copy of seeds/, with the config that built it."""

    config: Config
    index: StoredIndex
    report: BuildReport


class HashEmbedder(VectorEmbeddings):
    """A fast deterministic stand-in (hashes, not meaning) for tests that embed megabytes of text;
    another `name` provokes an embedder mismatch."""

    def __init__(self, batch_size: int = 16, name: str = "hash-test", dim: int = 16) -> None:
        super().__init__(batch_size)
        self.name, self.dim = name, dim

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=self.dim).digest()
            out[i] = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) - 127.5
        return out


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


def write_docs(folder: Path, docs: Mapping[str, str | bytes]) -> Path:
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


@dataclass
class UIServer:
    """A `python -m ui` subprocess; its stdout and stderr go to files beside each other."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    stderr_path: Path

    def stderr(self, tail: int = 6000) -> str:
        """The last `tail` characters the server wrote to stderr (its log, "Serving on ...", tracebacks)."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-tail:]

    def stop(self, timeout: float = 15) -> None:
        """Terminate the server, then kill it if it has not exited within timeout seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a server to start on, or a client to be refused by)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_cli(
    args: Sequence[str | bytes], env: Mapping[str, str], stdin: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    """`python ARGS` from the repository root with exactly env; output captured."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, timeout=timeout
    )


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment without RAG_* and GRADIO_* settings, telemetry off, UTF-8 output, then overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAG_", "GRADIO_"))}
    env.update({"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONIOENCODING": "utf-8", **overrides})
    return env


def start_ui(
    env: Mapping[str, str],
    log_dir: Path,
    args: Sequence[str] = (),
    host: str | None = None,
    timeout: float = 120,
    headers: Mapping[str, str] | None = None,
) -> UIServer:
    """Start `python -m ui` from the repository root on a free port of host (loopback, and no --host
    argument, when None) with exactly env, and wait until GET / answers 200.

    `headers` go with that GET (the key, when the server has one). Output goes to log_dir/ui-PORT.stdout and .stderr. If the server exits or does not answer within
    timeout seconds, it is stopped and the test fails with the tail of its stderr.
    """
    bind = host or "127.0.0.1"
    port = free_port(bind)
    stderr_path = log_dir / f"ui-{port}.stderr"
    command = [sys.executable, "-m", "ui", "--port", str(port), *(["--host", host] if host else []), *args]
    with open(stderr_path, "wb") as stderr, open(log_dir / f"ui-{port}.stdout", "wb") as stdout:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL
        )
    server = UIServer(process, f"http://{bind}:{port}/", port, stderr_path)
    deadline = time.monotonic() + timeout
    last_error = ""
    while (code := process.poll()) is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(server.url, headers=dict(headers or {})), timeout=5
            ) as response:
                if response.status == 200:
                    return server
                last_error = f"HTTP {response.status}"
        except OSError as exc:  # URLError, connection refused, timeouts
            last_error = str(exc)
        time.sleep(0.5)
    server.stop()
    why = f"exited with code {code}" if code is not None else f"did not answer within {timeout} s ({last_error})"
    pytest.fail(f"the UI server {why}; its stderr:\n{server.stderr()}")


def collected(stream: AsyncIterator[T]) -> list[T]:
    """Every item of an async stream (the UI's answer handlers), gathered on an event loop of its own."""

    async def gather() -> list[T]:
        return [item async for item in stream]

    return asyncio.run(gather())


def launch_api(env: Mapping[str, str], stderr_path: Path) -> UIServer:
    """Start `python -m api` on a free loopback port with exactly env (stderr to stderr_path); the
    caller waits for it to answer."""
    port = free_port()
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "--port", str(port)],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    return UIServer(process, f"http://127.0.0.1:{port}", port, stderr_path)


def mark_async_tests(cls: type) -> type:
    """The standard suite's async tests carry no asyncio mark (LangChain's repositories run pytest
    with asyncio_mode=auto). Rather than switch the whole suite's mode, mark them here, in place:
    the suite refuses overridden tests, and a mark keeps the function itself. One event loop for
    them all: ChatOpenAI caches its async HTTP client, which must not outlive its loop."""
    for name in dir(cls):
        test = getattr(cls, name)
        if name.startswith("test_") and inspect.iscoroutinefunction(test):
            pytest.mark.asyncio(loop_scope="module")(test)
    return cls


def vectors_of(index: StoredIndex) -> VectorIndex:
    """The vectors of an index held in memory (a FAISS folder's)."""
    return index.in_memory()[1]
