"""Recording a stage run: product row, PROV activity and edges, and the ProductCreated event (outbox),
all in one transaction — the order of DESIGN.md §5 after the object is stored and verified."""

from __future__ import annotations

import math
import socket
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import insert
from sqlalchemy.orm import Session

from wisp import __version__
from wisp.bus import product_created_subject
from wisp.db import insert_ignore, table
from wisp.db.types import utcnow
from wisp.ids import make_id
from wisp.pipeline.model import Output, StageSpec, Task
from wisp.store import ObjectRef
from wisp.v1 import pipeline_pb2

PRODUCT_COLUMNS = ("instrument", "chip", "filter", "night", "field", "exposure_id", "frame_id", "mjd_obs",
                   "ra_deg", "dec_deg", "valid_from", "valid_to", "metrics", "quality_flags", "privilege",
                   "project_id")


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def record_product(session: Session, spec: StageSpec, task: Task, output: Output, ref: ObjectRef,
                   started: datetime) -> bool:
    """Insert the product and its provenance; False (and nothing written) if it already exists."""
    now = utcnow()
    unknown = set(output.columns) - set(PRODUCT_COLUMNS)
    if unknown:
        raise ValueError(f"stage {spec.name} returned unknown product columns {sorted(unknown)}")
    row: dict[str, Any] = {
        "id": task.product_id, "kind": spec.kind, "stage": spec.name, "object_key": ref.key,
        "sha256": ref.sha256, "size_bytes": ref.size, "params": json_safe(dict(task.params)), "created_at": now,
        "metrics": {}, **output.columns}
    row["metrics"] = json_safe(row["metrics"])
    if not insert_ignore(session, table("products"), [row]):
        return False
    act = make_id("act", spec.name, task.product_id)
    session.execute(insert(table("activities")).values(
        id=act, stage=spec.name, code_version=f"{__version__}/{spec.name}-{spec.version}",
        host=socket.gethostname(), params=dict(task.params), started_at=started, ended_at=now,
        status="succeeded", job_id=task.job_id or None))
    edges = [{"activity_id": act, "entity_id": i.id, "entity_kind": i.entity_kind, "relation": "used",
              "role": i.role} for i in task.inputs]
    edges.append({"activity_id": act, "entity_id": task.product_id, "entity_kind": "product",
                  "relation": "wasGeneratedBy", "role": "output"})
    session.execute(insert(table("lineage_edges")), edges)
    if output.extra is not None:
        output.extra(session, task.product_id)
    created = Timestamp()
    created.FromDatetime(now)
    event = pipeline_pb2.ProductCreated(product=pipeline_pb2.Product(
        id=task.product_id, kind=spec.kind, stage=spec.name, object_key=ref.key, sha256=ref.sha256,
        created_at=created, **{k: str(row.get(k) or "") for k in
                               ("instrument", "chip", "filter", "night", "field", "frame_id", "exposure_id")}))
    session.execute(insert(table("outbox")).values(
        subject=product_created_subject(spec.kind), msg_id=task.product_id, payload=event.SerializeToString(),
        headers={}, created_at=now))
    return True
