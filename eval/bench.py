"""`python -m eval.bench [--quick] [--json OUT]`: speed and memory of every stage, on this machine.

Measures ingestion (end to end and embedding alone, batched vs one chunk at a time), cold start of
the CLI and the UI, query latency on the seeds index, and scaling to 10k / 100k / 1M chunks for
exact and HNSW search plus BM25. Scaling corpora use vectors drawn from a Gaussian fitted to real
ARCD chunk embeddings (same mean and covariance), queried with real ARCD question embeddings, and
BM25 over generated text whose terms follow the Zipf law of the real ARCD vocabulary. `--quick`
stops the scaling at 100k chunks. Writes eval/BENCHMARKS.md and eval/bench-latency.png unless
`--no-report` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from langchain_core.documents import Document
from scipy import sparse

from eval.metrics import percentile
from eval.questions import load_jsonl, load_squad
from index import store
from index.arabic import terms
from index.build import apply_changes, build_folder, embedding_text
from index.chunk import ChunkSettings, split_document
from index.embed import VectorEmbeddings, load_embedder
from rag.answer import ExtractiveAnswerer
from rag.chain import Pipeline
from rag.config import PROJECT_ROOT, Config
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


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def latency(fn: Callable[[str], Any], questions: list[str], repeat: int = 1) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        for q in questions:
            started = time.perf_counter()
            fn(q)
            samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(samples, 50), "p95_ms": percentile(samples, 95), "n": len(samples)}


def cold(embedder: VectorEmbeddings, call: Callable[[str], Any]) -> Callable[[str], Any]:
    """`call` with the embedding cache emptied first: every question pays for its own embeddings."""

    def run(question: str) -> Any:
        embedder.clear_cache()
        return call(question)

    return run


# --- ingestion -----------------------------------------------------------------------------------


def bench_ingestion(config: Config, workdir: Path, arcd: Path | None) -> dict[str, Any]:
    embedder = load_embedder(config.embedder, config.embed_batch_size)
    out: dict[str, Any] = {}
    seeds_cfg = config.replace(index_dir=workdir / "seeds-index")
    (index, report), seconds = timed(lambda: build_folder(seeds_cfg, embedder))
    out["seeds"] = {"chunks": report.total_chunks, "seconds": seconds, "chunks_per_s": report.total_chunks / seconds}
    out["peak_rss_mb_after_seeds"] = peak_mb()
    if arcd and arcd.is_file():
        documents, _ = load_squad(arcd)
        arcd_cfg = config.replace(index_dir=workdir / "arcd-index")
        (_, report), seconds = timed(lambda: apply_changes(arcd_cfg, embedder, documents, rebuild=True))
        out["arcd"] = {"chunks": report.total_chunks, "seconds": seconds, "chunks_per_s": report.total_chunks / seconds}
        chunks = [c for d in documents[:120] for c in split_document(d, ChunkSettings(config.chunk_max_words))]
    else:
        chunks = list(index.chunks)
    texts = [embedding_text(c) for c in chunks]
    _, batched = timed(lambda: embedder.encode_passages(texts))
    _, single = timed(lambda: [embedder._encode([t], is_query=False) for t in texts])
    out["embedding"] = {
        "chunks": len(texts),
        "batched_chunks_per_s": len(texts) / batched,
        "one_at_a_time_chunks_per_s": len(texts) / single,
        "batched_speedup": single / batched,
    }
    out["peak_rss_mb_after_ingestion"] = peak_mb()
    return out


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
        from gradio_client import Client

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
    return {"cli_first_answer_s": min(cli), "cli_first_answer_s_median": sorted(cli)[1], "ui_first_answer_s": ui}


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


# --- scaling -------------------------------------------------------------------------------------


class SyntheticCorpus:
    """Vectors and term counts shaped like the real ARCD chunks, at any size."""

    def __init__(self, config: Config, arcd: Path, seed: int = 0) -> None:
        embedder = load_embedder(config.embedder, config.embed_batch_size)
        documents, questions = load_squad(arcd)
        chunks = [c for d in documents for c in split_document(d, ChunkSettings(config.chunk_max_words))]
        real = embedder.encode_passages([embedding_text(c) for c in chunks])
        self.mean = real.mean(axis=0)
        self.cov_factor = np.linalg.cholesky(np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1]))
        self.embedder = embedder
        self.chunks = chunks
        self.questions = [q.question for q in questions[:200]]
        self.queries = np.stack([embedder.encode_query(q) for q in self.questions])
        counts: dict[str, int] = {}
        lengths = []
        for c in chunks:
            t = terms(embedding_text(c))
            lengths.append(len(t))
            for term in t:
                counts[term] = counts.get(term, 0) + 1
        ranked = sorted(counts, key=counts.get, reverse=True)  # type: ignore[arg-type]
        self.vocabulary = {term: i for i, term in enumerate(ranked)}
        freq = np.array([counts[t] for t in ranked], dtype=np.float64)
        self.term_p = freq / freq.sum()
        self.mean_length = float(np.mean(lengths))
        self.rng = np.random.default_rng(seed)
        self.dim = real.shape[1]

    def vectors(self, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            block = self.mean + self.rng.standard_normal((m, self.dim)) @ self.cov_factor.T
            out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return out

    def bm25(self, n: int) -> BM25:
        lengths = np.maximum(5, self.rng.poisson(self.mean_length, n))
        rows = np.repeat(np.arange(n), lengths)
        cols = self.rng.choice(len(self.term_p), size=int(lengths.sum()), p=self.term_p)
        counts = sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n, len(self.term_p)))
        counts.sum_duplicates()
        return BM25(counts, self.vocabulary)


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).nbytes)


def bench_scale(corpus: SyntheticCorpus, sizes: list[int], config: Config) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        vectors = corpus.vectors(n)
        exact, exact_build = timed(lambda v=vectors: store.build_vectors(v, corpus.dim, "flat"))
        approx, approx_build = timed(
            lambda v=vectors: store.build_vectors(v, corpus.dim, "hnsw", config.hnsw_ef_search)
        )
        bm25, bm25_build = timed(lambda n=n: corpus.bm25(n))
        _, truth = exact.search(corpus.queries, 10)
        _, found = approx.search(corpus.queries, 10)
        recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)]))
        bm25_bytes = bm25.matrix.data.nbytes + bm25.matrix.indices.nbytes + bm25.matrix.indptr.nbytes
        row: dict[str, Any] = {"chunks": n, "hnsw_recall@10": recall, "rss_mb": rss_mb(), "peak_rss_mb": peak_mb()}
        # Chunk texts for the answerer: the real ARCD chunks, repeated to the corpus size.
        texts = [corpus.chunks[i % len(corpus.chunks)] for i in range(n)]
        for name, index, build in (("exact", exact, exact_build), ("hnsw", approx, approx_build)):
            fake = store.StoredIndex(manifest={"files": {}}, chunks=texts, vectors=index)
            retriever = HybridRetriever(
                index=fake,
                embedder=corpus.embedder,
                bm25=bm25,
                k=config.k,
                candidates=config.candidates,
                dense_weight=config.dense_weight,
            )
            answerer = ExtractiveAnswerer(
                embedder=corpus.embedder,
                term_weight=bm25.term_weight,
                max_words=config.answer_max_words,
                abstain_threshold=config.abstain_threshold,
            )
            chain = Pipeline._compose(retriever, answerer)
            dense = latency(
                lambda i, idx=index: idx.search(corpus.queries[i : i + 1], 50), list(range(len(corpus.queries)))
            )

            hybrid = latency(cold(corpus.embedder, lambda q, r=retriever: r.invoke(q)), corpus.questions)
            answer = latency(
                cold(
                    corpus.embedder,
                    lambda q, c=chain: c.invoke({"question": q, "standalone_question": q, "k": config.k}),
                ),
                corpus.questions[:100],
            )
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
        print(
            f"  {n:>9,} chunks: exact hybrid p50 {row['exact']['hybrid_p50_ms']:.1f} ms, "
            f"hnsw hybrid p50 {row['hnsw']['hybrid_p50_ms']:.1f} ms, hnsw recall@10 {recall:.3f}",
            flush=True,
        )
        del vectors, exact, approx, bm25
    return rows


def bench_milvus(corpus: SyntheticCorpus, sizes: list[int], config: Config, workdir: Path) -> list[dict[str, Any]]:
    """Milvus Lite rows: write rate (insert + read back) and query latency at each size."""
    from index.milvus import MilvusStore

    rows = []
    for n in sizes:
        vectors = corpus.vectors(n)
        chunks = []
        for i in range(n):
            real = corpus.chunks[i % len(corpus.chunks)]
            chunks.append(
                Document(page_content=real.page_content, id=f"syn-{i}", metadata={**real.metadata, "id": f"syn-{i}"})
            )
        target = MilvusStore(str(workdir / f"bench-{n}.milvus.db"), f"bench_{n}")
        manifest = store.new_manifest("bench", corpus.dim, {})
        index, seconds = timed(
            lambda t=target, m=manifest, c=chunks, v=vectors: t.commit(m, store.Changes(frozenset(), c, v), None)
        )
        bm25 = corpus.bm25(n)
        retriever = HybridRetriever(
            index=index,
            embedder=corpus.embedder,
            bm25=bm25,
            k=config.k,
            candidates=config.candidates,
            dense_weight=config.dense_weight,
        )
        # Milvus Lite answers each search over gRPC: 30 questions keep this section to minutes.
        sample = list(range(30))
        dense = latency(lambda i, v=index.vectors: v.search(corpus.queries[i : i + 1], 50), sample)

        hybrid = latency(cold(corpus.embedder, retriever.invoke), [corpus.questions[i] for i in sample])
        row = {
            "chunks": n,
            "write_s": seconds,
            "rows_per_s": n / seconds,
            "dense_p50_ms": dense["p50_ms"],
            "dense_p95_ms": dense["p95_ms"],
            "hybrid_p50_ms": hybrid["p50_ms"],
            "hybrid_p95_ms": hybrid["p95_ms"],
        }
        rows.append(row)
        print(
            f"  milvus lite {n:>9,} chunks: {row['rows_per_s']:.0f} rows/s, hybrid p50 {row['hybrid_p50_ms']:.1f} ms",
            flush=True,
        )
        target.client().close()
    return rows


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
    emb = ing["embedding"]
    lines += [
        "",
        f"Embedding alone ({emb['chunks']} chunks): batched {emb['batched_chunks_per_s']:.1f} chunks/s, one at a time "
        f"{emb['one_at_a_time_chunks_per_s']:.1f} chunks/s: **{emb['batched_speedup']:.2f}x**.",
        "",
        "## Cold start to first answer (existing seeds index)",
        "",
        f"- CLI (`python -m rag ask`): {cold['cli_first_answer_s']:.2f} s (best of 3), {cold['cli_first_answer_s_median']:.2f} s median",
        f"- UI (`python -m ui`, process start to first `/answer` reply): {cold['ui_first_answer_s']:.2f} s",
        "",
        "## Query latency on the seeds index (66 questions)",
        "",
        f"- retrieval: p50 {q['retrieval']['p50_ms']:.1f} ms, p95 {q['retrieval']['p95_ms']:.1f} ms",
        f"- whole extractive answer, first time: p50 {q['answer_cold']['p50_ms']:.1f} ms, p95 {q['answer_cold']['p95_ms']:.1f} ms",
        f"- whole extractive answer, repeated question (cached embeddings): p50 {q['answer_repeated']['p50_ms']:.1f} ms, "
        f"p95 {q['answer_repeated']['p95_ms']:.1f} ms",
        "",
        "## Scaling (synthetic corpora shaped like ARCD; 200 real ARCD questions)",
        "",
        "Hybrid = the product's whole retrieval (query embedding with an empty cache, HNSW or exact top-50 + BM25 "
        "top-50, union re-scored by both); answer = retrieval plus the extractive answerer over real ARCD chunk texts "
        "(100 questions, embedding cache emptied before each). Dense = the FAISS search alone.",
        "",
        "| chunks | index | build s | dense p50 ms | dense p95 ms | hybrid p50 ms | hybrid p95 ms | answer p50 ms | answer p95 ms | recall@10 vs exact | bytes/chunk | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["scaling"]:
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
        "## Milvus Lite (RAG_STORE=milvus, embedded; same synthetic corpora, 30 questions per size)",
        "",
        "Write = insert rows (text, metadata, vector) and read them back for BM25; dense = Milvus search "
        "(FLAT, IP) through Milvus Lite's local gRPC server; hybrid as above.",
        "",
        "| chunks | write s | rows/s | dense p50 ms | dense p95 ms | hybrid p50 ms | hybrid p95 ms |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['chunks']:,} | {r['write_s']:.1f} | {r['rows_per_s']:.0f} | {r['dense_p50_ms']:.1f} | "
            f"{r['dense_p95_ms']:.1f} | {r['hybrid_p50_ms']:.1f} | {r['hybrid_p95_ms']:.1f} |"
            for r in results.get("milvus", [])
        ],
        "",
        f"Peak RSS of the run: {results['peak_rss_mb']:.0f} MB.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    _plot(results["scaling"], plot)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaling stops at 100k chunks (< 3 minutes)")
    parser.add_argument("--json", type=Path, dest="json_out")
    parser.add_argument("--arcd", type=Path, default=ARCD)
    parser.add_argument("--no-report", action="store_true", help="do not rewrite eval/BENCHMARKS.md")
    args = parser.parse_args(argv)
    started = time.time()
    config = Config.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    try:
        print("ingestion…", flush=True)
        ingestion = bench_ingestion(config, workdir, args.arcd)
        print("cold start…", flush=True)
        cold = bench_cold_start(workdir / "seeds-index", config.docs_dir)
        print("query latency…", flush=True)
        queries = bench_queries(config, workdir / "seeds-index")
        print("scaling…", flush=True)
        sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
        corpus = SyntheticCorpus(config, args.arcd)
        scaling = bench_scale(corpus, sizes, config)
        print("milvus lite…", flush=True)
        milvus = bench_milvus(corpus, [10_000, 100_000], config, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = "python -m eval.bench" + (" --quick" if args.quick else "")
    results = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "duration_s": time.time() - started,
        "ingestion": ingestion,
        "cold_start": cold,
        "queries": queries,
        "scaling": scaling,
        "milvus": milvus,
        "peak_rss_mb": peak_mb(),
    }
    print(json.dumps({k: v for k, v in results.items() if k != "scaling"}, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if not args.no_report:
        report(results, HERE / "BENCHMARKS.md", HERE / "bench-latency.png")
    print(f"done in {results['duration_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
