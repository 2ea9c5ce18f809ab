"""REST routes: ask (the `rag ask --json` contract), feedback on answers, documents (list, upload,
remove), trash (list, restore), health.

Documents go through the UI's DocumentLibrary, so an upload here gets exactly the checks an upload
in the browser gets (type, size, decodability, duplicates, safe names) and the same trash.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from api.errors import APIError
from api.service import MAX_UPLOAD_FILES, Service, service_of
from core.errors import UserError
from index.formats.marks import MAX_MARK_CHARS, PAGE_SUFFIXES, marked_page
from index.library import DocumentLibrary, RestoreFailed
from index.store import IndexProblem
from index.trash import NotMoved, TrashError
from rag.chain import reader_available
from rag.feedback import MAX_CITATIONS, Feedback, FeedbackError, FeedbackLog

router = APIRouter()
_COPY_CHUNK = 2**20


class Turn(BaseModel):
    question: str
    answer: str = ""


class AskRequest(BaseModel):
    """A question, optionally with the conversation so far (oldest first) for follow-ups."""

    question: str = Field(examples=["كم عدد المندوبين الذين حضروا المؤتمر؟"])
    k: int | None = Field(default=None, description="passages to retrieve (default: the server's RAG_K)")
    mode: str | None = Field(default=None, description="'extractive' or 'llm' (default: llm when configured)")
    history: list[Turn | tuple[str, str]] = Field(default_factory=list)
    reader: bool | None = Field(
        default=None,
        description="extractive mode: the fine-tuned reader picks the short answer, ~0.3 s slower "
        "(default: the server's RAG_ANSWER_READER)",
    )


def _turns(history: list[Turn | tuple[str, str]]) -> list[tuple[str, str]]:
    """A conversation as (question, answer) pairs, however each turn was sent."""
    return [(t.question, t.answer) if isinstance(t, Turn) else (t[0], t[1]) for t in history]


@router.post("/api/ask", tags=["questions"], summary="Answer a question; the JSON of `rag ask --json`")
async def ask(body: AskRequest, request: Request) -> JSONResponse:
    history = _turns(body.history)
    answer = await service_of(request.app).ask(
        body.question, k=body.k, history=history, mode=body.mode, reader=body.reader
    )
    # Plain JSON already: skip FastAPI's generic encoder (a few ms for the passages' texts).
    return JSONResponse(answer.to_json())


class FeedbackRequest(BaseModel):
    """A verdict on an answer as /api/ask gave it (send its fields back as they came)."""

    question: str
    answer: str = ""
    verdict: Literal["right", "wrong"]
    short_answer: str = ""
    abstained: bool = False
    correction: str = Field(default="", description="the right answer, when the user knows it")
    history: list[Turn | tuple[str, str]] = Field(default_factory=list)
    citations: list[dict[str, Any]] = Field(default_factory=list, description="the answer's citations, as given")
    answer_id: str | None = Field(default=None, description="the same id again supersedes an earlier verdict")


@router.post(
    "/api/feedback",
    tags=["questions"],
    status_code=201,
    summary="Say whether an answer was right (and what the right answer is); `python -m eval --feedback` measures them",
)
async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
    service = service_of(request.app)
    kept = ("n", "source", "title", "text")
    try:
        item = Feedback(
            question=body.question,
            answer=body.answer,
            verdict=body.verdict,
            short_answer=body.short_answer,
            abstained=body.abstained,
            correction=body.correction,
            history=tuple(_turns(body.history)),
            citations=tuple({k: c[k] for k in kept if k in c} for c in body.citations[:MAX_CITATIONS]),
            **({"answer_id": body.answer_id} if body.answer_id else {}),
        )
    except FeedbackError as exc:
        raise APIError(400, exc.message, exc.code) from exc
    try:
        await service.run(FeedbackLog(service.config.index_dir).append, item)
    except (IndexProblem, OSError) as exc:
        raise APIError(503, f"The feedback could not be saved: {exc}", "feedback_not_saved") from exc
    return {"saved": True, "answer_id": item.answer_id}


@router.get("/healthz", tags=["health"], summary="Whether the index is loaded, its size and embedder")
async def healthz(request: Request) -> Any:
    service = service_of(request.app)
    try:
        pipeline = await service.ready_async()
    except APIError as exc:
        return _with_status(exc, {"status": "unavailable", "index_loaded": False, "problem": service.problem})
    return {
        # "stale": the folder changed since the index was written and updating it failed at start.
        "status": "stale" if pipeline.drift.stale else "ok",
        "index_loaded": True,
        "chunks": pipeline.index.size,
        "documents": len(pipeline.index.files),
        "embedder": pipeline.embedder.name,
        "store": pipeline.config.store,
        # Where BM25 runs: in Milvus, or in the app where the Milvus server has no BM25 function.
        "lexical": pipeline.index.manifest.get("lexical", "BM25 in the app"),
        "modes": list(pipeline.chains),
        "reader": reader_available(),
        # Files of the documents folder the index does not hold as they are (checked at start).
        "folder": {
            "changed": pipeline.drift.changed,
            "gone": pipeline.drift.gone,
            "not_indexed": pipeline.drift.new[:50],
        },
    }


def _with_status(exc: APIError, extra: dict[str, Any]) -> Any:
    return JSONResponse({**extra, **exc.payload()}, status_code=exc.status)


async def _library(service: Service) -> DocumentLibrary:
    await service.ready_async()
    assert service.library is not None
    return service.library


def _document(name: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "title": info["title"], "chunks": info["chunks"], "bytes": info["bytes"]}


@router.get("/api/documents", tags=["documents"], summary="The indexed documents")
async def list_documents(request: Request) -> dict[str, Any]:
    library = await _library(service_of(request.app))
    files = library.pipeline.index.files
    return {"documents": [_document(name, files[name]) for name in sorted(files)]}


@router.post(
    "/api/documents",
    tags=["documents"],
    summary="Upload documents (.txt, .md, .pdf, .docx, .html, page images; multipart field `files`, several allowed); indexed at once",
)
async def upload_documents(files: list[UploadFile], request: Request) -> Any:
    service = service_of(request.app)
    library = await _library(service)
    if len(files) > MAX_UPLOAD_FILES:
        raise APIError(
            400, f"At most {MAX_UPLOAD_FILES} files per upload; send the rest in another request.", "too_many_files"
        )
    with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
        pairs: list[tuple[Path, str]] = []
        for i, upload in enumerate(files):
            # Stored under a neutral name: the client's file name is only ever passed to safe_name.
            path = Path(tmp) / f"{i}.upload"
            await service.run(_save, upload, path)
            pairs.append((path, upload.filename or "document"))
        report = await service.run(library.add, pairs)
    body = {**asdict(report), "message": report.message()}
    if report.rejected and not (report.added or report.updated or report.duplicates):
        raise APIError(400, "No file was accepted. " + report.message(), "upload_rejected")
    return body


def _save(upload: UploadFile, path: Path) -> None:
    """Copy one uploaded file to `path` (its size is bounded by the request limit)."""
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, _COPY_CHUNK)


@router.delete(
    "/api/documents/{name:path}",
    tags=["documents"],
    summary="Remove a document from the index; its file goes to the trash (restorable)",
)
async def remove_document(name: str, request: Request) -> dict[str, Any]:
    service = service_of(request.app)
    library = await _library(service)
    # A name is as GET /api/documents lists it: a path relative to the documents folder, with "/"
    # for a document in a subfolder (issue 27: "sub/inner.txt" could not be removed). Only names
    # the index holds are removed, so nothing outside the folder can be named.
    parts = name.split("/")
    if "\\" in name or "\x00" in name or name.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise APIError(
            400,
            "A document name is a path inside the documents folder as GET /api/documents lists it.",
            "invalid_name",
        )
    try:
        removal = await service.run(library.take_out, name)
    except NotMoved as exc:
        raise APIError(409, f"{exc}; nothing was removed.", "remove_failed") from exc
    if removal is None:  # not in the index, or a concurrent call removed it first
        raise APIError(404, f"{name!r} is not in the index; GET /api/documents lists the names.", "document_not_found")
    return {
        "removed": name,
        "message": removal.message(),
        "trash_id": removal.item.id if removal.item else None,
    }


# Marked pages already drawn, newest last: a page is ~1 MB of PNG and takes 0.1 s (text layer) to
# a few seconds (OCR) to make, and the same source is opened again and again while reading.
PAGE_CACHE_ITEMS = 16
_pages: OrderedDict[tuple[Any, ...], tuple[bytes, int, float]] = OrderedDict()
_pages_lock = threading.Lock()


@router.get(
    "/api/page",
    tags=["documents"],
    summary="A cited page as PNG: the evidence sentence shaded, the short answer outlined (PDFs and page images)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def page_image(
    request: Request,
    document: str,
    page: int = 1,
    page_end: int | None = None,
    sentence: str = "",
    answer: str = "",
) -> Response:
    """`page`..`page_end` is the cited passage's span; the page whose words match the sentence best
    is shown (its number in the X-Page header, the share of the sentence's words found in X-Matched)."""
    service = service_of(request.app)
    library = await _library(service)
    # Only a document the index holds, as a file inside the documents folder (never a path a
    # request makes up: "../../etc/passwd" is not in the index, nor is a link leading out).
    if document not in library.pipeline.index.files:
        raise APIError(
            404, f"{document!r} is not in the index; GET /api/documents lists the names.", "document_not_found"
        )
    folder = library.folder.resolve()
    path = (library.folder / document).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise APIError(404, f"{document!r} is not a file in the documents folder.", "document_not_found")
    suffix = path.suffix.lower()
    if suffix not in PAGE_SUFFIXES:
        raise APIError(400, f"{document!r} has no pages to show (only PDFs and page images do).", "no_pages")
    if len(sentence) > MAX_MARK_CHARS or len(answer) > MAX_MARK_CHARS:
        raise APIError(400, f"sentence and answer are at most {MAX_MARK_CHARS} characters.", "mark_too_long")
    last = page_end if page_end is not None and page_end >= page else page
    if page < 1 or last - page > 10:
        raise APIError(400, "page is a page number from 1, page_end at most 10 pages after it.", "invalid_page")
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, page, last, sentence, answer)
    with _pages_lock:
        cached = _pages.get(key)
    if cached is None:
        try:
            cached = await service.run(_draw_page, path, suffix, list(range(page, last + 1)), sentence, answer)
        except UserError as exc:
            raise APIError(422, f"The page cannot be shown: {exc}", exc.code or "page_failed") from exc
        with _pages_lock:
            _pages[key] = cached
            while len(_pages) > PAGE_CACHE_ITEMS:
                _pages.popitem(last=False)
    png, shown, matched = cached
    headers = {"X-Page": str(shown), "X-Matched": f"{matched:.2f}", "Cache-Control": "private, max-age=3600"}
    return Response(png, media_type="image/png", headers=headers)


def _draw_page(path: Path, suffix: str, pages: list[int], sentence: str, answer: str) -> tuple[bytes, int, float]:
    png, shown, marks = marked_page(path.read_bytes(), suffix, pages, sentence, answer)
    return png, shown, marks.matched


@router.get("/api/trash", tags=["documents"], summary="Removed and replaced documents, newest first")
async def list_trash(request: Request) -> dict[str, Any]:
    library = await _library(service_of(request.app))
    return {"items": [asdict(item) for item in library.trash.items()]}


@router.post("/api/trash/{item_id}/restore", tags=["documents"], summary="Put a trashed document back and index it")
async def restore(item_id: str, request: Request) -> dict[str, Any]:
    service = service_of(request.app)
    library = await _library(service)
    try:
        library.trash.get(item_id)
    except TrashError as exc:
        raise APIError(404, f"{exc}; GET /api/trash lists what can be restored.", "trash_item_not_found") from exc
    try:
        restoration = await service.run(library.bring_back, item_id)
    except RestoreFailed as exc:
        raise APIError(409, exc.message, "restore_failed") from exc
    return {"restored": restoration.name, "message": restoration.message()}
