"""Pixel statistics shared by the image kinds: robust moments, DQ fractions, and sky/detection/PSF.

Pure functions on numpy arrays and FITS headers; nothing here reads files.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import sep
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage

from services.qc.science.psf import Psf, measure_psf

# Wisp DQ bits (DESIGN.md §8), as the calib stage writes them.
DQ_BITS: dict[str, int] = {"badpix": 1, "saturated": 2, "cosmic": 4, "trail": 8, "nodata": 16, "interpolated": 32}
#: Bits that make a pixel unusable (interpolated pixels are usable).
DQ_UNUSABLE = 1 | 2 | 4 | 8 | 16
MAD_TO_SIGMA = 1.482602218505602
DETECT_SIGMA = 5.0  # detection threshold, in units of the global background rms
BACK_MESH = 64  # px
SOURCE_GROW = 3  # px: sources' footprints are grown by this much before measuring the sky noise
LOWER_1SIGMA = 0.15865525393145707  # fraction of a Gaussian below -1 sigma
MAX_SAMPLE = 250_000  # medians are taken on at most about this many values (a regular, odd-strided sample)


def _sample(values: np.ndarray) -> np.ndarray:
    """The finite values (float64) of an evenly strided sample of at most ~``MAX_SAMPLE`` of ``values``."""
    v = np.asarray(values).ravel()
    if v.size > MAX_SAMPLE:
        stride = -(-v.size // MAX_SAMPLE)
        v = v[::stride + 1 - stride % 2]  # odd stride: no aliasing with even row lengths
    v = v.astype(float)
    return v[np.isfinite(v)]


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation of the finite values (sampled; NaN if there are none)."""
    v = _sample(values)
    if v.size == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))


def clipped_mean_std(values: np.ndarray, nsigma: float = 5.0) -> tuple[float, float]:
    """Mean and standard deviation of the finite values within ``nsigma`` robust sigmas of the median
    (median and sigma from a sample, mean and standard deviation from every value)."""
    sample = _sample(values)
    if sample.size == 0:
        return math.nan, math.nan
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    med, sig = float(np.median(sample)), robust_sigma(sample)
    if sig > 0:
        v = v[np.abs(v - med) <= nsigma * sig]
    return float(v.mean()), float(v.std())


def pixel_noise(image: np.ndarray) -> float:
    """Pixel-to-pixel noise: robust sigma of horizontal neighbour differences / sqrt(2) (blind to
    large-scale structure such as gradients, vignetting or column patterns along rows)."""
    a = np.asarray(image, dtype=float)
    if a.ndim != 2 or a.shape[1] < 2:
        return math.nan
    return robust_sigma(a[:, 1:] - a[:, :-1]) / math.sqrt(2.0)


def dq_fractions(dq: np.ndarray) -> dict[str, float]:
    """``dq_<bit>_fraction`` per DQ bit and ``dq_bad_fraction`` (any unusable bit), fractions of pixels."""
    d = np.asarray(dq).astype(np.int64, copy=False)
    n = max(d.size, 1)
    out = {f"dq_{name}_fraction": float(np.count_nonzero(d & bit)) / n for name, bit in DQ_BITS.items()}
    out["dq_bad_fraction"] = float(np.count_nonzero(d & DQ_UNUSABLE)) / n
    return out


def header_number(header: fits.Header, *keys: str) -> float | None:
    """The first of ``keys`` present with a finite numeric value (booleans are not numbers)."""
    for key in keys:
        value = header.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def header_pixel_scale(header: fits.Header) -> float | None:
    """Pixel scale (arcsec/px): PIXSCALE if positive, else the geometric mean scale of a celestial WCS."""
    scale = header_number(header, "PIXSCALE")
    if scale is not None and scale > 0:
        return scale
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
        if not wcs.has_celestial:
            return None
        scales = proj_plane_pixel_scales(wcs.celestial)
    except (ValueError, KeyError, MemoryError):
        return None
    value = float(math.sqrt(abs(scales[0] * scales[1]))) * 3600.0
    return value if math.isfinite(value) and value > 0 else None


@dataclass(frozen=True)
class Sky:
    """Sky and sources of an image, in the image's units: ``background`` (sep's global level) and
    ``noise`` (sky rms: minus the 15.87th percentile of the background-subtracted pixels farther than
    ``SOURCE_GROW`` px from any source, i.e. the lower side of the distribution, which faint source wings do
    not reach); ``sky`` marks those pixels; ``n_sources`` is the number of detections at ``DETECT_SIGMA``
    (None if detection failed); ``psf`` is None when too few stars were measured."""

    background: float
    noise: float
    sky: np.ndarray
    n_sources: int | None
    psf: Psf | None


def sky_noise(residual: np.ndarray) -> float:
    """Gaussian sigma from the lower side of background-subtracted sky values: -P15.87 (sampled)."""
    v = _sample(residual)
    return float(-np.percentile(v, 100.0 * LOWER_1SIGMA)) if v.size else math.nan


def analyse(sci: np.ndarray, mask: np.ndarray) -> Sky | None:
    """Background, noise, detection and PSF of ``sci`` (``mask`` True = unusable); None if all is masked."""
    data = np.array(sci, dtype=np.float32)  # native byte order, a copy
    mask = np.asarray(mask, dtype=bool) | ~np.isfinite(data)
    if mask.all() or min(data.shape) < 16:
        return None
    data[mask] = 0.0
    mesh = int(min(BACK_MESH, max(8, min(data.shape) // 4)))
    bkg = sep.Background(data, mask=mask, bw=mesh, bh=mesh, fw=3, fh=3)
    data -= bkg.back(dtype=np.float32)
    data[mask] = 0.0
    rms = float(bkg.globalrms)
    if sep.get_extract_pixstack() < data.size:
        sep.set_extract_pixstack(data.size)
    objects: np.ndarray | None = None
    sky = ~mask
    if rms > 0 and math.isfinite(rms):
        try:
            objects, seg = sep.extract(data, DETECT_SIGMA, err=rms, mask=mask, segmentation_map=True)
            sky &= ~ndimage.maximum_filter(seg > 0, size=2 * SOURCE_GROW + 1)
        except Exception as exc:  # sep raises bare Exception on buffer/deblend overflows: no source metrics
            if type(exc) is not Exception:
                raise
    noise = sky_noise(data[sky]) if sky.any() else math.nan
    psf = measure_psf(data, mask, objects, noise) if objects is not None and noise > 0 else None
    return Sky(float(bkg.globalback), noise, sky, None if objects is None else len(objects), psf)


def sky_metrics(sky: Sky, pixel_scale: float | None) -> dict[str, float | int]:
    """The source and PSF metrics of an analysed image (PSF in arcsec only with a pixel scale)."""
    out: dict[str, float | int] = {}
    if sky.n_sources is not None:
        out["n_sources"] = sky.n_sources
        out["n_stars"] = sky.psf.n_stars if sky.psf is not None else 0
    if sky.psf is not None:
        out["seeing_px"] = sky.psf.fwhm_px
        out["ellipticity"] = sky.psf.ellipticity
        if pixel_scale is not None:
            out["seeing_arcsec"] = sky.psf.fwhm_px * pixel_scale
    return out
