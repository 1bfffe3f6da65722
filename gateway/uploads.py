"""Streaming upload: the body goes straight to the ingest service over gRPC, never whole into memory."""

from __future__ import annotations

import re
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from gateway.problems import problem
from wisp.errors import BadRequest, InvalidInput, PayloadTooLarge, Transient
from wisp.v1 import ingest_pb2, ingest_pb2_grpc

router = APIRouter(tags=["ingest"])
CHUNK = 1 << 20  # bytes per gRPC message, well under gRPC's 4 MiB default limit
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+\-]")

_STATUS = {
    ingest_pb2.IngestResult.STATUS_INGESTED: ("ingested", 201),
    ingest_pb2.IngestResult.STATUS_DUPLICATE: ("duplicate", 200),
}
# Rejections whose cause is size map to 413; every other rejection of the file is 422.
_TOO_LARGE = {"input.too_large", "fits.too_large", "fits.gzip_too_large"}


def clean_filename(name: str) -> str:
    """The client's file name, kept only as information: path parts and odd characters removed."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_NAME.sub("_", base)[:200]
    if not cleaned.strip("._"):
        raise BadRequest(f"file name {name!r} has no usable characters", code="upload.bad_filename")
    return cleaned


def result_body(result: ingest_pb2.IngestResult, filename: str) -> dict[str, Any]:
    """The JSON shape of an ingest outcome (the same for the CLI's --json)."""
    status = _STATUS.get(result.status, ("rejected", 422))[0]
    body: dict[str, Any] = {
        "filename": filename,
        "status": status,
        "sha256": result.sha256 or None,
        "instrument": result.instrument or None,
        "exposure_id": result.exposure_id or None,
        "frame_ids": list(result.frame_ids),
    }
    return body


@router.post(
    "/v1/uploads",
    summary="Upload one raw FITS file (request body = the file's bytes)",
    responses={201: {"description": "ingested"}, 200: {"description": "duplicate"},
               413: {"description": "too large"}, 422: {"description": "rejected"},
               503: {"description": "ingest unavailable, retry"}},
)
async def upload(
    request: Request,
    filename: Annotated[str, Query(min_length=1, max_length=255, description="original file name")],
    content_length: Annotated[int | None, Header()] = None,
    project: Annotated[str, Query(max_length=64)] = "default",
    privilege: Annotated[int, Query(ge=1, le=4)] = 2,
) -> JSONResponse:
    """Stream the body to ingest; answer with the frames made, a duplicate, or a precise rejection."""
    settings = request.app.state.settings
    limit: int = settings.max_upload_bytes
    name = clean_filename(filename)
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(
            f"{name}: upload of {content_length} bytes exceeds the limit of {limit} bytes",
            code="input.too_large", file=name, limit=limit, found=content_length,
        )
    stub: ingest_pb2_grpc.IngestStub = request.app.state.ingest_stub
    call = stub.Upload(timeout=600)
    received = 0
    try:
        await call.write(ingest_pb2.UploadChunk(header=ingest_pb2.UploadHeader(
            filename=name, source="upload", declared_size=-1 if content_length is None else content_length,
            project=project, privilege=privilege)))
        async for part in request.stream():
            received += len(part)
            if received > limit:
                call.cancel()
                raise PayloadTooLarge(
                    f"{name}: upload exceeds the limit of {limit} bytes", code="input.too_large",
                    file=name, limit=limit,
                )
            for start in range(0, len(part), CHUNK):
                await call.write(ingest_pb2.UploadChunk(data=part[start:start + CHUNK]))
        await call.done_writing()
        result: ingest_pb2.IngestResult = await call
    except ClientDisconnect:
        call.cancel()
        raise InvalidInput(f"{name}: the client disconnected after {received} bytes",
                           code="upload.incomplete", file=name) from None
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED):
            raise Transient(f"the ingest service is unavailable ({exc.code().name}); retry shortly",
                            code="service.unavailable", service="ingest") from None
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise PayloadTooLarge(f"{name}: {exc.details()}", code="input.too_large", file=name) from None
        raise
    body = result_body(result, name)
    if result.status == ingest_pb2.IngestResult.STATUS_REJECTED:
        err = result.error
        status = 413 if err.code in _TOO_LARGE else 422
        return problem(status, err.code or "ingest.rejected", err.message, filename=name,
                       sha256=result.sha256 or None, **dict(err.details))
    return JSONResponse(body, status_code=_STATUS[result.status][1])
