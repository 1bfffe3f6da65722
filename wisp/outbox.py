"""The transactional outbox relay: events committed with their rows are published, exactly once.

A stage writes its rows and the events announcing them in one transaction (table ``outbox``). This relay
publishes unpublished rows in order with ``Nats-Msg-Id`` = the row's ``msg_id`` and marks them published.
A crash between publish and mark re-publishes after restart; JetStream drops the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from wisp.bus import Bus
from wisp.db import session_scope, table
from wisp.db.types import utcnow
from wisp.errors import Transient

log = logging.getLogger(__name__)
BATCH = 200


async def relay_once(engine: Engine, bus: Bus) -> int:
    """Publish every pending outbox row; return how many were published."""
    outbox = table("outbox")

    def pending() -> list[tuple[int, str, str, bytes]]:
        with session_scope(engine) as s:
            rows = s.execute(select(outbox.c.id, outbox.c.subject, outbox.c.msg_id, outbox.c.payload)
                             .where(outbox.c.published_at.is_(None)).order_by(outbox.c.id).limit(BATCH))
            return [(r.id, r.subject, r.msg_id, r.payload) for r in rows]

    def mark(ids: list[int]) -> None:
        with session_scope(engine) as s:
            s.execute(update(outbox).where(outbox.c.id.in_(ids)).values(published_at=utcnow()))

    total = 0
    while rows := await asyncio.to_thread(pending):
        for _id, subject, msg_id, payload in rows:
            await bus.publish_raw(subject, payload, msg_id=msg_id)
        await asyncio.to_thread(mark, [r[0] for r in rows])
        total += len(rows)
    return total


class OutboxRelay:
    """Runs :func:`relay_once` when poked (after a commit) and every ``period_s`` as a safety net."""

    def __init__(self, engine: Engine, bus: Bus, period_s: float = 2.0) -> None:
        self.engine, self.bus, self.period_s = engine, bus, period_s
        self._poke = asyncio.Event()

    def poke(self) -> None:
        self._poke.set()

    async def run(self) -> None:
        while True:
            try:
                n = await relay_once(self.engine, self.bus)
                if n:
                    log.debug("published %d outbox events", n)
            except Transient as exc:
                log.warning("outbox relay waiting: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self.period_s)
            self._poke.clear()
