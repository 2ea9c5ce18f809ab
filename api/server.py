"""Server wiring both entry points call: `python -m api` (the API alone) and `python -m ui` (the
UI with the same API on its port). Its own module so that neither entry point imports the other as
a library: the settings check, the malloc cap and the uvicorn run are written once, here.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
from typing import Any

from api.security import is_loopback, parse_rate
from core.config import Config, chosen
from index.build import resolve_docs_dir


def key_problem(host: str, config: Config) -> str:
    """Why the API must not be served on `host` ("" when it may): off loopback it needs a key."""
    if is_loopback(host) or config.api_key:
        return ""
    return (
        f"binding to {host} exposes the API (and your documents) to the network; set RAG_API_KEY to "
        "require 'Authorization: Bearer <key>' (or use --host 127.0.0.1)"
    )


def configure(args: argparse.Namespace) -> Config:
    """The settings of a server (API or UI), checked before anything loads; raises UserError.

    Uploads go to the folder the index was built from, unless the user names another."""
    config = Config.from_args(args)
    parse_rate(config.api_rate)
    return resolve_docs_dir(config, chosen(args, "docs_dir"))


# glibc gives each thread that allocates its own malloc arena (up to 8 per core), and every arena
# keeps the peak of the requests it served: with the reader's tensors, one browser session's 300
# questions grew the server by 49 MB after a 30-question warm-up, 62 MB in the first 100, before
# levelling off near +100 MB. Capped at two arenas, the same 100 questions grew it by 6 MB
# (tests/test_load.py); requests mostly hold the GIL, so threads seldom contend for an arena.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads still to come (MALLOC_ARENA_MAX is read only at
    start-up); a server's main calls it first, before the model's threads start. False where the C
    library is not glibc, which keeps its own allocator."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    return bool(mallopt and mallopt(_M_ARENA_MAX, arenas) == 1)


def serve(app: Any, host: str, port: int, trusted_proxies: str = "") -> None:
    """Run an ASGI app with uvicorn until interrupted. The client's address (rate limits) is the
    connection's own unless it comes from a trusted proxy: uvicorn otherwise believes any
    X-Forwarded-For from 127.0.0.1, and a forged one gave each request a fresh bucket."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=trusted_proxies or None,
    )
