"""Compiled per-pixel kernels of the calib science (numba, ``nopython``, no fast-math, single thread).

Each kernel replaces a chain of numpy passes by one pass over the pixels, with the same arithmetic (the
same dtype for every operation, in the same order), so results agree with the numpy formulation to the last
bit in practice (sums of float32 values in float64 are exact for the magnitudes of calibration frames);
``tests/unit/test_calib_kernels.py`` checks them against straightforward numpy references.

* :func:`combine_band` – one band of a stack (pixels x frames; each pixel's values sorted once, by numpy's
  SIMD sort for many frames or an insertion sort inside the kernel for few): median / iterative sigma
  clipping (per-frame noise or per-pixel MAD), mean, n_used and variance, per pixel in one pass. Used by
  :func:`~.combine.combine`.
* :func:`row_medians` – median of each row of a small 2-D array (overscan strips).
* :func:`reduce_pixels` – the whole reduction of a chip in one pass: raw -> SCI, VAR, DQ.

Kernels allocate nothing of image size: every output and scratch array is allocated by the (numpy) caller,
so ``tracemalloc`` sees all of it. Compilation happens on the first call of each kernel and is cached on
disk (``cache=True``: in ``__pycache__`` next to this file, or numba's per-user cache directory if that is
not writable); :func:`warm` compiles / loads all of them with the argument types the callers use.
Importing this module imports numba (~1 s); :mod:`services.calib.science` imports it lazily, on the first
call that needs it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from services.calib.science.overscan import MAD_TO_SIGMA

#: method codes of :func:`combine_band`
SIGCLIP_MEAN = 0
MEDIAN = 1

_jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")


@_jit
def _mad_median(s: np.ndarray, lo: int, hi: int, c: float) -> float:
    """Median of |s[lo:hi] - c| (float64) for ascending ``s``: the deviations decrease towards ``c`` from the
    left and increase from it to the right, so the two sides are merged from ``c`` outwards up to the middle
    rank (O(n), no sort)."""
    m = hi - lo
    right = lo
    while right < hi and np.float64(s[right]) < c:
        right += 1
    left = right - 1
    lo_rank = (m - 1) // 2
    hi_rank = m // 2
    d_lo = 0.0
    d_hi = 0.0
    for r in range(hi_rank + 1):
        if left < lo:
            d = abs(np.float64(s[right]) - c)
            right += 1
        elif right >= hi:
            d = abs(np.float64(s[left]) - c)
            left -= 1
        else:
            dl = abs(np.float64(s[left]) - c)
            dr = abs(np.float64(s[right]) - c)
            if dl <= dr:
                d = dl
                left -= 1
            else:
                d = dr
                right += 1
        if r == lo_rank:
            d_lo = d
        if r == hi_rank:
            d_hi = d
    return 0.5 * (d_lo + d_hi)


@_jit
def _midpoint(a: np.float32, b: np.float32) -> float:
    """``0.5 * (a + b)`` with the sum rounded to float32, as numpy computes the median of float32 values."""
    return np.float64(np.float32(a + b)) * 0.5


@_jit
def combine_band(x: np.ndarray, s: np.ndarray, presorted: bool, method: int, sigma: float, maxiters: int,
                 clip_sigma: np.ndarray, use_frame_sigma: bool, noise2: np.ndarray, var_factor: float,
                 out_value: np.ndarray, out_n: np.ndarray, out_var: np.ndarray, buf: np.ndarray,
                 keep: np.ndarray) -> None:
    """Combine a band pixel by pixel: ``x`` (pixels x frames, float32, non-finite = missing) and ``s``, each
    row of ``x`` sorted ascending if ``presorted`` (``np.sort(x, axis=1)``: numpy's SIMD sort, fastest for
    many frames), else scratch of the same shape that the kernel fills (insertion sort, fastest for few).

    ``method`` :data:`SIGCLIP_MEAN`: up to ``maxiters`` passes of: centre = median of the remaining values
    (float32 midpoint of the middle pair), deviations |x - centre| in float64, scale = ``clip_sigma[frame]``
    (``use_frame_sigma``) or 1.4826 x the median deviation (per-pixel MAD), drop the values with deviation >
    ``sigma`` x scale unless that would drop them all; stop when nothing changes. Value = mean of the kept
    values (float64 sum in frame order). :data:`MEDIAN`: value = median of the finite values, none dropped.
    ``out_n`` = values kept; ``out_var`` = (sum of ``noise2[frame]`` over them) x (``var_factor`` / n^2).
    A pixel without finite values gets NaN value and variance and n = 0. ``buf`` (float32) and ``keep``
    (bool): scratch of at least ``frames`` elements.
    """
    npix, nf = x.shape
    for p in range(npix):
        if presorted:
            lo = 0  # the finite values are s[p, lo:hi] (-inf sorts first, +inf and NaN last)
            while lo < nf and s[p, lo] == -np.inf:
                lo += 1
            hi = lo
            while hi < nf and math.isfinite(s[p, hi]):
                hi += 1
        else:  # few frames: insertion-sort the finite values into s[p, :hi] here
            lo = 0
            hi = 0
            for k in range(nf):
                v = x[p, k]
                if math.isfinite(v):
                    j = hi
                    while j > 0 and s[p, j - 1] > v:
                        s[p, j] = s[p, j - 1]
                        j -= 1
                    s[p, j] = v
                    hi += 1
        m = hi - lo
        if m == 0:
            out_value[p] = np.nan
            out_var[p] = np.nan
            out_n[p] = 0
            continue
        for k in range(nf):
            keep[k] = math.isfinite(x[p, k])
        if method == SIGCLIP_MEAN and use_frame_sigma:
            # per-frame thresholds: the kept set is not a range of s; keep a compacted sorted copy in buf
            for i in range(m):
                buf[i] = s[p, lo + i]
            for _ in range(maxiters):
                c = _midpoint(buf[(m - 1) // 2], buf[m // 2])
                nbad = 0
                for k in range(nf):
                    if keep[k] and abs(np.float64(x[p, k]) - c) > sigma * clip_sigma[k]:
                        nbad += 1
                if nbad == 0 or nbad == m:
                    break
                for k in range(nf):
                    v = x[p, k]
                    if keep[k] and abs(np.float64(v) - c) > sigma * clip_sigma[k]:
                        keep[k] = False
                        j = 0  # drop one copy of v from the sorted buf
                        while buf[j] != v:
                            j += 1
                        for t in range(j, m - 1):
                            buf[t] = buf[t + 1]
                        m -= 1
        elif method == SIGCLIP_MEAN:
            # one threshold per pixel: the clipped values are the ends of the sorted range
            for _ in range(maxiters):
                c = _midpoint(s[p, lo + (m - 1) // 2], s[p, lo + m // 2])
                thr = sigma * (MAD_TO_SIGMA * _mad_median(s[p], lo, hi, c))
                nlo = lo
                while nlo < hi and abs(np.float64(s[p, nlo]) - c) > thr:
                    nlo += 1
                nhi = hi
                while nhi > nlo and abs(np.float64(s[p, nhi - 1]) - c) > thr:
                    nhi -= 1
                if nhi - nlo == m or nhi == nlo:
                    break
                lo = nlo
                hi = nhi
                m = hi - lo
            vmin = s[p, lo]
            vmax = s[p, hi - 1]
            for k in range(nf):
                if keep[k]:
                    keep[k] = vmin <= x[p, k] <= vmax
        var = 0.0
        if method == MEDIAN:
            value = _midpoint(s[p, lo + (m - 1) // 2], s[p, lo + m // 2])
            for k in range(nf):
                if keep[k]:
                    var += noise2[k]
        else:
            total = 0.0
            for k in range(nf):
                if keep[k]:
                    total += np.float64(x[p, k])
                    var += noise2[k]
            value = total / m
        out_value[p] = value
        out_n[p] = m
        out_var[p] = var * (var_factor / np.float64(m * m))


@_jit
def row_medians(a: np.ndarray, out: np.ndarray, buf: np.ndarray) -> None:
    """``out[i]`` = median of the non-NaN values of row ``i`` of ``a`` (float64; NaN if none), like
    ``np.nanmedian(a, axis=1)``; ``buf``: float64 scratch of at least ``a.shape[1]`` elements."""
    ny, nx = a.shape
    for i in range(ny):
        n = 0
        for j in range(nx):
            v = a[i, j]
            if not np.isnan(v):
                # insertion into the sorted prefix
                k = n
                while k > 0 and buf[k - 1] > v:
                    buf[k] = buf[k - 1]
                    k -= 1
                buf[k] = v
                n += 1
        if n == 0:
            out[i] = np.nan
        elif n % 2 == 1:
            out[i] = buf[n // 2]
        else:
            out[i] = 0.5 * (buf[n // 2 - 1] + buf[n // 2])


@_jit
def reduce_pixels(raw: np.ndarray, r0: int, c0: int, level: np.ndarray, saturation: float,
                  bias: np.ndarray, bias_var: np.ndarray, has_bias_var: bool, flat: np.ndarray,
                  flat_var: np.ndarray, has_flat_var: bool, bad: np.ndarray, has_bad: bool, gain: np.float32,
                  const_var: np.float32, sat_bit: int, bad_bit: int, nodata_bit: int,
                  sci: np.ndarray, var: np.ndarray, dq: np.ndarray) -> None:
    """One pass over the data section ``raw[r0:r0+ny, c0:c0+nx]`` (ny, nx = ``sci.shape``), in ADU.

    Per pixel: ``d = float32(raw - level[row])`` (float64 subtraction); ``e = (d - bias) x gain``,
    ``sci = e / flat``, ``var = (max(e, 0) + const_var + bias_var x gain^2) / flat^2 + sci^2 flat_var / flat^2``
    (all float32, in this order); DQ: ``sat_bit`` if raw >= ``saturation`` (compared in raw's dtype),
    ``bad_bit`` where ``bad``, ``nodata_bit`` (and NaN SCI/VAR) where SCI or VAR is not finite or the flat is
    not finite or <= 0. ``has_*`` False: the array is a dummy and the term is left out.
    """
    ny, nx = sci.shape
    g2 = gain * gain
    zero = np.float32(0.0)
    for i in range(ny):
        lev = level[i]
        for j in range(nx):
            r = raw[r0 + i, c0 + j]
            q = 0
            if r >= saturation:
                q |= sat_bit
            if has_bad and bad[i, j]:
                q |= bad_bit
            d = np.float32(np.float64(r) - lev)
            f = flat[i, j]
            e = (d - bias[i, j]) * gain
            s = e / f
            ve = max(e, zero) + const_var
            if has_bias_var:
                ve += bias_var[i, j] * g2
            f2 = f * f
            v = ve / f2
            if has_flat_var:
                v += s * s * flat_var[i, j] / f2
            if not (math.isfinite(s) and math.isfinite(v) and math.isfinite(f) and f > zero):
                q |= nodata_bit
                s = np.float32(np.nan)
                v = np.float32(np.nan)
            sci[i, j] = s
            var[i, j] = v
            dq[i, j] = q


def warm() -> None:
    """Compile (first use after install) or load from the on-disk cache every kernel, with the argument
    types the callers pass, on tiny inputs."""
    from services.calib.science.combine import combine
    from services.calib.science.overscan import overscan_level
    rng = np.random.default_rng(0)
    frames = [rng.normal(0.0, 1.0, (4, 4)).astype(np.float32) for _ in range(3)]
    combine(frames, screening=None)
    combine(frames, screening=None, clip_noise="pixel")
    combine(frames, screening=None, method="median")
    overscan_level(rng.normal(0.0, 1.0, (4, 3)))
    for dtype in (np.float32, np.float64):
        one32 = np.ones((2, 2), np.float32)
        _reduce_call(np.ones((2, 3), dtype), np.zeros(2), one32, one32, one32, one32, np.zeros((2, 2), bool))


def _reduce_call(raw: np.ndarray, level: np.ndarray, bias: np.ndarray, bvar: np.ndarray, flat: np.ndarray,
                 fvar: np.ndarray, bad: np.ndarray) -> None:
    ny, nx = bias.shape
    sci = np.empty((ny, nx), np.float32)
    var = np.empty((ny, nx), np.float32)
    dq = np.empty((ny, nx), np.uint16)
    reduce_pixels(raw, 0, 0, level, raw.dtype.type(1e9), bias, bvar, True, flat, fvar, True, bad, True,
                  np.float32(1.0), np.float32(1.0), 1, 2, 4, sci, var, dq)
