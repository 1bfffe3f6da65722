"""The night's observing plan: exposure times, pointings (true and header), airmass, seeing and sky.

Order: ``n_bias`` biases, then dome flats per filter (both from ``calib_start_ut``), then per field, per
filter, ``n_dither_per_field_filter`` dithers (from ``science_start_ut``). Each exposure starts when the
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
    decimal Julian year at mid-exposure (for proper motions).
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

    @property
    def filename(self) -> str:
        """Raw file name: ``sim_<expid:04d>_<bias|flat_<f>|object_<f>>.fits`` (sortable, unique)."""
        kind = "bias" if self.imagetyp == "BIAS" else f"{self.imagetyp.lower()}_{self.filter}"
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


def _slots(config: SimConfig) -> list[_Slot]:
    slots = []
    t = config.calib_start_ut * 3600.0
    for _ in range(config.n_bias):
        slots.append(_Slot("BIAS", "NONE", 0.0, t, -1, -1))
        t += config.readout_s
    for f in config.filters:
        for _ in range(config.n_flats_per_filter):
            slots.append(_Slot("FLAT", f, config.flat_exptime, t, -1, -1))
            t += config.flat_exptime + config.readout_s
    t = max(t, config.science_start_ut * 3600.0)
    for k in range(len(config.fields)):
        for f in config.filters:
            for d in range(config.n_dither_per_field_filter):
                slots.append(_Slot("OBJECT", f, config.exptime, t, k, d))
                t += config.exptime + config.readout_s
    return slots


def dither_offset(config: SimConfig, dither: int) -> tuple[float, float]:
    """Nominal (east, north) offset in arcsec of a dither: a Fermat spiral of step ``dither_arcsec``."""
    radius = config.dither_arcsec * np.sqrt(dither)
    angle = np.radians(137.508 * dither)
    return float(radius * np.sin(angle)), float(radius * np.cos(angle))


def plan_night(config: SimConfig) -> list[Exposure]:
    """Every exposure of the night, in time order, with expid 1..N."""
    slots = _slots(config)
    site = config.site
    location = EarthLocation.from_geodetic(site.lon_deg * u.deg, site.lat_deg * u.deg, site.height_m * u.m)
    night0 = Time(f"{config.night_date}T00:00:00", scale="utc")
    starts = night0 + np.array([s.start for s in slots]) * u.s
    mids = starts + np.array([s.exptime / 2.0 for s in slots]) * u.s
    commanded = []
    for s in slots:
        if s.imagetyp == "OBJECT":
            _, ra, dec = config.fields[s.field]
            commanded.append(offset_sky(ra, dec, *dither_offset(config, s.dither)))
        else:
            commanded.append((np.nan, np.nan))
    ra_dec = np.array(commanded).reshape(-1, 2)
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("auto_max_age", None), \
            iers.conf.set_temp("iers_degraded_accuracy", "ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = AltAz(obstime=mids, location=location)
        zenith = SkyCoord(alt=np.full(len(slots), 90.0) * u.deg, az=np.zeros(len(slots)) * u.deg,
                          frame=frame).icrs
        calib = np.isnan(ra_dec[:, 0])
        ra_dec[calib, 0], ra_dec[calib, 1] = zenith.ra.deg[calib], zenith.dec.deg[calib]
        alt = SkyCoord(ra_dec[:, 0] * u.deg, ra_dec[:, 1] * u.deg).transform_to(frame).alt.deg
        epochs = mids.tdb.jyear
    low = np.flatnonzero(~calib & (alt < 15.0))
    if low.size:
        s = slots[low[0]]
        raise InvalidInput(f"field {config.fields[s.field][0]!r} is at altitude {alt[low[0]]:.1f} deg at "
                           f"{_iso(mids[low[0]])[0]} UT from {site.name}: choose another field or time",
                           code="sim.config")
    airmass = np.where(calib, 1.0, np.round(_airmass(np.where(calib, 90.0, alt)), 4))

    night_rng = stream(config.seed, "night")
    phase, radial, astig = night_rng.uniform(0, 2 * np.pi), night_rng.uniform(0.04, 0.1), night_rng.uniform(
        0.02, 0.05)
    lo, hi = config.seeing_arcsec
    exposures = []
    n_science = 0
    for i, s in enumerate(slots):
        rng = stream(config.seed, "exposure", i + 1)
        err = rng.uniform(*config.pointing_error_arcmin)
        direction = rng.uniform(0.0, 2.0 * np.pi)
        rotation = rng.choice([-1.0, 1.0]) * rng.uniform(*config.rotation_error_deg)
        jitter = rng.normal(0.0, 2.0, 2) if s.imagetyp == "OBJECT" else np.zeros(2)
        ra_t, dec_t = offset_sky(float(ra_dec[i, 0]), float(ra_dec[i, 1]), *jitter)
        ra_t, dec_t = round(ra_t, 9), round(dec_t, 9)
        ra_h, dec_h = offset_sky(ra_t, dec_t, 60.0 * err * np.sin(direction), 60.0 * err * np.cos(direction))
        psf, sky, grad, lamp, trail = None, 0.0, (0.0, 0.0), 0.0, False
        if s.imagetyp == "OBJECT":
            wave = 0.5 + 0.35 * np.sin(2.0 * np.pi * s.start / 10800.0 + phase) + rng.normal(0.0, 0.08)
            fwhm = lo + (hi / (1.0 + radial) - lo) * float(np.clip(wave, 0.0, 1.0))
            psf = PsfModel(fwhm=round(fwhm, 4), beta=config.psf_beta, radial=round(radial, 4),
                           tilt_x=round(rng.normal(0.0, 0.02), 4), tilt_y=round(rng.normal(0.0, 0.02), 4),
                           e1=round(rng.normal(0.0, 0.02), 4), e2=round(rng.normal(0.0, 0.02), 4),
                           astig=round(astig, 4))
            spec = FILTERS[s.filter]
            dark = 10.0 ** (-0.4 * (spec.sky_mag - spec.zeropoint)) * config.pixel_scale**2
            sky = round(dark * (1.0 + 0.3 * (airmass[i] - 1.0)) * rng.uniform(0.95, 1.15), 4)
            grad = (round(rng.normal(0.0, 0.01), 5), round(rng.normal(0.0, 0.01), 5))
            trail = config.trail_every > 0 and n_science % config.trail_every == config.trail_every // 2
            n_science += 1
        elif s.imagetyp == "FLAT":
            lamp = round(config.lamp_level * rng.uniform(0.95, 1.05), 2)
        exposures.append(Exposure(
            expid=i + 1, imagetyp=s.imagetyp, filter=s.filter, exptime=s.exptime,
            date_obs=_iso(starts[i])[0], date_end=_iso(starts[i] + s.exptime * u.s)[0],
            mjd=round(float(starts[i].mjd), 8), epoch=round(float(epochs[i]), 6),
            object=config.fields[s.field][0] if s.field >= 0 else ("BIAS" if s.imagetyp == "BIAS" else "DOMEFLAT"),
            field=s.field, dither=s.dither,
            header=Pointing(round(ra_h, 7), round(dec_h, 7), 0.0),
            true=Pointing(ra_t, dec_t, round(rotation, 5)),
            pointing_error=round(err, 5), airmass=float(airmass[i]), psf=psf, sky_rate=sky,
            sky_grad=grad, lamp=lamp, trail=bool(trail),
        ))
    return exposures
