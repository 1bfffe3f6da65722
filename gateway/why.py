"""``GET /v1/why/{id}``: why these calibrations (bias, flat, bad-pixel map, dark, night-sky flat) or why
none, for a science frame, in words."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.engine import Engine

from gateway.frames import engine
from wisp.db import session_scope, table
from wisp.errors import BadRequest, NotFound
from wisp.ids import is_valid_id
from wisp.pipeline.rules.calib import BPM_KIND, select_calibration, uses_darks
from wisp.pipeline.rules.illumination import NOT_ASKED, illumination_for

router = APIRouter(tags=["calibration"])
#: (kind as recorded in calib_selections, product kind, chosen per filter); darks only for cameras with darks
KINDS = (("bias", "master_bias", False), ("dark", "master_dark", False), ("flat", "master_flat", True),
         ("bpm", BPM_KIND, True))


@router.get("/v1/why/{entity_id}", summary="Why these calibrations were chosen for a frame (or why none)")
def why(entity_id: str, eng: Annotated[Engine, Depends(engine)]) -> dict[str, Any]:
    """For a raw frame or a product made from one: the recorded choices (with every candidate and its
    verdict) and what would be chosen now."""
    if not is_valid_id(entity_id):
        raise BadRequest(f"{entity_id!r} is not a Wisp id (a prefix, '-', and 24 hex digits)", code="id.malformed",
                         id=entity_id)
    f, p, c = (table(n) for n in ("raw_frames", "products", "calib_selections"))
    with session_scope(eng) as s:
        frame_id = entity_id
        if not entity_id.startswith("raw-"):
            frame_id = s.scalar(select(p.c.frame_id).where(p.c.id == entity_id)) or ""
            if not frame_id:
                raise NotFound(f"{entity_id} is not a raw frame nor a product made from one", code="why.no_frame",
                               id=entity_id)
        frame = s.execute(select(f).where(f.c.id == frame_id)).first()
        if frame is None:
            raise NotFound(f"no raw frame {frame_id}", code="frame.not_found", id=frame_id)
        recorded = [dict(r._mapping) for r in s.execute(
            select(c.c.kind, c.c.chosen_id, c.c.reason, c.c.candidates, c.c.decided_at)
            .where(c.c.frame_id == frame_id).order_by(c.c.decided_at, c.c.id))]
        now = []
        darks = uses_darks(s, frame.instrument)
        for kind, product_kind, by_filter in KINDS:
            if kind == "dark" and not darks:
                continue
            sel = select_calibration(s, product_kind, frame.instrument, frame.chip,
                                     frame.filter if by_filter else None, frame.date_obs, frame.night)
            now.append({"kind": kind, "chosen_id": sel.chosen_id, "reason": sel.reason, "candidates": sel.candidates})
        illumination = illumination_for(s, frame)
        if illumination.status != NOT_ASKED:
            now.append({"kind": "illumination", "chosen_id": illumination.chosen_id, "reason": illumination.reason,
                        "candidates": illumination.candidates})
    for r in recorded:
        r["decided_at"] = r["decided_at"].isoformat()
    return {"frame": {"id": frame.id, "instrument": frame.instrument, "chip": frame.chip, "filter": frame.filter,
                      "obstype": frame.obstype, "date_obs": frame.date_obs.isoformat()},
            "recorded": recorded, "now": now}
