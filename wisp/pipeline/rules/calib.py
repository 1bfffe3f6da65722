"""Calibration stages: master bias, master dark, master flat, bad-pixel map, and the reduction of science frames.

When is a calibration block complete? When a chip has at least ``min_frames`` usable frames of that kind
(and filter, for flats) in a night, and a later frame of the same chip exists: the sequence has moved on.
A master is valid ``validity_days`` days either side of its inputs. Both come from the ``calibration``
section of the camera's description (defaults: 3 frames, 3 days). Selection for a science frame
follows DESIGN.md §6 (:func:`select_calibration`): same camera, chip (and filter), valid at DATE-OBS,
not flagged, not marked bad, not outdated; a master of the frame's own night first (waiting for it while
that night's block is complete but its master not made yet), else the newest creation eclipses older ones.

A master flat also takes, in role ``mosaic``, the other chips' frames of its flat exposures: it measures the
chip's mosaic gain factor from them (one photometric scale for every chip; no wait for other products).

Master darks only for cameras whose description has a ``dark`` entry in ``calibration``
(:func:`uses_darks`); their reductions then need one (like a bias or a flat). A bad-pixel map serves a chip's
frames of one night and filter: it is made from the master flat those frames would choose (of the night
first), the master bias that flat was made with and, for cameras with darks, the night's master dark;
valid as long as that flat. Reductions need one, chosen like the masters (their night's first, waiting while
their night has a usable master flat whose map is not made yet).
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
    waiting: bool = False  # nothing chosen because the frame's night has one still to be made


MASTER_OF = {"master_bias": "bias", "master_flat": "flat", "master_dark": "dark"}
BPM_KIND = "bad_pixel_map"


def uses_darks(session: Session, instrument: str) -> bool:
    """Whether the camera's description asks for master darks (a ``dark`` entry in ``calibration``)."""
    return "dark" in (definition(session, instrument).get("calibration") or {})


def _usable(p: Any) -> list[Any]:
    """Conditions on ``products`` of a master that selection would not reject for its state."""
    return [p.c.is_valid != 0, p.c.status == "ok", func.coalesce(p.c.quality_flags, 0) == 0]


def _awaited(session: Session, kind: str, instrument: str, chip: str, filt: str | None, night: str) -> str:
    """What of ``night`` will make a ``kind`` for the chip (and filter), in words; '' if nothing will (too few
    raw frames for a block, or one of that night exists already, whatever its state). A master is awaited
    while its night's block is complete; a bad-pixel map while its night's master flat is awaited, or exists
    and is usable but has no map yet."""
    p, f = table("products"), table("raw_frames")
    conds = [p.c.kind == kind, p.c.instrument == instrument, p.c.chip == chip, p.c.night == night]
    if filt is not None:
        conds.append(p.c.filter == filt)
    if session.scalar(select(func.count()).select_from(p).where(*conds)):
        return ""
    if kind == BPM_KIND:
        flat = _awaited(session, "master_flat", instrument, chip, filt, night)
        if flat:
            return f"its master flat is still to be made: {flat}"
        fconds = [p.c.kind == "master_flat", p.c.instrument == instrument, p.c.chip == chip, p.c.night == night,
                  *_usable(p)]
        if filt is not None:
            fconds.append(p.c.filter == filt)
        made = session.scalar(select(p.c.id).where(*fconds).order_by(p.c.created_at.desc(), p.c.id).limit(1))
        return f"from the master flat {made}" if made else ""
    if kind not in MASTER_OF or (kind == "master_dark" and not uses_darks(session, instrument)):
        return ""
    fconds = [f.c.instrument == instrument, f.c.chip == chip, f.c.night == night, f.c.obstype == MASTER_OF[kind],
              f.c.is_valid != 0]
    if filt is not None:
        fconds.append(f.c.filter == filt)
    n = session.scalar(select(func.count()).select_from(f).where(*fconds)) or 0
    return f"{n} frames taken" if n >= calibration_rule(session, instrument, MASTER_OF[kind]).min_frames else ""


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
    waiting = _awaited(session, kind, instrument, chip, filt, night) if night else ""
    if waiting:
        sel.reason = (f"waiting for the {kind.replace('_', ' ')} of night {night} ({waiting}) "
                      f"for {instrument} {chip}" + (f" filter {filt}" if filt else ""))
        sel.waiting = True
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
        mosaic = session.scalars(select(f.c.id).where(
            f.c.exposure_id.in_([r.exposure_id for r in rows]), f.c.chip != chip, f.c.obstype == "flat",
            f.c.is_valid != 0)).all()
        tasks.append(MASTER_FLAT.task(
            [InputRef(r.id, "raw_frame", "raw") for r in rows] + [InputRef(bias.chosen_id, "product", "bias")]
            + [InputRef(i, "raw_frame", "mosaic") for i in mosaic],
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


def _dark_tasks(session: Session, instrument: str, chip: str, night: str) -> list[Task]:
    if not uses_darks(session, instrument):
        return []
    rows = _block(session, instrument, chip, night, "dark", None)
    if rows is None:
        return []
    bias = select_calibration(session, "master_bias", instrument, chip, None, rows[0].date_obs, night)
    if bias.chosen_id is None:
        return []
    start, end = validity(session, rows)
    return [MASTER_DARK.task(
        [InputRef(r.id, "raw_frame", "raw") for r in rows] + [InputRef(bias.chosen_id, "product", "bias")],
        {"instrument": instrument, "chip": chip, "night": night,
         "valid_from": start.isoformat(), "valid_to": end.isoformat()},
        params_for(session, "master_dark", instrument))]


def _master_dark_ready(session: Session, trigger: Trigger) -> list[Task]:
    if trigger.entity_kind == "product":
        p = table("products")
        prod = session.execute(select(p.c.instrument, p.c.chip, p.c.night).where(p.c.id == trigger.id)).first()
        return _dark_tasks(session, prod.instrument, prod.chip, prod.night) if prod and prod.night else []
    frame = _frame(session, trigger.id)
    return _dark_tasks(session, frame.instrument, frame.chip, frame.night) if frame and frame.night else []


def _input_of(session: Session, product_id: str, role: str) -> str | None:
    """The input of ``product_id`` with ``role`` (from its lineage)."""
    e = table("lineage_edges")
    made_by = select(e.c.activity_id).where(e.c.entity_id == product_id, e.c.relation == "wasGeneratedBy")
    return session.scalar(select(e.c.entity_id).where(e.c.activity_id.in_(made_by), e.c.relation == "used",
                                                      e.c.role == role).order_by(e.c.entity_id).limit(1))


def _bpm_tasks(session: Session, instrument: str, chip: str, night: str, filt: str | None = None) -> list[Task]:
    """The bad-pixel maps for the chip's frames of ``night``: one per filter with a master flat of that night,
    from the flat those frames would choose now (at the middle of that night's newest flat's validity)."""
    p = table("products")
    conds = [p.c.kind == "master_flat", p.c.instrument == instrument, p.c.chip == chip, p.c.night == night,
             p.c.valid_from.is_not(None), p.c.valid_to.is_not(None)]
    if filt is not None:
        conds.append(p.c.filter == filt)
    newest: dict[str, Row[Any]] = {}
    for r in session.execute(select(p).where(*conds).order_by(p.c.created_at.desc(), p.c.id)):
        newest.setdefault(r.filter, r)
    tasks = []
    for f, r in sorted(newest.items()):
        when = r.valid_from + (r.valid_to - r.valid_from) / 2
        chosen = select_calibration(session, "master_flat", instrument, chip, f, when, night)
        flat = session.execute(select(p).where(p.c.id == chosen.chosen_id)).first() if chosen.chosen_id else None
        bias_id = _input_of(session, flat.id, "bias") if flat is not None else None
        if flat is None or bias_id is None:
            continue
        inputs = [InputRef(flat.id, "product", "flat"), InputRef(bias_id, "product", "bias")]
        if uses_darks(session, instrument):
            dark = select_calibration(session, "master_dark", instrument, chip, None, when, night)
            if dark.waiting:
                continue
            if dark.chosen_id is not None:
                inputs.append(InputRef(dark.chosen_id, "product", "dark"))
        # no night in the group: the map takes its night from its flat, which may be another night's (the
        # frames' own flat marked bad); the runner writes the flat's night
        tasks.append(BAD_PIXEL_MAP.task(
            inputs, {"instrument": instrument, "chip": chip, "filter": f,
                     "valid_from": flat.valid_from.isoformat(), "valid_to": flat.valid_to.isoformat()},
            params_for(session, "bad_pixel_map", instrument)))
    return tasks


def _bpm_ready(session: Session, trigger: Trigger) -> list[Task]:
    p = table("products")
    prod = session.execute(select(p).where(p.c.id == trigger.id)).first()
    if prod is None or prod.night is None or prod.chip is None:
        return []
    return _bpm_tasks(session, prod.instrument, prod.chip, prod.night,
                      prod.filter if prod.kind == "master_flat" else None)


def reduce_task(session: Session, frame: Row[Any]) -> Task | None:
    """The reduction of one science frame, if its masters (bias, flat, bad-pixel map, and a dark for cameras
    with darks) can all be chosen now."""
    when, night = frame.date_obs, frame.night
    chosen = [("bias", select_calibration(session, "master_bias", frame.instrument, frame.chip, None, when, night)),
              ("flat", select_calibration(session, "master_flat", frame.instrument, frame.chip, frame.filter, when,
                                          night)),
              ("bpm", select_calibration(session, BPM_KIND, frame.instrument, frame.chip, frame.filter, when, night))]
    if uses_darks(session, frame.instrument):
        chosen.append(("dark", select_calibration(session, "master_dark", frame.instrument, frame.chip, None, when,
                                                  night)))
    if any(sel.chosen_id is None for _, sel in chosen):
        return None
    from wisp.pipeline.rules.illumination import illumination_for  # it imports this module
    illumination = illumination_for(session, frame)
    if illumination.waiting:
        return None
    extra = [InputRef(illumination.chosen_id, "product", "illumination")] if illumination.chosen_id else []
    return REDUCE.task(
        [InputRef(frame.id, "raw_frame", "raw")] + [InputRef(str(sel.chosen_id), "product", role)
                                                     for role, sel in chosen] + extra,
        {"instrument": frame.instrument, "chip": frame.chip, "filter": frame.filter, "night": frame.night,
         "field": frame.object, "frame_id": frame.id, "exposure_id": frame.exposure_id},
        params_for(session, "reduce", frame.instrument))


def _reduce_ready(session: Session, trigger: Trigger) -> list[Task]:
    f, p = table("raw_frames"), table("products")
    if trigger.entity_kind == "raw_frame":
        from wisp.pipeline.rules.illumination import released_frames
        frame = _frame(session, trigger.id)
        if frame is None:
            return []
        frames = [frame] if frame.obstype == "science" and frame.is_valid != 0 else []
        frames += [r for r in released_frames(session, frame) if r.id != frame.id]
    else:
        master = session.execute(select(p).where(p.c.id == trigger.id)).first()
        if master is None:
            return []
        # frames lacking an up-to-date reduction (none yet, or only outdated ones)
        reduced = select(p.c.frame_id).where(p.c.kind == "reduced", p.c.frame_id.is_not(None), p.c.status == "ok")
        conds = [f.c.instrument == master.instrument, f.c.obstype == "science", f.c.is_valid != 0,
                 f.c.id.not_in(reduced)]
        if master.chip is not None:
            conds.append(f.c.chip == master.chip)
        if master.filter is not None and master.kind in ("master_flat", BPM_KIND, "illumination_correction"):
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
MASTER_DARK = register(StageSpec(
    name="master_dark", service="calib", kind="master_dark", id_prefix="mdark", version="1",
    triggers=(*ANY_FRAME, "product:master_bias"), ready=_master_dark_ready,
    description="dark current (ADU/s): sigma-clipped mean of a night's bias-subtracted darks of one chip, "
                "for cameras whose description asks for darks"))
MASTER_FLAT = register(StageSpec(
    name="master_flat", service="calib", kind="master_flat", id_prefix="mflat", version="2",
    triggers=(*ANY_FRAME, "product:master_bias"), ready=_master_flat_ready,
    description="bias-subtracted, normalised combination of a night's flats of one chip and filter"))
BAD_PIXEL_MAP = register(StageSpec(
    name="bad_pixel_map", service="calib", kind=BPM_KIND, id_prefix="bpm", version="1",
    triggers=("product:master_flat", "product:master_dark"), ready=_bpm_ready,
    description="hot, cold and bad-column pixels of one chip, filter and night, from its master flat, the "
                "flat's master bias (and the night's master dark)"))
REDUCE = register(StageSpec(
    name="reduce", service="calib", kind="reduced", id_prefix="red", version="1",
    triggers=(*ANY_FRAME, "product:master_bias", "product:master_dark", "product:master_flat",
              f"product:{BPM_KIND}", "product:illumination_correction"),
    ready=_reduce_ready,
    description="overscan, trim, bias, dark (if the camera has darks), flat, bad pixels; SCI/VAR/DQ in "
                "electrons"))
