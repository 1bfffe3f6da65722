"""The database-backed :class:`~wisp.bus.FailureRecorder`: every message given up on gets a row."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from wisp.bus import FailureRecord
from wisp.db import session_scope
from wisp.db.models import DeadLetter


class DeadLetterRecorder:
    """Writes :class:`FailureRecord` objects to ``dead_letters`` (sync: the bus runs it in a thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, record: FailureRecord) -> None:
        with session_scope(self.engine) as session:
            session.execute(insert(DeadLetter).values(
                kind=record.kind, stream=record.stream, subject=record.subject, consumer=record.consumer,
                msg_id=record.msg_id, deliveries=record.deliveries, payload=record.payload,
                error_code=record.error_code, message=record.message, traceback=record.traceback))
