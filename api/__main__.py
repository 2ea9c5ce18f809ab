"""`python -m api [--host 127.0.0.1] [--port 8000] [--index DIR] [--docs DIR]`: serve the API alone.

`python -m ui` serves the same API beside the web UI, on the UI's port.
"""

from __future__ import annotations

import argparse
import logging
import sys

from api.app import create_app
from api.server import cap_malloc_arenas, configure, key_problem, serve
from api.service import Service
from core.config import add_arguments, chosen
from core.errors import ConfigError, UserError
from index.store import IndexProblem
from rag.chain import Pipeline


def main(argv: list[str] | None = None) -> int:
    cap_malloc_arenas()
    parser = argparse.ArgumentParser(
        prog="python -m api", description="Serve the HTTP API (OpenAI-compatible and REST)."
    )
    add_arguments(
        parser,
        *("api_host", "api_port", "index_dir", "docs_dir", "embedder", "k", "store", "milvus_uri"),
        *("llm_base_url", "llm_model", "llm_timeout_s", "answer_reader"),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        config = configure(args)
        if problem := key_problem(config.api_host, config):
            raise ConfigError(problem)
        try:
            build = chosen(args, "docs_dir")  # `--docs D --index NEW` builds NEW on first start
            service = Service(config, pipeline=Pipeline(config, log=log, build_missing=build))
        except IndexProblem as exc:
            # Serve anyway: questions get a 503 naming the fix, and the index is picked up once built.
            log(f"warning: {exc}")
            service = Service(config, load=lambda: Pipeline(config, log=log), problem=str(exc))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    log(f"Serving the API on http://{config.api_host}:{config.api_port} (docs at /docs)")
    serve(create_app(service), config.api_host, config.api_port, config.trusted_proxies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
