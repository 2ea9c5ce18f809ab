"""The FastAPI application: one `Service` (api/service.py) behind the OpenAI-compatible routes
(api/openai_compat.py) and the REST routes (api/rest.py), with the key, rate and size checks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.errors import install_handlers
from api.openai_compat import router as openai_router
from api.rest import router as rest_router
from api.security import Limits, RateLimiter, SecurityMiddleware, parse_rate
from api.service import MAX_UPLOAD_FILES, Service
from core.config import Config
from index.library import plain_cap
from rag.chain import Pipeline

API_PREFIXES = ("/v1/", "/api/", "/healthz", "/docs", "/redoc", "/openapi.json")
_ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path in {"/v1", "/api"}


def _answer_unrouted_api_paths(app: FastAPI) -> None:
    """An /api or /v1 path with no route here is a 404 (or 405) in the API's error shape. Without
    this, on the UI's port, where the UI is mounted after these routes, it reached Gradio and got
    Gradio's {"detail": "Not Found"}."""

    async def unrouted(request: Request) -> Response:
        # A route whose path matches under another method makes this a 405, as it would have been.
        others = [route for route in app.router.routes if getattr(route, "endpoint", None) is not unrouted]
        if any(route.matches(request.scope)[0] == Match.PARTIAL for route in others):
            raise StarletteHTTPException(405)
        raise StarletteHTTPException(404)

    for prefix in ("/api", "/v1"):
        app.add_api_route(f"{prefix}/{{rest:path}}", unrouted, methods=list(_ALL_METHODS), include_in_schema=False)


def create_app(service: Service | Pipeline, config: Config | None = None, disabled: str = "") -> FastAPI:
    """The API over a loaded pipeline (or a `Service`); `config` defaults to the pipeline's.

    `disabled` (a reason naming the fix) makes every API request a 403: how the UI, exposed to the
    network with its own login but without RAG_API_KEY, keeps its API closed instead of open.
    """
    if isinstance(service, Pipeline):
        service = Service(config or service.config, pipeline=service)
    config = service.config
    rate = parse_rate(config.api_rate)
    app = FastAPI(
        title="Arabic document Q&A API",
        description=(
            "Grounded, cited answers over your documents. OpenAI-compatible chat at /v1; questions, "
            "documents and trash under /api. When RAG_API_KEY is set, send `Authorization: Bearer <key>`."
        ),
        version="1.0",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    install_handlers(app)

    app.include_router(openai_router)
    app.include_router(rest_router)
    _answer_unrouted_api_paths(app)
    max_upload = MAX_UPLOAD_FILES * plain_cap(config) + 2**20
    limits = Limits(
        key=config.api_key,
        limiter=RateLimiter(*rate) if rate else None,
        max_json_bytes=config.api_max_body_kb * 1024,
        max_upload_bytes=max_upload,
        guarded=is_api_path,
        disabled=disabled,
    )
    app.state.limits = limits  # shared with the UI's gate when the UI serves this app (ui/gate.py)
    app.add_middleware(SecurityMiddleware, limits=limits)
    # Added last, so outermost: preflights are answered here and refusals (401, 429) carry the CORS
    # headers a browser needs to read them. No origins configured: no CORS headers at all.
    origins = [o.strip() for o in config.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
        )
    return app


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free port of `host`; yields the base URL.

    For tests and the benchmark: the server shares this process's pipeline, so what is measured
    or tested is the HTTP layer over the very chain the caller holds.
    """
    import uvicorn

    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every keep-alive response waits ~40 ms (Nagle against delayed ACKs).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        if not server.started:
            raise RuntimeError("the API server did not start within 30 s")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
