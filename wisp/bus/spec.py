"""Declarative description of a durable pull consumer."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from wisp.bus.types import Backoff
from wisp.errors import ConfigError

_BAD_NAME_CHARS = set(" \t\r\n.*>")


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer: which stream and subjects, and its redelivery policy.

    All replicas of a service use the same ``durable`` name, so they share the work. ``ack_wait_s`` is
    how long a silent delivery may take before the server redelivers it (heartbeats extend it while a
    handler runs); ``max_deliver`` bounds deliveries; ``backoff`` spaces retries after transient errors
    (client-side ``nak`` delays; the server-side back-off list is not used because it overrides ack_wait).
    """

    stream: str
    durable: str
    subjects: tuple[str, ...]
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    max_ack_pending: int = 1000
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    description: str = ""

    def __post_init__(self) -> None:
        if not self.durable or _BAD_NAME_CHARS & set(self.durable):
            raise ConfigError(f"consumer name {self.durable!r} must be non-empty, without spaces, . * >")
        if not self.subjects:
            raise ConfigError(f"consumer {self.durable}: needs at least one filter subject")
        if self.ack_wait_s <= 0 or self.max_deliver < 1 or self.max_ack_pending < 1:
            raise ConfigError(f"consumer {self.durable}: ack_wait_s > 0, max_deliver >= 1 and "
                              "max_ack_pending >= 1 are required")

    def config(self) -> ConsumerConfig:
        """The nats-py consumer configuration (explicit ack, pull)."""
        single = len(self.subjects) == 1
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=self.deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            filter_subject=self.subjects[0] if single else None,
            filter_subjects=None if single else list(self.subjects),
            max_ack_pending=self.max_ack_pending,
        )
