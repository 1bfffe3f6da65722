"""Queries of raw frames and exposures, pixel downloads, and the quarantine list."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from astropy.io import fits
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Row, Table, func, select
from sqlalchemy.engine import Engine

from wisp.db import session_scope, table
from wisp.db.base import OBSTYPES
from wisp.errors import BadRequest, NotFound
from wisp.ids import is_valid_id
from wisp.sphere import separation

router = APIRouter(tags=["frames"])
FRAME_COLUMNS = ("id", "exposure_id", "instrument", "chip", "hdu_index", "extname", "obstype", "filter",
                 "exptime", "date_obs", "mjd_obs", "ra_deg", "dec_deg", "airmass", "object", "naxis1",
                 "naxis2", "quality_flags", "is_valid", "created_at")



def engine(request: Request) -> Engine:
    eng: Engine = request.app.state.engine
    return eng


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def frame_json(row: Row[Any]) -> dict[str, Any]:
    """Public JSON of a raw frame (``exptime`` is reported as ``exptime_s``)."""
    out = {c: _json(getattr(row, c)) for c in FRAME_COLUMNS}
    out["exptime_s"] = out.pop("exptime")
    return out


class FrameQuery:
    """The filters of ``GET /v1/frames`` (every one optional; a cone needs ra, dec and radius)."""

    def __init__(
        self,
        instrument: Annotated[str | None, Query(max_length=64)] = None,
        chip: Annotated[str | None, Query(max_length=64)] = None,
        filter: Annotated[str | None, Query(max_length=64)] = None,
        obstype: Annotated[str | None, Query(description=f"one of {', '.join(OBSTYPES)}")] = None,
        date_from: Annotated[datetime | None, Query(description="DATE-OBS >= this (ISO 8601, UTC)")] = None,
        date_to: Annotated[datetime | None, Query(description="DATE-OBS < this (ISO 8601, UTC)")] = None,
        object: Annotated[str | None, Query(max_length=128, description="OBJECT, exact")] = None,
        ra: Annotated[float | None, Query(ge=0, lt=360, description="cone centre RA (deg)")] = None,
        dec: Annotated[float | None, Query(ge=-90, le=90, description="cone centre Dec (deg)")] = None,
        radius: Annotated[float | None, Query(gt=0, le=180, description="cone radius (deg)")] = None,
    ) -> None:
        if obstype is not None and obstype not in OBSTYPES:
            raise BadRequest(f"obstype {obstype!r} is not one of {', '.join(OBSTYPES)}",
                               code="request.invalid", field="obstype")
        cone = (ra, dec, radius)
        if any(v is not None for v in cone) and not all(v is not None for v in cone):
            raise BadRequest("a cone search needs ra, dec and radius together", code="request.invalid",
                               field="ra,dec,radius")
        for d in (date_from, date_to):
            if d is not None and d.tzinfo is None:
                raise BadRequest(f"date {d.isoformat()} has no time zone; add Z for UTC",
                                   code="request.invalid", field="date")
        self.instrument, self.chip, self.filter, self.obstype = instrument, chip, filter, obstype
        self.date_from, self.date_to, self.object = date_from, date_to, object
        self.cone = cone if radius is not None else None

    def where(self, t: Table) -> list[Any]:
        """SQL conditions; the cone adds a Dec band here and the exact distance in Python."""
        conds: list[Any] = []
        for col, value in (("instrument", self.instrument), ("chip", self.chip), ("filter", self.filter),
                           ("obstype", self.obstype), ("object", self.object)):
            if value is not None:
                conds.append(t.c[col] == value)
        if self.date_from is not None:
            conds.append(t.c.date_obs >= self.date_from)
        if self.date_to is not None:
            conds.append(t.c.date_obs < self.date_to)
        if self.cone is not None:
            _, dec, radius = self.cone
            assert dec is not None and radius is not None
            conds += [t.c.dec_deg >= dec - radius, t.c.dec_deg <= dec + radius]
        return conds

    def in_cone(self, rows: list[Row[Any]]) -> list[Row[Any]]:
        if self.cone is None or not rows:
            return rows
        ra, dec, radius = self.cone
        assert ra is not None and dec is not None and radius is not None
        sep = separation(np.array([r.ra_deg for r in rows], dtype=float),
                         np.array([r.dec_deg for r in rows], dtype=float), ra, dec)
        return [r for r, s in zip(rows, sep, strict=True) if s <= radius]


@router.get("/v1/frames", summary="Query raw frames")
def list_frames(
    q: Annotated[FrameQuery, Depends()],
    eng: Annotated[Engine, Depends(engine)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    t = table("raw_frames")
    stmt = select(t).where(*q.where(t)).order_by(t.c.date_obs, t.c.exposure_id, t.c.hdu_index)
    with session_scope(eng) as s:
        if q.cone is None:
            total = s.scalar(select(func.count()).select_from(t).where(*q.where(t))) or 0
            rows = list(s.execute(stmt.limit(limit).offset(offset)))
        else:
            matched = q.in_cone(list(s.execute(stmt)))
            total, rows = len(matched), matched[offset:offset + limit]
    return {"total": total, "limit": limit, "offset": offset, "frames": [frame_json(r) for r in rows]}


@router.get("/v1/frames/summary", summary="Counts of raw frames by instrument, type, filter and chip")
def frame_summary(q: Annotated[FrameQuery, Depends()], eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    t = table("raw_frames")
    keys = (t.c.instrument, t.c.obstype, t.c.filter, t.c.chip)
    stmt = select(*keys, func.count().label("frames")).where(*q.where(t)).group_by(*keys).order_by(*keys)
    if q.cone is not None:
        raise BadRequest("the summary does not take a cone", code="request.invalid", field="radius")
    with session_scope(eng) as s:
        groups = [dict(r._mapping) for r in s.execute(stmt)]
    return {"groups": groups}


def _frame_row(eng: Engine, frame_id: str) -> Row[Any]:
    if not is_valid_id(frame_id, "raw"):
        raise BadRequest(f"{frame_id!r} is not a raw frame id (raw- followed by 24 hex digits)",
                           code="id.malformed", id=frame_id)
    t, e = table("raw_frames"), table("exposures")
    with session_scope(eng) as s:
        row = s.execute(select(t, e.c.filename, e.c.sha256, e.c.object_key)
                        .join(e, e.c.id == t.c.exposure_id).where(t.c.id == frame_id)).first()
    if row is None:
        raise NotFound(f"no raw frame {frame_id}", code="frame.not_found", id=frame_id)
    return row


@router.get("/v1/frames/{frame_id}", summary="One raw frame's metadata, with its header")
def get_frame(frame_id: str, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    row = _frame_row(eng, frame_id)
    out = frame_json(row)
    out.update(header=row.header, file={"filename": row.filename, "sha256": row.sha256})
    return out


@router.get("/v1/frames/{frame_id}/fits", summary="One chip's raw pixels as a single-image FITS file",
            response_class=Response, responses={200: {"content": {"application/fits": {}}}})
def get_frame_fits(frame_id: str, request: Request, eng: Annotated[Engine, Depends(engine)]) -> Response:
    row = _frame_row(eng, frame_id)
    store = request.app.state.store
    with tempfile.TemporaryDirectory(dir=request.app.state.tmp_dir) as tmp:
        raw = Path(tmp) / "raw.fits"
        store.download(row.object_key, raw)
        with fits.open(raw, do_not_scale_image_data=True, memmap=False) as hdul:
            hdu = hdul[row.hdu_index]
            header = fits.Header([c for c in hdul[0].header.cards
                                  if c.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NAXIS1", "NAXIS2")])
            header.update(hdu.header)
            out = fits.PrimaryHDU(data=hdu.data, header=header)
            out.header["WISPID"] = (row.id, "Wisp raw frame id")
            payload = _to_bytes(fits.HDUList([out]))
    filename = f"{row.id}.fits"
    return Response(payload, media_type="application/fits",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _to_bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdul.writeto(buf, output_verify="silentfix")
    return buf.getvalue()


@router.get("/v1/exposures/{exposure_id}/raw", summary="The original raw file, byte for byte",
            response_class=StreamingResponse, responses={200: {"content": {"application/fits": {}}}})
def get_exposure_raw(exposure_id: str, request: Request, eng: Annotated[Engine, Depends(engine)]) -> Response:
    if not is_valid_id(exposure_id, "exp"):
        raise BadRequest(f"{exposure_id!r} is not an exposure id (exp- followed by 24 hex digits)",
                           code="id.malformed", id=exposure_id)
    e = table("exposures")
    with session_scope(eng) as s:
        row = s.execute(select(e.c.object_key, e.c.filename, e.c.size_bytes).where(e.c.id == exposure_id)).first()
    if row is None:
        raise NotFound(f"no exposure {exposure_id}", code="exposure.not_found", id=exposure_id)
    chunks: Iterator[bytes] = request.app.state.store.iter_chunks(row.object_key)
    return StreamingResponse(chunks, media_type="application/fits", headers={
        "Content-Length": str(row.size_bytes),
        "Content-Disposition": f'attachment; filename="{exposure_id}.fits"'})


@router.get("/v1/quarantine", summary="Files that were rejected, with the reason")
def list_quarantine(eng: Annotated[Engine, Depends(engine)],
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    t = table("quarantine")
    with session_scope(eng) as s:
        rows = s.execute(select(t).order_by(t.c.last_seen.desc()).limit(limit))
        items = [{k: _json(v) for k, v in r._mapping.items()} for r in rows]
    return {"files": items}
