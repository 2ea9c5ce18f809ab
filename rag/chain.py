"""The question-answering chain: validate -> retrieve -> answer, composed from LangChain runnables.

`Pipeline` loads the embedder and the index once and serves any number of questions (CLI batch
mode, the UI, the evaluation script). The answerer is a Runnable stage, so an LLM answerer can be
swapped in without touching retrieval.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import patch_config

from core.config import PROJECT_ROOT, Config
from core.errors import UserError
from core.registry import ANSWER_MODES
from index import store
from index.arabic import has_letters
from index.build import Drift, adopt_seeds, build_folder, folder_drift, reconcile, store_for
from index.embed import VectorEmbeddings, load_embedder
from rag.answer import Answer, Answerer, AnswerRequest, ExtractiveAnswerer
from rag.extract import SpanReader
from rag.followup import FollowUpResolver
from rag.llm import ChatModels, QuestionRewriter, TokenFn, chat_model, deadline_for
from rag.retrieve import HybridRetriever
from rag.tokens import LIBRARY

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class QuestionError(UserError):
    """A question that cannot be asked (empty, too long, nothing to search for); its code
    (question_…, core/i18n.py) lets an interface say so in the question's own language."""


def clean_question(question: str, max_chars: int) -> str:
    """Strip control characters and surrounding space; refuse what cannot be answered."""
    # Lone surrogates (undecodable bytes from a terminal or a form) cannot be encoded: replace them.
    question = (question or "").encode("utf-8", "replace").decode("utf-8")
    question = _CONTROL_RE.sub(" ", question).strip()
    if not question:
        raise QuestionError(code="question_empty")
    if len(question) > max_chars:
        raise QuestionError(
            code="question_too_long", params={"length": f"{len(question):,}", "limit": f"{max_chars:,}"}
        )
    if not has_letters(question):
        # Numbers alone are no question: every passage with a digit matches them, and the
        # answerers returned a confident span about something else.
        raise QuestionError(code="question_no_words")
    return question


def open_index(
    config: Config, embedder: VectorEmbeddings, log: Callable[[str], None] | None = None, build_missing: bool = False
) -> tuple[store.StoredIndex, Drift]:
    """Load the configured index, updated when the folder changed since it was written (and what
    still differs). A missing index is built on first use at the default location, or anywhere
    when `build_missing` (a server given `--docs D --index EMPTY` served 503 "no index" instead:
    issue 29); otherwise a mistyped `--index` would quietly become a new index of the folder."""
    try:
        return reconcile(config, embedder, store_for(config).load(embedder.name), log)
    except store.IndexMissing:
        default_location = (
            not config.milvus_uri
            if config.store == "milvus"
            else config.index_dir.resolve() == Config.default("index_dir").resolve()
        )
        adopt_seeds(config)
        if not (default_location or build_missing) or not config.docs_dir.is_dir():
            raise
        if log:
            shown = (
                config.docs_dir.relative_to(PROJECT_ROOT)
                if config.docs_dir.is_relative_to(PROJECT_ROOT)
                else config.docs_dir
            )
            log(f"Building the index of {shown} (first run)…")
        index, report = build_folder(config, embedder, log=log)
        if log:
            log(report.summary())
        return index, folder_drift(config, index.files, contents=False)


def reader_available() -> bool:
    """Can a question ask for the fine-tuned reader? Its C library is built by `make` (it needs
    gcc); its weights ship in the repository. Checked without loading torch."""
    return LIBRARY.exists()


class Pipeline:
    """Everything a question needs, loaded once: embedder, index, retriever, answerer, chain."""

    _switched: Runnable[dict[str, Any], str | Answer] | None  # see _extractive_chain

    def __init__(
        self,
        config: Config,
        index: store.StoredIndex | None = None,
        log: Callable[[str], None] | None = None,
        chat: ChatModels = chat_model,
        build_missing: bool = False,
    ) -> None:
        """`chat` makes LLM mode's chat models (rag/llm.py); LLM mode is on when the config names an
        endpoint (`Config.llm_enabled`); `build_missing`: see open_index."""
        self.config = config
        self.chat = chat
        self.embedder = load_embedder(config.embedder, config.embed_batch_size)
        self._lock = threading.RLock()
        self.follow_ups = FollowUpResolver()
        self._reader_lock = threading.Lock()
        # Whether questions are read by default: as configured, where the reader's library is
        # built (`make`); else the span ranker answers, said once in the log.
        self.reads = config.answer_reader and reader_available()
        if config.answer_reader and not self.reads and log:
            log("The answer reader's library is not built (run `make`): short answers come from the span ranker.")
        # Loaded at start when it is the default (a broken weights file fails then, not at the
        # first question), else on the first question that asks for it.
        self.reader: SpanReader | None = self._load_reader() if self.reads else None
        # What the folder holds that the index does not (shown by /healthz); none for an index given.
        self.drift = Drift([], [], [])
        self.store = store_for(config)
        if index is None:
            index, self.drift = open_index(config, self.embedder, log, build_missing)
        self.reload(index)

    def reload(self, index: store.StoredIndex) -> None:
        """Swap in a new index (after an upload or rebuild); in-flight questions finish on the old one."""
        retriever = HybridRetriever.from_config(self.config, index, self.embedder)
        default_reader = self.reader if self.reads else None
        answerer = ExtractiveAnswerer.from_config(
            self.config, self.embedder, retriever.corpus.term_weight, default_reader
        )
        # Every registered answer mode its settings enable (core/registry.py ANSWER_MODES).
        chains = {}
        for mode in ANSWER_MODES.names():
            made = ANSWER_MODES.load(mode)(self.config, answerer, self.chat)
            if made is not None:
                chains[mode] = self._compose(retriever, made)
        with self._lock:
            self._index, self.retriever, self.answerer = index, retriever, answerer
            self.chains = chains
            self._switched = None

    @property
    def index(self) -> store.StoredIndex:
        """The live index (see `sync`)."""
        return self.sync()

    def sync(self) -> store.StoredIndex:
        """The live index. A store shared by several processes (Milvus) is asked, at most once a
        second, whether another process changed it; if so its new state is swapped in, so replicas
        list, cite and search each other's uploads (issue 30)."""
        with self._lock:
            current = self._index
        newer = self.store.refreshed(current)
        if newer is not None:
            self.reload(newer)
            return newer
        return current

    @staticmethod
    def _load_reader() -> SpanReader:
        """The fine-tuned reader, imported only when wanted: it needs torch (~2 s to import)."""
        from rag.reader import READER_WEIGHTS, AnswerReader

        return AnswerReader.load(READER_WEIGHTS)

    def preload_reader(self) -> None:
        """Load the reader and its chain now (the UI calls this when its box is ticked), so the
        first question that asks for it does not also wait ~3 s for torch and the weights."""
        self._extractive_chain(True)

    def _extractive_chain(self, read: bool) -> Runnable[dict[str, Any], str | Answer]:
        """The extractive chain with the reader on or off. The one the config did not choose is
        built on the first question that asks for it (loading the reader if that is what it
        needs), and again after each reload."""
        with self._lock:
            if read == self.reads:
                return self.chains["extractive"]
            chain, retriever = self._switched, self.retriever
        if chain is None:
            reader = None
            if read:
                with self._reader_lock:
                    self.reader = reader = self.reader or self._load_reader()
            answerer = ExtractiveAnswerer.from_config(self.config, self.embedder, retriever.corpus.term_weight, reader)
            chain = self._compose(retriever, answerer)
            with self._lock:
                if self.retriever is retriever:  # not replaced meanwhile by a reload
                    self._switched = chain
        return chain

    @property
    def default_mode(self) -> str:
        return "llm" if self.config.llm_enabled else "extractive"

    @staticmethod
    def _compose(retriever: HybridRetriever, answerer: Answerer) -> Runnable[dict[str, Any], str | Answer]:
        """retrieve | answer, each stage timing itself into the Answer's `timings_ms`. Streamed (the
        run's configurable "stream"), the answer stage yields the reply's text as it comes, then the
        Answer; invoked, only the Answer."""

        def retrieve(inputs: dict[str, Any]) -> dict[str, Any]:
            started = time.perf_counter()
            documents = retriever.invoke(inputs["standalone_question"], k=inputs.get("k"))
            return {**inputs, "documents": documents, "retrieval_ms": (time.perf_counter() - started) * 1000}

        def answer(inputs: dict[str, Any], config: RunnableConfig) -> Iterator[str | Answer]:
            started = time.perf_counter()
            request = AnswerRequest(
                question=inputs["question"],
                passages=inputs["documents"],
                standalone=inputs["standalone_question"],
                deadline=inputs.get("deadline"),
                options=inputs.get("options") or {},
            )
            streaming = (config.get("configurable") or {}).get("stream")
            for event in answerer.stream(request, config) if streaming else [answerer.invoke(request, config)]:
                if isinstance(event, Answer):
                    timings = {
                        "retrieval": round(inputs["retrieval_ms"], 2),
                        "answer": round((time.perf_counter() - started) * 1000, 2),
                    }
                    event = replace(
                        event,
                        question=inputs["question"],
                        standalone_question=inputs["standalone_question"],
                        timings_ms=timings,
                    )
                yield event

        # A generator stage streams its items (and `invoke` returns the last one, the Answer).
        return cast("Runnable[dict[str, Any], str | Answer]", RunnableLambda(retrieve) | RunnableLambda(answer))

    def ask(
        self,
        question: str,
        k: int | None = None,
        history: Sequence[tuple[str, str]] = (),
        on_token: TokenFn | None = None,
        mode: str | None = None,
        config: RunnableConfig | None = None,
        reader: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Answer one question; raises QuestionError for questions that cannot be asked.

        `history` ((question, answer) pairs, oldest first) lets a follow-up question be made
        stand-alone before retrieval: by the model in LLM mode, by `FollowUpResolver` (which reads
        only the earlier questions) in extractive mode. `on_token`, when given, receives an LLM
        answer as it streams (see `stream`); `config` brings callbacks. `reader` switches the
        fine-tuned reader on or off for this question in extractive mode (None: the config's
        RAG_ANSWER_READER; the LLM mode's own answer does not use it). `options` (max_tokens,
        temperature) go to the LLM in LLM mode.
        """
        answer = None
        for event in self._run(question, k, history, mode, config, reader, options, streaming=on_token is not None):
            if isinstance(event, Answer):
                answer = event
            elif on_token is not None:
                on_token(event)
        assert answer is not None
        return answer

    def stream(
        self,
        question: str,
        k: int | None = None,
        history: Sequence[tuple[str, str]] = (),
        mode: str | None = None,
        config: RunnableConfig | None = None,
        reader: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Generator[str | Answer, None, None]:
        """Like `ask`, as the answer comes: an LLM's reply text in pieces, then the Answer (only the
        Answer in extractive mode). Closing the iterator early closes the LLM request."""
        yield from self._run(question, k, history, mode, config, reader, options, streaming=True)

    async def astream(
        self,
        question: str,
        k: int | None = None,
        history: Sequence[tuple[str, str]] = (),
        mode: str | None = None,
        config: RunnableConfig | None = None,
        reader: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[str | Answer, None]:
        """`stream` for async callers, the one streaming path of the UI and the API: each event is
        awaited from a worker thread of its own, so the event loop stays free while retrieval runs
        or an LLM is slow. Closing it early (a client gone, the Stop button) closes the stream in
        that thread, after the event under way, which closes the LLM request."""
        events = self.stream(question, k, history, mode, config, reader, options)
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="answer")
        loop = asyncio.get_running_loop()
        try:
            while (event := await loop.run_in_executor(worker, next, events, None)) is not None:
                yield event
        finally:
            worker.submit(events.close)  # one worker: it runs after the `next` under way, if any
            worker.shutdown(wait=False)

    def _run(
        self,
        question: str,
        k: int | None,
        history: Sequence[tuple[str, str]],
        mode: str | None,
        config: RunnableConfig | None,
        reader: bool | None,
        options: Mapping[str, Any] | None,
        streaming: bool,
    ) -> Iterator[str | Answer]:
        question = clean_question(question, self.config.max_question_chars)
        self.sync()  # another replica's changes, before this question's chain is chosen
        mode = mode or self.default_mode
        started = time.perf_counter()
        if mode == "extractive" and reader is not None:
            chain: Runnable[dict[str, Any], str | Answer] | None = self._extractive_chain(reader)
        else:
            with self._lock:
                chain = self.chains.get(mode)
        if chain is None:
            raise QuestionError(code="question_mode_unavailable")
        standalone = question
        # The LLM clock starts with the first LLM call: the rewrite, else the answer itself (which
        # then sets it), so a slow retrieval on a loaded machine does not eat the model's time.
        deadline = deadline_for(self.config) if mode == "llm" and history else None
        if mode == "llm" and history:
            standalone = clean_question(
                QuestionRewriter(self.config, self.chat).rewrite(history, question, deadline, options), 10**6
            )
        elif history:
            standalone = self.follow_ups.resolve(
                [asked for asked, _ in history], question, [said for _, said in history]
            )
        run = patch_config(config, configurable={"stream": streaming})
        inputs = {
            "question": question,
            "standalone_question": standalone,
            "k": k or self.config.k,
            "deadline": deadline,
            "options": options,
        }
        for event in chain.stream(inputs, run) if streaming else [chain.invoke(inputs, run)]:
            if isinstance(event, Answer):
                total = round((time.perf_counter() - started) * 1000, 2)
                event = replace(event, timings_ms={**event.timings_ms, "total": total})
            yield event
