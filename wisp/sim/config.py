"""Simulation configuration: one frozen dataclass with documented defaults, plus the filter and site tables.

Units are stated on every field: pixels (px), arcseconds (arcsec), electrons (e-), ADU, seconds (s).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wisp.errors import InvalidInput


@dataclass(frozen=True)
class FilterSpec:
    """Photometric properties of one filter.

    ``zeropoint``: magnitude giving 1 e-/s above the atmosphere; ``extinction``: mag per airmass;
    ``sky_mag``: dark-sky surface brightness at zenith, mag/arcsec^2.
    """

    name: str
    zeropoint: float
    extinction: float
    sky_mag: float


FILTERS: dict[str, FilterSpec] = {
    "u": FilterSpec("u", 23.4, 0.45, 22.4),
    "g": FilterSpec("g", 25.0, 0.18, 22.1),
    "r": FilterSpec("r", 25.2, 0.10, 21.1),
    "i": FilterSpec("i", 24.9, 0.06, 20.2),
    "z": FilterSpec("z", 24.2, 0.05, 19.2),
}


@dataclass(frozen=True)
class Site:
    """Observatory location: geodetic longitude/latitude (deg, east positive) and height (m)."""

    name: str = "La Silla"
    lon_deg: float = -70.7346
    lat_deg: float = -29.2584
    height_m: float = 2400.0


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated night; the same config always gives the same bytes.

    Camera: ``n_chips`` (1..16) data sections of ``chip_nx`` x ``chip_ny`` px, plus ``overscan`` columns
    per row, tiled in a grid with ``gap`` px between chips, ``pixel_scale`` arcsec/px, ``pixel_um``
    physical pixel size (for the cosmic-ray rate).
    Night: ``n_bias`` biases, ``n_flats_per_filter`` dome flats per filter (``flat_exptime`` s,
    ``lamp_level`` e-/px), and per field and filter ``n_dither_per_field_filter`` science exposures of
    ``exptime`` s, dithered by ``dither_arcsec``. ``fields`` are (name, ra_deg, dec_deg). Calibrations start
    at ``calib_start_ut`` hours UT on ``night_date``, science at ``science_start_ut`` hours after
    ``night_date`` 00:00 UT (values > 24 fall on the next day); each readout takes ``readout_s``.
    Optics: Moffat ``psf_beta``, seeing FWHM drawn in ``seeing_arcsec``; SIP distortion of
    ``distortion_px`` at the mosaic corner; ``vignetting`` fractional loss at the mosaic corner.
    Header WCS errors: pointing offset in ``pointing_error_arcmin``, rotation in ``rotation_error_deg``.
    Sky: ``star_density`` stars/deg^2 with ``star_mags`` (r band), plus ``bright_stars`` per field of
    r = 10.5-13 near the field centre (so saturation and bleeding are always exercised);
    ``galaxy_density`` galaxies/deg^2 with ``galaxy_mags``; the reference catalogue keeps stars with
    r < ``refcat_mag_limit`` at ``refcat_epoch``.
    Artefacts: ``cr_rate`` cosmic rays per cm^2 per minute; a satellite trail in every ``trail_every``-th
    science exposure (0 disables); ``hot_pixel_fraction``/``cold_pixel_fraction`` of pixels and
    ``bad_columns`` per chip; ``dust_per_chip`` dust donuts.
    """

    seed: int = 42
    n_chips: int = 4
    chip_nx: int = 1024
    chip_ny: int = 1024
    overscan: int = 32
    gap: int = 20
    pixel_scale: float = 0.26
    pixel_um: float = 15.0
    filters: tuple[str, ...] = ("g", "r")
    n_bias: int = 5
    n_flats_per_filter: int = 3
    fields: tuple[tuple[str, float, float], ...] = (("COSMOS-1", 150.1, 2.2),)
    n_dither_per_field_filter: int = 5
    dither_arcsec: float = 30.0
    exptime: float = 120.0
    flat_exptime: float = 5.0
    lamp_level: float = 20000.0
    readout_s: float = 30.0
    night_date: str = "2026-03-14"
    calib_start_ut: float = 21.0
    science_start_ut: float = 26.0
    site: Site = Site()
    observer: str = "wisp-sim"
    psf_beta: float = 3.0
    seeing_arcsec: tuple[float, float] = (0.8, 1.2)
    distortion_px: float = 1.5
    vignetting: float = 0.08
    pointing_error_arcmin: tuple[float, float] = (1.0, 3.0)
    rotation_error_deg: tuple[float, float] = (0.2, 1.0)
    star_density: float = 10000.0
    star_mags: tuple[float, float] = (14.0, 23.0)
    bright_stars: int = 2
    galaxy_density: float = 30000.0
    galaxy_mags: tuple[float, float] = (17.0, 24.0)
    refcat_mag_limit: float = 21.0
    refcat_epoch: float = 2016.0
    cr_rate: float = 3.0
    trail_every: int = 8
    hot_pixel_fraction: float = 5e-5
    cold_pixel_fraction: float = 3e-5
    bad_columns: int = 2
    dust_per_chip: int = 3
    n_dark: int = 0
    dark_exptime: float = 300.0
    dark_rate: float = 0.0
    flat_blocks: int = 1
    flat_lamp_ratio: float = 0.9
    dome_flat_gradient: float = 0.0
    fringe_filters: tuple[str, ...] = ()
    fringe_amplitude: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "fringe_filters", tuple(self.fringe_filters))
        object.__setattr__(
            self, "fields", tuple((str(n), float(ra), float(dec)) for n, ra, dec in self.fields))
        problems = []
        if not 1 <= self.n_chips <= 16:
            problems.append(f"n_chips={self.n_chips} must be in 1..16")
        if min(self.chip_nx, self.chip_ny) < 64 or self.overscan < 1 or self.gap < 0:
            problems.append("chips need >= 64 px per side, overscan >= 1 and gap >= 0")
        unknown = [f for f in self.filters if f not in FILTERS]
        if unknown or not self.filters or len(set(self.filters)) != len(self.filters):
            problems.append(f"filters {self.filters} must be distinct names from {sorted(FILTERS)}")
        if min(self.n_bias, self.n_flats_per_filter, self.n_dither_per_field_filter) < 0:
            problems.append("exposure counts must be >= 0")
        if self.n_dither_per_field_filter > 0 and not self.fields:
            problems.append("science exposures need at least one field")
        if self.exptime <= 0 or self.flat_exptime <= 0 or self.pixel_scale <= 0:
            problems.append("exposure times and pixel_scale must be positive")
        if self.n_dark < 0 or self.dark_exptime <= 0 or self.dark_rate < 0:
            problems.append("n_dark must be >= 0, dark_exptime > 0 and dark_rate >= 0")
        if self.flat_blocks not in (1, 2) or not 0.1 <= self.flat_lamp_ratio <= 10.0:
            problems.append("flat_blocks must be 1 or 2 and flat_lamp_ratio in 0.1..10")
        if not abs(self.dome_flat_gradient) < 0.5:
            problems.append("dome_flat_gradient must be in (-0.5, 0.5)")
        if set(self.fringe_filters) - set(self.filters) or not 0.0 <= self.fringe_amplitude < 0.5:
            problems.append(f"fringe_filters {self.fringe_filters} must be among filters {self.filters} and "
                            "fringe_amplitude in [0, 0.5)")
        if problems:
            raise InvalidInput("invalid simulation config: " + "; ".join(problems), code="sim.config")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (tuples become lists when dumped); the optional extras
        (``OPTIONAL_FIELDS``) only when they differ from their defaults, so that a night without them
        writes the same ``night.json`` as before they existed."""
        data = asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        """The inverse of ``to_dict`` (e.g. the ``config`` of ``truth/night.json``): the same night again."""
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if isinstance(values.get("site"), dict):
            values["site"] = Site(**values["site"])
        return cls(**values)

    @property
    def n_exposures(self) -> int:
        """Total number of exposures in the night."""
        per_field = len(self.filters) * self.n_dither_per_field_filter
        flats = self.n_flats_per_filter * len(self.filters) * self.flat_blocks
        return self.n_bias + self.n_dark + flats + len(self.fields) * per_field


#: the optional extras and their defaults ("off"): left out of ``SimConfig.to_dict`` when at the default
OPTIONAL_FIELDS: dict[str, Any] = {
    "n_dark": 0, "dark_exptime": 300.0, "dark_rate": 0.0, "flat_blocks": 1, "flat_lamp_ratio": 0.9,
    "dome_flat_gradient": 0.0, "fringe_filters": (), "fringe_amplitude": 0.02,
}


def stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random generator for (seed, keys): stable across runs, platforms and call order."""
    spawn = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn))
