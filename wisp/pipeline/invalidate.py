"""Invalidation and reprocessing (DESIGN.md §6, §7).

* :func:`invalidate`: a user marks a product bad (``is_valid = 0``, with a reason); every product derived
  from it (PROV edges, transitively) becomes ``status = 'outdated'``; a ProductInvalidated event goes to
  the outbox in the same transaction.
* :func:`reprocess`: a request (a job) to remake outdated products. The *roots* are the outdated products
  none of whose product inputs is outdated (they used the bad product directly). Each root's stage rule
  is asked again, with the root's own inputs as triggers, for the task of the same group (same frame,
  chip, filter, ...): the rule now chooses other calibrations. Those commands carry the job id; the
  products they make announce themselves and forward chaining remakes the rest of the outdated graph
  (every command caused by the job carries its id, so ``activities.job_id`` lists what the job made).
  When the rule's answer exists already (e.g. the bad-pixel map of the flat that now replaces a bad one),
  the root is replaced by that product, and the outdated products that used the root become roots in turn
  (once all their outdated inputs are replaced so): nothing would announce the existing product again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Row, insert, select, update
from sqlalchemy.orm import Session

from wisp.bus import make_product_msg_id, make_product_subject, product_invalidated_subject
from wisp.db import table
from wisp.db.types import utcnow
from wisp.errors import BadRequest, Conflict, InvalidInput, NotFound
from wisp.ids import is_valid_id, make_id
from wisp.pipeline.model import Task, Trigger
from wisp.pipeline.params import check_all
from wisp.pipeline.registry import stage
from wisp.v1 import pipeline_pb2

GROUP_KEYS = ("instrument", "chip", "filter", "night", "field", "frame_id", "exposure_id")
MAX_REASON = 1000


@dataclass(frozen=True)
class Invalidation:
    """What :func:`invalidate` did: the product marked bad and the products it made outdated."""

    product_id: str
    kind: str
    reason: str
    outdated: tuple[str, ...]


@dataclass
class Reprocess:
    """A reprocessing job: the commands sent now, and the outdated roots that cannot be remade yet."""

    job_id: str
    outdated: list[str]
    roots: list[str]
    tasks: list[Task] = field(default_factory=list)
    replaces: dict[str, str] = field(default_factory=dict)  # new product id -> the outdated root it replaces
    blocked: dict[str, str] = field(default_factory=dict)
    existing: dict[str, str] = field(default_factory=dict)  # outdated root -> the existing product replacing it


def product_row(session: Session, product_id: str) -> Row[Any]:
    """The product ``product_id``; ``BadRequest`` for a malformed id, ``NotFound`` for an unknown one."""
    if not is_valid_id(product_id):
        raise BadRequest(f"{product_id!r} is not a Wisp id (a prefix, '-', and 24 hex digits)",
                           code="id.malformed", id=product_id)
    p = table("products")
    row = session.execute(select(p).where(p.c.id == product_id)).first()
    if row is None:
        raise NotFound(f"no product {product_id}", code="product.not_found", id=product_id)
    return row


def derived(session: Session, entity_id: str) -> list[str]:
    """Every product derived from ``entity_id`` (transitively, breadth first: nearest first)."""
    e = table("lineage_edges")
    out: list[str] = []
    seen = {entity_id}
    queue = deque([entity_id])
    while queue:
        acts = select(e.c.activity_id).where(e.c.entity_id == queue.popleft(), e.c.relation == "used")
        made = session.scalars(select(e.c.entity_id).where(e.c.activity_id.in_(acts), e.c.relation == "wasGeneratedBy")
                               .order_by(e.c.entity_id)).all()
        for pid in made:
            if pid not in seen:
                seen.add(pid)
                out.append(pid)
                queue.append(pid)
    return out


def invalidate(session: Session, product_id: str, reason: str) -> Invalidation:
    """Mark ``product_id`` bad and everything derived from it outdated; queue the ProductInvalidated event.

    Idempotent: invalidating it again marks nothing new (``outdated`` is then empty) but keeps the newest
    reason. Raises ``InvalidInput`` for an empty or over-long reason, ``NotFound`` for an unknown product.
    """
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput(f"give a reason (1 to {MAX_REASON} characters) for marking {product_id} invalid",
                           code="invalidate.reason")
    row = product_row(session, product_id)
    p = table("products")
    session.execute(update(p).where(p.c.id == product_id).values(is_valid=0, validity_note=reason))
    below = derived(session, product_id)
    newly = list(session.scalars(select(p.c.id).where(p.c.id.in_(below), p.c.status == "ok")))
    newly.sort(key=below.index)
    if newly:
        session.execute(update(p).where(p.c.id.in_(newly)).values(status="outdated"))
    now = utcnow()
    at = Timestamp()
    at.FromDatetime(now)
    event = pipeline_pb2.ProductInvalidated(product_id=product_id, kind=row.kind, reason=reason,
                                            outdated_ids=newly, at=at)
    session.execute(insert(table("outbox")).values(
        subject=product_invalidated_subject(row.kind), msg_id=make_id("inv", product_id, now.isoformat()),
        payload=event.SerializeToString(), headers={}, created_at=now))
    return Invalidation(product_id, row.kind, reason, tuple(newly))


def _inputs(session: Session, product_id: str) -> list[Row[Any]]:
    e = table("lineage_edges")
    act = select(e.c.activity_id).where(e.c.entity_id == product_id, e.c.relation == "wasGeneratedBy")
    return list(session.execute(select(e.c.entity_id, e.c.entity_kind, e.c.role)
                                .where(e.c.activity_id.in_(act), e.c.relation == "used")))


def _kind_of(session: Session, entity_id: str, entity_kind: str) -> str:
    if entity_kind == "raw_frame":
        f = table("raw_frames")
        return str(session.scalar(select(f.c.obstype).where(f.c.id == entity_id)) or "other")
    p = table("products")
    return str(session.scalar(select(p.c.kind).where(p.c.id == entity_id)) or "")


def replacement(session: Session, root: Row[Any]) -> Task | None:
    """The task that remakes ``root`` now: its stage's rule, asked with each of its inputs as the new
    entity, restricted to tasks of the same group (same frame/chip/filter/...)."""
    spec = stage(root.stage)
    want = {k: getattr(root, k) for k in GROUP_KEYS if getattr(root, k) is not None}
    for inp in _inputs(session, root.id):
        trigger = Trigger(inp.entity_kind, inp.entity_id, _kind_of(session, inp.entity_id, inp.entity_kind))
        if trigger.key not in spec.triggers:
            continue
        for task in spec.ready(session, trigger):
            if task.product_id != root.id and all(task.group.get(k) in (None, v) for k, v in want.items()):
                return task
    return None


def _users(session: Session, product_id: str, among: set[str]) -> list[Row[Any]]:
    """The products of ``among`` that used ``product_id`` directly (oldest first)."""
    e, p = table("lineage_edges"), table("products")
    acts = select(e.c.activity_id).where(e.c.entity_id == product_id, e.c.relation == "used")
    made = select(e.c.entity_id).where(e.c.activity_id.in_(acts), e.c.relation == "wasGeneratedBy")
    return list(session.execute(select(p).where(p.c.id.in_(made), p.c.id.in_(among))
                                .order_by(p.c.created_at, p.c.id)))


def outdated_roots(session: Session, outdated: Iterable[str]) -> list[Row[Any]]:
    """The outdated products that none of the other outdated products went into (oldest first)."""
    ids = set(outdated)
    p = table("products")
    roots = []
    for row in session.execute(select(p).where(p.c.id.in_(ids)).order_by(p.c.created_at, p.c.id)):
        if not any(i.entity_id in ids for i in _inputs(session, row.id)):
            roots.append(row)
    return roots


def for_job(session: Session, task: Task, job_id: str) -> Task:
    """``task`` as part of job ``job_id``: carrying its id, with the job's parameter overrides for the stage
    (a new product id when they change anything)."""
    j = table("jobs")
    target = session.scalar(select(j.c.target).where(j.c.id == job_id)) or {}
    overrides = (target.get("params") or {}).get(task.stage)
    if overrides:
        spec = stage(task.stage)
        task = spec.task(list(task.inputs), task.group, {**task.params, **overrides})
    return replace(task, job_id=job_id)


def reprocess(session: Session, product_ids: Iterable[str] | None = None, *,
              params: Mapping[str, Mapping[str, Any]] | None = None, requested_by: str = "") -> Reprocess:
    """Create a reprocessing job for ``product_ids`` (outdated products; default: every outdated product)
    and queue the commands that remake its roots (outbox, same transaction). ``params``: per-stage
    parameter overrides for every product the job makes (``{'reduce': {'cr_sigclip': 5.0}}``), checked
    with hints. Raises ``Conflict`` if a given product is not outdated, ``NotFound``/``InvalidInput`` for
    unknown or malformed ids and parameters."""
    overrides = check_all(params or {})
    p = table("products")
    if product_ids is None:
        ids = list(session.scalars(select(p.c.id).where(p.c.status == "outdated").order_by(p.c.created_at, p.c.id)))
    else:
        ids = []
        for pid in product_ids:
            row = product_row(session, pid)
            if row.status != "outdated":
                raise Conflict(f"product {pid} is not outdated (status {row.status}); nothing to remake",
                               code="reprocess.not_outdated", id=pid)
            ids.append(pid)
    now = utcnow()
    job_id = make_id("job", "reprocess", sorted(ids), overrides, now.isoformat())
    roots = outdated_roots(session, ids)
    job = Reprocess(job_id, ids, [r.id for r in roots])
    session.execute(insert(table("jobs")).values(
        id=job_id, kind="reprocess", status="running", progress=0.0, message="", created_at=now, updated_at=now,
        target={"outdated": ids, "roots": job.roots, "requested_by": requested_by, "params": overrides}))
    seen: set[str] = set()
    outdated, queue, queued = set(ids), deque(roots), {r.id for r in roots}
    while queue:
        root = queue.popleft()
        task = replacement(session, root)
        if task is None:
            job.blocked[root.id] = (f"{root.stage} of {root.id}: its rule cannot choose inputs now "
                                    "(see `wisp why` for calibrations); it will be remade when they appear")
            continue
        task = for_job(session, task, job_id)
        status = session.scalar(select(p.c.status).where(p.c.id == task.product_id))
        if status == "ok" and task.product_id not in seen:
            job.existing[root.id] = task.product_id
            for user in _users(session, root.id, outdated - queued):
                if all(i.entity_id in job.existing or i.entity_id not in outdated for i in _inputs(session, user.id)):
                    queue.append(user)
                    queued.add(user.id)
                    job.roots.append(user.id)
            continue
        if task.product_id in seen or status is not None:
            continue
        seen.add(task.product_id)
        job.replaces[task.product_id] = root.id
        job.tasks.append(task)
        spec = stage(task.stage)
        session.execute(insert(table("outbox")).values(
            subject=make_product_subject(spec.service, spec.name), msg_id=make_product_msg_id(task.product_id),
            payload=task.to_command().SerializeToString(), headers={}, created_at=now))
    j = table("jobs")
    session.execute(update(j).where(j.c.id == job_id).values(
        status="running" if job.tasks else ("failed" if job.blocked else "succeeded"),
        message=(f"remaking {len(job.tasks)} of {len(job.roots)} root products of {len(ids)} outdated; "
                 f"{len(job.existing)} replaced by products that exist; {len(job.blocked)} blocked"),
        target={"outdated": ids, "roots": job.roots, "requested_by": requested_by, "params": overrides,
                "replaces": job.replaces, "existing": job.existing}))
    return job


def job_products(session: Session, job_id: str) -> list[Row[Any]]:
    """The products made by a job (its own commands and those they caused), oldest first."""
    a, p = table("activities"), table("products")
    e = table("lineage_edges")
    made = select(e.c.entity_id).where(e.c.relation == "wasGeneratedBy",
                                       e.c.activity_id.in_(select(a.c.id).where(a.c.job_id == job_id)))
    return list(session.execute(select(p).where(p.c.id.in_(made)).order_by(p.c.created_at, p.c.id)))


def _same_group(a: Row[Any], b: Row[Any]) -> bool:
    return a.stage == b.stage and all(getattr(a, k) == getattr(b, k) for k in GROUP_KEYS)


def job_report(session: Session, job_id: str) -> dict[str, Any]:
    """How far a reprocessing job has got: each outdated product with the product that replaced it (same
    stage and group, made by the job) or still pending, and products the job made that replace nothing.
    Marks the job succeeded once nothing is pending."""
    j = table("jobs")
    job = session.execute(select(j).where(j.c.id == job_id)).first()
    if job is None:
        raise NotFound(f"no job {job_id}", code="job.not_found", id=job_id)
    p = table("products")
    old = list(session.execute(select(p).where(p.c.id.in_(job.target.get("outdated", [])))
                               .order_by(p.c.created_at, p.c.id)))
    new = job_products(session, job_id)
    existing = job.target.get("existing") or {}
    before = {r.id: r for r in session.execute(select(p).where(p.c.id.in_(list(existing.values()))))}
    remade, pending, used = [], [], set()
    for o in old:
        match = next((n for n in new if n.id not in used and _same_group(o, n)), None)
        if match is None and existing.get(o.id) in before:
            match = before[existing[o.id]]
        if match is None:
            pending.append(o.id)
        else:
            used.add(match.id)
            remade.append({"outdated": o.id, "by": match.id, "stage": o.stage,
                           **{k: getattr(o, k) for k in GROUP_KEYS if getattr(o, k) is not None}})
    extra = [n.id for n in new if n.id not in used]
    status = job.status
    if job.kind == "reprocess" and status == "running" and not pending:
        status = "succeeded"
    progress = len(remade) / len(old) if old else 1.0
    if (status, progress) != (job.status, job.progress):
        session.execute(update(j).where(j.c.id == job_id).values(status=status, progress=progress))
    return {"id": job_id, "kind": job.kind, "status": status, "progress": progress, "message": job.message,
            "created_at": job.created_at.isoformat(), "target": job.target, "remade": remade, "pending": pending,
            "extra": extra}
