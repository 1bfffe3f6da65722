"""The synthetic sky: stars (with proper motions, in the reference catalogue) and galaxies (not in it).

Positions are ICRS degrees; star positions are at ``refcat_epoch`` (proper motions ``pmra`` = mu_alpha*
cos(dec) and ``pmdec`` in mas/yr); magnitudes are AB-like in every filter of ``FILTERS``. Each field is
covered by a cap of radius ``sky_radius`` around it; caps of later fields skip what earlier ones cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wisp.sim.camera import Camera
from wisp.sim.config import FILTERS, SimConfig, stream

GALAXY_ID0 = 10_000_000  # galaxy ids start here; star ids start at 1


@dataclass(frozen=True)
class Stars:
    """True star parameters at ``epoch`` (decimal year)."""

    id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    pmra: np.ndarray
    pmdec: np.ndarray
    mags: dict[str, np.ndarray]
    epoch: float

    def at_epoch(self, year: float) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) deg at a decimal year, by linear proper motion."""
        dt = (year - self.epoch) / 3.6e6
        return self.ra + self.pmra * dt / np.cos(np.radians(self.dec)), self.dec + self.pmdec * dt


@dataclass(frozen=True)
class Galaxies:
    """True galaxy parameters: half-light semi-major axis ``r_e`` (arcsec), Sersic index ``n``, axis ratio
    ``q`` and position angle ``pa`` (deg, east of north) of the major axis."""

    id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]
    r_e: np.ndarray
    n: np.ndarray
    q: np.ndarray
    pa: np.ndarray


def sky_radius(config: SimConfig, camera: Camera) -> float:
    """Radius (deg) of the sky cap simulated around each field: mosaic + dithers + pointing errors + 2'."""
    dither = config.dither_arcsec * np.sqrt(max(config.n_dither_per_field_filter, 1)) + 10.0
    return (camera.r_corner * config.pixel_scale + dither + 60.0 * config.pointing_error_arcmin[1]
            + 120.0) / 3600.0


def _cap(rng: np.random.Generator, n: int, ra0: float, dec0: float, radius: float) -> tuple[np.ndarray, ...]:
    """n points uniform on the sphere within ``radius`` deg of (ra0, dec0)."""
    cos_t = rng.uniform(np.cos(np.radians(radius)), 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    d0, a0 = np.radians(dec0), np.radians(ra0)
    dec = np.arcsin(np.sin(d0) * cos_t + np.cos(d0) * sin_t * np.cos(phi))
    ra = a0 + np.arctan2(np.sin(phi) * sin_t * np.cos(d0), cos_t - np.sin(d0) * np.sin(dec))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _separation(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance (deg) from (ra0, dec0)."""
    a, d, a0, d0 = np.radians(ra), np.radians(dec), np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a - a0)
    return np.degrees(np.arccos(np.clip(cos_c, -1.0, 1.0)))


def _positions(config: SimConfig, rng: np.random.Generator, density: float,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-sampled positions over the union of the fields' caps (no double coverage)."""
    area = 2.0 * np.pi * (1.0 - np.cos(np.radians(radius))) * (180.0 / np.pi) ** 2
    ras, decs = [], []
    for k, (_, ra0, dec0) in enumerate(config.fields):
        ra, dec = _cap(rng, int(rng.poisson(density * area)), ra0, dec0, radius)
        keep = np.ones(ra.size, dtype=bool)
        for _, ra1, dec1 in config.fields[:k]:
            keep &= _separation(ra, dec, ra1, dec1) > radius
        ras.append(ra[keep])
        decs.append(dec[keep])
    return np.concatenate(ras), np.concatenate(decs)


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10^(slope m) on [lo, hi)."""
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.uniform(0.0, 1.0, n) * (b - a)) / slope


def colours_to_mags(r: np.ndarray, gr: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """ugriz magnitudes from r and g-r along a stellar-locus-like sequence, with 0.02 mag scatter."""
    ri = np.where(gr < 1.2, 0.37 * gr - 0.04, 0.404 + 2.5 * (gr - 1.2))
    scatter = rng.normal(0.0, 0.02, (3, r.size))
    i = r - ri - scatter[0]
    return {
        "u": r + gr + 1.0 + 1.5 * (gr - 0.3) + scatter[1],
        "g": r + gr,
        "r": r.copy(),
        "i": i,
        "z": i - 0.5 * ri - scatter[2],
    }


def make_stars(config: SimConfig, camera: Camera) -> Stars:
    """Stars with dN/dm ~ 10^(0.3 m) in r (plus the bright ones), a bimodal g-r (halo turn-off ~0.45,
    disk M dwarfs ~1.35) and proper motions of a few mas/yr (more for bright, nearby stars)."""
    rng = stream(config.seed, "stars")
    ra, dec = _positions(config, rng, config.star_density, sky_radius(config, camera))
    r = _power_law_mags(rng, ra.size, *config.star_mags, slope=0.3)
    near = 0.5 * camera.r_corner * config.pixel_scale / 3600.0
    for _, ra0, dec0 in config.fields:
        ra_b, dec_b = _cap(rng, config.bright_stars, ra0, dec0, near)
        ra, dec = np.concatenate([ra, ra_b]), np.concatenate([dec, dec_b])
        r = np.concatenate([r, rng.uniform(10.5, 13.0, config.bright_stars)])
    n = ra.size
    red = rng.uniform(0.0, 1.0, n) < 0.35
    gr = np.clip(np.where(red, rng.normal(1.35, 0.12, n), rng.normal(0.45, 0.12, n)), 0.2, 1.6)
    sigma_pm = 4.0 + 20.0 * 10.0 ** (-0.2 * (r - config.star_mags[0]))
    pm = rng.normal(0.0, 1.0, (2, n)) * sigma_pm
    order = np.argsort(r, kind="stable")
    mags = {f: m[order] for f, m in colours_to_mags(r, gr, rng).items()}
    return Stars(id=np.arange(1, n + 1, dtype=np.int64), ra=ra[order], dec=dec[order],
                 pmra=pm[0][order], pmdec=pm[1][order], mags=mags, epoch=config.refcat_epoch)


def make_galaxies(config: SimConfig, camera: Camera) -> Galaxies:
    """Galaxies with dN/dm ~ 10^(0.4 m) in r, sizes shrinking with magnitude (r_e ~ 0.8" at r = 20),
    65 % exponential discs and the rest Sersic n = 1.5-4."""
    rng = stream(config.seed, "galaxies")
    ra, dec = _positions(config, rng, config.galaxy_density, sky_radius(config, camera))
    n = ra.size
    r = _power_law_mags(rng, n, *config.galaxy_mags, slope=0.4)
    gr = rng.uniform(0.2, 1.1, n)
    r_e = np.clip(0.8 * 10.0 ** (-0.1 * (r - 20.0)) * rng.lognormal(0.0, 0.3, n), 0.15, 4.0)
    sersic = np.where(rng.uniform(0.0, 1.0, n) < 0.65, 1.0, rng.uniform(1.5, 4.0, n))
    return Galaxies(id=GALAXY_ID0 + np.arange(1, n + 1, dtype=np.int64), ra=ra, dec=dec,
                    mags=colours_to_mags(r, gr, rng), r_e=r_e, n=sersic,
                    q=rng.uniform(0.3, 1.0, n), pa=rng.uniform(0.0, 180.0, n))


def make_refcat(config: SimConfig, stars: Stars) -> dict[str, np.ndarray]:
    """Reference-catalogue columns: stars with r < ``refcat_mag_limit``, with measurement errors drawn
    and applied (positions ~10-20 mas, proper motions ~0.1-0.3 mas/yr, magnitudes ~0.005-0.015)."""
    rng = stream(config.seed, "refcat")
    keep = stars.mags["r"] < config.refcat_mag_limit
    n = int(keep.sum())
    faint = 10.0 ** (0.4 * (stars.mags["r"][keep] - config.refcat_mag_limit))
    pos_err = 10.0 + 10.0 * faint  # mas
    pm_err = 0.1 + 0.2 * faint  # mas/yr
    noise = rng.standard_normal((4, n))
    dec = stars.dec[keep] + noise[1] * pos_err / 3.6e6
    cols: dict[str, np.ndarray] = {
        "id": stars.id[keep],
        "ra": (stars.ra[keep] + noise[0] * pos_err / 3.6e6 / np.cos(np.radians(stars.dec[keep]))) % 360.0,
        "dec": dec,
        "ra_err": pos_err, "dec_err": pos_err.copy(),
        "pmra": stars.pmra[keep] + noise[2] * pm_err, "pmdec": stars.pmdec[keep] + noise[3] * pm_err,
        "pmra_err": pm_err, "pmdec_err": pm_err.copy(),
    }
    for f in [f for f in FILTERS if f in config.filters or f in ("g", "r")]:
        err = 0.005 + 0.01 * 10.0 ** (0.4 * (stars.mags[f][keep] - config.refcat_mag_limit))
        cols[f] = stars.mags[f][keep] + rng.standard_normal(n) * err
        cols[f + "_err"] = err
    return cols
