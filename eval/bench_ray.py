"""`python -m eval.bench_ray [--repeat N] [--workers 1 2] [--json OUT]`: chunks/s of a build fanned out
on Ray (`python -m index build --ray`, index/fanout.py) against the local build, on this machine.

The corpus is ARCD-train's paragraphs written one .txt file each (`--repeat N` writes them N times
under other names), so every build reads, chunks, embeds and commits as `python -m index build`
does, into a fresh index. One local Ray with a CPU per worker serves the Ray builds: its start is
reported apart (a `--ray` build command pays it once), while making the actors and loading the
model in each is inside the builds' time. Each Ray-built index is compared byte for byte with the
local one. Prints the numbers and writes them to eval/ray_bench.json (`--json` elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.config import PROJECT_ROOT, Config
from core.errors import UserError
from eval.questions import load_squad
from eval.runner import machine
from index.build import Ingest, build_folder, open_ingest
from index.embed import VectorEmbeddings, load_embedder
from index.fanout import start_ray

ARCD = PROJECT_ROOT.parent / "shared" / "data" / "arcd-train.json"
OUT = Path(__file__).resolve().parent / "ray_bench.json"


def write_corpus(squad: Path, folder: Path, repeat: int) -> int:
    """The SQuAD file's paragraphs as .txt files in `folder`, `repeat` times; how many files."""
    documents, _ = load_squad(squad)
    folder.mkdir(parents=True)
    for copy in range(repeat):
        for doc in documents:
            (folder / f"{copy:02d}-{doc.metadata['source']}").write_text(doc.page_content, encoding="utf-8")
    return len(documents) * repeat


def timed_build(config: Config, embedder: VectorEmbeddings, workers: int | None) -> dict[str, Any]:
    """One build into a fresh index, timed from making the ingest (Ray's actors) to the commit, with
    the machine's load just before (another process's work shows there, and slows the build)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    ingest: Ingest = open_ingest(config, embedder)
    try:
        _, report = build_folder(config, embedder, ingest=ingest)
    finally:
        ingest.close()
    seconds = time.perf_counter() - start
    return {
        "build": "local" if workers is None else f"ray, {workers} worker{'s' * (workers > 1)}",
        "workers": workers,
        "chunks": report.total_chunks,
        "seconds": round(seconds, 2),
        "chunks_per_s": round(report.total_chunks / seconds, 2),
        "load_before": round(load, 2),
    }


def same_files(a: Path, b: Path) -> bool:
    """Whether two index folders hold the same files, byte for byte (their work folders aside)."""
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    return names == sorted(p.name for p in b.iterdir() if p.is_file()) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names
    )


def bench(docs: Path, workdir: Path, workers: list[int]) -> dict[str, Any]:
    """The local build, then one Ray build per worker count, on one Ray started here."""
    local = Config(docs_dir=docs, index_dir=workdir / "local")
    embedder = load_embedder(local.embedder, local.embed_batch_size)  # loaded before any timing
    rows = [timed_build(local, embedder, None) | {"identical_to_local": None}]
    print(_line(rows[-1], rows[0]), flush=True)
    start = time.perf_counter()
    ray = start_ray(local.replace(ray_workers=max(workers)))
    ray_start = time.perf_counter() - start
    try:
        for count in workers:
            config = local.replace(index_dir=workdir / f"ray-{count}", ingest="ray", ray_workers=count)
            row = timed_build(config, embedder, count)
            row["identical_to_local"] = same_files(local.index_dir, config.index_dir)
            rows.append(row)
            print(_line(row, rows[0]), flush=True)
    finally:
        ray.shutdown()
    return {"ray_start_s": round(ray_start, 2), "builds": rows}


def _line(row: dict[str, Any], local: dict[str, Any]) -> str:
    ratio = row["chunks_per_s"] / local["chunks_per_s"]
    same = "" if row["workers"] is None else f"; index identical to the local one: {row['identical_to_local']}"
    return (
        f"{row['build']:<16} {row['chunks']} chunks in {row['seconds']:.1f} s = {row['chunks_per_s']:.2f} chunks/s "
        f"({ratio:.2f}x local){same}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_ray", description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, default=ARCD, help="SQuAD-format file whose paragraphs are indexed")
    parser.add_argument("--repeat", type=int, default=1, help="write the paragraphs this many times")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to time")
    parser.add_argument("--json", type=Path, default=OUT, help=f"where the numbers go (default: {OUT.name})")
    args = parser.parse_args(argv)
    if not args.squad.is_file():
        print(f"error: {args.squad} not found; give a SQuAD-format file with --squad", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        docs = Path(tmp) / "docs"
        files = write_corpus(args.squad, docs, args.repeat)
        print(f"{args.squad.name} x{args.repeat}: {files} files; {machine()}", flush=True)
        try:
            result = bench(docs, Path(tmp), args.workers)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"Ray start (once per --ray build command): {result['ray_start_s']:.1f} s")
    record = {
        "command": " ".join(["python -m eval.bench_ray", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "corpus": {"squad": args.squad.name, "repeat": args.repeat, "files": files},
        **result,
    }
    args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
