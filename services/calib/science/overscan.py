"""Overscan (serial bias strip) correction: measure the bias level per row and subtract it, then trim.

Raw values are ADU. The overscan ``biassec`` must be a column strip sharing rows with ``datasec``
(a serial overscan, as in simcam: ``BIASSEC='[nx+1:nx+32,1:ny]'``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.polynomial import legendre

from services.calib.science.sources import RowSource, Trimmed

OverscanMethod = Literal["median_rows", "mean", "poly"]
MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): robust sigma of a Gaussian from its MAD


def _row_levels(strip: np.ndarray, clip: float) -> np.ndarray:
    """Robust level of every row (ADU): mean of the values within ``clip`` sigma of the row median, with
    sigma the MAD of all values about their row medians (robust to cosmic rays and bleeding, and free of
    the half-ADU steps a plain median of integer data has)."""
    from services.calib.science.kernels import row_medians  # numba: imported on first use
    strip = np.ascontiguousarray(strip, dtype=np.float64)
    med = np.empty(strip.shape[0])
    row_medians(strip, med, np.empty(strip.shape[1]))  # = np.nanmedian(strip, axis=1)
    dev = strip - med[:, None]
    sig = MAD_TO_SIGMA * float(np.nanmedian(np.abs(dev)))
    keep = np.abs(dev) <= clip * sig
    n = keep.sum(axis=1)
    total = np.where(keep, strip, 0.0).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), med)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Running mean over ``width`` rows (forced odd); near the ends a straight line fitted to the first/last
    ``width`` rows (a Savitzky-Golay filter of order 1 with ``mode='interp'``), so a slope is not biased at
    the edges."""
    width = max(int(width), 1) | 1
    values = np.asarray(values, dtype=np.float64)
    if width < 3 or values.size < width:
        return values.copy()
    half = width // 2
    out = np.empty_like(values)
    out[half:values.size - half] = np.convolve(values, np.full(width, 1.0 / width), mode="valid")
    x = np.arange(width, dtype=np.float64) - half
    sxx = float(np.dot(x, x))
    for seg, dst, pos in ((values[:width], slice(0, half), x[:half]),
                          (values[-width:], slice(values.size - half, values.size), x[width - half:])):
        mean = float(seg.mean())
        slope = float(np.dot(x, seg - mean)) / sxx
        out[dst] = mean + slope * pos
    return out


def overscan_level(strip: np.ndarray, *, method: OverscanMethod = "median_rows", order: int = 1,
                   smooth_rows: int = 15, clip: float = 3.0) -> np.ndarray:
    """Bias level (ADU, float64) for each row of an overscan strip (rows x overscan columns).

    * ``median_rows``: robust level of each row (median-centred clipped mean), smoothed by a running mean
      over ``smooth_rows`` rows: follows row-to-row bias structure; its noise is
      ~ sigma_read / sqrt(ncols * smooth_rows) per row.
    * ``mean``: the mean of the row levels (one constant).
    * ``poly``: Legendre polynomial of degree ``order`` fitted to the row levels, rows deviating by more
      than ``clip`` sigma rejected iteratively.
    """
    strip = np.asarray(strip, dtype=np.float64)
    if strip.ndim != 2 or strip.size == 0:
        raise ValueError(f"overscan strip must be a non-empty 2-D array, got shape {strip.shape}")
    rows = _row_levels(strip, clip)
    if method == "mean":
        return np.full(strip.shape[0], float(np.mean(rows)))
    if method == "median_rows":
        return _smooth(rows, smooth_rows)
    if method != "poly":
        raise ValueError(f"unknown overscan method {method!r}; use median_rows, mean or poly")
    x = np.linspace(-1.0, 1.0, rows.size)
    use = np.isfinite(rows)
    coef = np.zeros(order + 1)
    for _ in range(5):
        coef = legendre.legfit(x[use], rows[use], order)
        res = rows - legendre.legval(x, coef)
        sig = MAD_TO_SIGMA * float(np.median(np.abs(res[use])))
        new = np.isfinite(rows) & (np.abs(res) <= clip * max(sig, 1e-6))
        if np.array_equal(new, use) or new.sum() <= order + 1:
            break
        use = new
    return np.asarray(legendre.legval(x, coef), dtype=np.float64)


def data_rows_level(raw: RowSource, datasec: tuple[slice, slice], biassec: tuple[slice, slice],
                    method: OverscanMethod = "median_rows", order: int = 1, smooth_rows: int = 15) -> np.ndarray:
    """Overscan level (ADU, float64) for each row of ``datasec``, from the ``biassec`` strip of ``raw``."""
    ny = raw.shape[0]
    drows = range(*datasec[0].indices(ny))
    brows = range(*biassec[0].indices(ny))
    level = overscan_level(np.asarray(raw[biassec], dtype=np.float64), method=method, order=order,
                           smooth_rows=smooth_rows)
    if method == "mean":
        return np.full(len(drows), level[0])
    if drows.start < brows.start or drows.stop > brows.stop:
        raise ValueError(f"overscan rows {brows.start}:{brows.stop} do not cover the data rows "
                         f"{drows.start}:{drows.stop}; use method='mean'")
    return level[drows.start - brows.start:drows.stop - brows.start]


def overscan_trimmed(raw: RowSource, datasec: tuple[slice, slice], biassec: tuple[slice, slice], *,
                     method: OverscanMethod = "median_rows", order: int = 1, smooth_rows: int = 15) -> Trimmed:
    """A lazy, overscan-corrected, trimmed view of a raw frame (reads only the overscan strip now, the data
    rows when sliced): use it to stream frames into :func:`~.combine.combine`. Values in ADU."""
    level = data_rows_level(raw, datasec, biassec, method, order, smooth_rows)
    return Trimmed(raw=raw, datasec=datasec, level=level)


def overscan_correct(raw: RowSource, datasec: tuple[slice, slice], biassec: tuple[slice, slice], *,
                     method: OverscanMethod = "median_rows", order: int = 1, smooth_rows: int = 15
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the overscan level row by row and trim to the data section.

    ``raw`` is the full frame in ADU (data + overscan); ``datasec``/``biassec`` are 0-based numpy
    ``(rows, cols)`` slices (``ChipFrame.datasec``/``.biassec`` or :func:`~.nights.parse_section`).
    Returns the trimmed data (ADU, float32) and the level subtracted from each of its rows (ADU, float64).
    """
    view = overscan_trimmed(raw, datasec, biassec, method=method, order=order, smooth_rows=smooth_rows)
    return view[0:view.shape[0]].astype(np.float32), view.level
