"""Transient detector artefacts: cosmic rays, satellite trails, and charge bleeding from saturated pixels.

All images are electrons (e-) on a chip's data section, numpy ``[y, x]``, 0-based pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CR_DEPLETION_UM = 40.0  # depleted silicon thickness
CR_E_PER_UM = 80.0  # most probable charge of a minimum-ionising track, e- per micron of silicon
MASK_THRESHOLD_E = 5.0  # truth masks flag pixels where an artefact added more than this (e-)


@dataclass(frozen=True)
class CosmicRays:
    """Deposited charge ``image`` (e-, ny x nx) and one row per event: track ends (px, 0-based) and charge."""

    image: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    charge: np.ndarray


def deposit_tracks(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, length: np.ndarray,
                   charge: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """The charge (e-) of straight tracks from (x0, y0) to (x1, y1) px, ``length`` px long: each sampled at
    4 points per px (at least 2) sharing its ``charge`` equally, each point spread bilinearly over its 4
    nearest pixels of an ``ny`` x ``nx`` image."""
    image = np.zeros((ny, nx))
    steps = np.maximum(2, np.ceil(4.0 * length).astype(int))
    which = np.repeat(np.arange(x0.size), steps)
    frac = (np.arange(which.size) - np.repeat(np.cumsum(steps) - steps, steps) + 0.5) / steps[which]
    px, py = x0[which] + frac * (x1 - x0)[which], y0[which] + frac * (y1 - y0)[which]
    q = charge[which] / steps[which]
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        jx, jy = ix + dx, iy + dy
        ok = (jx >= 0) & (jx < nx) & (jy >= 0) & (jy < ny)
        np.add.at(image, (jy[ok], jx[ok]), (q * w)[ok])
    return image


def render_cosmics(table: Any, nx: int, ny: int) -> np.ndarray:
    """The charge (e-) of the rows of a truth ``COSMICS`` table (columns x0, y0, x1, y1 px, charge e-),
    deposited as :func:`cosmic_rays` deposits it: what a scorer compares detections with."""
    x0, y0, x1, y1, charge = (np.asarray(table[k], float) for k in ("x0", "y0", "x1", "y1", "charge"))
    return deposit_tracks(x0, y0, x1, y1, np.hypot(x1 - x0, y1 - y0), charge, nx, ny)


def cosmic_rays(rng: np.random.Generator, nx: int, ny: int, duration_s: float, rate_cm2_min: float,
                pixel_um: float) -> CosmicRays:
    """Cosmic rays hitting a chip during ``duration_s``: 70 % muon tracks (zenith angle ~ cos^2, length
    = depletion depth x tan(angle), Landau-like charge ~80 e-/um), 30 % short low-energy spots."""
    area_cm2 = nx * ny * (pixel_um * 1e-4) ** 2
    n = int(rng.poisson(rate_cm2_min * area_cm2 * duration_s / 60.0))
    x0, y0 = rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)
    muon = rng.uniform(0.0, 1.0, n) < 0.7
    cos_t = rng.uniform(0.0, 1.0, n) ** (1.0 / 3.0)
    cos_t = np.maximum(cos_t, 0.05)
    length = np.where(muon, np.minimum(CR_DEPLETION_UM * np.sqrt(1.0 - cos_t**2) / cos_t / pixel_um, 40.0),
                      rng.uniform(0.0, 1.2, n))
    landau = np.maximum(0.5, 1.0 - 0.25 * np.log(rng.standard_normal(n) ** 2 + 1e-300))
    charge = np.where(muon, CR_E_PER_UM * CR_DEPLETION_UM / cos_t * landau, rng.lognormal(np.log(900.0), 0.6, n))
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    x1, y1 = x0 + length * np.cos(phi), y0 + length * np.sin(phi)

    image = deposit_tracks(x0, y0, x1, y1, length, charge, nx, ny)
    return CosmicRays(image=image, x0=x0, y0=y0, x1=x1, y1=y1, charge=charge)


@dataclass(frozen=True)
class Trail:
    """A satellite trail: a straight line through focal-plane point (``u0``, ``v0``) px at ``angle`` deg
    from +u, Gaussian cross-section of ``sigma`` px, ``peak`` e-/px on its ridge (before the flat)."""

    u0: float
    v0: float
    angle: float
    sigma: float
    peak: float

    def image(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Trail e-/px at focal-plane offsets (u, v) px (broadcast), zero beyond 6 sigma."""
        t = np.radians(self.angle)
        d = (u - self.u0) * np.sin(t) - (v - self.v0) * np.cos(t)
        return np.where(np.abs(d) < 6.0 * self.sigma, self.peak * np.exp(-0.5 * (d / self.sigma) ** 2), 0.0)


def make_trail(rng: np.random.Generator, r_corner: float) -> Trail:
    """A trail crossing the mosaic within half a corner radius of the optical axis."""
    r, phi = 0.5 * r_corner * np.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * np.pi)
    return Trail(u0=round(float(r * np.cos(phi)), 3), v0=round(float(r * np.sin(phi)), 3),
                 angle=round(float(rng.uniform(0.0, 180.0)), 4), sigma=round(float(rng.uniform(0.8, 1.6)), 3),
                 peak=round(float(rng.uniform(150.0, 1500.0)), 2))


def _fill(column: np.ndarray, start: int, step: int, charge: float, full_well: float) -> None:
    """Pour ``charge`` into ``column`` from ``start`` in direction ``step`` up to the full well (in place);
    what reaches the chip edge is lost."""
    seg = column[start::step] if step > 0 else column[start::-1] if start >= 0 else column[:0]
    if seg.size == 0 or charge <= 0.0:
        return
    room = np.cumsum(np.maximum(full_well - seg, 0.0))
    n_full = int(np.searchsorted(room, charge, side="right"))
    partial = charge - (room[n_full - 1] if n_full > 0 else 0.0)
    seg[:n_full] = np.maximum(seg[:n_full], full_well)
    if n_full < seg.size:
        seg[n_full] += partial


def bleed(image: np.ndarray, full_well: float) -> np.ndarray:
    """Spill charge above ``full_well`` along its column, half up and half down (in place, e-).

    Returns a boolean mask of pixels that received bled charge.
    """
    before = image.copy()
    for x in np.flatnonzero((image > full_well).any(axis=0)):
        column = image[:, x]
        over = column > full_well
        edges = np.flatnonzero(np.diff(np.concatenate(([0], over.astype(np.int8), [0]))))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            excess = float((column[a:b] - full_well).sum())
            column[a:b] = full_well
            _fill(column, b, 1, 0.5 * excess, full_well)
            _fill(column, a - 1, -1, 0.5 * excess, full_well)
    return image > before
