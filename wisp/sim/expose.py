"""One exposure of one chip: light (sky, sources, trail, lamp) x flat + fringes + dark, Poisson noise, cosmic
rays, bleeding, then gain, bias and read noise to uint16 ADU. Pure: arrays in, arrays out.

Order of the signal chain (e- until the last step):
``e = Poisson(flat * (sky + sources + trail + lamp) + fringe + dark) + cosmic rays`` (``fringe`` = the
exposure's fringe amplitude x sky x the chip's fringe pattern, additive: not flat-fielded; the dome lamp is
``lamp x (1 + dome_flat_gradient x u / r_corner)``); charge above the full well
bleeds along columns; ``raw = rint(e / gain + bias + drift + N(0, read_noise / gain))`` clipped to
[0, SATURATE]; pixels at the full well read exactly SATURATE. The overscan gets bias + drift + read noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wisp.sim.artifacts import MASK_THRESHOLD_E, CosmicRays, Trail, bleed, cosmic_rays
from wisp.sim.camera import Camera, Chip
from wisp.sim.config import FILTERS, SimConfig
from wisp.sim.detector import ChipDetector
from wisp.sim.psf import galaxy_stamp, star_radius, star_stamp
from wisp.sim.schedule import Exposure
from wisp.sim.sources import Galaxies, Stars
from wisp.sim.wcs import cd_matrix, sky_to_focal

MASK_CR = 1
MASK_TRAIL = 2
MASK_SATURATED = 4
MASK_BLEED = 8


@dataclass(frozen=True)
class SkySources:
    """Every source of the sky as seen in one exposure: position at the exposure epoch (deg), true
    focal-plane offsets (u, v) px, catalogue magnitude in the filter, model flux (e- in the exposure),
    PSF at the position (FWHM arcsec, e = 1 - b/a, major axis deg from +x) and, for galaxies, shape in
    pixel units (r_e px, Sersic n, axis ratio q, major axis deg from +x; NaN for stars)."""

    id: np.ndarray
    is_star: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mag: np.ndarray
    flux: np.ndarray
    fwhm: np.ndarray
    e: np.ndarray
    theta: np.ndarray
    r_e: np.ndarray
    n: np.ndarray
    q: np.ndarray
    gal_theta: np.ndarray


def sky_sources(config: SimConfig, camera: Camera, exposure: Exposure, stars: Stars,
                galaxies: Galaxies, k_sip: float) -> SkySources:
    """Project the catalogues through the true WCS of an OBJECT exposure and compute fluxes."""
    assert exposure.psf is not None
    ra_s, dec_s = stars.at_epoch(exposure.epoch)
    ra = np.concatenate([ra_s % 360.0, galaxies.ra])
    dec = np.concatenate([dec_s, galaxies.dec])
    u, v = sky_to_focal(ra, dec, exposure.true, config.pixel_scale, k_sip)
    f = exposure.filter
    mag = np.concatenate([stars.mags[f], galaxies.mags[f]])
    spec = FILTERS[f]
    flux = 10.0 ** (-0.4 * (mag - spec.zeropoint + spec.extinction * exposure.airmass)) * exposure.exptime
    fwhm, e, theta = exposure.psf.at(u, v, camera.r_corner)
    n_star = stars.id.size
    nan = np.full(n_star, np.nan)
    inv = np.linalg.inv(cd_matrix(config.pixel_scale, exposure.true.rotation))
    pa = np.radians(galaxies.pa)
    gx, gy = inv @ np.vstack([np.sin(pa), np.cos(pa)])
    return SkySources(
        id=np.concatenate([stars.id, galaxies.id]), is_star=np.arange(ra.size) < n_star, ra=ra, dec=dec,
        u=u, v=v, mag=mag, flux=flux, fwhm=fwhm, e=e, theta=theta,
        r_e=np.concatenate([nan, galaxies.r_e / config.pixel_scale]), n=np.concatenate([nan, galaxies.n]),
        q=np.concatenate([nan, galaxies.q]), gal_theta=np.concatenate([nan, np.degrees(np.arctan2(gy, gx))]),
    )


@dataclass
class ChipExposure:
    """Result for one chip: ``raw`` uint16 (ny, nx + overscan); ``mask`` uint8 (ny, nx) with bits
    MASK_CR | MASK_TRAIL | MASK_SATURATED | MASK_BLEED; ``drift`` ADU added to the bias this exposure;
    ``rows``: truth-table columns of the sources rendered on this chip; ``cosmics``: the cosmic rays."""

    raw: np.ndarray
    mask: np.ndarray
    drift: float
    rows: dict[str, np.ndarray]
    cosmics: CosmicRays


def sky_image(exposure: Exposure, camera: Camera, chip: Chip) -> np.ndarray:
    """Sky e-/px over the exposure (before the flat field), linear in the focal plane."""
    u, v = camera.focal_plane(chip, np.arange(camera.nx, dtype=float)[None, :],
                              np.arange(camera.ny, dtype=float)[:, None])
    gu, gv = exposure.sky_grad
    return exposure.sky_rate * exposure.exptime * (1.0 + (gu * u + gv * v) / camera.r_corner)


def render_sources(light: np.ndarray, src: SkySources, chip: Chip, beta: float,
                   pixel_scale: float) -> dict[str, np.ndarray]:
    """Add every source whose stamp overlaps the chip to ``light`` (e-, in place); return truth columns.

    ``flux`` is the stamp total actually rendered, ``flux_onchip`` the part on this chip's pixels, ``gal_*``
    the galaxy shape in pixel units (NaN for stars), ``peak_*`` the 0-based pixel of the on-chip stamp
    maximum (for the saturation flag; not written).
    """
    ny, nx = light.shape
    x, y = src.u + chip.axis_x, src.v + chip.axis_y
    reach = 90.0 + 4.5 * np.nan_to_num(src.r_e)
    near = np.flatnonzero((x > -reach) & (x < nx - 1 + reach) & (y > -reach) & (y < ny - 1 + reach))
    keep, rendered, onchip, peak_x, peak_y = [], [], [], [], []
    for i in near:
        fwhm_px = src.fwhm[i] / pixel_scale
        if src.is_star[i]:
            radius = star_radius(src.flux[i], fwhm_px, src.e[i], beta)
            x0, y0, stamp = star_stamp(x[i], y[i], src.flux[i], fwhm_px, src.e[i], src.theta[i], beta, radius)
        else:
            x0, y0, stamp = galaxy_stamp(x[i], y[i], src.flux[i], src.r_e[i], src.n[i], src.q[i],
                                         src.gal_theta[i], fwhm_px, src.e[i], src.theta[i], beta)
        size = stamp.shape[0]
        xa, xb, ya, yb = max(x0, 0), min(x0 + size, nx), max(y0, 0), min(y0 + size, ny)
        if xa >= xb or ya >= yb:
            continue
        part = stamp[ya - y0:yb - y0, xa - x0:xb - x0]
        light[ya:yb, xa:xb] += part
        py, px = np.unravel_index(int(np.argmax(part)), part.shape)
        keep.append(i)
        rendered.append(stamp.sum())
        onchip.append(part.sum())
        peak_x.append(xa + px)
        peak_y.append(ya + py)
    idx = np.array(keep, dtype=int)
    return {
        "id": src.id[idx], "type": np.where(src.is_star[idx], "star", "galaxy"),
        "ra": src.ra[idx], "dec": src.dec[idx], "chip": np.full(idx.size, chip.chip_id, dtype=np.int16),
        "x": x[idx], "y": y[idx], "flux": np.array(rendered, dtype=float),
        "flux_onchip": np.array(onchip, dtype=float), "flux_model": src.flux[idx], "mag": src.mag[idx],
        "psf_fwhm": src.fwhm[idx], "psf_e": src.e[idx], "psf_theta": src.theta[idx],
        "gal_re": src.r_e[idx], "gal_n": src.n[idx], "gal_q": src.q[idx], "gal_theta": src.gal_theta[idx],
        "peak_x": np.array(peak_x, dtype=int), "peak_y": np.array(peak_y, dtype=int),
    }


def expose_chip(config: SimConfig, camera: Camera, chip: Chip, det: ChipDetector, exposure: Exposure,
                sources: SkySources | None, trail: Trail | None, rng: np.random.Generator) -> ChipExposure:
    """Simulate the raw pixels of one chip in one exposure (see the module docstring for the chain)."""
    nx, ny = camera.nx, camera.ny
    light = np.zeros((ny, nx))
    rows: dict[str, np.ndarray] = {}
    mask = np.zeros((ny, nx), dtype=np.uint8)
    fringe = None
    if exposure.imagetyp == "OBJECT":
        sky = sky_image(exposure, camera, chip)
        light += sky
        if exposure.fringe > 0 and exposure.filter in det.fringes:
            fringe = exposure.fringe * sky * det.fringes[exposure.filter]
        if sources is not None:
            rows = render_sources(light, sources, chip, config.psf_beta, config.pixel_scale)
        if trail is not None:
            u, v = camera.focal_plane(chip, np.arange(nx, dtype=float)[None, :], np.arange(ny, dtype=float)[:, None])
            trail_e = trail.image(u, v)
            light += trail_e
            mask[trail_e > MASK_THRESHOLD_E] |= MASK_TRAIL
    elif exposure.imagetyp == "FLAT" and config.dome_flat_gradient:
        u, _ = camera.focal_plane(chip, np.arange(nx, dtype=float)[None, :], np.zeros((ny, 1)))
        light += exposure.lamp * (1.0 + config.dome_flat_gradient * u / camera.r_corner)
    elif exposure.imagetyp == "FLAT":
        light += exposure.lamp
    flat = det.flats[exposure.filter] if exposure.filter in det.flats else np.ones((ny, nx), np.float32)
    expected = light * flat + det.dark_image(exposure.exptime)
    if fringe is not None:
        expected = np.maximum(expected + fringe, 0.0)
    full_well = chip.full_well
    if rows:
        rows["saturated"] = expected[rows.pop("peak_y"), rows.pop("peak_x")] >= full_well
        rows["saturated"] &= rows["flux_onchip"] > 0

    electrons = rng.poisson(expected).astype(float)
    cosmics = cosmic_rays(rng, nx, ny, exposure.exptime + 0.5 * config.readout_s, config.cr_rate,
                          config.pixel_um)
    electrons += cosmics.image
    mask[cosmics.image > MASK_THRESHOLD_E] |= MASK_CR
    mask[bleed(electrons, full_well)] |= MASK_BLEED
    at_full_well = electrons >= full_well

    drift = round(float(rng.normal(0.0, 1.0)), 4)
    sigma = chip.read_noise / chip.gain
    adu = det.bias.astype(float) + drift + rng.normal(0.0, sigma, det.bias.shape)
    adu[:, :nx] += electrons / chip.gain
    raw = np.clip(np.rint(adu), 0, chip.saturate)
    raw[:, :nx][at_full_well] = chip.saturate
    mask[raw[:, :nx] >= chip.saturate] |= MASK_SATURATED
    return ChipExposure(raw=raw.astype(np.uint16), mask=mask, drift=drift, rows=rows, cosmics=cosmics)
