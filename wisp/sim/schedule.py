"""The night's observing plan: exposure times, pointings (true and header), airmass, seeing and sky.

Order: ``n_bias`` biases, ``n_dark`` darks, then dome flats per filter (all from ``calib_start_ut``), then per
field, per filter, ``n_dither_per_field_filter`` dithers (from ``science_start_ut``), then, with
``flat_blocks=2``, a second (morning) block of dome flats per filter. Each exposure starts when the
previous one has been read out. Airmass is computed with astropy at mid-exposure (IERS auto-download off,
so the result depends only on the installed astropy-iers-data) and rounded to 1e-4; calibration frames
point at the zenith (airmass 1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from wisp.errors import InvalidInput
from wisp.sim.config import FILTERS, SimConfig, stream
from wisp.sim.psf import PsfModel
from wisp.sim.wcs import Pointing, offset_sky


@dataclass(frozen=True)
class Exposure:
    """One planned exposure.

    ``true`` is where the camera points: the field centre + the dither offset + a few arcsec of
    jitter, rotated by ``true.rotation`` deg. ``header`` is what the telescope reports and the raw headers
    carry: ``pointing_error`` arcmin away from ``true``, rotation 0. ``sky_rate``:
    sky e-/px/s at the optical axis (before the flat field), varying linearly over the focal plane by the
    fractions ``sky_grad`` per ``r_corner`` along (u, v). ``lamp``: dome-lamp e-/px (flats). ``epoch``:
    decimal Julian year at mid-exposure (for proper motions). ``block``: flat block (0 evening, 1 morning).
    ``fringe``: fringe amplitude (fraction of the local sky at the pattern's peak; 0 = no fringes).
    """

    expid: int
    imagetyp: str
    filter: str
    exptime: float
    date_obs: str
    date_end: str
    mjd: float
    epoch: float
    object: str
    field: int
    dither: int
    header: Pointing
    true: Pointing
    pointing_error: float
    airmass: float
    psf: PsfModel | None
    sky_rate: float
    sky_grad: tuple[float, float]
    lamp: float
    trail: bool
    block: int = 0
    fringe: float = 0.0

    @property
    def filename(self) -> str:
        """Raw file name: ``sim_<expid:04d>_<bias|dark|flat_<f>|object_<f>>.fits`` (sortable, unique)."""
        kind = self.imagetyp.lower() if self.filter == "NONE" else f"{self.imagetyp.lower()}_{self.filter}"
        return f"sim_{self.expid:04d}_{kind}.fits"


def _airmass(alt_deg: np.ndarray) -> np.ndarray:
    """Kasten & Young (1989) relative air mass for an unrefracted altitude (deg)."""
    z = 90.0 - alt_deg
    return 1.0 / (np.cos(np.radians(z)) + 0.50572 * (96.07995 - z) ** -1.6364)


def _iso(t: Time) -> list[str]:
    return [s[:23] for s in np.atleast_1d(t.utc.isot)]


@dataclass(frozen=True)
class _Slot:
    imagetyp: str
    filter: str
    exptime: float
    start: float  # seconds after night_date 00:00 UT
    field: int
    dither: int
    block: int = 0


def _flats(config: SimConfig, t: float, block: int, slots: list[_Slot]) -> float:
    for f in config.filters:
        for _ in range(config.n_flats_per_filter):
            slots.append(_Slot("FLAT", f, config.flat_exptime, t, -1, -1, block))
            t += config.flat_exptime + config.readout_s
    return t


def _slots(config: SimConfig) -> list[_Slot]:
    slots = []
    t = config.calib_start_ut * 3600.0
    for _ in range(config.n_bias):
        slots.append(_Slot("BIAS", "NONE", 0.0, t, -1, -1))
        t += config.readout_s
    for _ in range(config.n_dark):
        slots.append(_Slot("DARK", "NONE", config.dark_exptime, t, -1, -1))
        t += config.dark_exptime + config.readout_s
    t = _flats(config, t, 0, slots)
    t = max(t, config.science_start_ut * 3600.0)
    for k in range(len(config.fields)):
        for f in config.filters:
            for d in range(config.n_dither_per_field_filter):
                slots.append(_Slot("OBJECT", f, config.exptime, t, k, d))
                t += config.exptime + config.readout_s
    if config.flat_blocks > 1:
        _flats(config, t, 1, slots)
    return slots


def dither_offset(config: SimConfig, dither: int) -> tuple[float, float]:
    """Nominal (east, north) offset in arcsec of a dither: a Fermat spiral of step ``dither_arcsec``."""
    radius = config.dither_arcsec * np.sqrt(dither)
    angle = np.radians(137.508 * dither)
    return float(radius * np.sin(angle)), float(radius * np.cos(angle))


def _sky_geometry(config: SimConfig, slots: list[_Slot], mids: Time) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot: commanded (ra, dec) deg (the zenith for calibrations), airmass, Julian epoch."""
    commanded = [offset_sky(*config.fields[s.field][1:], *dither_offset(config, s.dither))
                 if s.imagetyp == "OBJECT" else (np.nan, np.nan) for s in slots]
    ra_dec = np.array(commanded).reshape(-1, 2)
    calib = np.isnan(ra_dec[:, 0])
    site = config.site
    location = EarthLocation.from_geodetic(site.lon_deg * u.deg, site.lat_deg * u.deg, site.height_m * u.m)
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None), \
            iers.conf.set_temp("iers_degraded_accuracy", "ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = AltAz(obstime=mids, location=location)
        zenith = SkyCoord(alt=np.full(len(slots), 90.0) * u.deg, az=np.zeros(len(slots)) * u.deg,
                          frame=frame).icrs
        ra_dec[calib, 0], ra_dec[calib, 1] = zenith.ra.deg[calib], zenith.dec.deg[calib]
        alt = SkyCoord(ra_dec[:, 0] * u.deg, ra_dec[:, 1] * u.deg).transform_to(frame).alt.deg
        epochs = mids.tdb.jyear
    low = np.flatnonzero(~calib & (alt < 15.0))
    if low.size:
        raise InvalidInput(f"field {config.fields[slots[low[0]].field][0]!r} is at altitude {alt[low[0]]:.1f} "
                           f"deg at {_iso(mids[low[0]])[0]} UT from {site.name}: choose another field or time",
                           code="sim.config")
    airmass = np.where(calib, 1.0, np.round(_airmass(np.where(calib, 90.0, alt)), 4))
    return ra_dec, airmass, np.asarray(epochs)


@dataclass(frozen=True)
class _Night:
    """Night-wide optics and seeing: phase of the seeing wave, PSF radial growth and astigmatism."""

    phase: float
    radial: float
    astig: float


def _science(config: SimConfig, night: _Night, slot: _Slot, airmass: float,
             rng: np.random.Generator) -> tuple[PsfModel, float, tuple[float, float]]:
    """PSF model, sky rate (e-/px/s at the axis) and sky gradient of a science exposure."""
    lo, hi = config.seeing_arcsec
    wave = 0.5 + 0.35 * np.sin(2.0 * np.pi * slot.start / 10800.0 + night.phase) + rng.normal(0.0, 0.08)
    fwhm = lo + (hi / (1.0 + night.radial) - lo) * float(np.clip(wave, 0.0, 1.0))
    psf = PsfModel(fwhm=round(fwhm, 4), beta=config.psf_beta, radial=night.radial,
                   tilt_x=round(rng.normal(0.0, 0.02), 4), tilt_y=round(rng.normal(0.0, 0.02), 4),
                   e1=round(rng.normal(0.0, 0.02), 4), e2=round(rng.normal(0.0, 0.02), 4), astig=night.astig)
    spec = FILTERS[slot.filter]
    dark_sky = 10.0 ** (-0.4 * (spec.sky_mag - spec.zeropoint)) * config.pixel_scale**2
    sky = round(dark_sky * (1.0 + 0.3 * (airmass - 1.0)) * rng.uniform(0.95, 1.15), 4)
    return psf, sky, (round(rng.normal(0.0, 0.01), 5), round(rng.normal(0.0, 0.01), 5))


_CALIB_OBJECT = {"BIAS": "BIAS", "DARK": "DARK", "FLAT": "DOMEFLAT"}


def plan_night(config: SimConfig) -> list[Exposure]:
    """Every exposure of the night, in time order, with expid 1..N."""
    slots = _slots(config)
    night0 = Time(f"{config.night_date}T00:00:00", scale="utc")
    starts = night0 + np.array([s.start for s in slots]) * u.s
    ends = starts + np.array([s.exptime for s in slots]) * u.s
    ra_dec, airmass, epochs = _sky_geometry(config, slots, starts + (ends - starts) / 2.0)
    date_obs, date_end = _iso(starts), _iso(ends)
    nrng = stream(config.seed, "night")
    night = _Night(phase=float(nrng.uniform(0, 2 * np.pi)), radial=round(float(nrng.uniform(0.04, 0.1)), 4),
                   astig=round(float(nrng.uniform(0.02, 0.05)), 4))
    exposures = []
    n_science = 0
    for i, s in enumerate(slots):
        rng = stream(config.seed, "exposure", i + 1)
        err = round(float(rng.uniform(*config.pointing_error_arcmin)), 5)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        rotation = round(float(rng.choice([-1.0, 1.0]) * rng.uniform(*config.rotation_error_deg)), 5)
        jitter = rng.normal(0.0, 2.0, 2) if s.imagetyp == "OBJECT" else np.zeros(2)
        ra_t, dec_t = (round(c, 9) for c in offset_sky(float(ra_dec[i, 0]), float(ra_dec[i, 1]), *jitter))
        ra_h, dec_h = offset_sky(ra_t, dec_t, 60.0 * err * np.sin(direction), 60.0 * err * np.cos(direction))
        psf, sky, grad, trail = None, 0.0, (0.0, 0.0), False
        if s.imagetyp == "OBJECT":
            psf, sky, grad = _science(config, night, s, float(airmass[i]), rng)
            trail = config.trail_every > 0 and n_science % config.trail_every == config.trail_every // 2
            n_science += 1
        level = config.lamp_level * (config.flat_lamp_ratio if s.block else 1.0)
        lamp = round(level * rng.uniform(0.95, 1.05), 2) if s.imagetyp == "FLAT" else 0.0
        fringe = 0.0
        if s.imagetyp == "OBJECT" and s.filter in config.fringe_filters and config.fringe_amplitude > 0:
            frng = stream(config.seed, "fringe-amplitude", i + 1)  # its own stream: draws nothing from rng
            fringe = round(config.fringe_amplitude * float(frng.uniform(0.8, 1.2)), 6)
        exposures.append(Exposure(
            expid=i + 1, imagetyp=s.imagetyp, filter=s.filter, exptime=s.exptime, date_obs=date_obs[i],
            date_end=date_end[i], mjd=round(float(starts[i].mjd), 8), epoch=round(float(epochs[i]), 6),
            object=config.fields[s.field][0] if s.field >= 0 else _CALIB_OBJECT[s.imagetyp],
            field=s.field, dither=s.dither, header=Pointing(round(ra_h, 7), round(dec_h, 7), 0.0),
            true=Pointing(ra_t, dec_t, rotation), pointing_error=err, airmass=float(airmass[i]), psf=psf,
            sky_rate=sky, sky_grad=grad, lamp=lamp, trail=bool(trail), block=s.block, fringe=fringe,
        ))
    return exposures
