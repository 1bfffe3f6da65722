"""Night-sky flat (illumination correction, "super-flat") and fringe frame, for cameras that ask.

A camera asks in its description (``calibration: illumination: {filters, fringe_filters, min_frames,
validity_days}``); others never get the stage. One product per camera, chip, filter and night:

* ready when the night's *science block* of the chip and filter is complete — at least ``min_frames``
  usable science frames, and a later frame of the chip exists (the sequence has moved on), as for flats —
  and the calibrations a reduction of its first frame would get (master bias, master flat, bad-pixel map,
  and a master dark for cameras with darks) are chosen by
  :func:`~wisp.pipeline.rules.calib.select_calibration`;
* inputs: the block's raw frames (role ``raw``) and those calibrations (``bias``, ``flat``, ``bpm``,
  ``dark``). The stage reduces the frames in memory, so the product depends on no reduced frame and a
  reduction may use it (DRAGONS-like: no cycle in the product graph);
* valid ``validity_days`` days either side of the block, like a master;
* made once per block: a newer master does not remake a block that has a usable product.

For the reduction of one science frame, :func:`select_illumination` / :func:`illumination_for` say which
product to apply, or that the frame must wait: while its night's block of that chip and filter is still
open (no later frame of the chip yet: more frames of the block may come), and while the block is complete
with enough frames but no product of it exists yet (or only outdated ones, to be remade). So the correction
a frame gets does not depend on which product happened to be made first. :func:`released_frames` lists the
frames a new raw frame may release (a block it closes with too few frames makes no product: those frames go
on with another night's, or none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, select
from sqlalchemy.orm import Session

from wisp.db import table
from wisp.instruments.schema import IlluminationRule
from wisp.pipeline.model import InputRef, StageSpec, Task, Trigger
from wisp.pipeline.registry import register
from wisp.pipeline.rules.calib import (
    ANY_FRAME,
    BPM_KIND,
    Selection,
    definition,
    params_for,
    select_calibration,
    uses_darks,
)

KIND = "illumination_correction"
#: selection statuses: a product chosen; none usable (go on without); wait; the camera/filter does not ask
CHOSEN, NONE, WAITING, NOT_ASKED = "chosen", "none", "waiting", "not_asked"


@dataclass
class IlluminationSelection(Selection):
    """A :class:`Selection` of an illumination correction, with its ``status`` (:data:`CHOSEN`,
    :data:`NONE`, :data:`WAITING`, :data:`NOT_ASKED`): reduce a frame only when it is not ``waiting``, and
    apply ``chosen_id`` when it is set."""

    status: str = NONE


def illumination_rule(session: Session, instrument: str) -> IlluminationRule | None:
    """The camera's night-sky flat rule, or None when its description does not ask for one."""
    fields = (definition(session, instrument).get("calibration") or {}).get("illumination")
    if not fields or not fields.get("filters"):
        return None
    default = IlluminationRule()
    return IlluminationRule(min_frames=int(fields.get("min_frames", default.min_frames)),
                            validity_days=float(fields.get("validity_days", default.validity_days)),
                            filters=tuple(fields.get("filters") or ()),
                            fringe_filters=tuple(fields.get("fringe_filters") or ()))


def _science(session: Session, instrument: str, chip: str, night: str, filt: str) -> list[Row[Any]]:
    f = table("raw_frames")
    return list(session.execute(select(f).where(
        f.c.instrument == instrument, f.c.chip == chip, f.c.night == night, f.c.obstype == "science",
        f.c.filter == filt, f.c.is_valid != 0).order_by(f.c.date_obs, f.c.id)))


def _closed(session: Session, instrument: str, chip: str, last: datetime) -> bool:
    """A frame of the chip later than ``last`` exists: the sequence has moved on."""
    f = table("raw_frames")
    return bool(session.scalar(select(func.count()).select_from(f).where(
        f.c.instrument == instrument, f.c.chip == chip, f.c.date_obs > last)))


def science_block(session: Session, instrument: str, chip: str, night: str, filt: str) -> list[Row[Any]] | None:
    """The usable science frames of a complete block (the camera asks for this filter, >= ``min_frames``
    frames, a later frame of the chip), or None."""
    rule = illumination_rule(session, instrument)
    if rule is None or filt not in rule.filters:
        return None
    rows = _science(session, instrument, chip, night, filt)
    if len(rows) < rule.min_frames or not _closed(session, instrument, chip, rows[-1].date_obs):
        return None
    return rows


def block_task(session: Session, rows: list[Row[Any]], rule: IlluminationRule) -> Task | None:
    """The task of a complete block, if the calibrations a reduction of its first frame needs (master bias,
    master flat, bad-pixel map, and a master dark for cameras with darks) can all be chosen now."""
    first = rows[0]
    inst, chip, night, filt, when = first.instrument, first.chip, first.night, first.filter, first.date_obs
    chosen = [("bias", select_calibration(session, "master_bias", inst, chip, None, when, night)),
              ("flat", select_calibration(session, "master_flat", inst, chip, filt, when, night)),
              ("bpm", select_calibration(session, BPM_KIND, inst, chip, filt, when, night))]
    if uses_darks(session, inst):
        chosen.append(("dark", select_calibration(session, "master_dark", inst, chip, None, when, night)))
    if any(sel.chosen_id is None for _, sel in chosen):
        return None
    inputs = [InputRef(r.id, "raw_frame", "raw") for r in rows]
    inputs += [InputRef(str(sel.chosen_id), "product", role) for role, sel in chosen]
    days = timedelta(days=rule.validity_days)
    reduce = params_for(session, "reduce", inst)
    params = {**params_for(session, "illumination", inst), "fringe": filt in rule.fringe_filters,
              "overscan_method": reduce["overscan_method"], "overscan_order": reduce["overscan_order"]}
    return ILLUMINATION.task(inputs, {
        "instrument": inst, "chip": chip, "filter": filt, "night": night,
        "valid_from": (first.date_obs - days).isoformat(), "valid_to": (rows[-1].date_obs + days).isoformat()},
        params)


def block_products(session: Session, rows: list[Row[Any]]) -> list[Row[Any]]:
    """The products (in any state) made from exactly this block's frames."""
    p, e = table("products"), table("lineage_edges")
    first = rows[0]
    ids = {r.id for r in rows}
    out = []
    for prod in session.execute(select(p).where(
            p.c.kind == KIND, p.c.instrument == first.instrument, p.c.chip == first.chip,
            p.c.filter == first.filter, p.c.night == first.night).order_by(p.c.created_at.desc(), p.c.id)):
        act = select(e.c.activity_id).where(e.c.entity_id == prod.id, e.c.relation == "wasGeneratedBy")
        used = set(session.scalars(select(e.c.entity_id).where(e.c.activity_id.in_(act), e.c.relation == "used",
                                                               e.c.role == "raw")))
        if used == ids:
            out.append(prod)
    return out


def block_made(session: Session, rows: list[Row[Any]]) -> bool:
    """A usable (not marked bad, not outdated) product of this block's exact frames exists: a newer master
    does not make another one (the block's frames already use this one)."""
    return any(r.status == "ok" and r.is_valid != 0 for r in block_products(session, rows))


def _tasks(session: Session, instrument: str, chip: str, nights: Iterable[str], filters: Iterable[str] | None
           ) -> list[Task]:
    rule = illumination_rule(session, instrument)
    if rule is None:
        return []
    wanted = [x for x in rule.filters if filters is None or x in set(filters)]
    tasks = []
    for night in sorted(set(nights)):
        for filt in wanted:
            rows = science_block(session, instrument, chip, night, filt)
            task = block_task(session, rows, rule) if rows and not block_made(session, rows) else None
            if task is not None:
                tasks.append(task)
    return tasks


def _previous_night(session: Session, instrument: str, chip: str, night: str) -> str | None:
    """The chip's last night with science frames before ``night`` (a frame may close its last block)."""
    f = table("raw_frames")
    return session.scalar(select(func.max(f.c.night)).where(
        f.c.instrument == instrument, f.c.chip == chip, f.c.obstype == "science", f.c.night < night))


def _illumination_ready(session: Session, trigger: Trigger) -> list[Task]:
    f, p = table("raw_frames"), table("products")
    if trigger.entity_kind == "raw_frame":
        frame = session.execute(select(f).where(f.c.id == trigger.id)).first()
        if frame is None or frame.night is None or illumination_rule(session, frame.instrument) is None:
            return []
        nights = [frame.night]
        before = _previous_night(session, frame.instrument, frame.chip, frame.night)
        if before is not None:
            nights.append(before)
        return _tasks(session, frame.instrument, frame.chip, nights, None)
    master = session.execute(select(p).where(p.c.id == trigger.id)).first()
    if master is None or master.instrument is None or master.chip is None:
        return []
    if illumination_rule(session, master.instrument) is None:
        return []
    # the nights whose science frames this master may calibrate
    conds = [f.c.instrument == master.instrument, f.c.chip == master.chip, f.c.obstype == "science",
             f.c.night.is_not(None)]
    per_filter = master.kind in ("master_flat", BPM_KIND) and master.filter is not None
    if per_filter:
        conds.append(f.c.filter == master.filter)
    if master.valid_from is not None and master.valid_to is not None:
        conds.append(and_(f.c.date_obs >= master.valid_from, f.c.date_obs < master.valid_to))
    found = session.scalars(select(f.c.night).distinct().where(*conds)).all()
    filters = [master.filter] if per_filter else None
    return _tasks(session, master.instrument, master.chip, [n for n in found if n], filters)


def select_illumination(session: Session, instrument: str, chip: str, filt: str | None, when: datetime,
                        night: str | None) -> IlluminationSelection:
    """The illumination correction for a science frame of ``chip`` in ``filt`` taken at ``when`` in
    ``night`` (see the module docstring): ``not_asked``, ``waiting`` (with the reason), else the choice of
    :func:`~wisp.pipeline.rules.calib.select_calibration` (a usable product of the frame's own night first,
    else the newest valid then; ``none`` when there is none)."""
    rule = illumination_rule(session, instrument)
    if rule is None or filt is None or filt not in rule.filters:
        why = ("its description asks for no night-sky flat" if rule is None else
               f"its description asks for night-sky flats in {', '.join(rule.filters)} only")
        return IlluminationSelection(KIND, None, reason=f"{instrument} filter {filt}: {why}", status=NOT_ASKED)
    if night is not None:
        rows = _science(session, instrument, chip, night, filt)
        where = f"{instrument} {chip} filter {filt} night {night}"
        if rows and not _closed(session, instrument, chip, rows[-1].date_obs):
            return IlluminationSelection(KIND, None, waiting=True, status=WAITING, reason=(
                f"waiting for the science block of {where} to end ({len(rows)} frames so far, "
                f"{rule.min_frames} make a night-sky flat)"))
        made = block_products(session, rows) if len(rows) >= rule.min_frames else []
        # wait for the block's product while none exists, or those that do are outdated (to be remade); not
        # when one is usable, or marked bad by a user (then the choice below says what else there is)
        if len(rows) >= rule.min_frames and not any(r.is_valid == 0 or r.status == "ok" for r in made):
            return IlluminationSelection(KIND, None, waiting=True, status=WAITING, reason=(
                f"waiting for the night-sky flat of {where} ({len(rows)} frames taken"
                + (f"; {', '.join(r.id for r in made)} outdated, to be remade)" if made else ")")))
    sel = select_calibration(session, KIND, instrument, chip, filt, when, night)
    return IlluminationSelection(sel.kind, sel.chosen_id, sel.candidates,
                                 sel.reason.replace(KIND.replace("_", " "), "night-sky flat"),
                                 status=CHOSEN if sel.chosen_id else NONE)


def illumination_for(session: Session, frame: Any) -> IlluminationSelection:
    """:func:`select_illumination` for a raw science frame (a ``raw_frames`` row or anything with its
    ``instrument``, ``chip``, ``filter``, ``date_obs`` and ``night``)."""
    return select_illumination(session, frame.instrument, frame.chip, frame.filter, frame.date_obs, frame.night)


def released_frames(session: Session, frame: Any) -> list[Row[Any]]:
    """Science frames a new raw ``frame`` (any type) may release from waiting: earlier, not yet reduced
    (or only outdated) science frames of the same chip in filters the camera asks for, in the frame's night
    and the chip's previous night. For the reduce rule on a raw-frame trigger; the reduce rule's own
    :func:`select_illumination` call decides which of them are ready."""
    rule = illumination_rule(session, frame.instrument)
    if rule is None or frame.night is None:
        return []
    f, p = table("raw_frames"), table("products")
    nights = [frame.night]
    before = _previous_night(session, frame.instrument, frame.chip, frame.night)
    if before is not None:
        nights.append(before)
    reduced = select(p.c.frame_id).where(p.c.kind == "reduced", p.c.frame_id.is_not(None), p.c.status == "ok")
    return list(session.execute(select(f).where(
        f.c.instrument == frame.instrument, f.c.chip == frame.chip, f.c.obstype == "science",
        f.c.night.in_(nights), f.c.filter.in_(rule.filters), f.c.is_valid != 0, f.c.date_obs < frame.date_obs,
        f.c.id.not_in(reduced)).order_by(f.c.date_obs, f.c.id)))


ILLUMINATION = register(StageSpec(
    name="illumination", service="calib", kind=KIND, id_prefix="illum", version="1",
    triggers=(*ANY_FRAME, "product:master_bias", "product:master_dark", "product:master_flat", f"product:{BPM_KIND}"),
    ready=_illumination_ready,
    description="night-sky flat (super-flat) and fringe frame of a night's science block of one chip and filter"))
