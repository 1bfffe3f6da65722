"""Master dark: the dark current of a chip from dark exposures, and the dark to subtract from an exposure.

Inputs are dark frames of one chip in ADU, already overscan-corrected and trimmed to the data section
(:func:`~.overscan.overscan_trimmed`), plus their exposure times (s) and the master bias of the night.
Each frame is turned lazily into a dark-current rate, ``(frame - master bias) / exptime`` (ADU/s), and the
rates are combined pixel by pixel with outlier rejection (:func:`~.combine.combine`, sigma-clipped mean:
cosmic rays, which are many in long darks, are clipped). The result is in ADU/s; ``x gain`` gives e-/s.

Noise of the master dark (ADU/s) for N frames of exposure time t, dark current d (e-/s), gain g (e-/ADU),
read noise r (e-) and a master-bias variance ``var_b`` (ADU^2, common to every frame, so not averaged)::

    var(rate) = [(d t / g^2 + r^2 / g^2 + 1/12) / N + var_b] / t^2

(the per-frame term is what ``MasterDark.var`` estimates from the frames' inter-frame noise). Pixels whose
Poisson noise is far above the frame noise (hot pixels) are clipped against the frame noise, so their
estimate falls back towards the median of the frames: unbiased but noisier than the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.calib.science.combine import combine
from services.calib.science.masters import MasterBias
from services.calib.science.screen import RejectedFrame, Screening
from services.calib.science.sources import RowSource, Transformed
from wisp.errors import InvalidInput

#: dark frames: per-frame noise within 1.5x of the others (a frame of another exposure time, or a light
#: leak, stands out); levels are near zero, so no level rule
DARK_SCREENING = Screening(noise_ratio=1.5)


@dataclass(frozen=True)
class MasterDark:
    """Master dark of one chip: ``rate`` float32 dark current in ADU/s (bias-free), ``var`` float32 its
    variance in (ADU/s)^2 (from the frames' inter-frame noise and the master bias variance; None if
    unknown), ``n_used`` uint16 frames kept per pixel, ``exptime`` mean exposure time of the frames used (s),
    ``n_frames`` frames stacked, ``rejected`` frames left out with reasons, ``level`` median rate (ADU/s)."""

    rate: np.ndarray
    var: np.ndarray | None
    n_used: np.ndarray
    exptime: float
    n_frames: int
    rejected: tuple[RejectedFrame, ...]
    level: float

    def rate_electrons(self, gain: float) -> np.ndarray:
        """Dark current in e-/s/px (``gain`` e-/ADU)."""
        return (self.rate * np.float32(gain)).astype(np.float32)


def make_master_dark(frames: Sequence[RowSource], master_bias: MasterBias, *, exptimes: Sequence[float],
                     sigma: float = 3.0, maxiters: int = 5, band_rows: int = 256,
                     screening: Screening | None = DARK_SCREENING) -> MasterDark:
    """Master dark (ADU/s) from overscan-corrected, trimmed dark frames (ADU) of one chip.

    ``exptimes``: each frame's exposure time (s, > 0). Every frame has ``master_bias.image`` subtracted and is
    divided by its exposure time (lazily, in row bands); the rates are screened (:data:`DARK_SCREENING`)
    and combined with a sigma-clipped mean (``sigma``, ``maxiters``; needs >= 3 frames to reject cosmic
    rays). Raises ``InvalidInput`` (``calib.bad_exptime``) for a non-positive exposure time.
    """
    if len(exptimes) != len(frames):
        raise ValueError(f"{len(exptimes)} exposure times for {len(frames)} dark frames")
    bad = [i for i, t in enumerate(exptimes) if not (np.isfinite(t) and t > 0)]
    if bad:
        raise InvalidInput(f"dark frame {bad[0]} has exposure time {exptimes[bad[0]]!r} s; darks need a positive "
                           "exposure time", code="calib.bad_exptime", frame=bad[0])
    rates = [Transformed(f, subtract=master_bias.image, factor=1.0 / float(t))
             for f, t in zip(frames, exptimes, strict=True)]
    res = combine(rates, method="sigclip_mean", sigma=sigma, maxiters=maxiters, band_rows=band_rows, scale=None,
                  screening=screening)
    used = list(res.used)
    t_used = float(np.mean(np.asarray(exptimes, dtype=np.float64)[used]))
    var = res.var
    if master_bias.var is not None:  # the same bias is in every frame: its noise does not average down
        inv_t2 = float(np.mean(1.0 / np.asarray(exptimes, dtype=np.float64)[used] ** 2))
        var = (res.var + master_bias.var * np.float32(inv_t2)).astype(np.float32)
    good = np.isfinite(res.image) & (res.n_used > 0)
    level = float(np.median(res.image[good])) if good.any() else float("nan")
    return MasterDark(rate=res.image, var=var, n_used=res.n_used, exptime=t_used, n_frames=len(used),
                      rejected=res.rejected, level=level)


def dark_for_exposure(master: MasterDark, exptime: float, *, gain: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The dark charge to subtract from an exposure of ``exptime`` s (bias-subtracted, same chip) and its
    variance: ``rate x exptime`` in ADU (or e- if ``gain`` e-/ADU is given), float32. Dark current is
    assumed linear in time (scaling a 300 s dark to a 30 s exposure also scales its noise by 0.1)."""
    if not (np.isfinite(exptime) and exptime >= 0):
        raise ValueError(f"exposure time must be >= 0 s, got {exptime!r}")
    factor = float(exptime) * (1.0 if gain is None else float(gain))
    dark = (master.rate * np.float32(factor)).astype(np.float32)
    var = None if master.var is None else (master.var * np.float32(factor * factor)).astype(np.float32)
    return dark, var
