"""Lineage queries over the PROV edges: everything that went into an entity, everything derived from it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from wisp.db import table
from wisp.errors import NotFound

MAX_NODES = 20_000



def describe(session: Session, entity_id: str) -> dict[str, Any] | None:
    """A short description of an exposure, raw frame or product, or None if no such entity."""
    for name, kind, cols in (
        ("products", None, ("kind", "instrument", "chip", "filter", "night", "field", "status", "is_valid")),
        ("raw_frames", "raw_frame", ("instrument", "chip", "filter", "obstype", "night", "object")),
        ("exposures", "exposure", ("instrument", "filename", "obstype", "filter", "object")),
    ):
        t = table(name)
        row = session.execute(select(*(t.c[c] for c in cols)).where(t.c.id == entity_id)).first()
        if row is not None:
            out = {"id": entity_id, **dict(row._mapping)}
            if kind is not None:
                out["kind"] = kind
            return out
    return None


def _activity(session: Session, activity_id: str) -> dict[str, Any]:
    a = table("activities")
    row = session.execute(select(a.c.id, a.c.stage, a.c.code_version, a.c.params, a.c.started_at, a.c.ended_at)
                          .where(a.c.id == activity_id)).one()
    out = dict(row._mapping)
    for key in ("started_at", "ended_at"):
        out[key] = out[key].isoformat() if out[key] is not None else None
    return out


def upstream(session: Session, entity_id: str) -> dict[str, Any]:
    """The tree of inputs of ``entity_id``: each node with the activity that made it and its inputs."""
    return _walk(session, entity_id, "up", set())


def downstream(session: Session, entity_id: str) -> dict[str, Any]:
    """The tree of everything derived from ``entity_id``."""
    return _walk(session, entity_id, "down", set())


def _walk(session: Session, entity_id: str, direction: str, seen: set[str]) -> dict[str, Any]:
    node = describe(session, entity_id)
    if node is None:
        raise NotFound(f"no exposure, raw frame or product {entity_id}", code="entity.not_found", id=entity_id)
    if entity_id in seen or len(seen) > MAX_NODES:
        node["repeated"] = True
        return node
    seen.add(entity_id)
    e = table("lineage_edges")
    if direction == "up":
        acts = session.scalars(select(e.c.activity_id).where(e.c.entity_id == entity_id,
                                                             e.c.relation == "wasGeneratedBy")).all()
        children = []
        for act in acts:
            node["activity"] = _activity(session, act)
            for used in session.execute(select(e.c.entity_id, e.c.role).where(
                    e.c.activity_id == act, e.c.relation == "used").order_by(e.c.role, e.c.entity_id)):
                child = _walk(session, used.entity_id, direction, seen)
                child["role"] = used.role
                children.append(child)
        node["inputs"] = children
    else:
        acts = session.scalars(select(e.c.activity_id).where(e.c.entity_id == entity_id,
                                                             e.c.relation == "used")).all()
        derived = []
        for act in acts:
            for made in session.scalars(select(e.c.entity_id).where(
                    e.c.activity_id == act, e.c.relation == "wasGeneratedBy").order_by(e.c.entity_id)):
                child = _walk(session, made, direction, seen)
                child["stage"] = _activity(session, act)["stage"]
                derived.append(child)
        node["derived"] = derived
    return node


def flatten(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Every distinct node of a lineage tree once, depth first (without the nested lists)."""
    out: dict[str, dict[str, Any]] = {}

    def visit(node: dict[str, Any], depth: int) -> None:
        if node["id"] not in out:
            out[node["id"]] = {k: v for k, v in node.items() if k not in ("inputs", "derived", "activity")}
            out[node["id"]]["depth"] = depth
        for child in node.get("inputs", []) + node.get("derived", []):
            visit(child, depth + 1)

    visit(tree, 0)
    return list(out.values())
