"""Reduction of one raw science chip to SCI (e-), VAR (e-^2) and DQ (DESIGN §8).

Pixel chain (ADU until the gain): ``adu = raw[datasec] - overscan level(row) - master bias``;
``e = adu x gain``; ``sci = e / flat``. Variance follows the detector model the simulator documents,
``var(ADU) = signal/gain + (rn/gain)^2 + 1/12``, in electrons and propagated through the flat division:

    var(sci) = [max(e, 0) + rn^2 + gain^2 / 12 + gain^2 var(master bias)] / flat^2 + sci^2 var(flat) / flat^2

The photon term uses the pixel's own value (as is usual; it slightly favours low pixels in weighted sums).
The overscan level's own noise (~ rn / sqrt(n_cols x smooth_rows), row-correlated) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.calib.science.masters import MasterBias, MasterFlat
from services.calib.science.overscan import OverscanMethod, overscan_correct
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
                 overscan_method: OverscanMethod = "median_rows", overscan_order: int = 1) -> Reduced:
    """Overscan-correct, trim, bias-subtract, convert to electrons and flat-field one raw chip.

    ``raw``: full frame in ADU (data + overscan); ``datasec``/``biassec``: 0-based (rows, cols) slices;
    ``gain`` e-/ADU; ``read_noise`` e-; ``saturation`` ADU on the raw scale (pixels with raw >= it are
    SATURATED); ``bad_pixel_mask`` (data-section shape): nonzero -> BAD. Non-finite raw values and pixels
    whose bias or flat is unusable (non-finite, flat <= 0) are NO_DATA.
    """
    if not (gain > 0 and read_noise >= 0 and np.isfinite(saturation)):
        raise ValueError(f"need gain > 0, read_noise >= 0, finite saturation; got {gain}, {read_noise}, {saturation}")
    full = np.asarray(raw[0:raw.shape[0]])  # read once (e.g. from an hdu.section)
    data, level = overscan_correct(full, datasec, biassec, method=overscan_method, order=overscan_order)
    shape = data.shape
    for name, arr in (("master bias", master_bias.image), ("master flat", master_flat.image),
                      ("bad pixel mask", bad_pixel_mask)):
        _check(name, arr, shape)
    raw_data = full[datasec]
    dq = np.zeros(shape, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        dq[raw_data >= saturation] |= SATURATED
    if bad_pixel_mask is not None:
        dq[np.asarray(bad_pixel_mask) != 0] |= BAD

    g = np.float32(gain)
    flat = master_flat.image.astype(np.float32, copy=False)
    e = (data - master_bias.image) * g
    sci = e / flat
    var_e = np.maximum(e, 0.0) + np.float32(read_noise**2 + gain**2 / 12.0)
    if master_bias.var is not None:
        var_e += master_bias.var * (g * g)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = var_e / (flat * flat)
        if master_flat.var is not None:
            var += sci * sci * master_flat.var / (flat * flat)
    no_data = ~(np.isfinite(sci) & np.isfinite(var) & np.isfinite(flat) & (flat > 0))
    dq[no_data] |= NO_DATA
    sci[no_data] = np.nan
    var[no_data] = np.nan
    return Reduced(sci=sci.astype(np.float32, copy=False), var=var.astype(np.float32, copy=False), dq=dq,
                   overscan=level)
