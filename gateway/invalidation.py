"""Invalidation and reprocessing: mark a product bad (its derived products become outdated), ask for the
outdated products to be remade (a job), follow the job. Commands go through the outbox, in the same
transaction as the rows that justify them; any running service's relay publishes them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from gateway.frames import engine
from wisp.db import session_scope
from wisp.errors import BadRequest
from wisp.ids import is_valid_id
from wisp.pipeline.invalidate import MAX_REASON, invalidate, job_report, reprocess

router = APIRouter(tags=["invalidation"])


class InvalidateBody(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON, description="why the product is bad")


class ReprocessBody(BaseModel):
    product_ids: list[str] | None = Field(default=None, max_length=10_000,
                                          description="outdated products to remake; null = every outdated one")
    params: dict[str, dict[str, Any]] | None = Field(
        default=None, description="per-stage parameter overrides, e.g. {\"reduce\": {\"cr_sigclip\": 5}}")


@router.post("/v1/products/{product_id}/invalidate", summary="Mark a product bad; what derives from it is outdated")
def post_invalidate(product_id: str, body: InvalidateBody, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    with session_scope(eng) as s:
        inv = invalidate(s, product_id, body.reason)
    return {"product_id": inv.product_id, "kind": inv.kind, "reason": inv.reason, "outdated": list(inv.outdated)}


@router.post("/v1/reprocess", status_code=202, summary="Remake outdated products (a job)")
def post_reprocess(body: ReprocessBody, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    with session_scope(eng) as s:
        job = reprocess(s, body.product_ids, params=body.params)
    return {"job_id": job.job_id, "params": body.params or {}, "outdated": job.outdated, "roots": job.roots,
            "commands": [{"stage": t.stage, "product_id": t.product_id, "replaces": job.replaces[t.product_id]}
                         for t in job.tasks],
            "blocked": job.blocked}


@router.get("/v1/jobs/{job_id}", summary="A job's progress: what it remade, what is pending")
def get_job(job_id: str, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    if not is_valid_id(job_id):
        raise BadRequest(f"{job_id!r} is not a Wisp id (a prefix, '-', and 24 hex digits)", code="id.malformed",
                         id=job_id)
    with session_scope(eng) as s:
        return job_report(s, job_id)
