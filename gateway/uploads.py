"""Streaming upload: the body goes straight to the ingest service over gRPC, never whole into memory."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from gateway.problems import problem
from gateway.streaming import check_declared_size, stream_body
from wisp.errors import BadRequest
from wisp.v1 import ingest_pb2, ingest_pb2_grpc

router = APIRouter(tags=["ingest"])
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+\-]")

_STATUS = {
    ingest_pb2.IngestResult.STATUS_INGESTED: ("ingested", 201),
    ingest_pb2.IngestResult.STATUS_DUPLICATE: ("duplicate", 200),
}
# Rejections whose cause is size map to 413; every other rejection of the file is 422.
TOO_LARGE = {"input.too_large", "fits.too_large", "fits.gzip_too_large"}


def clean_filename(name: str) -> str:
    """The client's file name, kept only as information: path parts and odd characters removed."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_NAME.sub("_", base)[:200]
    if not cleaned.strip("._"):
        raise BadRequest(f"file name {name!r} has no usable characters", code="upload.bad_filename")
    return cleaned


def result_body(result: ingest_pb2.IngestResult, filename: str) -> dict[str, Any]:
    """The JSON shape of an ingest outcome (the same for the CLI's --json)."""
    return {
        "filename": filename,
        "status": _STATUS.get(result.status, ("rejected", 422))[0],
        "sha256": result.sha256 or None,
        "instrument": result.instrument or None,
        "exposure_id": result.exposure_id or None,
        "frame_ids": list(result.frame_ids),
    }


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
    limit: int = request.app.state.settings.max_upload_bytes
    name = clean_filename(filename)
    check_declared_size(name, content_length, limit)
    stub: ingest_pb2_grpc.IngestStub = request.app.state.ingest_stub
    header = ingest_pb2.UploadHeader(filename=name, source="upload", project=project, privilege=privilege,
                                     declared_size=-1 if content_length is None else content_length)
    result: ingest_pb2.IngestResult = await stream_body(request, stub.Upload(timeout=600), header, limit, "ingest")
    if result.status == ingest_pb2.IngestResult.STATUS_REJECTED:
        err = result.error
        return problem(413 if err.code in TOO_LARGE else 422, err.code or "ingest.rejected", err.message,
                       filename=name, sha256=result.sha256 or None, **dict(err.details))
    return JSONResponse(result_body(result, name), status_code=_STATUS[result.status][1])
