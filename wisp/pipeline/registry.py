"""The one planner: every declared stage, and "what can be made now from this new entity?"."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from wisp.bus import ALL_FRAMES_INGESTED, product_created_subject
from wisp.db import table
from wisp.pipeline.model import StageSpec, Task, Trigger

STAGES: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Declare a stage (done once, at import of its rule module)."""
    if spec.name in STAGES and STAGES[spec.name] != spec:
        raise ValueError(f"stage {spec.name!r} declared twice")
    STAGES[spec.name] = spec
    return spec


def stages_of(service: str) -> list[StageSpec]:
    _load_rules()
    return [s for s in STAGES.values() if s.service == service]


def stage(name: str) -> StageSpec:
    _load_rules()
    return STAGES[name]


def plan(session: Session, trigger: Trigger, service: str | None = None) -> list[Task]:
    """Tasks made ready by ``trigger`` (of one service's stages, or all), minus products that exist."""
    _load_rules()
    tasks: list[Task] = []
    for spec in STAGES.values():
        if (service is None or spec.service == service) and trigger.key in spec.triggers:
            tasks.extend(spec.ready(session, trigger))
    if not tasks:
        return []
    products = table("products")
    existing = set(session.scalars(select(products.c.id).where(products.c.id.in_([t.product_id for t in tasks]))))
    unique = {t.product_id: t for t in tasks if t.product_id not in existing}
    return list(unique.values())


def trigger_subjects(service: str) -> tuple[str, ...]:
    """The event subjects a service's planner must listen to."""
    subjects: set[str] = set()
    for spec in stages_of(service):
        for key in spec.triggers:
            entity, _, kind = key.partition(":")
            subjects.add(ALL_FRAMES_INGESTED if entity == "raw_frame" else product_created_subject(kind))
    return tuple(sorted(subjects))


def _load_rules() -> None:
    """Import the rule modules (they register their stages)."""
    import wisp.pipeline.rules  # noqa: F401
