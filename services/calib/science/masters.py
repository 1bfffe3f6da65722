"""Master calibrations: master bias and master (dome) flat from overscan-corrected, trimmed frames.

Inputs are frame sources (see :mod:`.sources`) in ADU, already overscan-corrected and trimmed to the data
section (:func:`~.overscan.overscan_trimmed` gives such a view lazily from a raw file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.calib.science.combine import ClipNoise, combine
from services.calib.science.screen import RejectedFrame, Screening
from services.calib.science.sources import RowSource, Transformed
from wisp.errors import InvalidInput

#: bias frames: level within 1 x pixel noise of the others (after overscan correction the level agrees to
#: a few 0.01 ADU), noise within 1.5x
BIAS_SCREENING = Screening(level_dev=1.0, noise_ratio=1.5)
#: flats: count rate (ADU/s) within 1.5x of the others, noise within 1.5x
FLAT_SCREENING = Screening(level_ratio=1.5, noise_ratio=1.5)


@dataclass(frozen=True)
class MasterBias:
    """Master bias: ``image`` (float32 ADU) is what remains of a zero-second exposure after overscan
    correction (fixed pattern, hot-pixel offsets); ``var`` (float32 ADU^2) its variance (None if unknown);
    ``n_used`` (uint16) frames kept per pixel; ``noise`` per input frame (ADU, the read noise in ADU;
    NaN if rejected early); ``n_frames`` frames stacked; ``rejected`` frames left out, with reasons."""

    image: np.ndarray
    var: np.ndarray | None
    n_used: np.ndarray | None
    noise: tuple[float, ...]
    n_frames: int
    rejected: tuple[RejectedFrame, ...]

    @property
    def read_noise_adu(self) -> float:
        """Median per-frame noise of the stacked frames (ADU): the read noise / gain."""
        return float(np.nanmedian(self.noise)) if self.noise else float("nan")


@dataclass(frozen=True)
class MasterFlat:
    """Master flat: ``image`` (float32) relative response normalised to median 1 over the chip's good
    pixels; ``var`` (float32, dimensionless^2) its variance; ``n_used`` frames kept per pixel; ``level``
    (ADU) the median bias-subtracted level of the inputs, ``level_rate`` the same per second of exposure
    (ADU/s; x gain compares chips, for the mosaic gain harmonisation); ``levels`` per input frame (ADU,
    NaN if not measured); ``n_frames`` frames stacked; ``rejected`` frames left out, with reasons."""

    image: np.ndarray
    var: np.ndarray | None
    n_used: np.ndarray | None
    level: float
    level_rate: float
    levels: tuple[float, ...]
    n_frames: int
    rejected: tuple[RejectedFrame, ...]


def make_master_bias(frames: Sequence[RowSource], *, sigma: float = 3.0, maxiters: int = 5,
                     clip_noise: ClipNoise = "frame", band_rows: int | None = None,
                     screening: Screening | None = BIAS_SCREENING) -> MasterBias:
    """Sigma-clipped mean of overscan-corrected, trimmed bias frames (ADU). Frames whose level or noise
    differs from the others are rejected first (:data:`BIAS_SCREENING`)."""
    res = combine(frames, method="sigclip_mean", sigma=sigma, maxiters=maxiters, clip_noise=clip_noise,
                  band_rows=band_rows, screening=screening)
    return MasterBias(image=res.image, var=res.var, n_used=res.n_used, noise=tuple(s.noise for s in res.stats),
                      n_frames=len(res.used), rejected=res.rejected)


def make_master_flat(frames: Sequence[RowSource], master_bias: MasterBias, *, exptimes: Sequence[float],
                     bad_pixel_mask: np.ndarray | None = None, sigma: float = 3.0, maxiters: int = 5,
                     clip_noise: ClipNoise = "frame", band_rows: int | None = None,
                     screening: Screening | None = FLAT_SCREENING) -> MasterFlat:
    """Master flat from overscan-corrected, trimmed flat frames (ADU) of one chip and filter.

    Each frame has the master bias subtracted and is divided by its exposure time (s) lazily; frames whose
    count rate or noise differs from the others are rejected (:data:`FLAT_SCREENING`); the rest are scaled
    to a common median, sigma-clip combined and normalised to median 1 over the good pixels (finite, kept,
    and zero in ``bad_pixel_mask`` if given). Per-chip normalisation only; ``level_rate`` keeps the
    absolute level for harmonising gains across the mosaic.
    """
    if len(exptimes) != len(frames):
        raise ValueError(f"{len(exptimes)} exposure times for {len(frames)} flat frames")
    bad_t = [i for i, t in enumerate(exptimes) if not (np.isfinite(t) and t > 0)]
    if bad_t:
        raise InvalidInput(f"flat frame {bad_t[0]} has exposure time {exptimes[bad_t[0]]!r} s; flats need a "
                           "positive exposure time", code="calib.bad_exptime", frame=bad_t[0])
    bias = master_bias.image
    rates = [Transformed(f, subtract=bias, factor=1.0 / float(t)) for f, t in zip(frames, exptimes, strict=True)]
    res = combine(rates, method="sigclip_mean", sigma=sigma, maxiters=maxiters, clip_noise=clip_noise,
                  band_rows=band_rows, scale="median", screening=screening)
    good = np.isfinite(res.image) & (res.n_used > 0)
    if bad_pixel_mask is not None:
        good &= np.asarray(bad_pixel_mask) == 0
    if not good.any():
        raise InvalidInput("the master flat has no good pixel to normalise on", code="calib.no_good_pixels")
    norm = float(np.median(res.image[good]))
    if not norm > 0:
        raise InvalidInput(f"the combined flat has median {norm:.6g} over its good pixels: not a flat",
                           code="calib.bad_flat")
    rate_levels = np.array([s.level for s in res.stats])
    used = list(res.used)
    level_rate = norm * float(np.mean(rate_levels[used]))
    t_used = float(np.mean(np.asarray(exptimes, dtype=np.float64)[used]))
    image = (res.image / np.float32(norm)).astype(np.float32)
    var = (res.var / np.float32(norm * norm)).astype(np.float32)
    return MasterFlat(image=image, var=var, n_used=res.n_used, level=level_rate * t_used, level_rate=level_rate,
                      levels=tuple(float(lv * t) for lv, t in zip(rate_levels, exptimes, strict=True)),
                      n_frames=len(used), rejected=res.rejected)
