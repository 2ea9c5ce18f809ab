"""Every failure leaves the API in OpenAI's error shape with the status a client can act on; a
traceback never does (it goes to the log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.security import error_body

log = logging.getLogger("api")

_KIND = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class APIError(Exception):
    """A refusal the client can fix (or wait out); `message` says how."""

    def __init__(self, status: int, message: str, code: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind or _KIND.get(status, "server_error")

    def payload(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}

    def response(self) -> Response:
        return Response(
            error_body(self.status, self.message, self.kind, self.code),
            status_code=self.status,
            media_type="application/json",
        )


def install_handlers(app: FastAPI) -> None:
    """Map FastAPI's own errors (validation, 404, 405) and anything unexpected to the error shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
        message = "Invalid request: " + "; ".join(problems) + " (see /docs for the request schema)."
        return APIError(400, message, "invalid_request").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path} (see /docs for the endpoints)."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (see /docs)."
        else:
            message = str(exc.detail)
        return APIError(exc.status_code, message, "not_found" if exc.status_code == 404 else "http_error").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            APIError(
                500, "Something went wrong on the server; it has been logged. Please try again.", "internal_error"
            ).payload(),
            status_code=500,
        )
