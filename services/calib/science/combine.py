"""Stacking frames pixel by pixel: sigma-clipped mean or median, in row bands with bounded memory.

Peak memory is about 20 bytes x N x ``band_rows`` x nx (a float32 band stack, a float64 deviation array
and a sorted copy), independent of the image height: ~50 MB per 10 frames for 256-row bands of a 1k-wide
chip. Every pixel depends only on its own
N values and on per-frame statistics from a fixed row sample, so results are bit-identical for any
``band_rows`` and across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.calib.science.overscan import MAD_TO_SIGMA
from services.calib.science.screen import FrameStats, RejectedFrame, ScaleSpec, Screening, screen_frames
from services.calib.science.sources import RowSource, read_rows
from wisp.errors import InvalidInput

CombineMethod = Literal["sigclip_mean", "median"]
ClipNoise = Literal["frame", "pixel"]
DEFAULT_SCREENING = Screening()


@dataclass(frozen=True)
class CombineResult:
    """A stack. ``image`` float32 (scaled input units); ``n_used`` uint16 values kept per pixel (0: image and
    var NaN); ``var`` float32 variance of ``image`` from the per-frame noise of the kept values (for the
    median, x pi/2); ``used``/``rejected``: frame indices kept / left out before stacking (with reasons);
    ``stats`` per input frame; ``scales`` the factor each frame was multiplied by."""

    image: np.ndarray
    n_used: np.ndarray
    var: np.ndarray
    used: tuple[int, ...]
    rejected: tuple[RejectedFrame, ...]
    stats: tuple[FrameStats, ...]
    scales: tuple[float, ...]


def nanmedian_last(a: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
    """Median along the last axis ignoring NaN (NaN where all are NaN); ``n`` = count of non-NaN if known.
    Sort-based: much faster than ``np.nanmedian`` for short axes."""
    s = np.sort(a, axis=-1)
    if n is None:
        n = np.count_nonzero(~np.isnan(a), axis=-1)
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = np.maximum(n // 2, 0)[..., None]
    return 0.5 * (np.take_along_axis(s, lo, -1)[..., 0] + np.take_along_axis(s, hi, -1)[..., 0])


def clip_inplace(x: np.ndarray, sigma: float, maxiters: int, frame_sigma: np.ndarray | None) -> None:
    """Iterative sigma clipping of ``x`` (pixels x frames, float32, NaN = missing): clipped values become NaN.

    Each pass: centre = median of the remaining values; deviation scale = ``frame_sigma`` (one sigma per
    frame) or, if None, 1.4826 x MAD of the remaining values (per pixel, like astropy ``sigma_clip`` with
    ``cenfunc='median', stdfunc='mad_std'``); values with |x - centre| > sigma x scale are dropped (deviations
    in float64). Stops when nothing changes or after ``maxiters`` passes; never drops a pixel's last value.
    Later passes only revisit the pixels that changed.
    """
    active: np.ndarray | None = None
    for _ in range(maxiters):
        xa = x if active is None else x[active]
        n = np.count_nonzero(~np.isnan(xa), axis=-1)
        centre = nanmedian_last(xa, n).astype(np.float64)
        dev = np.abs(xa - centre[:, None])
        scale = frame_sigma[None, :] if frame_sigma is not None else MAD_TO_SIGMA * nanmedian_last(dev, n)[:, None]
        bad = dev > sigma * scale
        del dev
        bad &= ((n - bad.sum(axis=-1)) > 0)[:, None]
        changed = bad.any(axis=-1)
        if not changed.any():
            return
        idx = np.flatnonzero(changed) if active is None else active[changed]
        rows = xa[changed]
        rows[bad[changed]] = np.nan
        x[idx] = rows
        active = idx


def _combine_band(x: np.ndarray, method: CombineMethod, sigma: float, maxiters: int,
                  frame_sigma: np.ndarray | None, noise2: np.ndarray) -> tuple[np.ndarray, ...]:
    """Combine one band ``x`` (pixels x frames, float32, NaN = missing; modified in place)."""
    if method == "median":
        value = nanmedian_last(x).astype(np.float64)
        var_factor = np.pi / 2.0
    else:
        clip_inplace(x, sigma, maxiters, frame_sigma)
        value = np.nansum(x, axis=-1, dtype=np.float64)
        var_factor = 1.0
    n = np.zeros(x.shape[0], dtype=np.int64)
    var = np.zeros(x.shape[0], dtype=np.float64)
    for k in range(x.shape[1]):
        kept = ~np.isnan(x[:, k])
        n += kept
        var[kept] += noise2[k]
    empty = n == 0
    if method != "median":
        value /= np.maximum(n, 1)
    var *= var_factor / np.maximum(n, 1) ** 2
    value[empty] = np.nan
    var[empty] = np.nan
    return value, n, var


def combine(frames: Sequence[RowSource], *, method: CombineMethod = "sigclip_mean", sigma: float = 3.0,
            maxiters: int = 5, clip_noise: ClipNoise = "frame", band_rows: int = 256, scale: ScaleSpec = None,
            screening: Screening | None = DEFAULT_SCREENING) -> CombineResult:
    """Combine N aligned 2-D frames pixel by pixel, after rejecting odd frames (see :class:`Screening`;
    ``screening=None`` keeps every frame that has finite, non-constant pixels).

    ``frames``: frame sources (arrays, memmaps, ``hdu.section``, :class:`~.sources.RowFunction`), all the
    same shape, read ``band_rows`` rows at a time. ``scale``: per-frame factors, ``'median'`` (1/median
    level, e.g. flats) or None. ``method``: ``sigclip_mean`` (iterative clipping at ``sigma``, then the
    mean of the kept values) or ``median``. ``clip_noise``: ``frame`` clips with each frame's robust
    inter-frame noise (right for few frames: a per-pixel MAD of 3-5 values is too noisy and throws away
    good data); ``pixel`` with the per-pixel MAD of the stack (astropy/ccdproc style; for N >~ 10).
    Non-finite input values are ignored. Raises ``InvalidInput`` (``calib.no_frames``, ``calib.shape``) if
    no frame is usable or shapes differ.
    """
    if clip_noise not in ("frame", "pixel") or method not in ("sigclip_mean", "median"):
        raise ValueError(f"unknown method {method!r} or clip_noise {clip_noise!r}")
    if not frames:
        raise InvalidInput("nothing to combine: no input frames", code="calib.no_frames")
    shape = tuple(frames[0].shape)
    odd = [i for i, f in enumerate(frames) if tuple(f.shape) != shape or len(shape) != 2]
    if odd:
        raise InvalidInput(f"frames to combine must all be 2-D of shape {shape}; frame {odd[0]} is "
                           f"{tuple(frames[odd[0]].shape)}", code="calib.shape", expected=list(shape))
    stats, used, rejected, scales = screen_frames(frames, scale, screening)
    if not used:
        why = "; ".join(f"frame {r.index}: {r.reason}" for r in rejected)
        raise InvalidInput(f"no usable frame among {len(frames)}: {why}", code="calib.no_frames",
                           rejected=[r.index for r in rejected])
    ny, nx = shape
    sel_scales = scales[used]
    frame_sigma = np.array([stats[i].noise for i in used]) * np.abs(sel_scales)
    noise2 = np.nan_to_num(frame_sigma, nan=0.0) ** 2
    clip_sigma = frame_sigma if clip_noise == "frame" and np.all(frame_sigma > 0) else None
    image = np.empty(shape, dtype=np.float32)
    n_used = np.empty(shape, dtype=np.uint16)
    var = np.empty(shape, dtype=np.float32)
    step = max(1, int(band_rows))
    for r0 in range(0, ny, step):
        r1 = min(ny, r0 + step)
        x = np.empty((r1 - r0, nx, len(used)), dtype=np.float32)
        for k, i in enumerate(used):
            x[:, :, k] = read_rows(frames[i], r0, r1) * sel_scales[k]  # scaled in float64, stored float32
        value, n, v = _combine_band(x.reshape(-1, len(used)), method, sigma, maxiters, clip_sigma, noise2)
        image[r0:r1] = value.reshape(r1 - r0, nx)
        n_used[r0:r1] = n.reshape(r1 - r0, nx)
        var[r0:r1] = v.reshape(r1 - r0, nx)
    return CombineResult(image=image, n_used=n_used, var=var, used=tuple(used), rejected=tuple(rejected),
                         stats=tuple(stats), scales=tuple(float(s) for s in scales))
