"""Calibration stages: master bias, master flat, and the reduction of science frames.

When is a calibration block complete? When a chip has at least ``min_frames`` usable frames of that kind
(and filter, for flats) in a night, and a later frame of the same chip exists: the sequence has moved on.
A master is valid ``validity_days`` days either side of its inputs. Both come from the ``calibration``
section of the camera's description (defaults: 3 frames, 3 days). Selection for a science frame
follows DESIGN.md §6 (:func:`select_calibration`): same camera, chip (and filter), valid at DATE-OBS,
not flagged, not marked bad, not outdated; a master of the frame's own night first (waiting for it while
that night's block is complete but its master not made yet), else the newest creation eclipses older ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, select
from sqlalchemy.orm import Session

from wisp.db import table
from wisp.instruments.schema import CalibrationRule
from wisp.pipeline.model import InputRef, StageSpec, Task, Trigger
from wisp.pipeline.params import effective
from wisp.pipeline.registry import register

ANY_FRAME = tuple(f"raw_frame:{t}" for t in ("bias", "dark", "flat", "science", "other"))



def _frame(session: Session, frame_id: str) -> Row[Any] | None:
    return session.execute(select(table("raw_frames")).where(table("raw_frames").c.id == frame_id)).first()


def definition(session: Session, instrument: str) -> dict[str, Any]:
    """The camera's description as recorded at first sight (JSON)."""
    instruments = table("instruments")
    return session.scalar(select(instruments.c.definition).where(instruments.c.name == instrument)) or {}


def calibration_rule(session: Session, instrument: str, kind: str) -> CalibrationRule:
    """The camera's rule for a calibration kind."""
    fields = (definition(session, instrument).get("calibration") or {}).get(kind) or {}
    return CalibrationRule(**fields)


def params_for(session: Session, stage: str, instrument: str) -> dict[str, Any]:
    """The stage's parameters for this camera (defaults, then its description's ``parameters``)."""
    return effective(stage, definition(session, instrument))


def _block(session: Session, instrument: str, chip: str, night: str, obstype: str,
           filt: str | None) -> list[Row[Any]] | None:
    """The usable frames of a complete calibration block, or None while it is still incomplete."""
    f = table("raw_frames")
    conds = [f.c.instrument == instrument, f.c.chip == chip, f.c.night == night, f.c.obstype == obstype,
             f.c.is_valid != 0]
    if filt is not None:
        conds.append(f.c.filter == filt)
    rows = list(session.execute(select(f).where(*conds).order_by(f.c.date_obs, f.c.id)))
    if len(rows) < calibration_rule(session, instrument, obstype).min_frames:
        return None
    later = session.scalar(select(func.count()).select_from(f).where(
        f.c.instrument == instrument, f.c.chip == chip, f.c.date_obs > rows[-1].date_obs))
    return rows if later else None


def validity(session: Session, rows: list[Row[Any]]) -> tuple[datetime, datetime]:
    """The validity range of a master made from ``rows`` (one camera, one kind)."""
    days = timedelta(days=calibration_rule(session, rows[0].instrument, rows[0].obstype).validity_days)
    return rows[0].date_obs - days, rows[-1].date_obs + days


@dataclass
class Selection:
    """The outcome of choosing a calibration: the chosen product (or None) and every candidate's verdict."""

    kind: str
    chosen_id: str | None
    candidates: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""


MASTER_OF = {"master_bias": "bias", "master_flat": "flat", "master_dark": "dark"}


def _awaited(session: Session, kind: str, instrument: str, chip: str, filt: str | None, night: str) -> int:
    """Usable raw frames of ``night`` that will make a master ``kind`` for the chip (0 if there are too few
    for a block, or a master of that night already exists, whatever its state)."""
    p, f = table("products"), table("raw_frames")
    conds = [p.c.kind == kind, p.c.instrument == instrument, p.c.chip == chip, p.c.night == night]
    if filt is not None:
        conds.append(p.c.filter == filt)
    if kind not in MASTER_OF or session.scalar(select(func.count()).select_from(p).where(*conds)):
        return 0
    fconds = [f.c.instrument == instrument, f.c.chip == chip, f.c.night == night, f.c.obstype == MASTER_OF[kind],
              f.c.is_valid != 0]
    if filt is not None:
        fconds.append(f.c.filter == filt)
    n = session.scalar(select(func.count()).select_from(f).where(*fconds)) or 0
    return n if n >= calibration_rule(session, instrument, MASTER_OF[kind]).min_frames else 0


def select_calibration(session: Session, kind: str, instrument: str, chip: str, filt: str | None,
                       when: datetime, night: str | None = None) -> Selection:
    """Choose the master ``kind`` ('master_bias', 'master_flat', ...) for a frame taken at ``when`` in
    ``night``: among the usable masters valid then, one of the frame's own night first, else the newest.
    While the frame's night has a complete block whose master is not made yet, choose nothing (wait for
    it): the choice does not depend on the order in which products happen to be made."""
    p = table("products")
    conds = [p.c.kind == kind, p.c.instrument == instrument, p.c.chip == chip]
    if filt is not None:
        conds.append(p.c.filter == filt)
    rows = list(session.execute(select(p).where(*conds).order_by(p.c.created_at.desc(), p.c.id)))
    what = f"{kind.replace('_', ' ')} for {instrument} {chip}" + (f" filter {filt}" if filt else "")
    sel = Selection(kind, None)
    waiting = _awaited(session, kind, instrument, chip, filt, night) if night else 0
    if waiting:
        sel.reason = (f"waiting for the {kind.replace('_', ' ')} of night {night} ({waiting} frames taken) "
                      f"for {instrument} {chip}" + (f" filter {filt}" if filt else ""))
        return sel
    verdicts: dict[str, str | None] = {}
    for r in rows:
        problem = None
        if r.is_valid == 0:
            problem = "marked bad by a user (is_valid=0)" + (f": {r.validity_note}" if r.validity_note else "")
        elif r.status != "ok":
            problem = f"status is {r.status}"
        elif r.quality_flags:
            problem = f"quality flags set ({r.quality_flags})"
        elif r.valid_from is not None and when < r.valid_from:
            problem = f"valid only from {r.valid_from.isoformat()}"
        elif r.valid_to is not None and when >= r.valid_to:
            problem = f"valid only until {r.valid_to.isoformat()}"
        verdicts[r.id] = problem
    usable = [r for r in rows if verdicts[r.id] is None]
    same_night = [r for r in usable if night is not None and r.night == night]
    pool = same_night or usable
    chosen = pool[0] if pool else None
    for r in rows:
        problem = verdicts[r.id]
        if chosen is not None and r.id == chosen.id:
            sel.chosen_id = r.id
            why = "usable master of the frame's own night" if same_night else "newest usable master valid then"
            sel.candidates.append({"id": r.id, "verdict": "chosen", "reason": why})
            continue
        if problem is None and chosen is not None:
            problem = (f"{chosen.id} is of the frame's own night" if same_night and r.night != night
                       else f"eclipsed by the newer {chosen.id}")
        sel.candidates.append({"id": r.id, "verdict": "rejected", "reason": str(problem)})
    if chosen is not None:
        sel.reason = (f"{chosen.id} is the usable {what} of the frame's night {night}" if same_night else
                      f"{chosen.id} is the newest usable {what} valid at {when.isoformat()}")
    elif rows:
        sel.reason = f"no usable {what} at {when.isoformat()}: all {len(rows)} candidates rejected"
    else:
        sel.reason = f"no {what} exists yet"
    return sel


def _master_bias_ready(session: Session, trigger: Trigger) -> list[Task]:
    frame = _frame(session, trigger.id)
    if frame is None or frame.night is None:
        return []
    rows = _block(session, frame.instrument, frame.chip, frame.night, "bias", None)
    if rows is None:
        return []
    start, end = validity(session, rows)
    return [MASTER_BIAS.task(
        [InputRef(r.id, "raw_frame", "raw") for r in rows],
        {"instrument": frame.instrument, "chip": frame.chip, "night": frame.night,
         "valid_from": start.isoformat(), "valid_to": end.isoformat()},
        params_for(session, "master_bias", frame.instrument))]


def _flat_tasks(session: Session, instrument: str, chip: str, night: str) -> list[Task]:
    f = table("raw_frames")
    filters = session.scalars(select(f.c.filter).distinct().where(
        f.c.instrument == instrument, f.c.chip == chip, f.c.night == night, f.c.obstype == "flat")).all()
    tasks = []
    for filt in filters:
        rows = _block(session, instrument, chip, night, "flat", filt)
        if rows is None:
            continue
        bias = select_calibration(session, "master_bias", instrument, chip, None, rows[0].date_obs, night)
        if bias.chosen_id is None:
            continue
        start, end = validity(session, rows)
        tasks.append(MASTER_FLAT.task(
            [InputRef(r.id, "raw_frame", "raw") for r in rows] + [InputRef(bias.chosen_id, "product", "bias")],
            {"instrument": instrument, "chip": chip, "filter": filt, "night": night,
             "valid_from": start.isoformat(), "valid_to": end.isoformat()},
            params_for(session, "master_flat", instrument)))
    return tasks


def _master_flat_ready(session: Session, trigger: Trigger) -> list[Task]:
    if trigger.entity_kind == "product":
        p = table("products")
        prod = session.execute(select(p.c.instrument, p.c.chip, p.c.night).where(p.c.id == trigger.id)).first()
        return _flat_tasks(session, prod.instrument, prod.chip, prod.night) if prod and prod.night else []
    frame = _frame(session, trigger.id)
    return _flat_tasks(session, frame.instrument, frame.chip, frame.night) if frame and frame.night else []


def reduce_task(session: Session, frame: Row[Any]) -> Task | None:
    """The reduction of one science frame, if both masters can be chosen now."""
    bias = select_calibration(session, "master_bias", frame.instrument, frame.chip, None, frame.date_obs, frame.night)
    flat = select_calibration(session, "master_flat", frame.instrument, frame.chip, frame.filter, frame.date_obs,
                              frame.night)
    if bias.chosen_id is None or flat.chosen_id is None:
        return None
    return REDUCE.task(
        [InputRef(frame.id, "raw_frame", "raw"), InputRef(bias.chosen_id, "product", "bias"),
         InputRef(flat.chosen_id, "product", "flat")],
        {"instrument": frame.instrument, "chip": frame.chip, "filter": frame.filter, "night": frame.night,
         "field": frame.object, "frame_id": frame.id, "exposure_id": frame.exposure_id},
        params_for(session, "reduce", frame.instrument))


def _reduce_ready(session: Session, trigger: Trigger) -> list[Task]:
    f, p = table("raw_frames"), table("products")
    if trigger.entity_kind == "raw_frame":
        frame = _frame(session, trigger.id)
        frames = [frame] if frame is not None and frame.is_valid != 0 else []
    else:
        master = session.execute(select(p).where(p.c.id == trigger.id)).first()
        if master is None:
            return []
        # frames lacking an up-to-date reduction (none yet, or only outdated ones)
        reduced = select(p.c.frame_id).where(p.c.kind == "reduced", p.c.frame_id.is_not(None), p.c.status == "ok")
        conds = [f.c.instrument == master.instrument, f.c.chip == master.chip, f.c.obstype == "science",
                 f.c.is_valid != 0, f.c.id.not_in(reduced)]
        if master.filter is not None and master.kind == "master_flat":
            conds.append(f.c.filter == master.filter)
        if master.valid_from is not None and master.valid_to is not None:
            conds.append(and_(f.c.date_obs >= master.valid_from, f.c.date_obs < master.valid_to))
        frames = list(session.execute(select(f).where(*conds)))
    tasks = [reduce_task(session, fr) for fr in frames]
    return [t for t in tasks if t is not None]


MASTER_BIAS = register(StageSpec(
    name="master_bias", service="calib", kind="master_bias", id_prefix="mbias", version="1",
    triggers=ANY_FRAME, ready=_master_bias_ready,
    description="sigma-clipped mean of a night's bias frames of one chip"))
MASTER_FLAT = register(StageSpec(
    name="master_flat", service="calib", kind="master_flat", id_prefix="mflat", version="1",
    triggers=(*ANY_FRAME, "product:master_bias"), ready=_master_flat_ready,
    description="bias-subtracted, normalised combination of a night's flats of one chip and filter"))
REDUCE = register(StageSpec(
    name="reduce", service="calib", kind="reduced", id_prefix="red", version="1",
    triggers=("raw_frame:science", "product:master_bias", "product:master_flat"), ready=_reduce_ready,
    description="overscan, trim, bias, flat; SCI/VAR/DQ in electrons"))
