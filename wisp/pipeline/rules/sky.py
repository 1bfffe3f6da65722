"""Stages on the sky: astrometric/photometric solution, catalogues, coadds.

* ``astrometry``: a reduced frame + the newest reference catalogue that covers it.
* ``catalog``: a reduced frame + its solution.
* ``coadd``: every science frame of (camera, night, field, filter), once each has a solution.
* ``coadd_catalog``: a coadd.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from wisp.db import table
from wisp.pipeline.model import InputRef, StageSpec, Task, Trigger
from wisp.pipeline.registry import register
from wisp.sphere import separation


def _product(session: Session, pid: str) -> Row[Any] | None:
    p = table("products")
    return session.execute(select(p).where(p.c.id == pid)).first()


def _usable(row: Row[Any]) -> bool:
    """Not marked bad by a user, not outdated, and not a failed stage result (``metrics.failed``).

    QC's quality flags arrive asynchronously, so planning does not depend on them (it would make the set
    of products depend on timing); a user who agrees with a flag marks the product bad (is_valid=0)."""
    return bool(row.is_valid != 0 and row.status == "ok" and "failed" not in (row.metrics or {}))


def covering_refcat(session: Session, ra: float | None, dec: float | None) -> Row[Any] | None:
    """The newest usable reference catalogue whose footprint (centre + ``radius_deg``) holds (ra, dec)."""
    if ra is None or dec is None:
        return None
    p = table("products")
    for row in session.execute(select(p).where(p.c.kind == "refcat").order_by(p.c.created_at.desc())):
        radius = float((row.metrics or {}).get("radius_deg", 0.0))
        if not _usable(row) or row.ra_deg is None:
            continue
        if float(separation(np.array(ra), np.array(dec), row.ra_deg, row.dec_deg)) <= radius:
            return row
    return None


def _group(row: Row[Any]) -> dict[str, Any]:
    return {k: getattr(row, k) for k in ("instrument", "chip", "filter", "night", "field", "frame_id",
                                         "exposure_id")}


def _astrometry_task(session: Session, reduced: Row[Any]) -> Task | None:
    refcat = covering_refcat(session, reduced.ra_deg, reduced.dec_deg)
    if refcat is None or not _usable(reduced):
        return None
    return ASTROMETRY.task([InputRef(reduced.id, "product", "reduced"), InputRef(refcat.id, "product", "refcat")],
                           _group(reduced))


def _astrometry_ready(session: Session, trigger: Trigger) -> list[Task]:
    p = table("products")
    if trigger.kind == "reduced":
        row = _product(session, trigger.id)
        task = _astrometry_task(session, row) if row is not None else None
        return [task] if task else []
    solved = select(p.c.frame_id).where(p.c.kind == "astrometry", p.c.frame_id.is_not(None), p.c.status == "ok")
    pending = session.execute(select(p).where(p.c.kind == "reduced", p.c.frame_id.not_in(solved)))
    tasks = [_astrometry_task(session, r) for r in pending]
    return [t for t in tasks if t is not None]


def _reduced_of(session: Session, solution: Row[Any]) -> Row[Any] | None:
    p = table("products")
    return session.execute(select(p).where(p.c.kind == "reduced", p.c.frame_id == solution.frame_id,
                                           p.c.status == "ok").order_by(p.c.created_at.desc())).first()


def _catalog_ready(session: Session, trigger: Trigger) -> list[Task]:
    solution = _product(session, trigger.id)
    if solution is None or not _usable(solution):
        return []
    reduced = _reduced_of(session, solution)
    if reduced is None:
        return []
    return [CATALOG.task([InputRef(reduced.id, "product", "reduced"), InputRef(solution.id, "product", "solution")],
                         _group(solution))]


def _coadd_ready(session: Session, trigger: Trigger) -> list[Task]:
    solution = _product(session, trigger.id)
    if solution is None or solution.field is None:
        return []
    f, p = table("raw_frames"), table("products")
    frames = list(session.execute(select(f.c.id).where(
        f.c.instrument == solution.instrument, f.c.night == solution.night, f.c.object == solution.field,
        f.c.filter == solution.filter, f.c.obstype == "science", f.c.is_valid != 0)))
    inputs: list[InputRef] = []
    for fr in frames:
        sol = session.execute(select(p).where(p.c.kind == "astrometry", p.c.frame_id == fr.id, p.c.status == "ok")
                              .order_by(p.c.created_at.desc())).first()
        if sol is None:
            return []  # not every exposure is solved yet
        if not _usable(sol):
            continue
        reduced = _reduced_of(session, sol)
        if reduced is None:
            return []
        inputs += [InputRef(reduced.id, "product", "reduced"), InputRef(sol.id, "product", "solution")]
    if not inputs:
        return []
    group = {"instrument": solution.instrument, "filter": solution.filter, "night": solution.night,
             "field": solution.field}
    return [COADD.task(inputs, group)]


def _coadd_catalog_ready(session: Session, trigger: Trigger) -> list[Task]:
    coadd = _product(session, trigger.id)
    if coadd is None or not _usable(coadd):
        return []
    group = {k: getattr(coadd, k) for k in ("instrument", "filter", "night", "field")}
    return [COADD_CATALOG.task([InputRef(coadd.id, "product", "coadd")], group)]


def _never(session: Session, trigger: Trigger) -> list[Task]:
    return []


REFCAT = register(StageSpec(
    name="refcat", service="astrometry", kind="refcat", id_prefix="refcat", version="1", triggers=(),
    ready=_never, description="a reference catalogue imported on request, partitioned on the sky (HEALPix)"))
ASTROMETRY = register(StageSpec(
    name="astrometry", service="astrometry", kind="astrometry", id_prefix="ast", version="1",
    triggers=("product:reduced", "product:refcat"), ready=_astrometry_ready,
    description="TAN-SIP WCS against the reference catalogue, and the photometric zeropoint"))
CATALOG = register(StageSpec(
    name="catalog", service="catalog", kind="catalog", id_prefix="cat", version="1",
    triggers=("product:astrometry",), ready=_catalog_ready,
    description="sources of a solved frame: positions, aperture and Kron photometry, shapes, flags"))
COADD = register(StageSpec(
    name="coadd", service="coadd", kind="coadd", id_prefix="coadd", version="2",
    triggers=("product:astrometry",), ready=_coadd_ready,
    description="every solved exposure of a field and filter resampled onto one tangent plane and stacked"))
COADD_CATALOG = register(StageSpec(
    name="coadd_catalog", service="catalog", kind="coadd_catalog", id_prefix="ccat", version="1",
    triggers=("product:coadd",), ready=_coadd_catalog_ready,
    description="sources of a coadd"))
