"""Counters of one consumer, for the ServiceInfo.Stats RPC."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wisp.v1 import common_pb2, service_pb2


@dataclass
class ConsumerStats:
    """Counters since the consumer started.

    Every finished delivery counts once in ``handled`` and once in exactly one of ``succeeded``,
    ``invalid``, ``bug``, ``exhausted`` or ``retried``. ``exhausted`` also counts messages the server
    gave up on after ``max_deliver`` deliveries without an acknowledgement (seen via its advisory), which
    are not in ``handled``. ``ack_errors`` counts ack/nak/term that could not be sent or confirmed (the
    message may be delivered again; handlers are idempotent).
    """

    handled: int = 0
    succeeded: int = 0
    invalid: int = 0
    bug: int = 0
    exhausted: int = 0
    retried: int = 0
    in_flight: int = 0
    ack_errors: int = 0
    fetch_errors: int = 0
    total_ms: float = 0.0
    last_error_code: str | None = None
    last_error_message: str | None = None

    @property
    def mean_ms(self) -> float:
        """Mean handling time of the finished deliveries in milliseconds (0 if none)."""
        return self.total_ms / self.handled if self.handled else 0.0

    def snapshot(self) -> ConsumerStats:
        """An independent copy."""
        return dataclasses.replace(self)

    def to_proto(self, name: str) -> service_pb2.EndpointStats:
        """The ``EndpointStats`` message of this consumer, named ``name``."""
        out = service_pb2.EndpointStats(
            name=name,
            handled=self.handled,
            succeeded=self.succeeded,
            failed_invalid=self.invalid,
            failed_bug=self.bug,
            failed_exhausted=self.exhausted,
            retried=self.retried,
            in_flight=self.in_flight,
            average_processing_ms=self.mean_ms,
            ack_errors=self.ack_errors,
        )
        if self.last_error_code is not None:
            out.last_error.CopyFrom(
                common_pb2.ErrorInfo(code=self.last_error_code, message=self.last_error_message or "")
            )
        return out
