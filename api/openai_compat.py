"""OpenAI-compatible chat: GET /v1/models and POST /v1/chat/completions (plain and streamed).

Any OpenAI client (the `openai` SDKs, LangChain's ChatOpenAI, Open WebUI, LibreChat) can talk to
the assistant. The last user message is the question; earlier user turns with the assistant's
replies are the conversation (follow-ups are resolved by the chain). The reply is the grounded
answer with [n] markers, and the passages they point to travel in an extra `citations` field of
the response (and of the final stream chunk), which clients that do not know it ignore.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.errors import APIError
from api.service import Service, service_of
from rag.answer import Answer, Citation
from rag.chain import reader_available

router = APIRouter(tags=["OpenAI-compatible"])

EXTRACTIVE_MODEL = "arabic-rag"
READER_MODEL = "arabic-rag-reader"
RANKER_MODEL = "arabic-rag-ranker"
LLM_MODEL = "arabic-rag-llm"
# Model name -> (answer mode, reader switch): a chat client picks the fine-tuned reader or the span
# ranker by model, the only choice such clients offer (None: the server's RAG_ANSWER_READER).
MODES: dict[str, tuple[str, bool | None]] = {
    EXTRACTIVE_MODEL: ("extractive", None),
    READER_MODEL: ("extractive", True),
    RANKER_MODEL: ("extractive", False),
    LLM_MODEL: ("llm", None),
}
_CREATED = int(time.time())


class ChatMessage(BaseModel):
    """One message; `content` is a string or OpenAI's list of content parts (text only here)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The chat-completions request; fields an answering service has no use for are accepted and
    ignored (n, top_p, seed, user, ...), those it cannot honour are refused by name (tools)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(examples=[EXTRACTIVE_MODEL])
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    # Not OpenAI's: for clients that can send extra fields (extra_body), as /api/ask takes it.
    reader: bool | None = Field(
        default=None, description="switch the fine-tuned reader on or off, whatever the model (default: the model's)"
    )


def citation_json(citation: Citation) -> dict[str, Any]:
    """source, title, start, end, text, score (and page/section, highlights when the citation has
    them): every field of the Citation, so new ones reach clients without a change here."""
    data = asdict(citation)
    data["highlights"] = [list(h) for h in data.get("highlights", [])]
    return {k: v for k, v in data.items() if v is not None and v != ""}


def _text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                # str() would ask null as the question "None" and an object as its repr (issue 27).
                raise APIError(
                    400,
                    f"A text content part needs its 'text' as a string; got {type(text).__name__}.",
                    "invalid_content",
                )
            parts.append(text)
        else:
            raise APIError(
                400,
                f"Content parts of type {kind!r} are not supported: send the question as text.",
                "unsupported_content",
            )
    return "\n".join(parts)


def conversation(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """(question, history): the last user message, and the (user, assistant) pairs before it.

    System messages are ignored: the answering rules are the service's own, not the caller's.
    """
    last = messages[-1]
    if last.role != "user":
        raise APIError(
            400, f"The last message must be the user's question (role 'user'), not {last.role!r}.", "invalid_messages"
        )
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for message in messages[:-1]:
        if message.role in {"tool", "function"} or getattr(message, "tool_calls", None):
            raise APIError(400, "Tool calling is not supported by this answering service.", "tools_unsupported")
        if message.role == "user":
            if pending is not None:
                history.append((pending, ""))
            pending = _text(message)
        elif message.role == "assistant" and pending is not None:
            history.append((pending, _text(message)))
            pending = None
    if pending is not None:
        history.append((pending, ""))
    return _text(last), history


def _mode(request: ChatRequest, service: Service) -> tuple[str, bool | None]:
    models = available_models(service)
    if request.model not in models:
        raise APIError(
            404, f"The model {request.model!r} does not exist; use one of: {', '.join(models)}.", "model_not_found"
        )
    if request.tools:
        raise APIError(400, "Tool calling is not supported by this answering service.", "tools_unsupported")
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        raise APIError(400, "Only text replies are supported (response_format type 'text').", "unsupported_format")
    mode, reader = MODES[request.model]
    return mode, reader if request.reader is None else request.reader


def available_models(service: Service) -> list[str]:
    llm = service.config.llm_enabled
    models = [EXTRACTIVE_MODEL]
    if reader_available():
        models.append(READER_MODEL)
    models.append(RANKER_MODEL)
    if llm:
        models.append(LLM_MODEL)
    return models


@router.get("/v1/models", summary="The models (answer modes) this server offers")
async def list_models(request: Request) -> dict[str, Any]:
    models = available_models(service_of(request.app))
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": _CREATED, "owned_by": "arabic-rag"} for m in models],
    }


def _usage(question: str, history: list[tuple[str, str]], answer: str) -> dict[str, int]:
    """Word counts stand in for tokens (there is no tokenizer in extractive mode)."""
    prompt = len(question.split()) + sum(len(q.split()) + len(a.split()) for q, a in history)
    completion = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extras(answer: Answer) -> dict[str, Any]:
    """The fields OpenAI's format has no place for: the cited passages, the short answer (where
    it is, what chose it), whether the service abstained, and the question it answered (after
    follow-up rewriting: what it searched for)."""
    extras: dict[str, Any] = {
        "citations": [citation_json(c) for c in answer.citations],
        "short_answer": answer.short_answer,
        "short_answer_citation": answer.short_answer_citation,
        "short_answer_by": answer.short_answer_by,
        "abstained": answer.abstained,
        "question": answer.question,
        "standalone_question": answer.standalone_question or answer.question,
    }
    if answer.notice:
        extras["notice"] = answer.notice
    return extras


@router.post("/v1/chat/completions", summary="Answer the last user message, grounded and cited", response_model=None)
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    service = service_of(request.app)
    mode, reader = _mode(body, service)
    question, history = conversation(body.messages)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    options = {"max_tokens": body.max_completion_tokens or body.max_tokens, "temperature": body.temperature}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(
            service, body.model, mode, reader, question, history, completion_id, include_usage, options
        )
    answer = await service.ask(question, history=history, mode=mode, llm_options=options, reader=reader)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(question, history, answer.answer),
            **_extras(answer),
        }
    )


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


async def _stream(
    service: Service,
    model: str,
    mode: str,
    reader: bool | None,
    question: str,
    history: list[tuple[str, str]],
    completion_id: str,
    include_usage: bool,
    options: dict[str, Any],
) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.

    The response starts only once the first token (LLM mode) or the whole answer (extractive mode)
    exists, so a question that cannot be answered still gets a proper status code and error body.
    """
    events = service.astream(question, history=history, mode=mode, llm_options=options, reader=reader)
    first = await anext(events)  # raises the APIError: a real status, not a broken stream
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra,
            }
        )

    async def answered() -> AsyncIterator[str | Answer]:
        yield first
        async for event in events:
            yield event

    async def sent() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        shown = ""
        answer: Answer | None = None
        try:
            async for event in answered():
                if isinstance(event, str):
                    shown += event
                    yield chunk({"content": event})
                else:
                    answer = event
        except APIError as exc:
            yield _sse(exc.payload())
            yield _sse("[DONE]")
            return
        finally:
            await events.aclose()  # a client gone mid-answer: the LLM request is closed
        assert answer is not None  # a stream ends with its Answer
        if answer.answer.startswith(shown):
            rest = answer.answer[len(shown) :]
        elif answer.notice:
            # The LLM failed mid-answer and the extractive fallback stands: say so, and show it.
            rest = f"\n\n[{answer.notice}]\n{answer.answer}"
        else:
            rest = ""  # only spacing differs from what was streamed (the final text is trimmed)
        if rest:
            yield chunk({"content": rest})
        usage = _usage(question, history, answer.answer)
        # Usage goes in a chunk of its own when asked for (OpenAI's stream_options.include_usage),
        # else on the final chunk, so clients that never ask (ChatOpenAI off OpenAI) still get it.
        yield chunk({}, "stop", **_extras(answer), **({} if include_usage else {"usage": usage}))
        if include_usage:
            yield _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        yield _sse("[DONE]")

    return StreamingResponse(
        sent(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
