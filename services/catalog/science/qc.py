"""Quality numbers of a catalogue made by ``extract``: the PSF FWHM and a summary for QC."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.table import Table

from services.catalog.science import flags as F
from services.catalog.science.shape import psf_locus

MIN_SNR = 50.0  # "bright": the PSF is measured on point sources at S/N >= 50


def _clean_points(table: Table, min_snr: float) -> np.ndarray:
    """Rows that are clean (no UNRELIABLE flag), bright (S/N >= min_snr) point sources (CLASS 1)."""
    return ((np.asarray(table["FLAGS"]) & F.UNRELIABLE) == 0) & (np.asarray(table["SNR"]) >= min_snr) \
        & (np.asarray(table["CLASS"]) == 1.0) & np.isfinite(np.asarray(table["FWHM"]))


def psf_fwhm(table: Table, min_snr: float = MIN_SNR) -> float:
    """Median FWHM (arcsec) of the bright, unsaturated, unflagged point sources; when fewer than 3 are
    classified, the densest FWHM cluster of bright clean sources; NaN when there is none."""
    if len(table) == 0:
        return math.nan
    sel = _clean_points(table, min_snr)
    if np.count_nonzero(sel) >= 3:
        return float(np.median(np.asarray(table["FWHM"])[sel]))
    return psf_locus(np.asarray(table["FWHM"], float), np.asarray(table["SNR"], float),
                     np.asarray(table["FLAGS"]), min_snr)


def summary(table: Table, min_snr: float = MIN_SNR) -> dict[str, Any]:
    """QC numbers: counts (sources, flagged, saturated, blended, point, extended), the PSF FWHM (arcsec), the
    median ellipticity of the PSF stars and the median background (e-/px). NaN where undefined."""
    flags = np.asarray(table["FLAGS"]) if len(table) else np.zeros(0, int)
    cls = np.asarray(table["CLASS"]) if len(table) else np.zeros(0)
    sel = _clean_points(table, min_snr) if len(table) else np.zeros(0, bool)
    ell = np.asarray(table["ELLIPTICITY"])[sel] if len(table) else np.zeros(0)
    back = np.asarray(table["BACKGROUND"]) if len(table) else np.zeros(0)
    return {
        "n_sources": len(table),
        "n_flagged": int(np.count_nonzero(flags & F.UNRELIABLE)),
        "n_saturated": int(np.count_nonzero(flags & F.SATURATED)),
        "n_blended": int(np.count_nonzero(flags & F.BLENDED)),
        "n_point": int(np.count_nonzero(cls == 1.0)),
        "n_extended": int(np.count_nonzero(cls == 0.0)),
        "n_psf_stars": int(np.count_nonzero(sel)),
        "psf_fwhm_arcsec": psf_fwhm(table, min_snr),
        "median_ellipticity": float(np.median(ell)) if len(ell) else math.nan,
        "median_background": float(np.median(back)) if len(back) else math.nan,
    }
