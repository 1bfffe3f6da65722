"""Instruments, their chips and filters, as loaded from the instrument description files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from wisp.db.base import Base, created_at_column


class Instrument(Base):
    """A camera on a telescope."""

    __tablename__ = "instruments"
    __table_args__ = ({"comment": "Instruments known to Wisp (one row per instrument description)"},)

    name: Mapped[str] = mapped_column(String, primary_key=True,
                                      comment="Instrument name, as in its description file (e.g. 'WFC')")
    telescope: Mapped[str] = mapped_column(String, comment="Telescope name")
    description: Mapped[str] = mapped_column(String, default="", server_default="", comment="Free text")
    definition: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="The instrument description as loaded (JSON)")
    created_at: Mapped[datetime] = created_at_column()


class Chip(Base):
    """One detector (CCD) of an instrument, with its electronic properties."""

    __tablename__ = "chips"
    __table_args__ = (
        UniqueConstraint("instrument", "name"),
        {"comment": "Detectors of each instrument"},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Chip number (surrogate key)")
    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"), comment="instruments.name")
    name: Mapped[str] = mapped_column(comment="Chip name, unique within the instrument (e.g. 'ccd1')")
    extname: Mapped[str | None] = mapped_column(comment="EXTNAME of the HDU that holds this chip, if named")
    gain: Mapped[float | None] = mapped_column(comment="Gain in e-/ADU")
    read_noise: Mapped[float | None] = mapped_column(comment="Read noise in e- (rms)")
    saturation: Mapped[float | None] = mapped_column(comment="Saturation level in ADU")
    datasec: Mapped[str | None] = mapped_column(
        comment="Illuminated region, FITS section '[x1:x2,y1:y2]' (1-based)")
    biassec: Mapped[str | None] = mapped_column(
        comment="Overscan region, FITS section '[x1:x2,y1:y2]' (1-based)")

    instrument_ref: Mapped[Instrument] = relationship()


class Filter(Base):
    """A filter of an instrument, and the photometric band it stands for."""

    __tablename__ = "filters"
    __table_args__ = ({"comment": "Filters of each instrument"},)

    instrument: Mapped[str] = mapped_column(ForeignKey("instruments.name"), primary_key=True,
                                            comment="instruments.name")
    name: Mapped[str] = mapped_column(
        primary_key=True, comment="Filter name as Wisp records it (e.g. 'r_SDSS')")
    band: Mapped[str] = mapped_column(comment="Photometric band (e.g. 'r')")

    instrument_ref: Mapped[Instrument] = relationship()
