"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API from a script.

Tests queue behaviours (`Reply`, `Status`, `Slow`, `Trickle`, `BrokenStream`, `Malformed`); each
POST /v1/chat/completions consumes one, or gets `default` when the script is empty. Every request
body is recorded, parsed, in `requests`. Streaming requests ("stream": true) get server-sent
events over chunked transfer encoding, so a stream cut short is a real protocol error.

    with FakeOpenAI() as server:
        server.script(Reply("... [1]"))
        config = config.replace(llm_base_url=server.base_url, llm_model="fake")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """A normal answer (a JSON completion, or SSE chunks of about `chunk_chars` characters)."""

    text: str
    chunk_chars: int = 6


@dataclass(frozen=True)
class Status:
    """An HTTP error with an OpenAI-style error body."""

    code: int
    message: str = "scripted error"


@dataclass(frozen=True)
class Slow:
    """Sleeps `seconds` before sending anything (past the client's timeout), then replies."""

    seconds: float
    text: str = "late answer [1]"


@dataclass(frozen=True)
class Trickle:
    """A stream whose every chunk arrives in time but whose whole takes `pieces * delay` seconds."""

    text: str
    delay: float
    pieces: int = 8


@dataclass(frozen=True)
class BrokenStream:
    """Streams a few chunks of `prefix`, then drops the connection (or sends a non-JSON data line)."""

    prefix: str = "عقد المؤتمر"
    invalid_json: bool = False


@dataclass(frozen=True)
class Malformed:
    """HTTP 200 with a body that is not a completion (not JSON, or JSON without "choices")."""

    body: str = "<html>gateway says hello</html>"


Behaviour = Reply | Status | Slow | Trickle | BrokenStream | Malformed


class FakeOpenAI:
    """The server; use as a context manager (or call `start`/`stop`)."""

    def __init__(self, default: Behaviour | None = None) -> None:
        self.default: Behaviour = default or Reply("عقد المؤتمر في 15 أغسطس 2023 [1].")
        self.requests: list[dict[str, Any]] = []
        self.abandoned = 0  # requests whose client closed the connection before the reply ended
        self.headers: list[dict[str, str]] = []  # per request, names lower-cased
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.headers.clear()
            self.abandoned = 0

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self._script.popleft() if self._script else self.default


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())},
    }


def _chunk(model: str, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            body = json.loads(raw or b"{}")
            behaviour = server._next(body, {k.lower(): v for k, v in self.headers.items()})
            model, stream = str(body.get("model", "fake")), bool(body.get("stream"))
            try:
                self._serve(behaviour, model, stream)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout, a stop)
                with server._lock:
                    server.abandoned += 1

        def _serve(self, behaviour: Behaviour, model: str, stream: bool) -> None:
            if isinstance(behaviour, Status):
                error = {"message": behaviour.message, "type": "scripted", "code": str(behaviour.code)}
                self._json(behaviour.code, {"error": error})
            elif isinstance(behaviour, Malformed):
                self._send(200, behaviour.body.encode(), "application/json")
            elif isinstance(behaviour, Slow):
                time.sleep(behaviour.seconds)
                self._serve(Reply(behaviour.text), model, stream)
            elif isinstance(behaviour, Trickle):
                size = max(1, -(-len(behaviour.text) // behaviour.pieces))
                self._stream(model, _pieces(behaviour.text, size), delay=behaviour.delay)
            elif isinstance(behaviour, BrokenStream):
                self._stream(model, _pieces(behaviour.prefix, 4), broken=True, invalid=behaviour.invalid_json)
            elif stream:
                self._stream(model, _pieces(behaviour.text, behaviour.chunk_chars))
            else:
                self._json(200, _completion(model, behaviour.text))

        def _send(self, code: int, payload: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True

        def _json(self, code: int, data: dict[str, Any]) -> None:
            self._send(code, json.dumps(data, ensure_ascii=False).encode(), "application/json")

        def _stream(
            self, model: str, pieces: list[str], delay: float = 0.0, broken: bool = False, invalid: bool = False
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._event(_chunk(model, {"role": "assistant", "content": ""}))
            for piece in pieces:
                time.sleep(delay)
                self._event(_chunk(model, {"content": piece}))
            if invalid:
                self._write_chunk(b'data: {"choices": [{"delta": {"content": "x"\n\n')
            if broken and not invalid:
                return  # no [DONE], no terminating chunk: the connection just ends
            if not broken:
                self._event(_chunk(model, {}, finish="stop"))
                self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _event(self, data: dict[str, Any]) -> None:
            self._write_chunk(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())

        def _write_chunk(self, payload: bytes) -> None:
            self.wfile.write(f"{len(payload):X}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

    return Handler
