"""QC metrics per product kind, from the product's FITS file (as an open ``HDUList``) — pure, no I/O.

Metric names and meanings are :data:`wisp.quality.METRICS`; the kinds and the metrics each may give are
:data:`wisp.quality.KIND_METRICS`. A missing optional keyword, extension or column omits its metrics; a
missing mandatory extension (``SCI``, ``CATALOG``) raises ``ValueError`` — the product file breaks the
stage contract, which is a bug, not bad input. Floats are rounded to 6 significant digits so that the same
file gives the same JSON on any machine.

>>> with fits.open(path) as hdul:                                        # doctest: +SKIP
...     compute_metrics("reduced", hdul, pixel_scale_arcsec=0.26)
{'background_e': 412.3, 'noise_e': 21.7, 'seeing_arcsec': 0.98, 'dq_bad_fraction': 0.0012, ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from services.qc.science.image import (
    DQ_UNUSABLE,
    Sky,
    analyse,
    clipped_mean_std,
    dq_fractions,
    header_number,
    header_pixel_scale,
    pixel_noise,
    sky_metrics,
)
from services.qc.science.psf import stellar_locus

Metrics = dict[str, float | int]
MIN_CATALOG_SNR = 20.0  # catalogue sources used for median_fwhm_arcsec / ellipticity
#: Kinds whose metrics come from the product file; ``refcat`` uses the product row's metrics.
FILE_KINDS = ("master_bias", "master_flat", "reduced", "astrometry", "catalog", "coadd_catalog", "coadd")


def _ext(hdul: fits.HDUList, name: str, *, required: bool) -> Any:
    if name in hdul:
        return hdul[name]
    if required:
        names = [h.name for h in hdul]
        raise ValueError(f"product file has no {name} extension (extensions: {names})")
    return None


def _image(hdu: Any) -> np.ndarray:
    data = hdu.data
    if data is None or np.ndim(data) != 2:
        raise ValueError(f"extension {hdu.name} is not a 2-D image (shape {np.shape(data)})")
    return np.asarray(data)


def _noise_ratio(sky: Sky, variance: np.ndarray) -> float | None:
    """Measured sky noise / sqrt(median variance) over the sky pixels with a positive finite variance."""
    var = variance[sky.sky]
    var = var[np.isfinite(var) & (var > 0)]
    if var.size == 0 or not sky.noise > 0:
        return None
    return sky.noise / math.sqrt(float(np.median(var)))


def master_metrics(hdul: fits.HDUList, *, relative: bool) -> Metrics:
    """Master bias (ADU) or flat (relative to its median, ``relative=True``)."""
    sci = _image(_ext(hdul, "SCI", required=True))
    unit = "rel" if relative else "adu"
    mean, std = clipped_mean_std(sci)
    out: Metrics = {f"mean_{unit}": mean, f"std_{unit}": std, f"pixel_noise_{unit}": pixel_noise(sci)}
    if relative:
        out["low_fraction"] = float(np.count_nonzero(~(sci >= 0.5))) / max(sci.size, 1)
    n = header_number(hdul[0].header, "NCOMBINE")
    if n is None:
        n = header_number(hdul["SCI"].header, "NCOMBINE")
    if n is not None:
        out["n_combine"] = int(n)
    return out


def reduced_metrics(hdul: fits.HDUList, pixel_scale_arcsec: float | None = None) -> Metrics:
    """A reduced frame (SCI e-, optional VAR e-^2 and DQ); ``pixel_scale_arcsec`` is the fallback when
    the header has neither PIXSCALE nor a celestial WCS."""
    primary, sci_hdu = hdul[0].header, _ext(hdul, "SCI", required=True)
    sci = _image(sci_hdu)
    out: Metrics = {}
    mask = ~np.isfinite(sci)
    dq_hdu = _ext(hdul, "DQ", required=False)
    if dq_hdu is not None and dq_hdu.data is not None and np.shape(dq_hdu.data) == sci.shape:
        dq = np.asarray(dq_hdu.data)
        out.update(dq_fractions(dq))
        mask |= (dq.astype(np.int64) & DQ_UNUSABLE) != 0
    scale = header_pixel_scale(primary) or header_pixel_scale(sci_hdu.header) or pixel_scale_arcsec
    sky = analyse(sci, mask)
    if sky is None:
        return out
    out["background_e"] = sky.background
    exptime = header_number(primary, "EXPTIME")
    if exptime is not None and exptime > 0:
        out["background_rate_e_s"] = sky.background / exptime
    if math.isfinite(sky.noise):
        out["noise_e"] = sky.noise
    var_hdu = _ext(hdul, "VAR", required=False)
    if var_hdu is not None and var_hdu.data is not None and np.shape(var_hdu.data) == sci.shape:
        ratio = _noise_ratio(sky, np.asarray(var_hdu.data, dtype=float))
        if ratio is not None:
            out["noise_ratio"] = ratio
    out.update(sky_metrics(sky, scale))
    return out


def astrometry_metrics(hdul: fits.HDUList) -> Metrics:
    """An astrometric/photometric solution: keywords of its (header-only) primary HDU."""
    header = hdul[0].header
    out: Metrics = {}
    for name, key in (("astrom_rms_mas", "ASTRMS"), ("astrom_rms_ra_mas", "ASTSRA"), ("astrom_rms_dec_mas", "ASTSDEC"),
                      ("astrom_dra_mas", "ASTDRA"), ("astrom_ddec_mas", "ASTDDEC"), ("zeropoint_mag", "MAGZP"),
                      ("zeropoint_err_mag", "MAGZPERR")):
        value = header_number(header, key)
        if value is not None:
            out[name] = value
    for name, key in (("n_ref", "ASTNREF"), ("n_zeropoint", "MAGZPN")):
        value = header_number(header, key)
        if value is not None:
            out[name] = int(value)
    scale = header_pixel_scale(header)
    if scale is not None:
        out["pixel_scale_arcsec"] = scale
    return out


def catalog_metrics(hdul: fits.HDUList) -> Metrics:
    """A source catalogue (``CATALOG`` table): counts, flagged fraction, stellar-locus FWHM and shape."""
    hdu = _ext(hdul, "CATALOG", required=True)
    if not isinstance(hdu, fits.BinTableHDU):
        raise ValueError(f"CATALOG is a {type(hdu).__name__}, not a binary table")
    data = hdu.data
    n = 0 if data is None else len(data)
    out: Metrics = {"n_sources": n}
    zp = header_number(hdu.header, "MAGZP")
    zp = zp if zp is not None else header_number(hdul[0].header, "MAGZP")
    if zp is not None:
        out["zeropoint_mag"] = zp
    if n == 0:
        return out
    cols = {c.upper(): c for c in hdu.columns.names}

    def col(name: str) -> np.ndarray | None:
        return np.asarray(data[cols[name]], dtype=float) if name in cols else None

    flags, snr, fwhm, ell = col("FLAGS"), col("SNR"), col("FWHM"), col("ELLIPTICITY")
    if flags is not None:
        out["flagged_fraction"] = float(np.count_nonzero(flags != 0)) / n
    if fwhm is None:
        return out
    good = np.isfinite(fwhm) & (fwhm > 0)
    if flags is not None:
        good &= flags == 0
    if snr is not None:
        good &= snr >= MIN_CATALOG_SNR
    idx = np.flatnonzero(good)
    stars = idx[stellar_locus(fwhm[idx])] if idx.size else idx
    out["n_stars"] = int(stars.size)
    if stars.size >= 3:
        out["median_fwhm_arcsec"] = float(np.median(fwhm[stars]))
        if ell is not None and np.isfinite(ell[stars]).any():
            out["ellipticity"] = float(np.nanmedian(ell[stars]))
    return out


def coadd_metrics(hdul: fits.HDUList, pixel_scale_arcsec: float | None = None) -> Metrics:
    """A coadd (SCI, optional WEIGHT = 1/variance with 0 = no data, MAGZP): coverage, noise vs weight,
    PSF, and the 5-sigma point-source depth ``MAGZP - 2.5 log10(5 noise sqrt(NEA))``."""
    primary, sci_hdu = hdul[0].header, _ext(hdul, "SCI", required=True)
    sci = _image(sci_hdu)
    mask = ~np.isfinite(sci)
    weight_hdu = _ext(hdul, "WEIGHT", required=False)
    weight = None
    if weight_hdu is not None and weight_hdu.data is not None and np.shape(weight_hdu.data) == sci.shape:
        weight = np.asarray(weight_hdu.data, dtype=float)
        mask |= ~(weight > 0)
    out: Metrics = {"coverage_fraction": float(np.count_nonzero(~mask)) / max(sci.size, 1)}
    zp = header_number(sci_hdu.header, "MAGZP")
    zp = zp if zp is not None else header_number(primary, "MAGZP")
    if zp is not None:
        out["zeropoint_mag"] = zp
    scale = header_pixel_scale(sci_hdu.header) or header_pixel_scale(primary) or pixel_scale_arcsec
    sky = analyse(sci, mask)
    if sky is None:
        return out
    if weight is not None:
        with np.errstate(divide="ignore"):
            ratio = _noise_ratio(sky, 1.0 / weight)
        if ratio is not None:
            out["noise_ratio"] = ratio
    out.update(sky_metrics(sky, scale))
    if zp is not None and sky.psf is not None and sky.noise > 0:
        out["depth_5sigma_mag"] = zp - 2.5 * math.log10(5.0 * sky.noise * math.sqrt(sky.psf.nea_px))
    return out


def refcat_metrics(row_metrics: Mapping[str, Any]) -> Metrics:
    """A reference catalogue is a manifest, not an image: its row count from the stage's metrics
    (``n_sources``, else the sum of the per-partition ``counts``)."""
    n = row_metrics.get("n_sources")
    if isinstance(n, int | float) and not isinstance(n, bool):
        return {"n_sources": int(n)}
    counts = row_metrics.get("counts")
    if isinstance(counts, Mapping):
        return {"n_sources": int(sum(int(v) for v in counts.values()))}
    return {}


_BY_KIND: dict[str, Callable[[fits.HDUList, float | None], Metrics]] = {
    "master_bias": lambda h, _: master_metrics(h, relative=False),
    "master_flat": lambda h, _: master_metrics(h, relative=True),
    "reduced": reduced_metrics,
    "astrometry": lambda h, _: astrometry_metrics(h),
    "catalog": lambda h, _: catalog_metrics(h),
    "coadd_catalog": lambda h, _: catalog_metrics(h),
    "coadd": coadd_metrics,
}


def clean(metrics: Mapping[str, Any]) -> Metrics:
    """JSON-safe, reproducible values: ints kept, floats rounded to 6 significant digits, non-finite dropped."""
    out: Metrics = {}
    for name, value in sorted(metrics.items()):
        if isinstance(value, bool | np.bool_):
            continue
        if isinstance(value, int | np.integer):
            out[name] = int(value)
        elif isinstance(value, float | np.floating) and math.isfinite(float(value)):
            out[name] = float(f"{float(value):.6g}")
    return out


def compute_metrics(kind: str, hdul: fits.HDUList, *, pixel_scale_arcsec: float | None = None) -> Metrics:
    """The QC metrics of a product of ``kind`` (one of :data:`FILE_KINDS`) from its open FITS file."""
    if kind not in _BY_KIND:
        raise ValueError(f"no file metrics for product kind {kind!r} (known: {', '.join(FILE_KINDS)})")
    return clean(_BY_KIND[kind](hdul, pixel_scale_arcsec))
