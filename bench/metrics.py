"""Accuracy against the simulator's truth: every number in the table's accuracy column comes from here.

All functions are pure (arrays and tables in, floats out). Pixel coordinates are 0-based (numpy), as in
the truth tables; FITS/SExtractor positions are converted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

MOFFAT_BETA = 3.0


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 × the median absolute deviation (NaN for an empty input)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


# ---------------------------------------------------------------- master bias

def bias_residual_rms(master: np.ndarray, truth_data: np.ndarray) -> tuple[float, float]:
    """(RMS, robust σ) of ``master - truth`` in ADU over the data section after removing the mean offset
    (the overscan level and the frames' drifts shift a master by a constant, which is not an error)."""
    diff = np.asarray(master, float) - np.asarray(truth_data, float)
    diff -= np.median(diff)
    return float(np.sqrt(np.mean(diff**2))), robust_sigma(diff)


# ---------------------------------------------------------------- reduction

def sky_model(shape: tuple[int, int], skyc: float, skydx: float, skydy: float) -> np.ndarray:
    """The truth sky (e-/px, before the flat) of a science chip from its SKYC/SKYDX/SKYDY cards."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    return skyc + skydx * (x - (nx - 1) / 2.0) + skydy * (y - (ny - 1) / 2.0)


def source_mask(shape: tuple[int, int], sources: Table, fwhm_px: float) -> np.ndarray:
    """True where a truth source (star or galaxy) contributes noticeably: a disc growing with its flux."""
    ny, nx = shape
    mask = np.zeros(shape, bool)
    flux = np.asarray(sources["flux_onchip"], float)
    keep = flux > 30.0
    xs, ys, fl = np.asarray(sources["x"])[keep], np.asarray(sources["y"])[keep], flux[keep]
    re = np.nan_to_num(np.asarray(sources["gal_re"], float)[keep])
    radius = np.clip(1.5 * fwhm_px * (fl / 300.0) ** 0.3 + 3.0 * re, 3.0, 80.0)
    for x, y, r in zip(xs, ys, radius, strict=True):
        x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, nx)
        y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    return mask


@dataclass
class ReductionScore:
    """Per chip: sky ratio scale (output/true sky), flatness (RMS of 32² block medians, %), χ σ of sky pixels
    against the truth noise, and the ratios of isolated-star aperture fluxes to truth (sky-normalised)."""

    scale: float
    flatness_pct: float
    chi_sigma: float
    star_ratios: np.ndarray


def score_reduced(sci: np.ndarray, var_truth_sky: np.ndarray, sky_true: np.ndarray, bad: np.ndarray,
                  stars: Table, block: int = 32) -> ReductionScore:
    """Score a reduced chip. ``bad``: pixels to ignore (truth defects, CRs, trails, sources)."""
    ratio = sci / sky_true
    good = ~bad & np.isfinite(ratio)
    scale = float(np.median(ratio[good]))
    ny, nx = sci.shape
    meds = []
    for y in range(0, ny - block + 1, block):
        for x in range(0, nx - block + 1, block):
            g = good[y:y + block, x:x + block]
            if g.sum() > block * block // 3:
                meds.append(np.median(ratio[y:y + block, x:x + block][g]))
    flat = 100.0 * float(np.std(np.asarray(meds) / scale)) if meds else float("nan")
    chi = (sci - scale * sky_true) / np.sqrt(var_truth_sky * scale**2)
    chi_sigma = robust_sigma(chi[good])
    return ReductionScore(scale, flat, chi_sigma, aperture_ratios(sci, stars) / scale)


def isolated_stars(sources: Table, shape: tuple[int, int], flux_range: tuple[float, float] = (2e4, 5e5),
                   edge: float = 40.0, clear_px: float = 15.0) -> Table:
    """Bright, unsaturated, whole-on-chip stars with no other source brighter than 0.5 % of their flux within
    ``clear_px``: the stars whose aperture flux can be compared with the truth."""
    ny, nx = shape
    st = sources[(sources["type"] == "star")]
    x, y, f = np.asarray(st["x"], float), np.asarray(st["y"], float), np.asarray(st["flux"], float)
    ok = ((f >= flux_range[0]) & (f <= flux_range[1]) & ~np.asarray(st["saturated"], bool)
          & (x > edge) & (x < nx - 1 - edge) & (y > edge) & (y < ny - 1 - edge)
          & (np.asarray(st["flux_onchip"], float) >= 0.995 * f))
    all_xy = np.column_stack([np.asarray(sources["x"], float), np.asarray(sources["y"], float)])
    all_f = np.asarray(sources["flux_onchip"], float)
    tree = cKDTree(all_xy)
    for i in np.flatnonzero(ok):
        near = tree.query_ball_point([x[i], y[i]], clear_px)
        if any(all_f[j] > 0.005 * f[i] and not (all_xy[j, 0] == x[i] and all_xy[j, 1] == y[i]) for j in near):
            ok[i] = False
    return st[ok]


def aperture_ratios(image: np.ndarray, stars: Table, radius: float = 15.0,
                    annulus: tuple[float, float] = (22.0, 32.0)) -> np.ndarray:
    """Aperture flux (local annulus background) over the truth flux for each star of ``stars``."""
    import sep

    data = np.ascontiguousarray(image, dtype=np.float64)
    flux, _, _ = sep.sum_circle(data, np.asarray(stars["x"], float), np.asarray(stars["y"], float), radius,
                                bkgann=annulus)
    return np.asarray(flux) / np.asarray(stars["flux"], float)


# ---------------------------------------------------------------- extraction

def expected_snr(flux: np.ndarray, fwhm_px: np.ndarray, sky: float, read_noise: float) -> np.ndarray:
    """S/N of a star in an optimal (PSF-weighted) measurement: F / sqrt(F + NEA (sky + RN²)), with the
    Moffat noise-equivalent area NEA = π α² (2β - 1) / (β - 1)²."""
    alpha = fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))
    nea = np.pi * alpha**2 * (2 * MOFFAT_BETA - 1) / (MOFFAT_BETA - 1) ** 2
    return flux / np.sqrt(flux + nea * (sky + read_noise**2))


@dataclass
class ExtractionScore:
    n_truth: int
    n_found: int
    dx: np.ndarray
    dy: np.ndarray
    n_det: int
    n_spurious: int


def score_extraction(det_x: np.ndarray, det_y: np.ndarray, sources: Table, shape: tuple[int, int], sky: float,
                     read_noise: float, pixel_scale: float, snr_min: float = 20.0, match_px: float = 2.0,
                     edge: float = 10.0) -> ExtractionScore:
    """Completeness of truth stars with expected S/N ≥ ``snr_min`` (unsaturated, ``edge`` px inside the chip),
    matched to the nearest detection within ``match_px``; offsets of the matches; detections with no truth
    source (any type, any flux) within 3 px count as spurious."""
    ny, nx = shape
    st = sources[sources["type"] == "star"]
    x, y = np.asarray(st["x"], float), np.asarray(st["y"], float)
    fwhm = np.asarray(st["psf_fwhm"], float) / pixel_scale
    snr = expected_snr(np.asarray(st["flux_onchip"], float), fwhm, sky, read_noise)
    sel = ((snr >= snr_min) & ~np.asarray(st["saturated"], bool) & (x > edge) & (x < nx - 1 - edge)
           & (y > edge) & (y < ny - 1 - edge))
    tx, ty = x[sel], y[sel]
    det = np.column_stack([det_x, det_y]) if len(det_x) else np.zeros((0, 2))
    if len(det) == 0:
        return ExtractionScore(int(sel.sum()), 0, np.zeros(0), np.zeros(0), 0, 0)
    tree = cKDTree(det)
    dist, idx = tree.query(np.column_stack([tx, ty]), distance_upper_bound=match_px)
    found = np.isfinite(dist)
    dx = det[idx[found], 0] - tx[found]
    dy = det[idx[found], 1] - ty[found]
    all_tree = cKDTree(np.column_stack([np.asarray(sources["x"], float), np.asarray(sources["y"], float)]))
    d_all, _ = all_tree.query(det, distance_upper_bound=3.0)
    return ExtractionScore(int(sel.sum()), int(found.sum()), dx, dy, len(det), int(np.sum(~np.isfinite(d_all))))


# ---------------------------------------------------------------- astrometry

def wcs_rms_mas(solved: WCS, truth: WCS, shape: tuple[int, int], n: int = 24) -> tuple[float, float]:
    """(RMS, max) of the angular distance (mas) between a solved and the true WCS over an n × n pixel grid."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    ra1, dec1 = solved.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ra0, dec0 = truth.all_pix2world(gx.ravel(), gy.ravel(), 0)
    d = _sep_deg(ra0, dec0, ra1, dec1) * 3.6e6
    return float(np.sqrt(np.mean(d**2))), float(np.max(d))


def _sep_deg(ra0: np.ndarray, dec0: np.ndarray, ra1: np.ndarray, dec1: np.ndarray) -> np.ndarray:
    r0, d0, r1, d1 = (np.radians(np.asarray(a, float)) for a in (ra0, dec0, ra1, dec1))
    s = np.sin((d1 - d0) / 2) ** 2 + np.cos(d0) * np.cos(d1) * np.sin((r1 - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1))))
