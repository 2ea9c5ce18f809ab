"""`python -m index build [DOCS_DIR] [--index DIR] [--embedder NAME] [--rebuild] [--ray [ADDRESS]]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from core.config import Config, add_arguments, chosen
from core.errors import ConfigError, UserError
from index.build import adopt_seeds, build_folder, open_ingest, resolve_docs_dir, store_for
from index.embed import load_embedder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m index", description="Build or update a document index.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="index a folder of .txt/.md files (incremental)")
    build.add_argument(
        "docs_dir",
        nargs="?",
        type=Path,
        default=None,
        help="documents folder (default: the one the index was built from, else data/docs, made from seeds/ on first use)",
    )
    add_arguments(build, "index_dir", "embedder", "index_type", "store", "milvus_uri")
    build.add_argument("--rebuild", action="store_true", help="ignore the existing index and build from scratch")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="read, chunk and embed on Ray workers (pip install -r requirements-scale.txt): a Ray started "
        "here, or the cluster at ADDRESS (default: RAG_RAY_ADDRESS)",
    )
    add_arguments(build, "ray_workers")
    args = parser.parse_args(argv)
    if args.ray is not None:
        args.ingest, args.ray_address = "ray", args.ray or None
    try:
        config = resolve_docs_dir(Config.from_args(args), chosen(args, "docs_dir"), args.rebuild)
        adopt_seeds(config)
        if not config.docs_dir.is_dir():
            print(f"error: documents folder not found: {config.docs_dir}", file=sys.stderr)
            return 2
        embedder = load_embedder(config.embedder, config.embed_batch_size)
        bars: list[tqdm] = []

        def progress(done: int, total: int) -> None:
            # Created on the first batch: a build with nothing to embed shows no empty bar.
            if not bars:
                bars.append(tqdm(total=total, unit="chunk", desc="embedding", disable=args.quiet, file=sys.stderr))
            bars[0].n = done
            bars[0].refresh()

        ingest = open_ingest(config, embedder)
        try:
            _, report = build_folder(
                config,
                embedder,
                rebuild=args.rebuild,
                progress=progress,
                log=lambda m: tqdm.write(m, file=sys.stderr),
                ingest=ingest,
            )
        finally:
            for bar in bars:
                bar.close()
            ingest.close()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    print(f"{store_for(config).description}: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
