"""PSF size and shape from isolated stars: elliptical Moffat fits (:mod:`.moffat`) and the stellar locus.

Candidates are sep detections that are unblended, bright (S/N >= ``MIN_SNR``), clear of the image edge,
of masked pixels and of other detections; the ``MAX_CANDIDATES`` brightest are fitted. Stars are the
densest cluster of fitted FWHMs (within ``LOCUS_DEX`` in log10): galaxies are broader, unmasked cosmic
rays narrower. FWHM is the geometric mean of the major and minor axis FWHM with the pixel integration
removed; ellipticity is 1 - b/a (biased up by noise by ~0.02-0.04 when only S/N 20-80 stars are
available). Hot pixels and cosmic rays must be flagged in DQ: an unmasked one in a stamp spoils that fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from services.qc.science import moffat

MIN_SNR = 20.0  # isophotal S/N of a PSF candidate
MAX_CANDIDATES = 60  # brightest candidates fitted
MIN_STARS = 3  # fewer stars: no PSF metrics
LOCUS_DEX = 0.06  # half-width of the stellar locus in log10 FWHM (±15 %)
MIN_FWHM_PX = 0.8
MAX_HALF = 15  # largest stamp half-size, px
GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
BETA0 = 3.0  # start value of the Moffat beta
FREE = np.array([True] * 7 + [False])  # amp, x0, y0, l1, l2, l3, lb fitted; no background term


@dataclass(frozen=True)
class Psf:
    """Medians over the stars: ``fwhm_px``, ``ellipticity`` (1 - b/a), ``nea_px`` (noise-equivalent area
    1/sum(PSF^2), px^2); ``n_stars`` measured."""

    fwhm_px: float
    ellipticity: float
    nea_px: float
    n_stars: int


def stellar_locus(fwhm: np.ndarray) -> np.ndarray:
    """Indices of the point sources among FWHM values (any unit): the densest ±15 % cluster (ties: the
    most compact), re-centred once on its median."""
    fwhm = np.asarray(fwhm, dtype=float)
    ok = np.flatnonzero(np.isfinite(fwhm) & (fwhm > 0))
    if ok.size == 0:
        return ok
    logf = np.log10(fwhm[ok])
    counts = (np.abs(logf[:, None] - logf[None, :]) <= LOCUS_DEX).sum(axis=1)
    best = np.flatnonzero(counts == counts.max())
    centre = logf[best[np.argmin(logf[best])]]
    centre = float(np.median(logf[np.abs(logf - centre) <= LOCUS_DEX]))
    return ok[np.abs(logf - centre) <= LOCUS_DEX]


def _candidates(objects: np.ndarray, mask: np.ndarray, noise: float) -> tuple[np.ndarray, int]:
    """Indices of usable candidates (brightest first) and the common stamp half-size (px)."""
    ny, nx = mask.shape
    a, b = np.asarray(objects["a"], float), np.asarray(objects["b"], float)
    x, y = np.asarray(objects["x"], float), np.asarray(objects["y"], float)
    flux = np.asarray(objects["flux"], float)
    snr = flux / (noise * np.sqrt(np.maximum(np.asarray(objects["npix"], float), 1.0)))
    ok = (np.asarray(objects["flag"]) == 0) & (snr >= MIN_SNR) & (a > 0) & (b > 0)
    if not ok.any():
        return np.flatnonzero(ok), 0
    size = GAUSS_FWHM * np.sqrt(a * b)  # isophotal: overestimates the FWHM of bright stars, which is safe
    half = int(np.clip(math.ceil(2.0 * float(np.median(size[ok]))), 4, MAX_HALF))
    ok &= (x >= half) & (x < nx - 1 - half) & (y >= half) & (y < ny - 1 - half)
    if len(objects) > 1:
        dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=2)
        ok &= dist[:, 1] > 1.5 * half + 2.0 * np.sqrt(a * b)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-flux[idx], kind="stable")]
    keep = []
    for i in idx:
        xc, yc = round(float(x[i])), round(float(y[i]))
        if not mask[yc - half:yc + half + 1, xc - half:xc + half + 1].any():
            keep.append(i)
            if len(keep) == MAX_CANDIDATES:
                break
    return np.array(keep, dtype=int), half


def _sane(params: np.ndarray, p0: np.ndarray, converged: np.ndarray, half: int) -> np.ndarray:
    fwhm, ell, _ = moffat.shape(params)
    moved = np.hypot(params[:, 1] - p0[:, 1], params[:, 2] - p0[:, 2])
    return np.asarray(converged & (params[:, 0] > 0) & (moved <= 2.0) & np.isfinite(fwhm)
                      & (fwhm >= MIN_FWHM_PX) & (fwhm <= half) & (ell < 0.9))


def measure_psf(data: np.ndarray, mask: np.ndarray, objects: np.ndarray, noise: float) -> Psf | None:
    """The PSF of a background-subtracted image (``mask`` True = unusable) from sep ``objects``;
    None when fewer than ``MIN_STARS`` stars could be measured. The fits have no background term (the
    image is background-subtracted), which steadies beta and the FWHM of faint stars."""
    if len(objects) == 0 or not noise > 0:
        return None
    idx, half = _candidates(objects, mask, noise)
    if idx.size < MIN_STARS:
        return None
    side = 2 * half + 1
    stamps = np.empty((idx.size, side, side))
    p0 = np.zeros((idx.size, moffat.N_PAR))
    for k, i in enumerate(idx):
        x, y = float(objects["x"][i]), float(objects["y"][i])
        xc, yc = round(x), round(y)
        stamps[k] = data[yc - half:yc + half + 1, xc - half:xc + half + 1]
        fwhm0 = min(GAUSS_FWHM * math.sqrt(float(objects["a"][i]) * float(objects["b"][i])), half)
        inv_alpha = 2.0 * math.sqrt(2.0 ** (1.0 / BETA0) - 1.0) / max(fwhm0, 1.0)
        p0[k] = (max(float(stamps[k, half, half]), 1e-6), x - xc + half, y - yc + half, inv_alpha, 0.0,
                 inv_alpha, math.log(BETA0 - 1.0), 0.0)
    params, converged = moffat.fit(stamps, np.ones(stamps.shape, bool), p0, FREE)
    good = _sane(params, p0, converged, half)
    if np.count_nonzero(good) < MIN_STARS:
        return None
    fwhm, ell, nea = moffat.shape(params[good])
    stars = stellar_locus(fwhm)
    if stars.size < MIN_STARS:
        return None
    return Psf(fwhm_px=float(np.median(fwhm[stars])), ellipticity=float(np.median(ell[stars])),
               nea_px=float(np.median(nea[stars])), n_stars=int(stars.size))
