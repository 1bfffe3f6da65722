"""Reduction of one raw science chip to SCI (e-), VAR (e-^2) and DQ (DESIGN §8).

Pixel chain (ADU until the gain): ``adu = raw[datasec] - overscan level(row) - master bias``;
``e = adu x gain``; ``sci = e / flat``. Variance follows the detector model the simulator documents,
``var(ADU) = signal/gain + (rn/gain)^2 + 1/12``, in electrons and propagated through the flat division:

    var(sci) = [max(e, 0) + rn^2 + gain^2 / 12 + gain^2 var(master bias)] / flat^2 + sci^2 var(flat) / flat^2

The photon term uses the pixel's own value (as is usual; it slightly favours low pixels in weighted sums).
The overscan level's own noise (~ rn / sqrt(n_cols x smooth_rows), row-correlated) is not included.

With a dark (``dark`` ADU for this exposure, e.g. :func:`~.darks.dark_for_exposure`, and its variance
``dark_var`` ADU^2), ``adu`` also has the dark subtracted, and VAR gains ``gain^2 var(dark) / flat^2`` (the
master dark's noise) and ``max(dark x gain, 0) / flat^2`` (the shot noise of the dark charge, which the
photon term no longer sees once the charge is subtracted). The dark is folded into the bias before the
compiled pass (``bias + dark``, ``var(bias) + var(dark)``), so the pass itself is the same.
After the overscan level (numpy, per row), the whole chain runs in one compiled pass over the pixels
(:func:`~.kernels.reduce_pixels`), float32 arithmetic in the order written above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.calib.science.masters import MasterBias, MasterFlat
from services.calib.science.overscan import OverscanMethod, data_rows_level
from services.calib.science.sources import RowSource
from wisp.dq import BAD, NO_DATA, SATURATED


@dataclass(frozen=True)
class Reduced:
    """A reduced chip: ``sci`` float32 e- (flat-fielded, bias-free, sky not subtracted), ``var`` float32 e-^2,
    ``dq`` uint16 bits of :mod:`wisp.dq` (NO_DATA pixels have NaN SCI and VAR), ``overscan`` the level subtracted
    from each data row (ADU, float64)."""

    sci: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    overscan: np.ndarray


def _check(name: str, arr: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if arr is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, the data section is {shape}")


def reduce_frame(raw: RowSource, *, datasec: tuple[slice, slice], biassec: tuple[slice, slice],
                 master_bias: MasterBias, master_flat: MasterFlat, gain: float, read_noise: float,
                 saturation: float, bad_pixel_mask: np.ndarray | None = None,
                 overscan_method: OverscanMethod = "median_rows", overscan_order: int = 1,
                 dark: np.ndarray | None = None, dark_var: np.ndarray | None = None) -> Reduced:
    """Overscan-correct, trim, bias-subtract, convert to electrons and flat-field one raw chip.

    ``raw``: full frame in ADU (data + overscan); ``datasec``/``biassec``: 0-based (rows, cols) slices;
    ``gain`` e-/ADU; ``read_noise`` e-; ``saturation`` ADU on the raw scale (pixels with raw >= it are
    SATURATED); ``bad_pixel_mask`` (data-section shape): nonzero -> BAD. Non-finite raw values and pixels
    whose bias or flat is unusable (non-finite, flat <= 0) are NO_DATA. ``dark`` (ADU, bias-free, already
    scaled to this exposure) and ``dark_var`` (ADU^2): subtracted with the bias (see the module doc).
    """
    if not (gain > 0 and read_noise >= 0 and np.isfinite(saturation)):
        raise ValueError(f"need gain > 0, read_noise >= 0, finite saturation; got {gain}, {read_noise}, {saturation}")
    from services.calib.science import kernels  # numba: imported on first use, not with the package
    full = _native(np.asarray(raw[0:raw.shape[0]]))  # read once (e.g. from an hdu.section)
    level = data_rows_level(full, datasec, biassec, overscan_method, overscan_order)
    ny, nx = full.shape
    (r0, r1, rs), (c0, c1, cs) = datasec[0].indices(ny), datasec[1].indices(nx)
    if rs != 1 or cs != 1:  # a strided section: gather it first
        full, r0, c0 = np.ascontiguousarray(full[datasec]), 0, 0
    shape = (len(range(r0, r1, rs)), len(range(c0, c1, cs)))
    for name, arr in (("master bias", master_bias.image), ("master flat", master_flat.image),
                      ("bad pixel mask", bad_pixel_mask), ("dark", dark), ("dark variance", dark_var)):
        _check(name, arr, shape)
    dummy = np.zeros((1, 1), np.float32)
    bias = _f32(master_bias.image)
    flat = _f32(master_flat.image)
    bias_var = dummy if master_bias.var is None else _f32(master_bias.var)
    has_bias_var = master_bias.var is not None
    if dark is not None:
        bias = bias + _f32(dark)
        if dark_var is not None:
            bias_var = (bias_var + _f32(dark_var)) if has_bias_var else _f32(dark_var)
            has_bias_var = True
    flat_var = dummy if master_flat.var is None else _f32(master_flat.var)
    bad = np.zeros((1, 1), np.bool_) if bad_pixel_mask is None else np.asarray(bad_pixel_mask) != 0
    sci = np.empty(shape, np.float32)
    var = np.empty(shape, np.float32)
    dq = np.empty(shape, np.uint16)
    kernels.reduce_pixels(full, r0, c0, np.ascontiguousarray(level, dtype=np.float64), full.dtype.type(saturation),
                          bias, bias_var, has_bias_var, flat, flat_var, master_flat.var is not None,
                          bad, bad_pixel_mask is not None, np.float32(gain), np.float32(read_noise**2 + gain**2 / 12.0),
                          SATURATED, BAD, NO_DATA, sci, var, dq)
    if dark is not None:  # the dark charge's shot noise
        charge = np.maximum(_f32(dark) * np.float32(gain), np.float32(0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            var += np.where(np.isfinite(var), charge / (flat * flat), np.float32(0.0)).astype(np.float32)
    return Reduced(sci=sci, var=var, dq=dq, overscan=level)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _native(a: np.ndarray) -> np.ndarray:
    """A raw frame as native-endian float32 (float32 input, or integers that float32 holds exactly) or float64
    (anything else), so the kernel sees one of two types and the saturation test stays exact."""
    if (a.dtype.kind == "f" and a.dtype.itemsize == 4) or (a.dtype.kind in "ui" and a.dtype.itemsize <= 2):
        return np.asarray(a, dtype=np.float32)
    return np.asarray(a, dtype=np.float64)
