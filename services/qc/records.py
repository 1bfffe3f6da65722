"""The rows one QC run writes, in one transaction: merged metrics, quality flags, a PROV activity.

Idempotent: the activity id is ``make_id("act", "qc", product_id)`` and is inserted-or-ignored, the
``used`` edge likewise, and metrics/flags are only written when they change — a redelivery leaves the
database as it was. QC owns the bits of :data:`wisp.quality.QC_MASK`; other bits and ``is_valid`` (the
user's verdict) are left alone.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from wisp import __version__
from wisp.db import insert_ignore, session_scope, table
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.ids import make_id
from wisp.quality import QC_MASK, Bounds, evaluate, flag_names

QC_STAGE = "qc"
QC_VERSION = "1"  #: version of the QC science: part of the activity's code_version



@dataclass(frozen=True)
class ProductRow:
    """What QC needs of a product row."""

    id: str
    kind: str
    instrument: str | None
    filter: str | None
    object_key: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class QcOutcome:
    """The result of one QC run: stored ``metrics`` (stage keys + QC's), QC ``flags`` with ``reasons``,
    the resulting ``quality_flags`` column, and whether anything in the database changed."""

    activity_id: str
    metrics: dict[str, Any]
    flags: int
    quality_flags: int
    reasons: list[str]
    changed: bool


def qc_activity_id(product_id: str) -> str:
    """The deterministic id of the QC activity of a product."""
    return make_id("act", QC_STAGE, product_id)


def load_product(engine: Engine, product_id: str) -> ProductRow:
    """The product row; ``InvalidInput`` (``qc.unknown_product``) if it does not exist."""
    p = table("products")
    with session_scope(engine) as s:
        row = s.execute(select(p.c.id, p.c.kind, p.c.instrument, p.c.filter, p.c.object_key, p.c.metrics)
                        .where(p.c.id == product_id)).first()
    if row is None:
        raise InvalidInput(f"product {product_id} does not exist", code="qc.unknown_product", id=product_id)
    return ProductRow(row.id, row.kind, row.instrument, row.filter, row.object_key, dict(row.metrics or {}))


def record_qc(session: Session, product_id: str, measured: Mapping[str, Any], thresholds: Mapping[str, Bounds],
              params: Mapping[str, Any], started: datetime) -> QcOutcome:
    """Merge ``measured`` into the product's metrics (QC's values win, other keys stay), evaluate the
    thresholds on the merged metrics, set QC's bits of ``quality_flags``, and record the activity with
    a ``used`` edge (role ``subject``); ``params`` (plus flags and reasons) become the activity's params."""
    products, activities = table("products"), table("activities")
    row = session.execute(select(products.c.metrics, products.c.quality_flags)
                          .where(products.c.id == product_id).with_for_update()).first()
    if row is None:
        raise InvalidInput(f"product {product_id} does not exist", code="qc.unknown_product", id=product_id)
    old = dict(row.metrics or {})
    merged = {**old, **measured}
    flags, reasons = evaluate(merged, thresholds)
    quality_flags = (int(row.quality_flags) & ~QC_MASK) | flags
    changed = merged != old or quality_flags != row.quality_flags
    if changed:
        session.execute(update(products).where(products.c.id == product_id)
                        .values(metrics=merged, quality_flags=quality_flags))
    act = qc_activity_id(product_id)
    full = {**params, "thresholds": {m: b.to_dict() for m, b in sorted(thresholds.items())},
            "quality_flags": flags, "flags": flag_names(flags), "reasons": reasons}
    inserted = insert_ignore(session, activities, [{
        "id": act, "stage": QC_STAGE, "code_version": f"{__version__}/{QC_STAGE}-{QC_VERSION}",
        "host": socket.gethostname(), "params": full, "started_at": started, "ended_at": utcnow(),
        "status": "succeeded"}])
    if not inserted and session.scalar(select(activities.c.params).where(activities.c.id == act)) != full:
        # Same product judged differently (thresholds or code changed): the activity tells the latest verdict.
        session.execute(update(activities).where(activities.c.id == act).values(params=full))
        changed = True
    edges = insert_ignore(session, table("lineage_edges"), [{
        "activity_id": act, "entity_id": product_id, "entity_kind": "product", "relation": "used",
        "role": "subject"}])
    return QcOutcome(act, merged, flags, quality_flags, reasons, changed or bool(inserted) or bool(edges))
