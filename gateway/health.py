"""``GET /health``: 200 only when the database, the store and every service of the stack are ready."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wisp.db import check as db_check

router = APIRouter(tags=["operations"])
PROBE_TIMEOUT_S = 2.0


async def _service_status(channel: grpc.aio.Channel, name: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=PROBE_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return f"unreachable ({exc.code().name})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _probe(fn: Any, *args: Any) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(fn, *args), PROBE_TIMEOUT_S)
    except Exception as exc:  # a failed probe is a status to report, not an error to raise
        return f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    return "SERVING"


@router.get("/health", summary="Ready when every part of the stack is ready (200), else 503")
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    names = list(state.channels)
    results = await asyncio.gather(
        _probe(db_check, state.engine), _probe(state.store.check),
        *(_service_status(state.channels[n], n) for n in names))
    components = {"database": results[0], "store": results[1], **dict(zip(names, results[2:], strict=True))}
    ready = all(v == "SERVING" for v in components.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "components": components},
                        status_code=200 if ready else 503)
