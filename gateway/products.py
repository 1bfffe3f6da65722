"""Products: query them, read one's metadata (metrics, quality flags, lineage pointer), download its file."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Row, func, select
from sqlalchemy.engine import Engine

from gateway.frames import engine
from wisp.db import session_scope, table
from wisp.errors import BadRequest, NotFound
from wisp.ids import is_valid_id

router = APIRouter(tags=["products"])
COLUMNS = ("id", "kind", "stage", "instrument", "chip", "filter", "night", "field", "exposure_id", "frame_id",
           "mjd_obs", "ra_deg", "dec_deg", "valid_from", "valid_to", "status", "quality_flags", "is_valid",
           "metrics", "size_bytes", "created_at")
MEDIA = {"refcat": "application/json"}


def product_json(row: Row[Any]) -> dict[str, Any]:
    return {c: (getattr(row, c).isoformat() if isinstance(getattr(row, c), datetime) else getattr(row, c))
            for c in COLUMNS}


@router.get("/v1/products", summary="Query products (calibrations, reduced frames, solutions, catalogues, coadds)")
def list_products(
    eng: Annotated[Engine, Depends(engine)],
    kind: Annotated[str | None, Query(max_length=32)] = None,
    instrument: Annotated[str | None, Query(max_length=64)] = None,
    chip: Annotated[str | None, Query(max_length=64)] = None,
    filter: Annotated[str | None, Query(max_length=64)] = None,
    night: Annotated[str | None, Query(max_length=10)] = None,
    field: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    p = table("products")
    conds = [p.c[c] == v for c, v in (("kind", kind), ("instrument", instrument), ("chip", chip),
                                      ("filter", filter), ("night", night), ("field", field)) if v is not None]
    with session_scope(eng) as s:
        total = s.scalar(select(func.count()).select_from(p).where(*conds)) or 0
        rows = s.execute(select(p).where(*conds).order_by(p.c.kind, p.c.created_at, p.c.id).limit(limit).offset(offset))
        return {"total": total, "products": [product_json(r) for r in rows]}


def _row(eng: Engine, product_id: str) -> Row[Any]:
    if not is_valid_id(product_id):
        raise BadRequest(f"{product_id!r} is not a Wisp id (a prefix, '-', and 24 hex digits)", code="id.malformed",
                         id=product_id)
    p = table("products")
    with session_scope(eng) as s:
        row = s.execute(select(p).where(p.c.id == product_id)).first()
    if row is None:
        raise NotFound(f"no product {product_id}", code="product.not_found", id=product_id)
    return row


@router.get("/v1/products/{product_id}", summary="One product's metadata")
def get_product(product_id: str, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    return product_json(_row(eng, product_id))


@router.get("/v1/products/{product_id}/file", summary="The product's file, byte for byte (checksum-verified)",
            response_class=StreamingResponse, responses={200: {"content": {"application/fits": {}}}})
def get_product_file(product_id: str, request: Request, eng: Annotated[Engine, Depends(engine)]) -> StreamingResponse:
    row = _row(eng, product_id)
    if not row.object_key:
        raise NotFound(f"product {product_id} has no file", code="product.no_file", id=product_id)
    suffix = "json" if row.kind in MEDIA else "fits"
    return StreamingResponse(request.app.state.store.iter_chunks(row.object_key),
                             media_type=MEDIA.get(row.kind, "application/fits"),
                             headers={"Content-Length": str(row.size_bytes),
                                      "Content-Disposition": f'attachment; filename="{product_id}.{suffix}"'})
