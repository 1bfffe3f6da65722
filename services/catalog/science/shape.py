"""Source sizes and the star/galaxy indicator: a Moffat-fit FWHM, the PSF locus of an image, CLASS."""

from __future__ import annotations

import math

import numpy as np

from services.catalog.science import flags as F

GAUSS_R50_TO_FWHM = 2.0  # FWHM = 2 r50 for a Gaussian: the fallback when the profile fit fails
FIT_RADIUS_R50 = 3.0     # fit pixels within 3 half-light radii (at least 3 px) ...
FIT_RADIUS_MAX = 12.0    # ... and at most 12 px: the core is what the FWHM is about
ETA_RANGE = (1e-3, 1.0 / 1.2)  # bounds of 1/beta: from (nearly exactly) Gaussian to very broad wings
PIXEL_FWHM2 = 8.0 * math.log(2.0) / 12.0  # px²: a 1-px box widens a profile's FWHM² by about this much
LOCUS_HALFWIDTH = 0.1    # the PSF locus: sources within +-10 % of the densest FWHM


def _stamps(image: np.ndarray, x: np.ndarray, y: np.ndarray, h: int) -> np.ndarray:
    """(n, 2h+1, 2h+1) cut-outs centred on the pixels nearest (x, y), zero-padded beyond the edges."""
    pad = np.pad(image, h)
    off = np.arange(2 * h + 1)
    ix = np.rint(x).astype(int)[:, None, None]
    iy = np.rint(y).astype(int)[:, None, None]
    return pad[iy + off[None, :, None], ix + off[None, None, :]]


def _moffat(p: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Circular Moffat of parameters p = (ln I0, ln FWHM, eta = 1/beta) at squared radii r2 (n, P).
    eta → 0 is the Gaussian of that FWHM, so the whole family is one smooth model."""
    i0, fwhm, eta = np.exp(p[:, 0:1]), np.exp(p[:, 1:2]), p[:, 2:3]
    u = r2 * (4.0 * np.expm1(eta * math.log(2.0)) / fwhm**2)
    return i0 * np.exp(-np.log1p(u) / eta)


def _fit(img: np.ndarray, w: np.ndarray, r2: np.ndarray, p: np.ndarray, niter: int) -> np.ndarray:
    """Levenberg-Marquardt (per-source damping, numerical Jacobian) of ``_moffat`` to img with weights w."""
    lo = np.array([math.log(1e-6), math.log(0.5), ETA_RANGE[0]])
    hi = np.array([math.log(1e12), math.log(4.0 * FIT_RADIUS_MAX), ETA_RANGE[1]])
    lam = np.full(len(p), 1e-2)
    model = _moffat(p, r2)
    chi2 = np.sum(w * (img - model) ** 2, axis=1)
    for _ in range(niter):
        jac = np.stack([(_moffat(p + d, r2) - model) / 1e-5 for d in 1e-5 * np.eye(3)], axis=-1)
        jw = jac * w[:, :, None]
        a = np.matmul(jw.transpose(0, 2, 1), jac)
        g = np.einsum("npk,np->nk", jw, img - model)
        a += lam[:, None, None] * np.diagonal(a, axis1=1, axis2=2)[:, :, None] * np.eye(3) + 1e-12 * np.eye(3)
        trial = np.clip(p + np.linalg.solve(a, g[:, :, None])[:, :, 0], lo, hi)
        tmodel = _moffat(trial, r2)
        tchi2 = np.sum(w * (img - tmodel) ** 2, axis=1)
        better = tchi2 < chi2
        p = np.where(better[:, None], trial, p)
        model = np.where(better[:, None], tmodel, model)
        chi2 = np.where(better, tchi2, chi2)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    return p


def moffat_fwhm(data: np.ndarray, var: np.ndarray | float, segmap: np.ndarray, mask: np.ndarray, x: np.ndarray,
                y: np.ndarray, r50: np.ndarray, niter: int = 10) -> np.ndarray:
    """FWHM (px) of a circular Moffat (I0, FWHM, β free; 1/β in ETA_RANGE, 0 being a Gaussian) centred on
    (x, y), fitted (weights 1/var) to the pixels within FIT_RADIUS_R50 × r50 that belong to the source or to
    no detection. Profile-aware: Moffats of any β and Gaussians both give their true FWHM. The fit is to
    pixel values, so the pixel's own width is removed in quadrature (exact for a Gaussian). Where the fit
    fails, 2 × r50 (the Gaussian value)."""
    n = len(x)
    if n == 0:
        return np.zeros(0)
    r50c = np.where(np.isfinite(r50) & (r50 > 0), r50, 1.5)
    rfit = np.clip(FIT_RADIUS_R50 * r50c, 3.0, FIT_RADIUS_MAX)
    h = math.ceil(min(rfit.max(), 1.5 * np.median(rfit)))  # the few large sources get a clipped window
    img = _stamps(data, x, y, h).reshape(n, -1).astype(float)
    seg = _stamps(segmap, x, y, h).reshape(n, -1)
    bad = _stamps(mask, x, y, h).reshape(n, -1)
    v = _stamps(var, x, y, h).reshape(n, -1).astype(float) if isinstance(var, np.ndarray) else np.full(img.shape, var)
    off = np.arange(-h, h + 1, dtype=float)
    dx = (np.rint(x) - x)[:, None] + np.tile(off, 2 * h + 1)[None, :]
    dy = (np.rint(y) - y)[:, None] + np.repeat(off, 2 * h + 1)[None, :]
    r2 = dx**2 + dy**2
    own = (seg == 0) | (seg == np.arange(1, n + 1)[:, None])
    w = np.where((r2 <= rfit[:, None] ** 2) & own & ~bad & (v > 0), 1.0 / np.where(v > 0, v, 1.0), 0.0)
    peak = np.clip(img[np.arange(n), (2 * h + 1) * h + h], 1e-3, 1e11)
    p0 = np.stack([np.log(peak), np.log(1.7 * r50c), np.full(n, 0.3)], axis=1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # wild trial steps are simply rejected
        p = _fit(img, w, r2, p0, niter)
    fwhm = np.exp(p[:, 1])
    fwhm = np.sqrt(np.maximum(fwhm**2 - PIXEL_FWHM2, 0.25 * fwhm**2))  # remove the pixel's own 1/12 px² variance
    ok = np.isfinite(fwhm) & (p[:, 1] < math.log(4.0 * FIT_RADIUS_MAX) - 1e-6) & (np.count_nonzero(w, axis=1) >= 5)
    return np.where(ok, fwhm, GAUSS_R50_TO_FWHM * r50)


def psf_locus(fwhm: np.ndarray, snr: np.ndarray, flags: np.ndarray, min_snr: float) -> float:
    """The PSF FWHM (same unit as ``fwhm``): the median of the densest ±LOCUS_HALFWIDTH cluster of FWHMs among
    clean sources of S/N ≥ ``min_snr`` (stars pile up at the PSF, galaxies spread above it). NaN if < 3."""
    good = np.isfinite(fwhm) & (fwhm > 0) & (snr >= min_snr) & ((flags & F.UNRELIABLE) == 0)
    v = np.sort(np.log(fwhm[good]))
    if len(v) < 3:
        return math.nan
    hi = np.searchsorted(v, v + 2 * LOCUS_HALFWIDTH, side="right")
    best = int(np.argmax(hi - np.arange(len(v))))  # first (smallest) window holding the most sources
    members = v[best:hi[best]]
    if len(members) < 3:
        return math.nan
    return float(np.exp(np.median(members)))


def classify(fwhm: np.ndarray, snr: np.ndarray, psf: float, tol: float, min_snr: float) -> np.ndarray:
    """CLASS: 1.0 point source (|FWHM / PSF - 1| < tol + 3/SNR), 0.0 not (extended, or sharper than the PSF:
    an artefact), 0.5 undecided (S/N < ``min_snr``, no FWHM or no PSF estimate)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = fwhm / psf
        out = np.where(np.abs(ratio - 1.0) < tol + 3.0 / snr, 1.0, 0.0)
    undecided = ~np.isfinite(ratio) | ~(snr >= min_snr) | (not math.isfinite(psf))
    return np.where(undecided, 0.5, out)
