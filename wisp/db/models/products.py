"""Products (calibrations, reduced frames, ...) and their W3C PROV lineage (DESIGN.md §5, §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from wisp.db.base import (
    ACTIVITY_STATUSES,
    ENTITY_KINDS,
    PRODUCT_STATUSES,
    RELATIONS,
    AccessMixin,
    Base,
    QualityMixin,
    access_checks,
    created_at_column,
    one_of,
    quality_checks,
)
from wisp.db.models.instruments import Chip, Filter, Instrument
from wisp.db.types import UTCDateTime, utcnow


class Product(AccessMixin, QualityMixin, Base):
    """Anything a stage made: a master calibration, a reduced frame, a solution, a coadd, a catalogue."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint(one_of("status", PRODUCT_STATUSES), name="status"),
        CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from", name="validity"),
        CheckConstraint("size_bytes IS NULL OR size_bytes >= 0", name="size_bytes"),
        ForeignKeyConstraint(["instrument", "chip"], ["chips.instrument", "chips.name"]),
        ForeignKeyConstraint(["instrument", "filter"], ["filters.instrument", "filters.name"]),
        *access_checks(),
        *quality_checks(),
        # Calibration selection: same kind/instrument/chip/filter, valid at a time, newest first.
        Index("ix_products_calib", "kind", "instrument", "chip", "filter", "valid_from"),
        Index("ix_products_created_at", "created_at"),
        Index("ix_products_sha256", "sha256"),
        {"comment": "Products made by the stages (one row per product)"},
    )

    id: Mapped[str] = mapped_column(
        primary_key=True, comment="Deterministic id: hash of stage, inputs, parameters, code version")
    kind: Mapped[str] = mapped_column(
        comment="What it is: 'master_bias', 'master_flat', 'reduced', 'coadd', ...")
    instrument: Mapped[str | None] = mapped_column(ForeignKey("instruments.name"),
                                                   comment="instruments.name; NULL if not tied to one")
    chip: Mapped[str | None] = mapped_column(comment="Chip name; NULL for whole-exposure or sky products")
    filter: Mapped[str | None] = mapped_column(comment="Filter name; NULL where the filter does not matter")
    object_key: Mapped[str | None] = mapped_column(
        unique=True, comment="Key of the product's file in the object store; NULL if it has no file")
    sha256: Mapped[str | None] = mapped_column(comment="sha256 of the stored file, 64 lowercase hex digits")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="Stored file size in bytes")
    valid_from: Mapped[datetime | None] = mapped_column(
        comment="Calibrations: start of the validity range (UTC, inclusive)")
    valid_to: Mapped[datetime | None] = mapped_column(
        comment="Calibrations: end of the validity range (UTC, exclusive); NULL = open-ended")
    status: Mapped[str] = mapped_column(
        default="ok", server_default="ok",
        comment="'ok', or 'outdated' when an input was marked invalid or superseded")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict,
                                                   comment="Parameters it was made with (JSON)")
    created_at: Mapped[datetime] = created_at_column(
        "When it was made (UTC); among valid calibrations the newest eclipses older ones")

    instrument_ref: Mapped[Instrument | None] = relationship(overlaps="chip_ref,filter_ref")
    chip_ref: Mapped[Chip | None] = relationship(overlaps="instrument_ref,filter_ref")
    filter_ref: Mapped[Filter | None] = relationship(overlaps="instrument_ref,chip_ref")


class Activity(Base):
    """A PROV activity: one run of a stage, with what, where and how it went."""

    __tablename__ = "activities"
    __table_args__ = (
        CheckConstraint(one_of("status", ACTIVITY_STATUSES), name="status"),
        Index("ix_activities_stage_started_at", "stage", "started_at"),
        {"comment": "Stage runs (W3C PROV activities)"},
    )

    id: Mapped[str] = mapped_column(primary_key=True, comment="Activity id (deterministic per stage run)")
    stage: Mapped[str] = mapped_column(comment="Stage that ran: 'ingest', 'calib', 'astrometry', ...")
    code_version: Mapped[str] = mapped_column(comment="Version of the code that ran")
    host: Mapped[str] = mapped_column(default="", server_default="", comment="Host (or pod) it ran on")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="Parameters of the run (JSON)")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, comment="Start (UTC)")
    ended_at: Mapped[datetime | None] = mapped_column(comment="End (UTC); NULL while running")
    status: Mapped[str] = mapped_column(default="running", server_default="running",
                                        comment="'running', 'succeeded' or 'failed'")
    log: Mapped[str] = mapped_column(Text, default="", server_default="", comment="Log of the run (text)")
    job_id: Mapped[str | None] = mapped_column(index=True,
                                               comment="Job (client request) that caused the run, if any")


class LineageEdge(Base):
    """A PROV relation between an activity and an entity (exposure, raw frame or product)."""

    __tablename__ = "lineage_edges"
    __table_args__ = (
        UniqueConstraint("activity_id", "entity_id", "relation", "role"),
        CheckConstraint(one_of("relation", RELATIONS), name="relation"),
        CheckConstraint(one_of("entity_kind", ENTITY_KINDS), name="entity_kind"),
        # "What was derived from this entity": entity -> activities that used it -> their outputs.
        Index("ix_lineage_edges_entity", "entity_id", "relation", "activity_id"),
        {"comment": "Lineage: 'used' and 'wasGeneratedBy' edges (W3C PROV)"},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Edge number")
    activity_id: Mapped[str] = mapped_column(ForeignKey("activities.id"), comment="activities.id")
    entity_id: Mapped[str] = mapped_column(comment="Id of an exposure, raw frame or product")
    entity_kind: Mapped[str] = mapped_column(comment="'exposure', 'raw_frame' or 'product'")
    relation: Mapped[str] = mapped_column(
        comment="'used' (activity read the entity) or 'wasGeneratedBy' (entity made by the activity)")
    role: Mapped[str] = mapped_column(
        default="", server_default="",
        comment="Role of the entity: 'raw', 'bias', 'flat', 'refcat', 'output', ...; '' if none")

    activity: Mapped[Activity] = relationship()
