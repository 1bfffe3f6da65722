"""``GET /v1/lineage/{id}``: what went into an entity (``direction=up``) or what came of it (``down``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy.engine import Engine

from gateway.frames import engine
from wisp.db import session_scope
from wisp.errors import BadRequest
from wisp.ids import is_valid_id
from wisp.lineage import downstream, flatten, upstream

router = APIRouter(tags=["lineage"])


@router.get("/v1/lineage/{entity_id}", summary="Lineage of an exposure, raw frame or product")
def lineage(entity_id: str, eng: Annotated[Engine, Depends(engine)],
            direction: Annotated[Literal["up", "down"], Query(description="up: inputs; down: derived")] = "up",
            ) -> dict[str, Any]:
    if not is_valid_id(entity_id):
        raise BadRequest(f"{entity_id!r} is not a Wisp id (a prefix, '-', and 24 hex digits)",
                         code="id.malformed", id=entity_id)
    with session_scope(eng) as s:
        tree = upstream(s, entity_id) if direction == "up" else downstream(s, entity_id)
    return {"direction": direction, "tree": tree, "nodes": flatten(tree)}
