"""`python -m ui [--host 127.0.0.1] [--port 7860] [--index DIR] [--docs DIR]`: start the web UI, with
the HTTP API (api/) served on the same port."""

from __future__ import annotations

import argparse
import logging
import sys

import gradio as gr

from api.app import create_app
from api.security import LOOPBACK
from api.server import cap_malloc_arenas, configure, key_problem, serve
from core.config import add_arguments, chosen
from core.errors import ConfigError, UserError
from index.library import largest_upload
from rag.chain import Pipeline
from ui.app import CSS, HEAD, build_app, make_i18n, theme
from ui.gate import for_port

QUEUE_SIZE = 256


def main(argv: list[str] | None = None) -> int:
    cap_malloc_arenas()
    parser = argparse.ArgumentParser(prog="python -m ui", description="Start the chat UI.")
    add_arguments(
        parser, "ui_host", "ui_port", "index_dir", "docs_dir", "embedder", "k", "store", "milvus_uri", "answer_reader"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = configure(args)
        auth = None
        if config.ui_host not in LOOPBACK:
            if not (config.ui_username and config.ui_password):
                raise ConfigError(
                    f"binding to {config.ui_host} exposes your documents to the network",
                    hint="set RAG_UI_USERNAME and RAG_UI_PASSWORD to require a login, or use --host 127.0.0.1",
                )
            auth = (config.ui_username, config.ui_password)
        # Off loopback without RAG_API_KEY the UI still starts (behind its login), its API closed.
        if api_off := key_problem(config.ui_host, config):
            print(f"warning: the HTTP API is off (every request gets 403): {api_off}", file=sys.stderr)
        pipeline = Pipeline(
            config, log=lambda m: print(m, file=sys.stderr, flush=True), build_missing=chosen(args, "docs_dir")
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    i18n = make_i18n(config)
    app = build_app(pipeline, i18n)
    app.queue(default_concurrency_limit=config.api_workers, max_size=QUEUE_SIZE)
    print(f"Serving on http://{config.ui_host}:{config.ui_port}", file=sys.stderr, flush=True)
    # The UI is mounted on the API's app (one process, one pipeline, one port): the API's routes
    # (/v1, /api, /healthz, /docs) come first, everything else is the UI.
    app.state_session_capacity = 500  # each API client is a session; keep a bounded number in memory
    api = create_app(pipeline, disabled=f"The HTTP API is off: {api_off}." if api_off else "")
    server = gr.mount_gradio_app(
        api,
        app,
        path="/",
        i18n=i18n,
        head=HEAD,
        server_name=config.ui_host,
        server_port=config.ui_port,
        auth=auth,
        # Gradio's cap is the largest per-type cap; DocumentLibrary enforces each type's own.
        max_file_size=largest_upload(config),
        theme=theme(),
        css=CSS,
        footer_links=[],
        show_error=False,
        ssr_mode=False,
    )
    # Gradio checks that a file named in a request was uploaded to it only for apps it launched
    # itself (processing_utils._check_allowed); mounted, a crafted request could make it read any
    # path on the server. Mark the app launched so the check runs (tests/test_load.py).
    app.has_launched = True
    serve(for_port(server, api, config.api_key), config.ui_host, config.ui_port, config.trusted_proxies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
