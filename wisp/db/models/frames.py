"""Raw data: exposures (one per raw file), raw frames (one per chip) and the per-file ingest record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, ForeignKeyConstraint, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from wisp.db.base import (
    FILE_SOURCES,
    OBSTYPES,
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


class Exposure(AccessMixin, Base):
    """One raw multi-extension file as ingested: the immutable, content-addressed original."""

    __tablename__ = "exposures"
    __table_args__ = (
        CheckConstraint(one_of("obstype", OBSTYPES), name="obstype"),
        CheckConstraint("size_bytes >= 0", name="size_bytes"),
        ForeignKeyConstraint(["instrument", "filter"], ["filters.instrument", "filters.name"]),
        *access_checks(),
        Index("ix_exposures_search", "instrument", "obstype", "filter", "mjd_obs"),
        Index("ix_exposures_object", "object"),
        Index("ix_exposures_dec_ra", "dec_deg", "ra_deg"),
        {"comment": "Raw exposures: one row per ingested raw file"},
    )

    id: Mapped[str] = mapped_column(primary_key=True, comment="Deterministic id 'exp-<hash>' (wisp.ids)")
    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"), comment="instruments.name")
    sha256: Mapped[str] = mapped_column(
        unique=True, comment="sha256 of the raw file, 64 lowercase hex digits")
    object_key: Mapped[str] = mapped_column(unique=True, comment="Key of the raw file in the object store")
    filename: Mapped[str] = mapped_column(
        comment="Original file name; informational only, never used as a key")
    size_bytes: Mapped[int] = mapped_column(BigInteger, comment="Raw file size in bytes")
    obstype: Mapped[str] = mapped_column(comment="Observation type: bias, dark, flat, science, ...")
    filter: Mapped[str | None] = mapped_column(comment="Filter name (filters.name); NULL when none applies")
    exptime: Mapped[float | None] = mapped_column(comment="Exposure time in s")
    date_obs: Mapped[datetime | None] = mapped_column(comment="Start of the exposure (UTC)")
    mjd_obs: Mapped[float | None] = mapped_column(comment="Start of the exposure, MJD (UTC) in days")
    ra_deg: Mapped[float | None] = mapped_column(comment="Pointing right ascension (ICRS) in degrees")
    dec_deg: Mapped[float | None] = mapped_column(comment="Pointing declination (ICRS) in degrees")
    airmass: Mapped[float | None] = mapped_column(comment="Airmass at the start (dimensionless)")
    object: Mapped[str | None] = mapped_column(comment="OBJECT keyword: target or field name")
    n_chips: Mapped[int] = mapped_column(comment="Number of chips (raw frames) in the file")
    header: Mapped[dict[str, Any]] = mapped_column(default=dict,
                                                   comment="Primary header as {keyword: value} (JSON)")
    created_at: Mapped[datetime] = created_at_column()

    instrument_ref: Mapped[Instrument] = relationship(overlaps="filter_ref")
    filter_ref: Mapped[Filter | None] = relationship(overlaps="instrument_ref")


class RawFrame(AccessMixin, QualityMixin, Base):
    """One chip of one exposure: the unit every later stage works on."""

    __tablename__ = "raw_frames"
    __table_args__ = (
        UniqueConstraint("exposure_id", "hdu_index"),
        UniqueConstraint("exposure_id", "chip"),
        CheckConstraint(one_of("obstype", OBSTYPES), name="obstype"),
        CheckConstraint("hdu_index >= 0", name="hdu_index"),
        ForeignKeyConstraint(["instrument", "chip"], ["chips.instrument", "chips.name"]),
        ForeignKeyConstraint(["instrument", "filter"], ["filters.instrument", "filters.name"]),
        *access_checks(),
        *quality_checks(),
        Index("ix_raw_frames_search", "instrument", "chip", "filter", "obstype", "mjd_obs"),
        Index("ix_raw_frames_object", "object"),
        Index("ix_raw_frames_dec_ra", "dec_deg", "ra_deg"),
        # Calibration and reduction planning: the frames of one night, by type, chip and filter.
        Index("ix_raw_frames_night", "instrument", "night", "obstype", "chip", "filter"),
        {"comment": "Raw frames: one row per chip of each exposure"},
    )

    id: Mapped[str] = mapped_column(primary_key=True, comment="Deterministic id 'raw-<hash>' (wisp.ids)")
    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id"), comment="exposures.id")
    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"), comment="instruments.name")
    chip: Mapped[str] = mapped_column(comment="Chip name (chips.name within the instrument)")
    hdu_index: Mapped[int] = mapped_column(comment="Index of the HDU in the raw file (0 = primary)")
    extname: Mapped[str | None] = mapped_column(comment="EXTNAME of the HDU, if any")
    obstype: Mapped[str] = mapped_column(comment="Observation type, as for the exposure")
    filter: Mapped[str | None] = mapped_column(comment="Filter name (filters.name); NULL when none applies")
    exptime: Mapped[float | None] = mapped_column(comment="Exposure time in s")
    date_obs: Mapped[datetime | None] = mapped_column(comment="Start of the exposure (UTC)")
    mjd_obs: Mapped[float | None] = mapped_column(comment="Start of the exposure, MJD (UTC) in days")
    ra_deg: Mapped[float | None] = mapped_column(
        comment="Chip centre (or pointing) right ascension (ICRS) in degrees")
    dec_deg: Mapped[float | None] = mapped_column(
        comment="Chip centre (or pointing) declination (ICRS) in degrees")
    airmass: Mapped[float | None] = mapped_column(comment="Airmass at the start (dimensionless)")
    object: Mapped[str | None] = mapped_column(comment="OBJECT keyword: target or field name")
    night: Mapped[str | None] = mapped_column(
        comment="Observing night as 'YYYY-MM-DD': the local date at the start of the night; NULL if unknown")
    naxis1: Mapped[int | None] = mapped_column(comment="Image width in pixels (NAXIS1)")
    naxis2: Mapped[int | None] = mapped_column(comment="Image height in pixels (NAXIS2)")
    bitpix: Mapped[int | None] = mapped_column(
        comment="FITS BITPIX of the stored pixels (8, 16, 32, -32, -64)")
    header: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="Extension header as {keyword: value} (JSON)")
    created_at: Mapped[datetime] = created_at_column()

    exposure: Mapped[Exposure] = relationship()
    instrument_ref: Mapped[Instrument] = relationship(overlaps="chip_ref,filter_ref")
    chip_ref: Mapped[Chip] = relationship(overlaps="instrument_ref,filter_ref")
    filter_ref: Mapped[Filter | None] = relationship(overlaps="instrument_ref,chip_ref")


class IngestedFile(Base):
    """Every file ingest accepted, by checksum: the same bytes twice are a duplicate, not a new exposure."""

    __tablename__ = "ingested_files"
    __table_args__ = (
        CheckConstraint(one_of("source", FILE_SOURCES), name="source"),
        CheckConstraint("times_seen >= 1", name="times_seen"),
        {"comment": "Files ingest accepted, keyed by checksum (duplicate detection)"},
    )

    sha256: Mapped[str] = mapped_column(
        primary_key=True, comment="sha256 of the file, 64 lowercase hex digits")
    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id"), index=True, comment="exposures.id")
    filename: Mapped[str] = mapped_column(comment="File name when first ingested (informational)")
    source: Mapped[str] = mapped_column(comment="How it arrived first: 'upload', 'watch' or 'command'")
    first_ingested: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                     comment="When it was first ingested (UTC)")
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                comment="When it was last offered again (UTC)")
    times_seen: Mapped[int] = mapped_column(default=1, comment="How many times the file was offered")

    exposure: Mapped[Exposure] = relationship()
