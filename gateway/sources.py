"""``GET /v1/sources``: cone search in the source catalogues (frame catalogues and coadd catalogues)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.engine import Engine

from gateway.frames import engine
from wisp.db import session_scope, table
from wisp.sphere import separation

router = APIRouter(tags=["sources"])
MAX_ROWS = 100_000


@router.get("/v1/sources", summary="Sources within a radius of a position (cone search)")
def cone_search(
    eng: Annotated[Engine, Depends(engine)],
    ra: Annotated[float, Query(ge=0, lt=360, description="centre RA (deg)")],
    dec: Annotated[float, Query(ge=-90, le=90, description="centre Dec (deg)")],
    radius: Annotated[float, Query(gt=0, le=1.0, description="radius (deg, at most 1)")],
    kind: Annotated[Literal["catalog", "coadd_catalog", "any"], Query(description="which catalogues")] = "any",
    filter: Annotated[str | None, Query(max_length=64)] = None,
    mag_max: Annotated[float | None, Query(description="only sources brighter than this (MAG_AUTO)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    s, p = table("sources"), table("products")
    conds = [s.c.dec_deg >= dec - radius, s.c.dec_deg <= dec + radius]
    cos_dec = math.cos(math.radians(dec))
    if cos_dec > 1e-3 and radius / cos_dec < 90:
        half = radius / cos_dec
        lo, hi = ra - half, ra + half
        if lo >= 0 and hi < 360:
            conds.append(s.c.ra_deg.between(lo, hi))
    if kind != "any":
        conds.append(p.c.kind == kind)
    if filter is not None:
        conds.append(p.c.filter == filter)
    if mag_max is not None:
        conds.append(s.c.mag <= mag_max)
    stmt = (select(s, p.c.kind, p.c.filter, p.c.field, p.c.chip).join(p, p.c.id == s.c.product_id)
            .where(*conds).limit(MAX_ROWS))
    with session_scope(eng) as session:
        rows = list(session.execute(stmt))
    if not rows:
        return {"total": 0, "sources": []}
    sep = separation(np.array([r.ra_deg for r in rows]), np.array([r.dec_deg for r in rows]), ra, dec)
    inside = sorted((float(d), r) for d, r in zip(sep, rows, strict=True) if d <= radius)
    out = [{**{k: v for k, v in r._mapping.items() if k != "id"}, "distance_arcsec": d * 3600.0}
           for d, r in inside[:limit]]
    return {"total": len(inside), "sources": out}
