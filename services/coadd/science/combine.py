"""Weighted combination of resampled inputs, and the photometric scaling that puts them on one zeropoint.

Photometric convention: an input with zeropoint ``zp_input`` (m = zp_input - 2.5 log10(counts)) is multiplied
by ``photometric_scale(zp_input, zp_target)``; the coadd is then in counts with m = zp_target - 2.5 log10(counts).
Recommended: inputs in e- per exposure with their per-exposure zeropoint (simcam ``ZPEXP``: mag of 1 e- in
that exposure, extinction included) and ``zp_target`` = the median over the inputs of the per-second
zeropoint ``ZPEXP - 2.5 log10(EXPTIME)``: the coadd is in e-/s of a median-transparency exposure, and the
exposure time and transparency of every input are both taken out by the one factor.

Combination (per destination pixel, over the inputs i that cover it with weight w_i > 0):
``coadd = sum(w_i I_i) / sum(w_i)``, ``coadd_var = sum(w_i**2 V_i) / sum(w_i)**2``, ``weight_map = sum(w_i)``.
The weights are the resampled weight maps (inverse variance). Use background-only inverse variance
(sky + read noise, no source Poisson term) as input weight: weights that vary across a star differently
in every input would change the coadd PSF from pixel to pixel and bias the flux of bright stars.
``clipped_weighted_mean`` first rejects, where at least ``min_inputs`` inputs cover a pixel, every value with
``(I_i - ref)**2 > kappa**2 V_i + (amp_fraction ref)**2`` (ref: the median, then the weighted mean of the
kept values; ``n_iter`` passes). The amplitude term (as SWarp's CLIP_AMPFRAC) protects star cores when
the seeing differs between inputs; it assumes sky-subtracted inputs (ref ~ 0 on blank sky).
Uncovered pixels hold coadd 0, var inf, weight 0. Memory is bounded (``memory_mb`` beside the inputs and
outputs, approximately): the mean is accumulated input by input over strips of rows, the clipped mean
stacks the inputs that cover one square tile at a time. Results do not depend on the strip/tile sizes.
Pixel values combine in float64 in input order (byte-deterministic); outputs are float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.coadd.science.resample import Resampled
from wisp.errors import InvalidInput

METHODS = ("weighted_mean", "clipped_weighted_mean")
Input = Resampled | tuple[np.ndarray, np.ndarray, np.ndarray]


def photometric_scale(zp_input: float, zp_target: float) -> float:
    """Factor that puts counts of zeropoint ``zp_input`` (mag) on ``zp_target``: 10**(-0.4 (zp_input - zp_target))."""
    return float(10.0 ** (-0.4 * (zp_input - zp_target)))


def _as_resampled(items: Sequence[Input]) -> list[Resampled]:
    shapes = {r.dst_shape for r in items if isinstance(r, Resampled)}
    shapes |= {tuple(r[0].shape) for r in items if not isinstance(r, Resampled)}
    if len(shapes) != 1:
        raise InvalidInput(f"inputs are on different destination grids: {sorted(shapes)}", code="coadd.grid")
    shape = (int(next(iter(shapes))[0]), int(next(iter(shapes))[1]))
    return [r if isinstance(r, Resampled) else
            Resampled(np.asarray(r[0]), np.asarray(r[1]), np.asarray(r[2]), (0, 0), shape) for r in items]


def _overlap(r: Resampled, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[tuple[slice, slice],
                                                                              tuple[slice, slice]] | None:
    """(slices of r's box, slices of the tile) where r's box overlaps the destination tile rows x cols."""
    (y0, x0), (h, w) = r.origin, r.image.shape
    ya, yb = max(rows[0], y0), min(rows[1], y0 + h)
    xa, xb = max(cols[0], x0), min(cols[1], x0 + w)
    if ya >= yb or xa >= xb:
        return None
    return ((slice(ya - y0, yb - y0), slice(xa - x0, xb - x0)),
            (slice(ya - rows[0], yb - rows[0]), slice(xa - cols[0], xb - cols[0])))


def combine(resampled: Sequence[Input], *, method: str = "weighted_mean", kappa: float = 4.0,
            amp_fraction: float = 0.3, min_inputs: int = 3, n_iter: int = 2,
            memory_mb: float = 256.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coadd, coadd_var, weight_map) float32 on the destination grid (module doc for the formulas).

    ``resampled``: :class:`Resampled` boxes, or (image, var, weight) arrays on the whole grid;
    ``kappa`` (sigma), ``amp_fraction``, ``min_inputs`` and ``n_iter`` tune the clipping; ``memory_mb``
    bounds the working memory beside inputs and outputs.
    """
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; expected one of {METHODS}", code="coadd.method")
    if not resampled:
        raise InvalidInput("nothing to combine", code="coadd.empty")
    items = _as_resampled(resampled)
    ny, nx = items[0].dst_shape
    coadd = np.zeros((ny, nx), np.float32)
    var = np.full((ny, nx), np.inf, np.float32)
    weight = np.zeros((ny, nx), np.float32)
    budget = memory_mb * 2**20
    if method == "weighted_mean":  # three float64 accumulators and their temporaries, full rows
        tile_h, tile_w = max(1, min(ny, math.floor(budget / (nx * 8 * 6)))), nx
    else:  # per input three float32 planes and about as many temporaries, in square tiles
        side = max(16, math.isqrt(int(budget / (max(1, _max_depth(items)) * 4 * 8))))
        tile_h, tile_w = min(ny, side), min(nx, side)
    for r0 in range(0, ny, tile_h):
        for c0 in range(0, nx, tile_w):
            rows, cols = (r0, min(ny, r0 + tile_h)), (c0, min(nx, c0 + tile_w))
            if method == "weighted_mean":
                sw, swi, sw2v = _mean_tile(items, rows, cols)
            else:
                sw, swi, sw2v = _clipped_tile(items, rows, cols, kappa, amp_fraction, min_inputs, n_iter)
            has = sw > 0
            safe = np.where(has, sw, 1.0)
            out = (slice(*rows), slice(*cols))
            coadd[out] = np.where(has, swi / safe, 0.0)
            var[out] = np.where(has, sw2v / safe**2, np.inf)
            weight[out] = sw
    return coadd, var, weight


def _max_depth(items: list[Resampled]) -> int:
    """An upper bound of the number of inputs over any destination row (sizes the clipping tiles)."""
    ny = items[0].dst_shape[0]
    depth = np.zeros(ny + 1, np.int64)
    for r in items:
        depth[r.origin[0]] += 1
        depth[min(ny, r.origin[0] + r.image.shape[0])] -= 1
    return int(np.cumsum(depth).max())


def _mean_tile(items: list[Resampled], rows: tuple[int, int],
               cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums of w, w I and w**2 V over the tile, accumulated input by input (float64)."""
    sw, swi, sw2v = (np.zeros((rows[1] - rows[0], cols[1] - cols[0])) for _ in range(3))
    for r in items:
        cut = _overlap(r, rows, cols)
        if cut is None:
            continue
        src, dst = cut
        w = r.weight[src].astype(np.float64)
        good = w > 0
        w[~good] = 0.0
        sw[dst] += w
        swi[dst] += w * np.where(good, r.image[src], 0.0)
        sw2v[dst] += w * w * np.where(good, r.var[src], 0.0)
    return sw, swi, sw2v


def _clipped_tile(items: list[Resampled], rows: tuple[int, int], cols: tuple[int, int], kappa: float,
                  amp_fraction: float, min_inputs: int,
                  n_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`_mean_tile` after rejecting outliers pixel by pixel across the inputs that cover the tile."""
    cuts = [(r, c) for r in items if (c := _overlap(r, rows, cols)) is not None]
    shape = (len(cuts), rows[1] - rows[0], cols[1] - cols[0])
    img, v, w = np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for k, (r, (src, dst)) in enumerate(cuts):
        good = r.weight[src] > 0
        w[(k, *dst)] = np.where(good, r.weight[src], 0.0)
        img[(k, *dst)] = np.where(good, r.image[src], 0.0)
        v[(k, *dst)] = np.where(good, r.var[src], 0.0)
    valid = w > 0
    n_valid = valid.sum(axis=0)
    ordered = np.sort(np.where(valid, img, np.inf), axis=0)  # valid values first
    lo_mid = np.take_along_axis(ordered, np.maximum(n_valid - 1, 0)[None] // 2, axis=0)[0]
    hi_mid = np.take_along_axis(ordered, (n_valid // 2)[None], axis=0)[0]
    ref = np.where(n_valid > 0, 0.5 * (lo_mid.astype(np.float64) + hi_mid), 0.0)  # the median
    clip = n_valid >= min_inputs
    keep = valid
    for _ in range(max(1, n_iter)):
        reject = valid & clip & ((img - ref) ** 2 > kappa**2 * v + (amp_fraction * ref) ** 2)
        keep = valid & ~reject
        keep = np.where(keep.any(axis=0), keep, valid)  # never reject every input of a pixel
        sw = (w * keep).sum(axis=0, dtype=np.float64)
        ref = np.where(sw > 0, (w * keep * img).sum(axis=0, dtype=np.float64) / np.where(sw > 0, sw, 1.0), 0.0)
    wk = (w * keep).astype(np.float64)
    return wk.sum(axis=0), (wk * img).sum(axis=0), (wk * wk * v).sum(axis=0)
