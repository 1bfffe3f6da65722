"""Products (calibrations, reduced frames, ...), their W3C PROV lineage (DESIGN.md §5, §6), the sources of
their catalogues (the cone-search index) and why each calibration was chosen."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
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
from wisp.db.models.frames import Exposure, RawFrame
from wisp.db.models.instruments import Chip, Filter, Instrument
from wisp.db.types import JSONType, UTCDateTime, utcnow


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
        # "The products of this frame / exposure": per-chip and per-exposure look-ups by kind.
        Index("ix_products_kind_frame_id", "kind", "frame_id"),
        Index("ix_products_kind_exposure_id", "kind", "exposure_id"),
        # "The reduced frames / catalogues of this field on this night in this filter".
        Index("ix_products_night_field", "kind", "instrument", "night", "field", "filter"),
        Index("ix_products_dec_ra", "dec_deg", "ra_deg"),
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
    stage: Mapped[str | None] = mapped_column(
        comment="Stage that made it: 'master_bias', 'reduce', 'astrometry', 'catalog', 'coadd', 'refcat', "
                "'qc', ...")
    night: Mapped[str | None] = mapped_column(
        comment="Observing night as 'YYYY-MM-DD': the local date at the start of the night; NULL if none")
    field: Mapped[str | None] = mapped_column(
        comment="Field name (OBJECT keyword of its inputs); NULL if not tied to one")
    exposure_id: Mapped[str | None] = mapped_column(
        ForeignKey("exposures.id"), comment="Exposure it derives from (exposures.id); NULL if none or many")
    frame_id: Mapped[str | None] = mapped_column(
        ForeignKey("raw_frames.id"),
        comment="Per-chip products: the raw frame it derives from (raw_frames.id); NULL otherwise")
    validity_note: Mapped[str] = mapped_column(
        Text, default="", server_default="",
        comment="Why a user marked it bad or qualified (is_valid 0 or 2); '' if never")
    mjd_obs: Mapped[float | None] = mapped_column(
        comment="Observation time, MJD (UTC) in days: start of the exposure for single-exposure products")
    ra_deg: Mapped[float | None] = mapped_column(comment="Centre right ascension (ICRS) in degrees")
    dec_deg: Mapped[float | None] = mapped_column(comment="Centre declination (ICRS) in degrees")
    metrics: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default=text("'{}'"),
        comment="QC and stage metrics as {name: value}, values in the units their names say (JSON)")

    instrument_ref: Mapped[Instrument | None] = relationship(overlaps="chip_ref,filter_ref")
    chip_ref: Mapped[Chip | None] = relationship(overlaps="instrument_ref,filter_ref")
    filter_ref: Mapped[Filter | None] = relationship(overlaps="instrument_ref,chip_ref")
    exposure: Mapped[Exposure | None] = relationship()
    frame: Mapped[RawFrame | None] = relationship()


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


class Source(Base):
    """One detected source of a catalogue product: the index cone searches run on."""

    __tablename__ = "sources"
    __table_args__ = (
        Index("ix_sources_dec_ra", "dec_deg", "ra_deg"),
        {"comment": "Sources of the catalogue products (one row per detection): the cone-search index"},
    )

    # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY auto-increments.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                    comment="Row number")
    product_id: Mapped[str] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True,
        comment="Catalogue the source is in (products.id); deleting the catalogue deletes its sources")
    number: Mapped[int] = mapped_column(comment="Source number in its catalogue (e.g. SExtractor NUMBER)")
    ra_deg: Mapped[float] = mapped_column(comment="Right ascension (ICRS) in degrees")
    dec_deg: Mapped[float] = mapped_column(comment="Declination (ICRS) in degrees")
    x: Mapped[float] = mapped_column(comment="Column position in pixels, 0-based (0 = centre of first pixel)")
    y: Mapped[float] = mapped_column(comment="Row position in pixels, 0-based (0 = centre of first pixel)")
    mag: Mapped[float | None] = mapped_column(
        comment="Calibrated magnitude (AB-like, zeropoint applied) in mag; NULL if not calibrated")
    mag_err: Mapped[float | None] = mapped_column(comment="Uncertainty of mag (1 sigma) in mag")
    flux: Mapped[float | None] = mapped_column(comment="Flux in e- (total electrons in the measurement)")
    flux_err: Mapped[float | None] = mapped_column(comment="Uncertainty of flux (1 sigma) in e-")
    fwhm_arcsec: Mapped[float | None] = mapped_column(comment="Full width at half maximum in arcsec")
    ellipticity: Mapped[float | None] = mapped_column(comment="Ellipticity 1 - b/a (dimensionless)")
    flags: Mapped[int] = mapped_column(
        default=0, server_default=text("0"),
        comment="Extraction flags bitmask (e.g. SExtractor FLAGS); 0 = nothing flagged")

    product: Mapped[Product] = relationship()


class CalibSelection(Base):
    """Which calibration of one kind was chosen for a raw frame, among which candidates, and why (§6)."""

    __tablename__ = "calib_selections"
    __table_args__ = (
        # "Why this calibration for this frame": the latest decision per frame and kind.
        Index("ix_calib_selections_frame_kind", "frame_id", "kind", "decided_at"),
        {"comment": "Calibration choices: for each raw frame and kind, the candidates and the reason"},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Row number")
    frame_id: Mapped[str] = mapped_column(ForeignKey("raw_frames.id"),
                                          comment="Raw frame the calibration is for (raw_frames.id)")
    kind: Mapped[str] = mapped_column(comment="Calibration kind: 'bias', 'flat', ...")
    chosen_id: Mapped[str | None] = mapped_column(
        ForeignKey("products.id"), comment="The calibration chosen (products.id); NULL = none found")
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list,
        comment="Candidates considered: [{id, verdict: 'chosen' or 'rejected', reason}] (JSON)")
    reason: Mapped[str] = mapped_column(Text, comment="Why, in a sentence a user understands")
    decided_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.current_timestamp(),
        comment="When the choice was made (UTC)")
    activity_id: Mapped[str | None] = mapped_column(
        ForeignKey("activities.id"), comment="Stage run that made the choice (activities.id), if any")

    frame: Mapped[RawFrame] = relationship()
    chosen: Mapped[Product | None] = relationship()
    activity: Mapped[Activity | None] = relationship()
