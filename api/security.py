"""Who may call the API, how often, and with how much: bearer key, rate limit, body size, in one
ASGI middleware in front of the API routes (the Gradio UI, when mounted beside them, keeps its own
login).

It is a plain ASGI middleware rather than FastAPI dependencies so that a refused request costs
nothing: an over-size body is cut off while it is still arriving, before any parsing.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import ConfigError

FAILED_KEYS = (10, 60.0)  # wrong keys allowed per client per minute, on every port
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hr|hour)s?\s*$", re.I)
_PERIOD_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600, "hour": 3600}


def is_loopback(host: str) -> bool:
    """Exactly the UI's notion: any other address, 127.0.0.2 included, counts as the network."""
    return host in LOOPBACK


def key_matches(header: str | None, key: str) -> bool:
    """`Authorization: Bearer <key>`, compared in constant time (no timing hint about the key)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())


def parse_rate(text: str) -> tuple[int, float] | None:
    """ "60/min" -> (60 requests, per 60 s); "" -> None (no limit). Raises ConfigError naming the form."""
    if not text.strip():
        return None
    match = _RATE_RE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"RAG_API_RATE={text!r} is not a rate", hint="use e.g. 60/min, 5/s or 1000/hour")
    count, multiple, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
    return count, float(multiple * _PERIOD_S[unit])


class RateLimiter:
    """A token bucket per client: `count` requests per `period` seconds, refilled continuously, so a
    burst of `count` is allowed and then one request every period/count. Memory stays bounded: the
    least recently seen clients are forgotten (a forgotten client starts with a full bucket)."""

    def __init__(
        self, count: int, period: float, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        self.capacity = float(count)
        self.rate = count / period
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds to wait before the next one will."""
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


@dataclass(frozen=True)
class Limits:
    """What the middleware enforces; built once from the Config."""

    key: str
    limiter: RateLimiter | None
    max_json_bytes: int
    max_upload_bytes: int  # a whole multipart request (several files)
    guarded: Callable[[str], bool]  # which paths are the API's
    disabled: str = ""  # why the API refuses every request (exposed without a key beside the UI)
    # Wrong keys per client before 429, always on when a key is set (issue 27: 40 wrong keys in a
    # row were all answered 401, so the key could be guessed at full speed).
    failures: RateLimiter = field(default_factory=lambda: RateLimiter(*FAILED_KEYS))


def error_body(status: int, message: str, kind: str, code: str) -> bytes:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, ensure_ascii=False
    ).encode()


class _TooLarge(Exception):
    pass


class SecurityMiddleware:
    """Key, then rate, then size; every refusal in OpenAI's error shape."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits.guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limits = self.limits
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self.app(scope, receive, send)  # a CORS preflight carries no credentials by design
            return
        if limits.disabled:
            await refuse(send, 403, limits.disabled, "permission_error", "api_disabled")
            return
        if limits.key and not key_matches(headers.get("authorization"), limits.key):
            # A wrong key counts against the caller whatever RAG_API_RATE says: guessing costs time.
            if "authorization" in headers and (wait := limits.failures.take(client_of(scope))) > 0:
                await refuse(send, 429, too_many(wait), "rate_limit_error", "rate_limit_exceeded", retry_after(wait))
                return
            message = (
                "Missing API key: send the header 'Authorization: Bearer <RAG_API_KEY>'."
                if "authorization" not in headers
                else "Incorrect API key: send the server's RAG_API_KEY as 'Authorization: Bearer <key>'."
            )
            await refuse(send, 401, message, "invalid_request_error", "invalid_api_key", {"www-authenticate": "Bearer"})
            return
        if limits.limiter is not None:
            wait = limits.limiter.take(client_of(scope))
            if wait > 0:
                await refuse(send, 429, too_many(wait), "rate_limit_error", "rate_limit_exceeded", retry_after(wait))
                return
        multipart = headers.get("content-type", "").startswith("multipart/")
        limit = limits.max_upload_bytes if multipart else limits.max_json_bytes
        declared = headers.get("content-length")
        too_large = f"The request body is over the {_size(limit)} limit" + (
            " for an upload (RAG_UPLOAD_MAX_MB per file)." if multipart else " (RAG_API_MAX_BODY_KB)."
        )
        if declared and declared.isdigit() and int(declared) > limit:
            await refuse(send, 413, too_large, "invalid_request_error", "request_too_large")
            return
        received = 0
        overflow = replaced = False

        async def counted_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflow = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The body parser may turn the cut-off into its own error response: send a 413 instead.
            nonlocal replaced
            if overflow:
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await refuse(send, 413, too_large, "invalid_request_error", "request_too_large")
                return
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await refuse(send, 413, too_large, "invalid_request_error", "request_too_large")


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


async def refuse(
    send: Send, status: int, message: str, kind: str, code: str, extra: dict[str, str] | None = None
) -> None:
    body = error_body(status, message, kind, code)
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def too_many(wait: float) -> str:
    return (
        f"Rate limit reached for this client (RAG_API_RATE, or too many wrong keys); "
        f"retry in {max(1, math.ceil(wait))} s."
    )


def retry_after(wait: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(wait)))}


def client_of(scope: MutableMapping[str, Any]) -> str:
    return (scope.get("client") or ("unknown", 0))[0]
