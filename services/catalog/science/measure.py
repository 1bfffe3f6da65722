"""Per-source measurements on the background-subtracted image: windowed centroids, Kron (AUTO) and circular
aperture photometry, half-light radii and the FLAGS bits. All positions 0-based px, fluxes e-."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sep

from services.catalog.science import flags as F
from services.catalog.science.detect import Prepared
from services.catalog.science.params import ExtractParams

KRON_SCAN = 6.0        # the Kron first moment is computed within 6 (A, B), as SExtractor does
CROWDED_FRACTION = 0.1  # other detections covering >= 10 % of the AUTO aperture set CROWDED


def _noise(prep: Prepared, params: ExtractParams) -> dict[str, Any]:
    """The error keywords of sep's aperture sums: the variance map, or the global RMS (+ Poisson, gain 1)."""
    if prep.var is not None:
        return {"var": prep.var}
    return {"err": prep.rms_global, "gain": 1.0 if params.source_poisson else None}


def _ellipses(objects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isophotal A, B (px, at least 0.5 px so apertures never degenerate) and THETA (rad, in [-pi/2, pi/2])."""
    a = np.maximum(np.nan_to_num(objects["a"].astype(float), nan=0.5), 0.5)
    b = np.clip(np.nan_to_num(objects["b"].astype(float), nan=0.5), 0.5, a)
    theta = np.clip(np.nan_to_num(objects["theta"].astype(float)), -math.pi / 2, math.pi / 2)
    return a, b, theta


def _sep_flags(flag: np.ndarray) -> np.ndarray:
    """Map sep aperture flags to Wisp bits (TRUNCATED, BADPIX)."""
    out = np.where(flag & sep.APER_TRUNC, F.TRUNCATED, 0)
    return out | np.where(flag & (sep.APER_HASMASKED | sep.APER_ALLMASKED), F.BADPIX, 0)


def _count(pixels: np.ndarray, x: np.ndarray, y: np.ndarray, a: np.ndarray | float, b: np.ndarray | float,
           theta: np.ndarray | float, scale: np.ndarray | float) -> np.ndarray:
    """Number of ``pixels`` (bool image) whose centres lie in each ellipse."""
    counts, _, _ = sep.sum_ellipse(pixels.astype(np.float32), x, y, a, b, theta, scale, subpix=1)
    return np.asarray(counts)


def _crowded(segmap: np.ndarray, x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray,
             theta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """True where pixels of *other* detections cover >= CROWDED_FRACTION of the AUTO ellipse."""
    ny, nx = segmap.shape
    cxx, cyy, cxy = sep.ellipse_coeffs(a, b, theta)
    out = np.zeros(len(x), bool)
    for i in range(len(x)):
        r = a[i] * scale[i]
        x0, x1 = max(int(x[i] - r), 0), min(int(x[i] + r) + 2, nx)
        y0, y1 = max(int(y[i] - r), 0), min(int(y[i] + r) + 2, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        box = segmap[y0:y1, x0:x1]
        dx = np.arange(x0, x1) - x[i]
        dy = (np.arange(y0, y1) - y[i])[:, None]
        inside = cxx[i] * dx**2 + cyy[i] * dy**2 + cxy[i] * dx * dy <= scale[i] ** 2
        n_in = np.count_nonzero(inside)
        if n_in:
            others = np.count_nonzero(inside & (box != 0) & (box != i + 1))
            out[i] = others >= CROWDED_FRACTION * n_in
    return out


def _neighbours(segmap: np.ndarray, n: int, params: ExtractParams) -> dict[str, np.ndarray]:
    """sep keywords that leave other detections' pixels out (if ``params.mask_neighbours``)."""
    return {"segmap": segmap, "seg_id": np.arange(1, n + 1, dtype=np.int32)} if params.mask_neighbours else {}


def windowed_centroids(prep: Prepared, objects: np.ndarray, segmap: np.ndarray, params: ExtractParams
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XWIN/YWIN (px): sep.winpos with sigma = half-light diameter / 2.35 (SExtractor's choice; the radius
    without neighbours). Falls back to the isophotal barycentre (flag WIN_FAILED) when the result is not
    finite or moved by more than max(1 px, sigma)."""
    x0, y0 = objects["x"].astype(float), objects["y"].astype(float)
    a, _, _ = _ellipses(objects)
    r50, _ = sep.flux_radius(prep.data, x0, y0, KRON_SCAN * a, 0.5, mask=prep.holes, subpix=params.subpix,
                             **_neighbours(segmap, len(x0), params))
    r50 = np.where(np.isfinite(r50) & (r50 > 0), r50, a)
    sig = 2.0 * r50 / 2.35
    xw, yw, _ = sep.winpos(prep.data, x0, y0, sig, mask=prep.holes)
    bad = ~(np.isfinite(xw) & np.isfinite(yw)) | (np.hypot(xw - x0, yw - y0) > np.maximum(1.0, sig))
    return np.where(bad, x0, xw), np.where(bad, y0, yw), np.where(bad, F.WIN_FAILED, 0)


def photometry(prep: Prepared, objects: np.ndarray, segmap: np.ndarray, x: np.ndarray, y: np.ndarray,
               params: ExtractParams, pixel_scale_arcsec: float) -> dict[str, np.ndarray]:
    """AUTO, aperture and half-light measurements at (x, y); returns columns keyed by their catalogue names
    (plus ``_aper_flags``), and FLAGS without the centroid bit."""
    n = len(objects)
    a, b, theta = _ellipses(objects)
    noise = _noise(prep, params)

    kr, kflag = sep.kron_radius(prep.data, x, y, a, b, theta, KRON_SCAN, mask=prep.holes,
                                **_neighbours(segmap, n, params))
    kron_ok = np.isfinite(kr) & (kr > 0) & ((kflag & sep.APER_NONPOSITIVE) == 0)
    scale = np.maximum(np.where(kron_ok, params.kron_factor * np.where(kron_ok, kr, 0.0), 0.0),
                       params.kron_min_radius)
    f_auto, e_auto, aflag = sep.sum_ellipse(prep.data, x, y, a, b, theta, scale, mask=prep.holes,
                                            subpix=params.subpix, **noise)
    r_px = np.array(params.apertures_arcsec) / pixel_scale_arcsec / 2.0
    per_aperture = [sep.sum_circle(prep.data, x, y, r, mask=prep.holes, subpix=params.subpix, **noise) for r in r_px]
    f_ap, e_ap, apflag = (np.stack(v, axis=1) for v in zip(*per_aperture, strict=True))
    norm = np.where(f_auto > 0, f_auto, np.nan)
    rmax = np.maximum(scale * a, 1.0)
    r50, _ = sep.flux_radius(prep.data, x, y, rmax, 0.5, normflux=np.nan_to_num(norm, nan=1.0), mask=prep.holes,
                             subpix=params.subpix, **_neighbours(segmap, n, params))
    r50 = np.where(np.isfinite(norm) & (r50 > 0), r50, np.nan)

    sat, bad_auto, bad_ap = np.zeros(n, bool), np.zeros(n, bool), np.zeros(f_ap.shape, bool)
    if prep.saturated.any():
        sat = _count(prep.saturated, x, y, a, b, theta, scale) > 0
    if prep.bad.any():
        bad_auto = _count(prep.bad, x, y, a, b, theta, scale) > 0
        bad_ap = np.stack([_count(prep.bad, x, y, r, r, 0.0, 1.0) > 0 for r in r_px], axis=1)
    oflag = objects["flag"].astype(np.int64)
    flags = (np.where(oflag & sep.OBJ_MERGED, F.BLENDED, 0) | np.where(oflag & sep.OBJ_TRUNC, F.TRUNCATED, 0)
             | np.where(oflag & sep.OBJ_SINGU, F.SINGULAR, 0) | _sep_flags(aflag.astype(np.int64))
             | np.where(kron_ok, 0, F.KRON_FAILED) | np.where(sat, F.SATURATED, 0) | np.where(bad_auto, F.BADPIX, 0)
             | np.where(_crowded(segmap, x, y, a, b, theta, scale), F.CROWDED, 0))
    ny, nx = prep.back.shape
    iy = np.clip(np.rint(y).astype(int), 0, ny - 1)
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    return {
        "FLUX_APER": f_ap, "FLUXERR_APER": e_ap,
        "_aper_flags": _sep_flags(apflag.astype(np.int64)) | np.where(bad_ap, F.BADPIX, 0),
        "FLUX_AUTO": f_auto, "FLUXERR_AUTO": e_auto, "KRON_RADIUS": scale,
        "A": a, "B": b, "THETA": np.degrees(theta), "FLUX_RADIUS": r50,
        "BACKGROUND": prep.back[iy, ix].astype(float), "FLAGS": flags.astype(np.int32),
    }
