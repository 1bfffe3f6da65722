"""RFC 9457 problem details: every error a client sees is JSON with a stable ``code``, never a traceback."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wisp.errors import WispError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem-details response; ``extra`` holds structured context (file, hdu, keyword, ...)."""
    body: dict[str, Any] = {
        "type": f"https://wisp.invalid/problems/{code}",
        "title": code,
        "status": status,
        "code": code,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Map Wisp errors, validation errors, HTTP errors and bugs to problem details."""

    @app.exception_handler(WispError)
    async def _wisp(_: Request, exc: WispError) -> JSONResponse:
        return problem(exc.http_status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body")),
             "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        fields = ", ".join(f"{e['field']}: {e['problem']}" for e in errors)
        return problem(400, "request.invalid", f"invalid request parameters ({fields})", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http.error")
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error("unhandled error", exc_info=exc, extra={"ref": ref, "path": request.url.path})
        return problem(500, "internal", f"internal error; quote reference {ref} to the operators", ref=ref)
