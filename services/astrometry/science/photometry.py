"""Photometric zeropoint of a chip from large-aperture fluxes of reference stars.

Convention: ``m = zp - 2.5 log10(flux / exptime)`` with ``flux`` in e- (flat-fielded, gain applied) and
``exptime`` in s, so ``zp`` is the magnitude of a source giving 1 e-/s *at the observed airmass*. Above the
atmosphere: ``zp + k * airmass`` for an extinction coefficient ``k`` (mag/airmass). In the simulator's
terms ``zp = ZPEXP - 2.5 log10(EXPTIME) = ZP - EXTCOEF * AIRMASS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

from wisp.errors import InvalidInput

FIVE_OVER_LN10 = 2.5 / np.log(10.0)  # mag per unit relative flux error (1.0857)


@dataclass(frozen=True)
class ZeroPoint:
    """``zp`` (mag, 1 e-/s at ``airmass``), its error ``zp_err`` (mag, from the scatter when it exceeds
    the stated errors), ``n`` stars kept, ``rms`` (mag) of their residuals, ``n_rejected`` clipped,
    ``zp_airmass0`` (above the atmosphere, when an extinction coefficient was given) and a boolean
    ``used`` mask over the inputs."""

    zp: float
    zp_err: float
    n: int
    rms: float
    n_rejected: int
    exptime: float
    airmass: float | None
    zp_airmass0: float | None
    used: np.ndarray

    def magnitude(self, flux: np.ndarray) -> np.ndarray:
        """Calibrated magnitude of fluxes (e- in this exposure)."""
        return self.zp - 2.5 * np.log10(np.asarray(flux, float) / self.exptime)


def aperture_flux(image: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float, *,
                  err: np.ndarray | None = None, mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Flux, its error and sep flags in circles of ``radius`` px at 0-based (x, y) of a
    background-subtracted ``image`` (err: per-pixel noise, mask: True = ignore)."""
    data = np.ascontiguousarray(image, dtype=np.float32)
    e = None if err is None else np.ascontiguousarray(err, dtype=np.float32)
    m = None if mask is None else np.ascontiguousarray(mask, dtype=bool)
    flux, flux_err, flags = sep.sum_circle(data, np.asarray(x, float), np.asarray(y, float), radius, err=e,
                                           mask=m, subpix=5)
    return np.asarray(flux, float), np.asarray(flux_err, float), np.asarray(flags)


def fit_zeropoint(inst_flux: np.ndarray, flux_err: np.ndarray, ref_mag: np.ndarray, exptime_s: float,
                  airmass: float | None = None, *, ref_mag_err: np.ndarray | None = None, clip: float = 3.0,
                  max_iter: int = 10, floor_mag: float = 0.005, extinction: float | None = None,
                  min_stars: int = 3) -> ZeroPoint:
    """Weighted mean of ``ref_mag + 2.5 log10(inst_flux / exptime_s)`` (see the module convention) with
    sigma clipping at ``clip`` robust sigmas (MAD), weights 1 / (flux error^2 + ``ref_mag_err``^2 +
    ``floor_mag``^2) in mag. Stars with non-positive flux or non-finite values are ignored. Raises
    ``InvalidInput`` ``photometry.too_few`` with fewer than ``min_stars`` usable stars."""
    if exptime_s <= 0:
        raise InvalidInput(f"exposure time must be positive, got {exptime_s}", code="photometry.bad_exptime")
    flux = np.asarray(inst_flux, float)
    mag = np.asarray(ref_mag, float)
    ferr = np.asarray(flux_err, float)
    merr = np.zeros_like(mag) if ref_mag_err is None else np.asarray(ref_mag_err, float)
    ok = (flux > 0) & np.isfinite(flux) & np.isfinite(mag) & np.isfinite(ferr) & np.isfinite(merr)
    if ok.sum() < min_stars:
        raise InvalidInput(f"{int(ok.sum())} usable stars for the zeropoint (need {min_stars})",
                           code="photometry.too_few", n_stars=int(ok.sum()))
    zp_i = np.full(flux.size, np.nan)
    zp_i[ok] = mag[ok] + 2.5 * np.log10(flux[ok] / exptime_s)
    sig = np.sqrt((FIVE_OVER_LN10 * ferr / np.where(ok, flux, 1.0)) ** 2 + merr**2 + floor_mag**2)
    keep = ok.copy()
    zp = float(np.median(zp_i[keep]))
    for rnd in range(max_iter + 1):
        w = 1.0 / sig[keep] ** 2
        zp = float(np.sum(w * zp_i[keep]) / np.sum(w))
        resid = zp_i - zp
        robust = 1.4826 * float(np.median(np.abs(resid[keep])))
        new_keep = ok & (np.abs(resid) <= clip * robust)
        new_keep |= ok & (np.abs(resid) <= clip * sig)  # never clip a star within its own errors
        if rnd == max_iter or new_keep.sum() < min_stars or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    w = 1.0 / sig[keep] ** 2
    resid = zp_i[keep] - zp
    n = int(keep.sum())
    chi2 = float(np.sum(w * resid**2) / max(n - 1, 1))
    zp_err = float(np.sqrt(1.0 / np.sum(w)) * max(1.0, np.sqrt(chi2)))
    return ZeroPoint(zp=zp, zp_err=zp_err, n=n, rms=float(np.sqrt(np.mean(resid**2))),
                     n_rejected=int(ok.sum() - n), exptime=float(exptime_s), airmass=airmass,
                     zp_airmass0=None if extinction is None or airmass is None else zp + extinction * airmass,
                     used=keep)
