"""Outliers across dithered exposures (cosmic rays the single-frame detector missed), as masks on each
input's own pixel grid, and their removal from the resampled inputs before the stack.

Detection is the rejection of :func:`~.combine.combine`'s clipped mean (one code path,
:func:`~.combine.clip_tile`): on the destination grid, where at least ``min_inputs`` inputs have data, a value
of input i is an outlier when ``(I_i - ref)**2 > kappa**2 (V_i + V_ref) + (amp_fraction A)**2`` with ``ref``
the median of the inputs, then the weighted mean of the values kept (``n_iter`` passes), V_ref its variance
and A the largest |ref| around the pixel (3x3). Only *positive* outliers of the last pass count (cosmic
rays, and any light that is in one exposure only: satellites, asteroids). ``V_i`` includes the source's
photon noise and the amplitude term (as SWarp's CLIP_AMPFRAC) allows for different seeing, so stars are
kept; the price is sensitivity on bright objects (a ray on a star's wing needs to exceed ``amp_fraction``
of the star's nearby peak). This is the clipped-mean outlier masking of SWarp as used by Gruen et al. 2014
(PASP 126, 158), and DRAGONS' ``flagCosmicRaysByStacking`` (there: median, positive ``hsigma`` x noise,
object pixels excluded instead of an amplitude term, mask dilated).

Each flagged destination pixel is mapped back to the nearest pixel of its input (the resampling's
:class:`~.mapping.PixelMap`), and the mask is grown by ``grow`` pixels (8-connected) in the input, for the
faint edges of tracks below the threshold. :func:`without_masked` then gives an input weight 0 at every
destination pixel whose interpolation kernel touches a masked input pixel (as :func:`~.resample.resample`
would with the mask in the input's weight, but stricter: any masked pixel, not a bad fraction above 2 %),
so that neither the ray nor the kernel's ringing around it reaches the stack.

Detection on the resampled grid loses some significance: the kernel spreads a 1-pixel hit over several
destination pixels (each with less noise, but the peak falls with the sub-pixel phase) and the reference
is noisy too. Measured (lanczos3, 5 inputs, kappa 4): isolated 1-pixel hits of 6, 8, 10 sigma are found
50, 86, 97 % of the time (L.A.Cosmic on the single frame finds them from ~5 sigma); tracks, which have
several bright pixels, and hits on stars, which the single-frame detector leaves alone, are where this
step adds most (see tests/unit/test_coadd_outliers.py for the figures on a simulated night).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from services.coadd.science.combine import clip_tile, clip_tiles
from services.coadd.science.kernels import get_kernel
from services.coadd.science.resample import STRIP_PIXELS, Resampled, _window_counts
from wisp.errors import InvalidInput


def find_outliers(resampled: Sequence[Resampled], *, usable: Sequence[np.ndarray] | None = None,
                  kappa: float = 4.0, amp_fraction: float = 0.3, min_inputs: int = 3, n_iter: int = 2,
                  grow: int = 1, memory_mb: float = 256.0) -> list[np.ndarray]:
    """Per input, a boolean mask (True = outlier) of the shape of the input image (``Resampled.src_shape``).

    ``resampled``: the inputs as :func:`~.resample.resample` made them (with their pixel maps), on one grid;
    ``usable``: per input, a boolean image of its usable pixels (weight > 0): others are never flagged (they
    are out of the stack already); ``kappa``, ``amp_fraction``, ``min_inputs`` and ``n_iter`` as in
    :func:`~.combine.combine`; ``grow``: pixels of growth in the input; ``memory_mb`` bounds the tiles.
    """
    items = list(resampled)
    if not items:
        return []
    if any(r.pixel_map is None for r in items if r.image.size):
        raise InvalidInput("outlier masks need the pixel maps of the resampling", code="coadd.no_pixel_map")
    if usable is not None and [np.shape(u) for u in usable] != [r.src_shape for r in items]:
        raise InvalidInput("usable masks must match the inputs' images", code="coadd.shape")
    if len({r.dst_shape for r in items}) != 1:
        raise InvalidInput("inputs are on different destination grids", code="coadd.grid")
    hits: list[list[np.ndarray]] = [[] for _ in items]  # per input: flagged destination pixels (2, n)
    for rows, cols in clip_tiles(items, memory_mb):
        which, *_, high = clip_tile(items, rows, cols, kappa=kappa, amp_fraction=amp_fraction,
                                    min_inputs=min_inputs, n_iter=n_iter)
        for k, i in enumerate(which):
            yy, xx = np.nonzero(high[k])
            if yy.size:
                hits[i].append(np.stack([yy + rows[0], xx + cols[0]]))
    masks = []
    for i, r in enumerate(items):
        mask = np.zeros(r.src_shape, bool)
        if hits[i] and r.pixel_map is not None:
            yy, xx = np.concatenate(hits[i], axis=1)
            xs, ys, _ = r.pixel_map.points(yy, xx)
            mask[np.clip(np.rint(ys).astype(np.intp), 0, r.src_shape[0] - 1),
                 np.clip(np.rint(xs).astype(np.intp), 0, r.src_shape[1] - 1)] = True
            mask = _grow(mask, grow)
            if usable is not None:
                mask &= np.asarray(usable[i], bool)
        masks.append(mask)
    return masks


def _grow(mask: np.ndarray, n: int) -> np.ndarray:
    """``mask`` dilated by ``n`` pixels with a (2n+1)^2 square (8-connected growth)."""
    for _ in range(max(0, n)):
        out = mask.copy()
        out[1:] |= mask[:-1]
        out[:-1] |= mask[1:]
        rows = out.copy()
        out[:, 1:] |= rows[:, :-1]
        out[:, :-1] |= rows[:, 1:]
        mask = out
    return mask


def without_masked(r: Resampled, mask: np.ndarray) -> Resampled:
    """``r`` with weight 0 wherever the interpolation kernel reads a pixel of ``mask`` (the input's shape)."""
    mask = np.asarray(mask, bool)
    if mask.shape != r.src_shape:
        raise InvalidInput(f"mask shape {mask.shape} differs from the input's {r.src_shape}", code="coadd.shape")
    if not mask.any() or r.image.size == 0 or r.pixel_map is None:
        return r
    kern = get_kernel(r.kernel)
    lo, hi = kern.offset + 1, kern.taps - 1 - kern.offset
    padded = np.zeros((mask.shape[0] + lo + hi, mask.shape[1] + lo + hi), np.uint8)
    padded[lo:lo + mask.shape[0], lo:lo + mask.shape[1]] = mask
    touched = _window_counts(padded, kern.taps) > 0  # the kernel window starting there holds a masked pixel
    weight = r.weight.copy()
    (y0, x0), (h, w) = r.origin, r.image.shape
    step = max(1, STRIP_PIXELS // w)
    for r0 in range(0, h, step):
        rows = slice(r0, min(h, r0 + step))
        yy, xx = np.nonzero(weight[rows] > 0)
        if not yy.size:
            continue
        xs, ys, _ = r.pixel_map.points(yy + y0 + r0, xx + x0)
        ix, _ = kern.phase_index(xs)
        iy, _ = kern.phase_index(ys)
        drop = touched[np.clip(iy + lo, 0, padded.shape[0] - 1), np.clip(ix + lo, 0, padded.shape[1] - 1)]
        weight[yy[drop] + r0, xx[drop]] = 0.0
    return replace(r, weight=weight)
