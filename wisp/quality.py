"""System quality flags (``products.quality_flags``) and the metrics and thresholds that set them.

QC measures a set of metrics per product kind (:data:`KIND_METRICS`; names carry their units) and
compares them with thresholds: :data:`DEFAULT_THRESHOLDS`, overridden per metric by the optional ``qc:``
section of the instrument description (docs/instruments.md). Every metric belongs to one flag bit
(:data:`METRICS`); a metric outside its bounds sets that bit. QC owns the bits in :data:`QC_MASK` and
leaves any other bit of ``quality_flags`` alone. The user's verdict (``is_valid``) is never touched.

>>> evaluate({"seeing_arcsec": 3.1}, {"seeing_arcsec": Bounds(max=2.5)})
(1, ['seeing_arcsec = 3.1 is above the maximum 2.5 (SEEING)'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SEEING = 1  #: PSF too broad (seeing_arcsec, seeing_px, median_fwhm_arcsec)
ASTROMETRY = 2  #: astrometric solution poor (rms, offsets, too few reference stars, pixel scale)
ZEROPOINT = 4  #: photometric zeropoint out of range or poorly determined (transparency, clouds)
NOISE = 8  #: sky background or noise out of range, or noise inconsistent with the variance/weight map
FEW_SOURCES = 16  #: too few sources or stars detected
BAD_PIXELS = 32  #: too many pixels flagged in DQ (bad, saturated, cosmic, trail, no data), or catalogue flags
MASTER_NOISE = 64  #: master calibration statistics out of range (level, noise, frames combined)
ELLIPTICITY = 128  #: PSF too elongated (tracking, wind shake, optics)
COVERAGE = 256  #: coadd covers too little of its footprint
DEPTH = 512  #: coadd shallower than required

FLAG_NAMES: dict[int, str] = {
    SEEING: "SEEING", ASTROMETRY: "ASTROMETRY", ZEROPOINT: "ZEROPOINT", NOISE: "NOISE",
    FEW_SOURCES: "FEW_SOURCES", BAD_PIXELS: "BAD_PIXELS", MASTER_NOISE: "MASTER_NOISE",
    ELLIPTICITY: "ELLIPTICITY", COVERAGE: "COVERAGE", DEPTH: "DEPTH",
}
#: Every bit QC sets or clears.
QC_MASK = sum(FLAG_NAMES)

#: metric name -> (flag bit, meaning with units).
METRICS: dict[str, tuple[int, str]] = {
    # masters
    "mean_adu": (MASTER_NOISE, "master bias: 5-sigma-clipped mean level, ADU"),
    "std_adu": (MASTER_NOISE, "master bias: 5-sigma-clipped standard deviation (incl. structure), ADU"),
    "pixel_noise_adu": (MASTER_NOISE, "master bias: pixel-to-pixel noise from neighbour differences, ADU"),
    "mean_rel": (MASTER_NOISE, "master flat: clipped mean, relative to its median (1)"),
    "std_rel": (MASTER_NOISE, "master flat: clipped standard deviation (incl. vignetting), relative"),
    "pixel_noise_rel": (MASTER_NOISE, "master flat: pixel-to-pixel noise from neighbour differences, relative"),
    "low_fraction": (BAD_PIXELS, "master flat: fraction of pixels below 0.5 or not finite"),
    "n_combine": (MASTER_NOISE, "master: number of frames combined (NCOMBINE)"),
    # images
    "background_e": (NOISE, "sky background level, e-/px"),
    "background_rate_e_s": (NOISE, "sky background rate, e-/px/s (background_e / EXPTIME)"),
    "noise_e": (NOISE, "sky noise (robust rms of background-subtracted sky pixels), e-"),
    "noise_ratio": (NOISE, "measured sky noise / noise expected from VAR or WEIGHT (1 = consistent)"),
    "seeing_px": (SEEING, "median PSF FWHM of isolated stars (elliptical Moffat fits), px"),
    "seeing_arcsec": (SEEING, "median PSF FWHM of isolated stars, arcsec"),
    "ellipticity": (ELLIPTICITY, "median PSF ellipticity 1 - b/a of the stars (dimensionless)"),
    "n_stars": (FEW_SOURCES, "number of stars the PSF metrics are based on"),
    "n_sources": (FEW_SOURCES, "number of sources detected (catalogues: rows)"),
    "dq_bad_fraction": (BAD_PIXELS, "fraction of pixels with DQ bad, saturated, cosmic, trail or no data"),
    "dq_badpix_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 1 (bad pixel)"),
    "dq_saturated_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 2 (saturated)"),
    "dq_cosmic_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 4 (cosmic ray)"),
    "dq_trail_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 8 (satellite trail)"),
    "dq_nodata_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 16 (no data)"),
    "dq_interpolated_fraction": (BAD_PIXELS, "fraction of pixels with DQ bit 32 (interpolated)"),
    "coverage_fraction": (COVERAGE, "coadd: fraction of pixels with WEIGHT > 0"),
    "depth_5sigma_mag": (DEPTH, "coadd: 5-sigma point-source depth (PSF-weighted, from sky noise), mag"),
    # solutions
    "astrom_rms_mas": (ASTROMETRY, "astrometric residual rms (ASTRMS), mas"),
    "astrom_rms_ra_mas": (ASTROMETRY, "residual scatter in RA (ASTSRA), mas"),
    "astrom_rms_dec_mas": (ASTROMETRY, "residual scatter in Dec (ASTSDEC), mas"),
    "astrom_dra_mas": (ASTROMETRY, "mean residual in RA (ASTDRA), mas"),
    "astrom_ddec_mas": (ASTROMETRY, "mean residual in Dec (ASTDDEC), mas"),
    "n_ref": (ASTROMETRY, "reference stars used in the astrometric fit (ASTNREF)"),
    "pixel_scale_arcsec": (ASTROMETRY, "pixel scale of the solved WCS, arcsec/px"),
    "zeropoint_mag": (ZEROPOINT, "photometric zeropoint (MAGZP), mag for 1 e-/s"),
    "zeropoint_err_mag": (ZEROPOINT, "zeropoint uncertainty (MAGZPERR), mag"),
    "n_zeropoint": (ZEROPOINT, "stars used for the zeropoint (MAGZPN)"),
    # catalogues
    "median_fwhm_arcsec": (SEEING, "median FWHM of the stellar locus of unflagged S/N >= 20 sources, arcsec"),
    "flagged_fraction": (BAD_PIXELS, "fraction of catalogue rows with FLAGS != 0"),
}

_IMAGE = ("background_e", "background_rate_e_s", "noise_e", "noise_ratio", "seeing_px", "seeing_arcsec",
          "ellipticity", "n_stars", "n_sources")
_DQ = ("dq_bad_fraction", "dq_badpix_fraction", "dq_saturated_fraction", "dq_cosmic_fraction",
       "dq_trail_fraction", "dq_nodata_fraction", "dq_interpolated_fraction")
_CATALOG = ("n_sources", "n_stars", "median_fwhm_arcsec", "ellipticity", "zeropoint_mag", "flagged_fraction")
#: The metrics QC computes (and thresholds may name) per product kind.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "master_bias": ("mean_adu", "std_adu", "pixel_noise_adu", "n_combine"),
    "master_flat": ("mean_rel", "std_rel", "pixel_noise_rel", "low_fraction", "n_combine"),
    "reduced": (*_IMAGE, *_DQ),
    "astrometry": ("astrom_rms_mas", "astrom_rms_ra_mas", "astrom_rms_dec_mas", "astrom_dra_mas",
                   "astrom_ddec_mas", "n_ref", "pixel_scale_arcsec", "zeropoint_mag", "zeropoint_err_mag",
                   "n_zeropoint"),
    "catalog": _CATALOG,
    "coadd_catalog": _CATALOG,
    "coadd": ("coverage_fraction", "depth_5sigma_mag", "zeropoint_mag", "noise_ratio", "seeing_px",
              "seeing_arcsec", "ellipticity", "n_stars", "n_sources"),
    "refcat": ("n_sources",),
}


@dataclass(frozen=True)
class Bounds:
    """Accepted range of one metric: ``min`` <= value <= ``max`` (either may be None = open), with
    per-filter overrides (``filters``: canonical filter name -> Bounds whose given ends replace these)."""

    min: float | None = None
    max: float | None = None
    filters: Mapping[str, Bounds] = field(default_factory=dict)

    def for_filter(self, name: str | None) -> Bounds:
        """These bounds for products in filter ``name`` (without the per-filter table)."""
        own = self.filters.get(name) if name is not None else None
        if own is None:
            return Bounds(self.min, self.max)
        return Bounds(own.min if own.min is not None else self.min, own.max if own.max is not None else self.max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (only the ends that are set)."""
        out: dict[str, Any] = {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}
        if self.filters:
            out["filters"] = {k: v.to_dict() for k, v in sorted(self.filters.items())}
        return out


#: Instrument-independent thresholds, used unless the description overrides the metric (or sets it to null).
DEFAULT_THRESHOLDS: dict[str, dict[str, Bounds]] = {
    "master_bias": {"n_combine": Bounds(min=3)},
    "master_flat": {"n_combine": Bounds(min=3), "mean_rel": Bounds(min=0.8, max=1.2),
                    "low_fraction": Bounds(max=0.05)},
    "reduced": {"dq_bad_fraction": Bounds(max=0.1), "noise_ratio": Bounds(min=0.7, max=1.5),
                "n_sources": Bounds(min=1)},
    "astrometry": {"n_ref": Bounds(min=5), "astrom_rms_mas": Bounds(max=500.0)},
    "catalog": {"n_sources": Bounds(min=5)},
    "coadd_catalog": {"n_sources": Bounds(min=5)},
    "coadd": {"coverage_fraction": Bounds(min=0.5)},
    "refcat": {"n_sources": Bounds(min=10)},
}

QcSection = Mapping[str, Mapping[str, Bounds | None]]


def thresholds_for(kind: str, qc: QcSection | None = None, filter_name: str | None = None) -> dict[str, Bounds]:
    """The thresholds of one product: defaults of ``kind``, replaced per metric by the description's
    ``qc`` section (a None value removes the default), resolved for ``filter_name``."""
    merged: dict[str, Bounds | None] = {**DEFAULT_THRESHOLDS.get(kind, {}), **((qc or {}).get(kind) or {})}
    return {m: b.for_filter(filter_name) for m, b in sorted(merged.items()) if b is not None}


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def evaluate(metrics: Mapping[str, Any], thresholds: Mapping[str, Bounds]) -> tuple[int, list[str]]:
    """Flags and reasons (sorted by metric): each metric outside its bounds sets its :data:`METRICS` bit.

    A metric without a value is not judged. A metric that is not a finite number is outside any bounds.
    """
    flags, reasons = 0, []
    for name in sorted(thresholds):
        bounds, value = thresholds[name], metrics.get(name)
        if value is None or name not in METRICS:
            continue
        bit = METRICS[name][0]
        label = FLAG_NAMES[bit]
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        if not math.isfinite(number):
            problem = f"{name} = {value!r} is not a finite number"
        elif bounds.min is not None and number < bounds.min:
            problem = f"{name} = {_fmt(number)} is below the minimum {_fmt(bounds.min)}"
        elif bounds.max is not None and number > bounds.max:
            problem = f"{name} = {_fmt(number)} is above the maximum {_fmt(bounds.max)}"
        else:
            continue
        flags |= bit
        reasons.append(f"{problem} ({label})")
    return flags, reasons


def flag_names(flags: int) -> list[str]:
    """Names of the QC bits set in ``flags``, lowest bit first (other bits as ``BIT<n>``)."""
    out = []
    for n in range(max(int(flags).bit_length(), 0)):
        bit = 1 << n
        if flags & bit:
            out.append(FLAG_NAMES.get(bit, f"BIT{n}"))
    return out
