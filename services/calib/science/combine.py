"""Stacking frames pixel by pixel: sigma-clipped mean or median, in row bands with bounded memory.

Each band (N frames x ``band_rows`` rows, float32, pixel-major) is sorted per pixel by numpy's SIMD sort
and combined by the compiled kernel :func:`~.kernels.combine_band` in one pass. Peak memory is the larger
of the band buffers (8 bytes x N x ``band_rows`` x nx; by default ``band_rows`` is chosen to keep them
under 16 MB whatever N) and the screening sample (8 bytes x N x 64 rows x nx), plus the outputs (10 bytes
per pixel): independent of the image height, and of N beyond one band. Every pixel depends only on its
own N values and on per-frame statistics from a fixed row sample, so results are bit-identical for any
``band_rows`` and across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.calib.science.screen import FrameStats, RejectedFrame, ScaleSpec, Screening, screen_frames
from services.calib.science.sources import RowSource, read_band_into
from wisp.errors import InvalidInput

CombineMethod = Literal["sigclip_mean", "median"]
ClipNoise = Literal["frame", "pixel"]
DEFAULT_SCREENING = Screening()
#: up to this many frames the kernel sorts each pixel's values itself (insertion sort); above, numpy's SIMD sort
SORT_IN_KERNEL = 8
#: default memory budget of the band buffers (the band and its per-pixel sorted copy, 8 bytes per value)
BAND_BYTES = 16 * 2**20


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


def combine(frames: Sequence[RowSource], *, method: CombineMethod = "sigclip_mean", sigma: float = 3.0,
            maxiters: int = 5, clip_noise: ClipNoise = "frame", band_rows: int | None = None,
            scale: ScaleSpec = None, screening: Screening | None = DEFAULT_SCREENING) -> CombineResult:
    """Combine N aligned 2-D frames pixel by pixel, after rejecting odd frames (see :class:`Screening`;
    ``screening=None`` keeps every frame that has finite, non-constant pixels).

    ``frames``: frame sources (arrays, memmaps, ``hdu.section``, :class:`~.sources.RowFunction`), all the
    same shape, read ``band_rows`` rows at a time (None: as many as fit :data:`BAND_BYTES` of band buffers,
    16 to 256 rows). ``scale``: per-frame factors, ``'median'`` (1/median
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
    from services.calib.science import kernels  # numba: imported on first use, not with the package
    image = np.empty(shape, dtype=np.float32)
    n_used = np.empty(shape, dtype=np.uint16)
    var = np.empty(shape, dtype=np.float32)
    nf = len(used)
    use_frame_sigma = clip_sigma is not None
    sig_k = np.ascontiguousarray(clip_sigma if clip_sigma is not None else np.zeros(nf), dtype=np.float64)
    noise2 = np.ascontiguousarray(noise2, dtype=np.float64)
    code = kernels.MEDIAN if method == "median" else kernels.SIGCLIP_MEAN
    var_factor = np.pi / 2.0 if method == "median" else 1.0
    buf = np.empty(nf, np.float32)
    keep = np.empty(nf, np.bool_)
    if band_rows is None:
        band_rows = min(256, max(16, BAND_BYTES // (8 * nf * nx)))
    step = max(1, min(int(band_rows), ny))
    x = np.empty(step * nx * nf, dtype=np.float32)  # pixels x frames
    srt = np.empty_like(x)  # the same, sorted per pixel
    presort = nf > SORT_IN_KERNEL
    for r0 in range(0, ny, step):
        r1 = min(ny, r0 + step)
        band = x[:(r1 - r0) * nx * nf].reshape(r1 - r0, nx, nf)
        for k, i in enumerate(used):
            read_band_into(band[:, :, k], frames[i], r0, r1, float(sel_scales[k]))  # float64 x scale -> float32
        band2 = band.reshape(-1, nf)
        s2 = srt[:band2.size].reshape(band2.shape)
        if presort:
            np.copyto(s2, band2)
            s2.sort(axis=1)
        kernels.combine_band(band2, s2, presort, code, float(sigma), int(maxiters), sig_k, use_frame_sigma, noise2,
                             var_factor, image[r0:r1].reshape(-1), n_used[r0:r1].reshape(-1),
                             var[r0:r1].reshape(-1), buf, keep)
    return CombineResult(image=image, n_used=n_used, var=var, used=tuple(used), rejected=tuple(rejected),
                         stats=tuple(stats), scales=tuple(float(s) for s in scales))
