"""``POST /v1/refcats``: import a reference catalogue (FITS, CSV or Parquet), streamed to astrometry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from gateway.problems import problem
from gateway.streaming import check_declared_size, stream_body
from gateway.uploads import clean_filename
from wisp.errors import Transient
from wisp.v1 import astrometry_pb2, astrometry_pb2_grpc, ingest_pb2

router = APIRouter(tags=["reference catalogues"])
_STATUS = {astrometry_pb2.RefcatResult.STATUS_CREATED: ("created", 201),
           astrometry_pb2.RefcatResult.STATUS_DUPLICATE: ("duplicate", 200)}


@router.post("/v1/refcats", summary="Import a reference catalogue table (request body = the file's bytes)")
async def import_refcat(
    request: Request,
    filename: Annotated[str, Query(min_length=1, max_length=255, description="file name (its suffix gives the "
                                                                             "format: .fits, .csv, .parquet)")],
    content_length: Annotated[int | None, Header()] = None,
) -> JSONResponse:
    limit: int = request.app.state.settings.max_upload_bytes
    name = clean_filename(filename)
    check_declared_size(name, content_length, limit)
    channel = request.app.state.channels.get("astrometry")
    if channel is None:
        raise Transient("no astrometry service is configured (WISP_SERVICES)", code="service.unavailable")
    call = astrometry_pb2_grpc.AstrometryStub(channel).ImportRefcat(timeout=600)
    header = ingest_pb2.UploadHeader(filename=name, source="upload",
                                     declared_size=-1 if content_length is None else content_length)
    result: astrometry_pb2.RefcatResult = await stream_body(request, call, header, limit, "astrometry")
    if result.status == astrometry_pb2.RefcatResult.STATUS_REJECTED:
        return problem(422, result.error.code or "refcat.rejected", result.error.message, filename=name,
                       **dict(result.error.details))
    status, code = _STATUS[result.status]
    return JSONResponse({"status": status, "product_id": result.product_id, "n_stars": result.n_stars,
                         "n_partitions": result.n_partitions, "bands": list(result.bands)}, status_code=code)
