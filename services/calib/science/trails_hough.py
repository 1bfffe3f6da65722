"""Trail detection, steps 1-4 of :mod:`.trails`: the per-chip state (usable pixels, sky-subtracted SCI, noise,
binned S/N, source mask), its standardised Hough transform (updated incrementally), whose peaks are the
candidates, and the pixels along a line.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
import sep
from scipy import ndimage

from wisp.dq import SATURATED

if TYPE_CHECKING:
    from services.calib.science.trails import TrailParams


@numba.njit(cache=True, nogil=True)
def _hough(xs: np.ndarray, ys: np.ndarray, vals: np.ndarray, counts: np.ndarray, cos_t: np.ndarray,
           sin_t: np.ndarray, r0: float, acc: np.ndarray, cnt: np.ndarray) -> None:  # pragma: no cover - compiled
    """Add ``vals`` and ``counts`` of pixels (xs, ys) to ``acc`` and ``cnt`` (n_theta, n_r) in place: angle t,
    bin k holds x cos + y sin in [r0 + k - 0.5, r0 + k + 0.5)."""
    for t in range(cos_t.size):
        c = cos_t[t]
        s = sin_t[t]
        for i in range(xs.size):
            k = math.floor(xs[i] * c + ys[i] * s - r0 + 0.5)
            acc[t, k] += vals[i]
            cnt[t, k] += counts[i]


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return np.asarray((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + radius)


@numba.njit(cache=True, nogil=True)
def _standardise(s: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """(s - median) / (MAD sigma) of each row over its finite entries; NaN stays NaN."""
    out = np.full(s.shape, np.nan)
    buf = np.empty(s.shape[1])
    for t in range(s.shape[0]):
        n = 0
        for k in range(s.shape[1]):
            if np.isfinite(s[t, k]):
                buf[n] = s[t, k]
                n += 1
        if n < 5:
            continue
        med = np.median(buf[:n])
        for k in range(n):
            buf[k] = abs(buf[k] - med)
        mad = max(np.median(buf[:n]) * 1.482602218505602, 1e-6)
        for k in range(s.shape[1]):
            if np.isfinite(s[t, k]):
                out[t, k] = (s[t, k] - med) / mad
    return out


class Chip:
    """Per-chip state: usable pixels, sky-subtracted SCI, noise, binned S/N and the source mask."""

    def __init__(self, sci: np.ndarray, var: np.ndarray, dq: np.ndarray, p: TrailParams) -> None:
        self.p = p
        self.ny, self.nx = ny, nx = sci.shape
        with np.errstate(invalid="ignore"):
            good = np.isfinite(sci) & np.isfinite(var) & (var > 0) & ((dq & p.ignore_bits) == 0)
        sat = (dq & SATURATED) != 0
        if p.sat_grow > 0 and sat.any():
            good &= ~ndimage.binary_dilation(sat, structure=_disk(p.sat_grow))
        if not good.any():
            raise ValueError("no usable pixel (DQ, NaN or var <= 0)")
        data = np.where(good, sci, 0.0).astype(np.float32)
        bs = min(p.back_size, nx, ny)
        back = sep.Background(data, mask=~good, bw=bs, bh=bs, fw=3, fh=3).back(dtype=np.float32)
        self.resid = np.where(good, data - back, np.float32(0.0)).astype(np.float32)
        self.noise = np.sqrt(np.where(good, var, np.float32(1.0))).astype(np.float32)
        self.good = good
        self.sky_noise = float(np.median(self.noise[good]))
        z = self.resid / self.noise
        b = p.bin_size
        self.nyb, self.nxb = nyb, nxb = -(-ny // b), -(-nx // b)
        self.zpad = np.zeros((nyb * b, nxb * b), np.float32)
        self.zpad[:ny, :nx] = z
        self.trail_mask = np.zeros((ny, nx), bool)
        self.excluded = np.zeros((ny, nx), bool)  # trails found and line-like pixel defects
        self.defect: tuple[float, float] | None = None  # a line rejected as too narrow: (phi, r)
        zb, nb = self._binned()
        self.source_b = self._sources(zb, nb)
        self.source = np.repeat(np.repeat(self.source_b, b, 0), b, 1)[:ny, :nx]
        self.usable = good & ~self.source  # for profile fits and segment amplitudes
        # Hough geometry (binned px)
        lb = math.hypot(nxb, nyb)
        self.n_theta = max(90, math.ceil(math.pi * lb / 2.0))
        self.phi = np.arange(self.n_theta) * (math.pi / self.n_theta)
        self.r0 = -float(nxb - 1) - 1.0
        self.n_r = math.ceil(lb - self.r0) + 3
        self.min_count = max(8.0, 0.1 * min(nxb, nyb))
        self._acc: np.ndarray | None = None
        self._cnt = self._vals = self._counts = np.zeros(0)

    def _binned(self) -> tuple[np.ndarray, np.ndarray]:
        b, nyb, nxb = self.p.bin_size, self.nyb, self.nxb
        ok = np.zeros((nyb * b, nxb * b), bool)
        ok[:self.ny, :self.nx] = self.good
        zs = np.where(ok, self.zpad, 0.0).reshape(nyb, b, nxb, b).sum(axis=(1, 3))
        nb = ok.reshape(nyb, b, nxb, b).sum(axis=(1, 3))
        valid = nb >= self.p.min_bin_fill * b * b
        if self.excluded.any():  # blocks touched by a found trail or pixel defect leave the transform entirely
            ex = np.zeros((nyb * b, nxb * b), bool)
            ex[:self.ny, :self.nx] = self.excluded
            valid &= ~ex.reshape(nyb, b, nxb, b).any(axis=(1, 3))
        zb = np.zeros((nyb, nxb))
        zb[valid] = zs[valid] / np.sqrt(nb[valid])
        return zb, valid

    def _sources(self, zb: np.ndarray, valid: np.ndarray) -> np.ndarray:
        p = self.p
        # unusable blocks (saturated cores, bleed columns) count as high, so that they do not split a star
        high = (valid & (zb > p.source_nsigma)) | ~valid
        if p.source_open > 0:  # beyond the chip counts as high: a star cut by the edge stays a star
            disk = _disk(p.source_open)
            high = ndimage.binary_dilation(ndimage.binary_erosion(high, structure=disk, border_value=1),
                                           structure=disk)
        high &= ndimage.binary_dilation(valid & (zb > p.source_nsigma), iterations=2)  # not pure-invalid areas
        lab, n = ndimage.label(high)
        if n == 0:
            return high
        keep = np.ones(n + 1, bool)
        keep[0] = False
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if max(h, w) < p.long_source:
                continue
            yy, xx = np.nonzero(lab[sl] == i)
            cov = np.cov(np.vstack([xx, yy]).astype(float)) if xx.size > 2 else np.eye(2)
            ev = np.linalg.eigvalsh(cov)
            length, width = math.sqrt(12.0 * max(ev[1], 0.0)), math.sqrt(12.0 * max(ev[0], 1.0 / 12.0))
            if length > p.long_source and length > p.thin_ratio * width:
                keep[i] = False  # a wide bright trail, not a source
        mask = keep[lab]
        if p.source_grow > 0:
            mask = ndimage.binary_dilation(mask, iterations=p.source_grow)
        return np.asarray(mask)

    def transform(self) -> tuple[np.ndarray, np.ndarray]:
        """Standardised transform (n_theta, n_r) and the r offset (0 or 0.5 bins) of each entry's best form.

        Updated incrementally: only blocks whose value changed since the last call (newly masked trail pixels)
        are transformed again."""
        zb, valid = self._binned()
        valid &= ~self.source_b
        vals = np.where(valid, np.clip(zb, -self.p.clip, self.p.clip), 0.0)
        counts = valid.astype(float)
        if self._acc is None:
            self._acc = np.zeros((self.n_theta, self.n_r))
            self._cnt = np.zeros((self.n_theta, self.n_r))
            dv, dc, changed = vals, counts, valid
        else:
            dv, dc = vals - self._vals, counts - self._counts
            changed = (dv != 0) | (dc != 0)
        yy, xx = np.nonzero(changed)
        _hough(xx.astype(np.float64), yy.astype(np.float64), dv[changed], dc[changed], np.cos(self.phi),
               np.sin(self.phi), self.r0, self._acc, self._cnt)
        self._vals, self._counts = vals, counts
        acc, cnt = self._acc, self._cnt
        with np.errstate(invalid="ignore", divide="ignore"):
            s1 = np.where(cnt >= self.min_count, acc / np.sqrt(cnt), np.nan)
            a2, c2 = acc[:, :-1] + acc[:, 1:], cnt[:, :-1] + cnt[:, 1:]
            s2 = np.where(c2 >= self.min_count, a2 / np.sqrt(c2), np.nan)
        t1 = _standardise(s1)
        t2 = np.full_like(t1, np.nan)
        t2[:, :-1] = _standardise(s2)
        best = np.fmax(t1, t2)
        off = np.where(np.nan_to_num(t2, nan=-np.inf) > np.nan_to_num(t1, nan=-np.inf), 0.5, 0.0)
        return np.nan_to_num(best, nan=-np.inf), off

    def suppress(self, t: np.ndarray, it: int, r_bin: float, dt: int = 6, dr: int = 4) -> None:
        """Set a neighbourhood of (it, r_bin) to -inf in ``t`` (in place), across the phi = 0/pi seam."""
        r = self.r0 + r_bin
        for j in range(it - dt, it + dt + 1):
            jj, rr = j, r
            if j < 0 or j >= self.n_theta:  # phi + pi: the same line with r -> -r
                jj, rr = j % self.n_theta, -r
            k = round(rr - self.r0)
            t[jj, max(k - dr, 0):max(k + dr + 1, 0)] = -np.inf

    def band(self, phi: float, r: float, half: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices (y, x) of pixels within ``half`` px of the line x cos phi + y sin phi = r (full-res px)."""
        c, s = math.cos(phi), math.sin(phi)
        if abs(s) >= abs(c):  # closer to horizontal: walk columns
            x = np.arange(self.nx)
            yc = (r - x * c) / s
            hw = half / abs(s)
            lo = np.clip(np.ceil(yc - hw).astype(int), 0, self.ny)
            hi = np.clip(np.floor(yc + hw).astype(int) + 1, 0, self.ny)
            n = np.maximum(hi - lo, 0)
            xs = np.repeat(x, n)
            ys = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        else:
            y = np.arange(self.ny)
            xc = (r - y * s) / c
            hw = half / abs(c)
            lo = np.clip(np.ceil(xc - hw).astype(int), 0, self.nx)
            hi = np.clip(np.floor(xc + hw).astype(int) + 1, 0, self.nx)
            n = np.maximum(hi - lo, 0)
            ys = np.repeat(y, n)
            xs = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        d = xs * c + ys * s - r
        sel = np.abs(d) <= half
        return np.asarray(ys)[sel], np.asarray(xs)[sel]
