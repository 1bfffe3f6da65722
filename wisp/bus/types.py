"""Value types of the consumer wrapper: delivery metadata, failure records, retry back-off."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

FailureKind = Literal["invalid", "bug", "exhausted"]

#: JetStream de-duplication header: publishers set it to the id of the entity or command.
MSG_ID_HEADER = "Nats-Msg-Id"
#: Full protobuf name of the payload (e.g. ``wisp.v1.FrameIngested``); consumers check it when present.
MSG_TYPE_HEADER = "Wisp-Msg-Type"


@dataclass(frozen=True)
class DeliveryInfo:
    """What the handler may know about one delivery of a message."""

    subject: str
    msg_id: str | None
    num_delivered: int
    stream_seq: int
    stream: str
    consumer: str
    timestamp: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_redelivery(self) -> bool:
        """True when an earlier delivery of this message was not acknowledged."""
        return self.num_delivered > 1


@dataclass(frozen=True)
class FailureRecord:
    """A message the bus gave up on, with the reason: the input of the dead-letter table.

    ``kind`` is ``invalid`` (the input is wrong), ``bug`` (an unexpected exception; ``traceback`` set)
    or ``exhausted`` (transient failures, or crashes, on every allowed delivery).
    """

    kind: FailureKind
    stream: str
    subject: str
    consumer: str
    msg_id: str | None
    deliveries: int
    payload: bytes
    error_code: str
    message: str
    traceback: str | None = None
    stream_seq: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)


class FailureRecorder(Protocol):
    """Stores a :class:`FailureRecord` durably (the lead wires a database-backed one).

    May be a plain or an ``async`` callable; a plain one runs in a worker thread. It must raise if it
    could not store the record: the message is then handed back for a later retry instead of dropped.
    """

    def __call__(self, record: FailureRecord, /) -> Awaitable[None] | None: ...


async def call_recorder(recorder: FailureRecorder, record: FailureRecord) -> None:
    """Run ``recorder`` (sync in a thread, async awaited) and wait until it has stored ``record``."""
    target = getattr(recorder, "__call__", recorder)  # noqa: B004 - callable objects with async __call__
    if inspect.iscoroutinefunction(recorder) or inspect.iscoroutinefunction(target):
        result: object = recorder(record)
    else:
        result = await asyncio.to_thread(recorder, record)
    if inspect.isawaitable(result):
        await result


@dataclass(frozen=True)
class Backoff:
    """Delay before redelivering after a :class:`~wisp.errors.Transient` failure: exponential, capped.

    Delivery ``n`` (1-based) that failed is retried after ``min(initial_s * factor**(n-1), max_s)``.
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s:
            raise ValueError(f"invalid back-off {self}: need initial_s > 0, factor >= 1, max_s >= initial_s")

    def delay(self, num_delivered: int) -> float:
        """Seconds to wait after the ``num_delivered``-th delivery failed transiently."""
        exponent = max(num_delivered - 1, 0)
        if exponent > 64:
            return self.max_s
        return float(min(self.initial_s * self.factor**exponent, self.max_s))
