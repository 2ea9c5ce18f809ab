"""What the API's routes share: one `Service` (pipeline, document library, worker pool) per app.

Its own module so the routes (api/openai_compat.py, api/rest.py) and the app that mounts them
(api/app.py) import it from below instead of from each other. Endpoints are async so that thousands
of idle or streaming connections cost no threads; the chain itself is CPU-bound and blocking, so it
runs in a bounded worker pool (`Config.api_workers`), and requests beyond that wait their turn
instead of oversubscribing the two cores.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from api.errors import APIError
from core.config import Config
from core.errors import UserError
from index.library import DocumentLibrary
from index.store import IndexProblem
from rag.answer import Answer
from rag.chain import Pipeline, QuestionError

log = logging.getLogger("api")
T = TypeVar("T")

MAX_UPLOAD_FILES = 20
RETRY_LOAD_S = 10.0


class Service:
    """What the routes share: the one Pipeline of the process and the DocumentLibrary over it.

    When the index cannot be loaded at start-up (`python -m api` over a folder not yet indexed), the
    service still runs: every question gets a 503 naming the problem and its fix, and loading is
    retried (at most every 10 s) so the API recovers once the index is built, without a restart.
    """

    def __init__(
        self,
        config: Config,
        pipeline: Pipeline | None = None,
        load: Callable[[], Pipeline] | None = None,
        problem: str = "",
    ) -> None:
        self.config = config
        self._load = load
        self._problem = problem
        self._tried = time.monotonic()
        self._load_lock = threading.Lock()
        self.pipeline: Pipeline | None = None
        self.library: DocumentLibrary | None = None
        if pipeline is not None:
            self._attach(pipeline)
        self.limiter = anyio.CapacityLimiter(max(1, config.api_workers))

    def _attach(self, pipeline: Pipeline) -> None:
        self.library = DocumentLibrary(pipeline, self.config)  # the API's settings may differ from the pipeline's
        self.pipeline = pipeline

    @property
    def problem(self) -> str:
        return self._problem

    def ready(self) -> Pipeline:
        """The pipeline, or a 503 that says what is wrong with the index and how to fix it."""
        if self.pipeline is None and self._load is not None:
            with self._load_lock:
                if self.pipeline is None and time.monotonic() - self._tried >= RETRY_LOAD_S:
                    self._tried = time.monotonic()
                    try:
                        self._attach(self._load())
                        log.info("index loaded; the API is ready")
                    except IndexProblem as exc:
                        self._problem = str(exc)
        if self.pipeline is None:
            raise APIError(503, f"The index is not available: {self._problem}", "index_unavailable")
        return self.pipeline

    async def ready_async(self) -> Pipeline:
        """`ready` without a thread hop in the usual case (loaded); a retry of loading runs in the pool."""
        if self.pipeline is not None:
            return self.pipeline
        return await self.run(self.ready)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the bounded pool (the caller awaits; the event loop stays free)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def ask(
        self,
        question: str,
        k: int | None = None,
        history: Sequence[tuple[str, str]] = (),
        mode: str | None = None,
        llm_options: dict[str, Any] | None = None,
        reader: bool | None = None,
    ) -> Answer:
        """Pipeline.ask in the pool, its failures turned into API errors (400, 503, 500).

        `llm_options` (max_tokens, temperature) reach the LLM in LLM mode; extractive mode has no use for them.
        """
        pipeline = self._checked(await self.ready_async(), k, mode)

        def work() -> Answer:
            return pipeline.ask(question, k=k, history=list(history), mode=mode, reader=reader, options=llm_options)

        with _answer_errors():
            return await self.run(work)

    async def astream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] = (),
        mode: str | None = None,
        llm_options: dict[str, Any] | None = None,
        reader: bool | None = None,
    ) -> AsyncGenerator[str | Answer, None]:
        """Pipeline.astream (an LLM's text as it comes, then the Answer), holding a place in the
        same bounded pool as `ask` while it runs, with the same errors."""
        pipeline = self._checked(await self.ready_async(), None, mode)
        # Held on behalf of the stream, not of a task: a response goes on in another task than the one
        # that started it.
        borrower = object()
        await self.limiter.acquire_on_behalf_of(borrower)
        try:
            with _answer_errors():
                events = pipeline.astream(
                    question, history=list(history), mode=mode, reader=reader, options=llm_options
                )
                async for event in events:
                    yield event
        finally:
            self.limiter.release_on_behalf_of(borrower)

    def _checked(self, pipeline: Pipeline, k: int | None, mode: str | None) -> Pipeline:
        if k is not None and not 1 <= k <= self.config.candidates:
            raise APIError(400, f"k must be between 1 and {self.config.candidates}; got {k}.", "invalid_k")
        if mode is not None and mode not in pipeline.chains:
            hint = "" if mode != "llm" else "; set RAG_LLM_BASE_URL and RAG_LLM_MODEL to enable it"
            raise APIError(
                400,
                f"Answer mode {mode!r} is not available (available: {', '.join(pipeline.chains)}){hint}.",
                "invalid_mode",
            )
        return pipeline


@contextlib.contextmanager
def _answer_errors() -> Iterator[None]:
    """A question's failures as API errors: 400 for the question, 503 for the index or the service."""
    try:
        yield
    except QuestionError as exc:
        raise APIError(400, str(exc), "invalid_question") from exc
    except IndexProblem as exc:
        log.warning("index problem while answering: %s", exc)
        raise APIError(503, f"The index cannot be used: {exc}", "index_unavailable") from exc
    except UserError as exc:
        log.warning("could not answer: %s", exc)
        raise APIError(503, f"The question could not be answered: {exc}", "service_unavailable") from exc


def service_of(app: Any) -> Service:
    service: Service = app.state.service
    return service
