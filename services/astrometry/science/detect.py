"""Star detection with sep: background, extraction, windowed centroids, sizes and aperture fluxes.

Pixel coordinates are 0-based (numpy ``data[y, x]``, pixel centres at integers; FITS = 0-based + 1).
The image unit (e- or ADU) carries through to ``flux``/``flux_err``/``peak``.
"""

from __future__ import annotations

import numpy as np
import sep
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from wisp.errors import InvalidInput

#: ``flags`` bits of :func:`detect_stars`
FLAG_SEP = 1  # sep extraction flag (merged/blended, truncated at the image edge, ...)
FLAG_MASKED = 2  # masked (DQ) pixels in the aperture: saturated, bad, cosmic ...
FLAG_EXTENDED = 4  # larger than the stellar locus (galaxy, blend)
FLAG_COMPACT = 8  # smaller than the stellar locus (cosmic ray, hot pixel)
FLAG_EDGE = 16  # aperture off the image
FLAG_CENTROID = 32  # windowed centroid failed or moved by more than 1.5 px
FLAG_SATURATED = 64  # peak above ``saturation``
FLAG_CROWDED = 128  # another detection within the flux aperture + 2 half-light radii (kept by stars_only)

sep.set_extract_pixstack(2_000_000)
sep.set_sub_object_limit(4096)


def _clipped_mean(values: np.ndarray, kappa: float = 3.0, rounds: int = 5) -> float:
    """Mean after iterative kappa-sigma clipping (starting from median and MAD)."""
    if values.size == 0:
        return 0.0
    values = values[:: max(1, values.size // 250_000)]  # a regular subsample is plenty for one number
    centre = float(np.median(values))
    width = 1.4826 * float(np.median(np.abs(values - centre)))
    for _ in range(rounds):
        if width <= 0:
            break
        sel = values[np.abs(values - centre) < kappa * width]
        centre, width = float(sel.mean()), float(sel.std())
    return centre


def _background(data: np.ndarray, mask: np.ndarray, sources: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Background and rms (image units): sep's mesh with the detected ``sources`` (grown by 4 px) masked,
    shifted by the clipped mean of what is left. sep's mode estimator sits below the mean of the skewed
    (Poisson, faint-source) sky; aperture sums need the mean, which also removes, on average, the light of
    undetected sources that falls in an aperture."""
    grown = ndimage.maximum_filter(sources, size=9) | mask
    if grown.mean() > 0.7:  # a packed field: keep the sources in the mesh statistics
        grown = mask
    bkg = sep.Background(data, mask=grown, bw=box, bh=box, fw=3, fh=3)
    back = bkg.back()
    offset = _clipped_mean((data - back)[~grown])
    return back + np.float32(offset), bkg.rms()


def _locus(r_half: np.ndarray, snr: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """Median and robust width (px) of the half-light radius of bright, clean sources (the stars)."""
    pick = clean & (snr > 20.0) & np.isfinite(r_half) & (r_half > 0)
    if pick.sum() < 5:
        pick = clean & np.isfinite(r_half) & (r_half > 0)
    if not pick.any():
        return float("nan"), float("nan")
    values = r_half[pick]
    med = float(np.median(values))
    near = values
    for _ in range(3):  # galaxies pull the median up: re-centre on the values near it
        close = values[np.abs(values - med) < 0.25 * med]
        if close.size < 3:
            break
        near, med = close, float(np.median(close))
    mad = float(np.median(np.abs(near - med))) * 1.4826
    return med, max(mad, 0.03 * med)


def detect_stars(sci: np.ndarray, var: np.ndarray | None = None, dq: np.ndarray | None = None, *,
                 rms: np.ndarray | float | None = None, thresh: float = 5.0, minarea: int = 5,
                 aper_rhalf: float = 6.0, saturation: float | None = None, background_box: int = 64,
                 stars_only: bool = True) -> Table:
    """Detect sources and keep the point-like, unsaturated ones (``stars_only``: no flag but FLAG_CROWDED;
    else all, with flags).

    ``sci``: background-included image (e- or ADU); ``var`` its variance or ``rms`` its noise (same units,
    default: the background rms); ``dq``: non-zero = bad pixel (ignored, and flagged if in an aperture).
    ``thresh`` in sigma per pixel of the matched-filtered image, ``minarea`` px. Returns a Table, brightest
    first, with ``x``, ``y`` (0-based px, windowed centroids ``sep.winpos``), ``flux``, ``flux_err``
    (background-subtracted, in a circle of radius ``aper_rhalf`` x the stellar half-light radius: ~3.8 FWHM
    for a beta = 3 Moffat, 3 FWHM for a Gaussian), ``fwhm`` (px, 2 x half-light radius: the FWHM for a
    Gaussian PSF), ``r_half`` (px), ``a``, ``b`` (px, isophotal rms axes), ``theta`` (rad), ``peak``,
    ``snr`` (in a near-optimal circle of 1.5 stellar half-light radii) and ``flags`` (``FLAG_*`` bits).
    ``meta``: ``RHALF`` (stellar locus, px), ``APRAD`` (px), ``NDET`` (all detections), ``BKGRMS``.
    """
    if sci.ndim != 2:
        raise InvalidInput(f"image must be 2-D, got shape {sci.shape}", code="astrometry.bad_image")
    data = np.ascontiguousarray(sci, dtype=np.float32)
    mask = np.zeros(data.shape, bool) if dq is None else np.ascontiguousarray(dq != 0)
    finite = np.isfinite(data)
    if not finite.all():
        mask |= ~finite
        data = np.where(finite, data, 0.0).astype(np.float32)
    first = sep.Background(data, mask=mask, bw=background_box, bh=background_box, fw=3, fh=3)
    if var is not None:
        noise = np.sqrt(np.clip(np.asarray(var, dtype=np.float32), 0.0, None))
    elif rms is not None:
        noise = np.broadcast_to(np.asarray(rms, dtype=np.float32), data.shape)
    else:
        noise = first.rms()
    noise = np.ascontiguousarray(np.where(mask | ~np.isfinite(noise) | (noise <= 0), np.float32(1e10), noise),
                                 dtype=np.float32)
    objs, seg = sep.extract(data - first.back(), thresh, err=noise, mask=mask, minarea=minarea,
                            deblend_cont=0.005, clean=True, segmentation_map=True)
    back, back_rms = _background(data, mask, seg > 0, background_box)
    sub = np.ascontiguousarray(data - back, dtype=np.float32)
    meta = {"NDET": len(objs), "BKGRMS": float(np.median(back_rms))}
    names = ["x", "y", "flux", "flux_err", "fwhm", "r_half", "a", "b", "theta", "peak", "snr", "flags"]
    if len(objs) == 0:
        return Table({n: np.zeros(0, dtype=np.int32 if n == "flags" else float) for n in names}, meta=meta)
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    a = np.clip(objs["a"].astype(float), 0.5, None)
    r_half, rflag = sep.flux_radius(sub, x, y, np.clip(6.0 * a, 3.0, 40.0), 0.5, mask=mask, subpix=5)
    sig = 2.0 * np.clip(r_half, 0.5, 20.0) / 2.35
    xw, yw, wflag = sep.winpos(sub, x, y, sig, mask=mask)
    benign = sep.APER_HASMASKED | sep.APER_TRUNC  # masked pixels are judged by FLAG_MASKED below
    bad_win = ((wflag & ~benign) != 0) | ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - x, yw - y) > 1.5)
    xw, yw = np.where(bad_win, x, xw), np.where(bad_win, y, yw)
    flags = np.where(objs["flag"] != 0, FLAG_SEP, 0) | np.where(bad_win | ((rflag & ~benign) != 0), FLAG_CENTROID, 0)
    med, width = _locus(r_half, objs["cflux"] / np.maximum(noise[objs["ycpeak"], objs["xcpeak"]], 1e-30),
                        flags == 0)
    core = med if np.isfinite(med) else float(np.median(r_half))
    _, _, inner_flag = sep.sum_circle(sub, xw, yw, max(3.0 * core, 3.0), mask=mask, subpix=1)
    f_core, e_core, _ = sep.sum_circle(sub, xw, yw, max(1.5 * core, 1.5), err=noise, mask=mask, subpix=5)
    radius = aper_rhalf * core
    flux, flux_err, aflag = sep.sum_circle(sub, xw, yw, radius, err=noise, mask=mask, subpix=5)
    flags |= np.where((inner_flag & sep.APER_HASMASKED) != 0, FLAG_MASKED, 0)
    flags |= np.where((aflag & sep.APER_TRUNC) != 0, FLAG_EDGE, 0)
    if np.isfinite(med):
        flags |= np.where(r_half > med + max(3.0 * width, 0.15 * med), FLAG_EXTENDED, 0)
        flags |= np.where(r_half < med - max(3.0 * width, 0.25 * med), FLAG_COMPACT, 0)
    if saturation is not None:
        flags |= np.where(objs["peak"] + back[objs["ycpeak"], objs["xcpeak"]] >= saturation, FLAG_SATURATED, 0)
    if len(objs) > 1:
        pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius + 2.0 * float(np.nanmedian(r_half)),
                                                             output_type="ndarray")
        flags[np.unique(pairs)] |= FLAG_CROWDED
    snr = np.where(e_core > 0, f_core / np.where(e_core > 0, e_core, 1.0), 0.0)
    table = Table({
        "x": xw, "y": yw, "flux": flux.astype(float), "flux_err": flux_err.astype(float),
        "fwhm": 2.0 * r_half, "r_half": r_half.astype(float), "a": objs["a"].astype(float),
        "b": objs["b"].astype(float), "theta": objs["theta"].astype(float), "peak": objs["peak"].astype(float),
        "snr": snr, "flags": flags.astype(np.int32),
    }, meta=meta | {"RHALF": med, "APRAD": radius})
    table = table[np.lexsort((table["x"], table["y"], -table["flux"]))]
    if stars_only:
        table = table[((table["flags"] & ~FLAG_CROWDED) == 0) & (table["flux"] > 0)]
    return table
