"""`python -m ui [--host 127.0.0.1] [--port 7860] [--index DIR] [--docs DIR]`: start the web UI."""

from __future__ import annotations

import argparse
import logging
import sys

from index.build import resolve_docs_dir
from index.embed import EmbedderUnavailable
from index.formats import MAX_BYTES
from index.store import IndexProblem
from rag.chain import Pipeline
from rag.config import Config, add_arguments, chosen
from ui.app import CSS, HEAD, build_app, make_i18n, theme

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Enough workers that 20 people asking at once are all served; the embedding engine
# serialises its own calls, so more would only queue inside it.
CONCURRENCY = 8
QUEUE_SIZE = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui", description="Start the chat UI.")
    add_arguments(parser, "ui_host", "ui_port", "index_dir", "docs_dir", "embedder", "k", "store", "milvus_uri")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    auth = None
    if config.ui_host not in LOOPBACK:
        if not (config.ui_username and config.ui_password):
            print(
                f"error: binding to {config.ui_host} exposes your documents to the network; "
                "set RAG_UI_USERNAME and RAG_UI_PASSWORD to require a login (or use --host 127.0.0.1)",
                file=sys.stderr,
            )
            return 2
        auth = (config.ui_username, config.ui_password)
    try:
        # Uploads go to the folder the index was built from, unless the user names another.
        config = resolve_docs_dir(config, chosen(args, "docs_dir"))
        pipeline = Pipeline(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    except (IndexProblem, EmbedderUnavailable, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    i18n = make_i18n(config)
    app = build_app(pipeline, i18n)
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    print(f"Serving on http://{config.ui_host}:{config.ui_port}", file=sys.stderr, flush=True)
    app.launch(
        quiet=True,
        i18n=i18n,
        head=HEAD,  # our one line above says where; no share=True hint for a local tool
        server_name=config.ui_host,
        server_port=config.ui_port,
        auth=auth,
        # Gradio's cap is the largest per-type cap; DocumentLibrary enforces each type's own.
        max_file_size=max(config.upload_max_mb * 2**20, *MAX_BYTES.values()),
        theme=theme(),
        css=CSS,
        footer_links=[],
        show_error=False,
        ssr_mode=False,
        # Each API client is a session; keep a bounded number of them in memory.
        state_session_capacity=500,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
