"""The illumination-correction product of one chip and filter, and its application to a reduced chip.

:func:`make_illumination`: from reduced chips (SCI e-, flat-fielded, sky not subtracted; VAR; DQ) of one
night's dithered science block, the night-sky flat (:func:`~.illumination.make_superflat`: float32,
median 1) and, when asked, the fringe frame made after dividing by it (:func:`~.illumination.make_fringe_frame`:
float32, per unit sky), with their metrics.

:func:`apply_illumination`: a reduced chip divided by the night-sky flat (VAR by its square), then, with a
fringe frame, the fringes fitted (polynomial sky + amplitude x level x pattern, sources clipped, DQ-flagged
pixels left out: :func:`~.illumination.fit_fringe`) and subtracted. Call it on the flat-fielded SCI before
any sky subtraction, after cosmic rays and trails are flagged in DQ (so the fit leaves them out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.calib.science.illumination import (
    CombineMethod,
    SourceMasking,
    apply_correction,
    make_fringe_frame,
    make_superflat,
    remove_fringes,
    sky_frames,
)
from wisp.dq import WEIGHT_BAD_BITS
from wisp.errors import InvalidInput

#: a night-sky flat outside this range is not an illumination correction but a failure (a few % is usual)
SUPERFLAT_RANGE = (0.5, 2.0)
DEFAULT_MASKING = SourceMasking()


@dataclass(frozen=True)
class Illumination:
    """``superflat`` float32 (ny, nx), median 1 (divide SCI by it); ``fringe`` float32 (ny, nx) per unit sky,
    or None; ``metrics`` JSON-safe (see :func:`make_illumination`)."""

    superflat: np.ndarray
    fringe: np.ndarray | None
    metrics: dict[str, Any]


def _r(x: float) -> float:
    return float(f"{float(x):.6g}")


def make_illumination(scis: Sequence[np.ndarray], dqs: Sequence[np.ndarray], vars_: Sequence[np.ndarray], *,
                      fringe: bool, method: CombineMethod = "median", box: int = 32, order: int = 3,
                      masking: SourceMasking = DEFAULT_MASKING, fringe_smooth_px: float = 1.5) -> Illumination:
    """Night-sky flat (and, with ``fringe``, fringe frame) from >= 3 reduced, dithered chips of one chip and
    filter. Metrics: ``n_frames``, ``sky_levels_e`` per frame, ``masked_fraction`` (mean), ``superflat_min``,
    ``superflat_max``, ``superflat_peak_to_peak``, ``superflat_rms`` (about 1), ``superflat_fit_rms`` (cell
    medians about the polynomial); with fringes ``fringe_rms_rel`` (rms of the fringes as a fraction of
    the sky, for the block's median frame), ``fringe_peak_rel`` (99.9th percentile of |pattern|),
    ``fringe_noise_rel`` (expected noise of the pattern per pixel) and ``fringe_snr`` (rms / noise).
    Raises ``InvalidInput`` when the frames do not make a usable correction."""
    sky = sky_frames(scis, dqs, vars_, masking=masking)
    sf = make_superflat(scis, dqs, vars_, method=method, box=box, order=order, frames=sky)
    lo, hi = float(np.min(sf.correction)), float(np.max(sf.correction))
    if not (np.all(np.isfinite(sf.correction)) and SUPERFLAT_RANGE[0] < lo and hi < SUPERFLAT_RANGE[1]):
        raise InvalidInput(f"night-sky flat ranges {lo:.3g} .. {hi:.3g}, outside {SUPERFLAT_RANGE}: the sky "
                           "frames do not give an illumination correction", code="calib.bad_superflat")
    metrics: dict[str, Any] = {
        "n_frames": int(sf.stats["n_frames"]), "sky_levels_e": [_r(s) for s in sf.levels],
        "masked_fraction": _r(sf.stats["masked_fraction"]), "superflat_min": _r(lo), "superflat_max": _r(hi),
        "superflat_peak_to_peak": _r(sf.stats["peak_to_peak"]), "superflat_rms": _r(sf.stats["rms"]),
        "superflat_fit_rms": _r(sf.stats["fit_rms"])}
    pattern = None
    if fringe:
        ff = make_fringe_frame(scis, dqs, vars_, superflat=sf.correction, box=box, order=order,
                               smooth_px=fringe_smooth_px, masking=masking)
        pattern = ff.pattern
        measured = ff.n_used > 0
        peak = float(np.percentile(np.abs(pattern[measured]), 99.9)) if measured.any() else 0.0
        metrics.update(fringe_rms_rel=_r(ff.stats["rms"]), fringe_peak_rel=_r(peak),
                       fringe_noise_rel=_r(ff.stats["noise"]),
                       fringe_snr=_r(ff.stats["rms"] / ff.stats["noise"]) if ff.stats["noise"] > 0 else 0.0)
    return Illumination(superflat=sf.correction, fringe=pattern, metrics=metrics)


def apply_illumination(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, superflat: np.ndarray,
                       fringe: np.ndarray | None = None, level: float | None = None, *, sky_order: int = 2,
                       bad_bits: int = WEIGHT_BAD_BITS) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Apply an illumination-correction product to one reduced chip: ``(SCI, VAR, metrics)``, float32.

    SCI / superflat and VAR / superflat^2; then, with ``fringe`` (per unit sky), SCI minus the fitted
    ``amplitude x level x fringe`` (``level``: the frame's sky in e-, default the median of its usable
    pixels; ``sky_order``: polynomial sky fitted with the amplitude; pixels with DQ bits in ``bad_bits`` are
    left out of the fit). VAR is not changed by the fringe removal (the pattern's own noise is small).
    Metrics: ``illumination_applied``; with fringes ``fringe_amplitude`` (~1 for a frame like those the
    pattern came from) and ``fringe_amplitude_err``, ``fringe_level_e``, ``fringe_rms_e`` (rms of what was
    subtracted); a fringe fit that cannot be made (too few usable pixels) leaves SCI defringed not at all
    and says why in ``fringe_skipped``."""
    shape = np.shape(sci)
    for name, arr in (("VAR", var), ("DQ", dq), ("super-flat", superflat), ("fringe frame", fringe)):
        if arr is not None and np.shape(arr) != shape:
            raise InvalidInput(f"{name} has shape {np.shape(arr)}, SCI has {shape}", code="calib.shape")
    out, out_var = apply_correction(sci, var, superflat)
    assert out_var is not None
    metrics: dict[str, Any] = {"illumination_applied": True}
    if fringe is not None:
        try:
            out, fit = remove_fringes(out, out_var, dq, fringe, level=level, sky_order=sky_order, bad_bits=bad_bits)
        except InvalidInput as exc:
            metrics["fringe_skipped"] = exc.message
            return out, out_var, metrics
        measured = np.asarray(fringe) != 0
        rms = float(np.sqrt(np.mean(np.square(fringe[measured], dtype=np.float64)))) if measured.any() else 0.0
        metrics.update(fringe_amplitude=_r(fit.amplitude), fringe_amplitude_err=_r(fit.error),
                       fringe_level_e=_r(fit.level), fringe_rms_e=_r(abs(fit.amplitude) * fit.level * rms))
    return out, out_var, metrics
