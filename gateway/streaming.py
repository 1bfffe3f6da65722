"""Streaming a request body to a service over a client-streamed gRPC call (uploads of any kind)."""

from __future__ import annotations

from typing import Any

import grpc
from fastapi import Request
from starlette.requests import ClientDisconnect

from wisp.errors import InvalidInput, PayloadTooLarge, Transient
from wisp.v1 import ingest_pb2

CHUNK = 1 << 20  # bytes per gRPC message, well under gRPC's 4 MiB default limit


async def stream_body(request: Request, call: Any, header: ingest_pb2.UploadHeader, limit: int,
                      service: str) -> Any:
    """Send ``header`` then the body in chunks; cancel past ``limit`` bytes; return the service's answer."""
    name = header.filename
    received = 0
    try:
        await call.write(ingest_pb2.UploadChunk(header=header))
        async for part in request.stream():
            received += len(part)
            if received > limit:
                call.cancel()
                raise PayloadTooLarge(f"{name}: upload exceeds the limit of {limit} bytes", code="input.too_large",
                                      file=name, limit=limit)
            for start in range(0, len(part), CHUNK):
                await call.write(ingest_pb2.UploadChunk(data=part[start:start + CHUNK]))
        await call.done_writing()
        return await call
    except ClientDisconnect:
        call.cancel()
        raise InvalidInput(f"{name}: the client disconnected after {received} bytes",
                           code="upload.incomplete", file=name) from None
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED):
            raise Transient(f"the {service} service is unavailable ({exc.code().name}); retry shortly",
                            code="service.unavailable", service=service) from None
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise PayloadTooLarge(f"{name}: {exc.details()}", code="input.too_large", file=name) from None
        raise


def check_declared_size(name: str, content_length: int | None, limit: int) -> None:
    """Refuse at once an upload whose declared size is over the limit."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"{name}: upload of {content_length} bytes exceeds the limit of {limit} bytes",
                              code="input.too_large", file=name, limit=limit, found=content_length)
