"""Operational records: quarantined files, dead letters, the transactional outbox (DESIGN.md §4) and jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, LargeBinary, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from wisp.db.base import DEAD_LETTER_KINDS, FILE_SOURCES, JOB_STATUSES, Base, created_at_column, one_of
from wisp.db.types import JSONType, UTCDateTime, utcnow


class Quarantine(Base):
    """A file that ingest refused, once per checksum; seeing it again bumps ``seen_count``."""

    __tablename__ = "quarantine"
    __table_args__ = (
        CheckConstraint(one_of("source", FILE_SOURCES), name="source"),
        CheckConstraint("seen_count >= 1", name="seen_count"),
        Index("ix_quarantine_last_seen", "last_seen"),
        {"comment": "Refused input files and why (one row per checksum)"},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Row number")
    sha256: Mapped[str] = mapped_column(unique=True, comment="sha256 of the file, 64 lowercase hex digits")
    filename: Mapped[str] = mapped_column(comment="File name as offered (informational)")
    source: Mapped[str] = mapped_column(comment="How it arrived: 'upload', 'watch' or 'command'")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="File size in bytes")
    object_key: Mapped[str | None] = mapped_column(
        comment="Where the refused bytes are kept in the object store, if they are")
    error_code: Mapped[str] = mapped_column(comment="Stable error code (wisp.errors), e.g. 'input.invalid'")
    message: Mapped[str] = mapped_column(Text, comment="Human-readable reason")
    details: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="Structured reason: hdu, keyword, expected, ... (JSON)")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="First refusal (UTC)")
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="Latest refusal (UTC)")
    seen_count: Mapped[int] = mapped_column(default=1, server_default=text("1"),
                                            comment="How many times the file was offered")


class DeadLetter(Base):
    """A bus message no consumer could process, kept whole with the reason."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        CheckConstraint(one_of("kind", DEAD_LETTER_KINDS), name="kind"),
        Index("ix_dead_letters_created_at", "created_at"),
        Index("ix_dead_letters_msg_id", "msg_id"),
        {"comment": "Messages given up on: invalid input, bugs, or retries exhausted"},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Row number")
    kind: Mapped[str] = mapped_column(
        comment="'invalid' (bad input), 'bug' (unexpected error) or 'exhausted'")
    stream: Mapped[str] = mapped_column(comment="JetStream stream name")
    subject: Mapped[str] = mapped_column(comment="Subject of the message")
    consumer: Mapped[str] = mapped_column(comment="Durable consumer that gave up")
    msg_id: Mapped[str | None] = mapped_column(comment="Nats-Msg-Id of the message, if it had one")
    deliveries: Mapped[int] = mapped_column(Integer, default=1, comment="Delivery attempts made")
    payload: Mapped[bytes] = mapped_column(LargeBinary, comment="Message body as received (bytes)")
    error_code: Mapped[str] = mapped_column(comment="Stable error code, e.g. 'input.invalid' or 'bug'")
    message: Mapped[str] = mapped_column(Text, comment="Human-readable reason")
    traceback: Mapped[str | None] = mapped_column(Text, comment="Python traceback for bugs (operators only)")
    created_at: Mapped[datetime] = created_at_column()


class OutboxMessage(Base):
    """An event committed with the rows it announces; a relay publishes it and sets ``published_at``."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's query: oldest unpublished first. Partial on PostgreSQL.
        Index("ix_outbox_unpublished", "published_at", "id",
              postgresql_where=text("published_at IS NULL")),
        {"comment": "Transactional outbox of bus events"},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    comment="Sequence number (publish order)")
    subject: Mapped[str] = mapped_column(comment="NATS subject to publish on")
    msg_id: Mapped[str] = mapped_column(
        unique=True, comment="Nats-Msg-Id (de-duplication key), e.g. the product id")
    payload: Mapped[bytes] = mapped_column(LargeBinary, comment="Message body (serialised protobuf)")
    headers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict,
                                                    comment="Extra message headers {name: value} (JSON)")
    created_at: Mapped[datetime] = created_at_column()
    published_at: Mapped[datetime | None] = mapped_column(
        comment="When the relay published it (UTC); NULL = pending")


class Job(Base):
    """A client's request for processing (reduce a night, coadd a field, ...) and how far it has got."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(one_of("status", JOB_STATUSES), name="status"),
        CheckConstraint("progress BETWEEN 0 AND 1", name="progress"),
        {"comment": "Processing requests (jobs) and their progress"},
    )

    id: Mapped[str] = mapped_column(primary_key=True, comment="Job id (activities.job_id refers to it)")
    kind: Mapped[str] = mapped_column(comment="What to do: 'reduce', 'coadd', 'catalog', ...")
    target: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="What to do it on, e.g. {instrument, night, field, filter} (JSON)")
    status: Mapped[str] = mapped_column(
        default="queued", server_default="queued",
        comment="'queued', 'running', 'succeeded', 'failed' or 'cancelled'")
    progress: Mapped[float] = mapped_column(default=0.0, server_default=text("0"),
                                            comment="Fraction done, 0 to 1 (dimensionless)")
    message: Mapped[str] = mapped_column(Text, default="", server_default="",
                                         comment="Latest status message for the user; '' if none")
    created_at: Mapped[datetime] = created_at_column("When it was requested (UTC)")
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.current_timestamp(),
        comment="When status, progress or message last changed (UTC)")
