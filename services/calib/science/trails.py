"""Satellite and aircraft trails on a reduced science chip: line detection, profile fit and a pixel mask.

Pure science: numpy arrays in, a boolean mask (pixels to give the DQ bit :data:`wisp.dq.TRAIL`) and the
measured lines out; no I/O. Pixel coordinates are 0-based (numpy ``[y, x]``, pixel centres at integers).

Method (in the spirit of Astro-WISE's binned Hough transform, ACSTOOLS ``satdet`` and Rubin's
``maskStreaks``):

1. *Significance image.* Pixels with DQ bits in ``ignore_bits`` (bad, saturated, no data; saturated pixels
   grown by ``sat_grow`` px to cover bleed ends) or non-finite/non-positive VAR are unusable. The sky is
   removed with a ``back_size`` px mesh background (sep) and each pixel becomes ``z = (sci - sky) / sqrt(var)``.
2. *Binning.* ``z`` is summed over ``bin_size``² blocks and divided by sqrt(usable pixels): a binned pixel is
   N(0, 1) on pure sky. A trail narrower than a block keeps its full S/N per block, and the Hough transform of
   the binned image is ``bin_size``² cheaper.
3. *Source mask.* Binned pixels above ``source_nsigma`` are opened morphologically (a disk of
   ``source_open`` binned px): thin features (trails, cosmic rays, bleed columns) vanish, extended objects
   (stars, galaxies) remain, except components that are long and thin (a wide, bright trail); what remains
   is grown by ``source_grow`` binned px and left out of the transform.
4. *Hough (Radon) transform* of the binned S/N, clipped to ±``clip``: for each normal angle phi and
   distance r (``x cos phi + y sin phi = r``, 1 binned px bins) the sum of the values over the number of
   pixels summed, sqrt'ed: a line of S/N per unit length ``k`` gives ~ k sqrt(length). Every angle's row is
   standardised by its median and MAD over r (this absorbs residual sky errors and crowding), and also
   computed for pairs of adjacent r bins (a trail split between two bins).
5. *Candidates*: the highest standardised peak above ``detect_nsigma``, refined on the full-resolution
   pixels of a band around it (the angle and offset giving the sharpest mean cross-profile), then verified:

   * a Gaussian + constant fit of the *median* cross-profile (sources crossed by the line do not bias it):
     amplitude > ``fit_nsigma`` x its error, sigma in [``min_sigma``, ``max_sigma``] px (narrower: a column
     or row defect, which is then left out of the search), sky measured on both sides (not the chip edge);
   * presence along the line: matched-filter ridge amplitudes in slices of ``seg_len`` / 8 px, their median
     per ``seg_len`` px segment (a star on the line does not make a segment present); the trail must be
     present (segment S/N > ``seg_nsigma``) over a run of >= ``min_length`` px and >= 2 segments, in >= 60 %
     of the run's measurable segments. The run's ends are placed at the slice boundary that maximises the
     likelihood of "trail inside, nothing outside" (trails may end on the chip); a run reaching unusable
     slices at the chip edge extends to it;
   * the line is refitted through the centroids of its segments (the transform's angle is coarse for
     short trails) and measured again;
   * a line fading by more than ``spike_ratio`` towards one end whose bright end runs into a masked source
     is rejected as a diffraction spike or halo feature.

   An accepted trail is masked over its run, out to where the fitted profile (at the brightest tenth of
   the segment amplitudes) drops below ``edge_nsigma`` x the sky noise, plus ``pad`` px. Blocks touched by
   the mask leave the transform (updated incrementally), which is searched again, up to ``max_trails``; a
   rejected candidate's neighbourhood in (phi, r) is suppressed and the next peak tried, up to
   ``max_candidates``.

Stars, galaxies, cosmic rays, bad columns (DQ BAD, or unflagged but 1 px wide) and bleed trails (DQ SATURATED)
do not make lines: they are masked, clipped, too narrow, or fail the segment test (their signal is concentrated
in one place along the line). Not handled: symmetric diffraction spikes through a saturated star (they are
reported as a trail, and masked).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
import sep
from scipy import ndimage, optimize

from wisp.dq import BAD, NO_DATA, SATURATED

MAD_TO_SIGMA = 1.482602218505602
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class TrailParams:
    """Parameters of :func:`find_trails` (see the module docstring for their role). Lengths in px."""

    ignore_bits: int = BAD | SATURATED | NO_DATA  #: DQ bits of pixels left out of detection and fits
    sat_grow: int = 2  #: px by which SATURATED pixels are grown (partially filled bleed ends, halo)
    back_size: int = 64  #: sky mesh (px)
    bin_size: int = 4  #: px per side of the blocks the Hough transform works on
    min_bin_fill: float = 0.25  #: usable fraction a block needs
    clip: float = 5.0  #: binned S/N clipped to ±clip before the transform
    source_nsigma: float = 3.0  #: binned S/N above which a block may belong to a source
    source_open: int = 2  #: radius (binned px) of the opening that removes thin features from the sources
    source_grow: int = 1  #: binned px by which the source mask is grown
    long_source: float = 24.0  #: binned px: sources longer than this and ``thin_ratio`` x longer than wide
    thin_ratio: float = 4.0  #: are treated as (wide) trails, not masked
    detect_nsigma: float = 7.0  #: threshold on the standardised transform
    fit_nsigma: float = 5.0  #: the profile amplitude must exceed this x its error
    min_sigma: float = 0.6  #: px: narrower profiles are pixel defects, not trails
    max_sigma: float = 15.0  #: px
    spike_ratio: float = 4.0  #: a line fading by more than this from a bright source is a diffraction spike
    seg_len: float = 32.0  #: px: segments along the line for the presence test
    seg_nsigma: float = 3.0  #: S/N a segment needs to count as "trail present"
    min_length: float = 64.0  #: px: shortest stretch accepted
    edge_nsigma: float = 0.2  #: mask out to where the trail adds less than this x the sky noise
    pad: float = 0.5  #: px added to the mask's half-width (pixel centre vs pixel edge)
    max_trails: int = 8
    max_candidates: int = 40


@dataclass(frozen=True)
class TrailLine:
    """One detected trail. ``angle`` deg: direction from +x towards +y in [0, 180); ``rho`` px: every point
    (x, y) on the line has ``x sin(angle) - y cos(angle) = rho``; ``x0, y0, x1, y1``: 0-based ends of the
    masked stretch (px), ``length`` px between them; ``sigma`` px: Gaussian sigma of the cross-profile
    (``fwhm`` = 2.355 sigma); ``width`` px: full width of the mask; ``peak`` e-/px: fitted ridge level above
    the sky; ``flux_per_px`` e- per px of length (integral across the profile, peak x sigma x sqrt(2 pi));
    ``mean_sb`` e-/px: mean of SCI - sky over the masked pixels; ``snr``: standardised Hough peak;
    ``profile_snr``: amplitude / error of the profile fit; ``n_pixels``: pixels masked for this line."""

    angle: float
    rho: float
    x0: float
    y0: float
    x1: float
    y1: float
    length: float
    sigma: float
    fwhm: float
    width: float
    peak: float
    flux_per_px: float
    mean_sb: float
    snr: float
    profile_snr: float
    n_pixels: int


@dataclass(frozen=True)
class Trails:
    """Result of :func:`find_trails`: ``mask`` bool (ny, nx), True on trail pixels; ``lines`` the trails, in
    the order found (brightest first); ``n_candidates`` peaks examined (accepted and rejected)."""

    mask: np.ndarray
    lines: list[TrailLine] = field(default_factory=list)
    n_candidates: int = 0


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


def _gauss(d: np.ndarray, c: float, a: float, mu: float, sigma: float) -> np.ndarray:
    return c + a * np.exp(-0.5 * ((d - mu) / sigma) ** 2)


class _Chip:
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


def _group_median(keys: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``vals`` for each key in 0..n-1 (NaN where none) and the counts."""
    order = np.lexsort((vals, keys))
    ks, vs = keys[order], vals[order]
    cnt = np.bincount(keys, minlength=n)[:n]
    start = np.searchsorted(ks, np.arange(n))
    med = np.full(n, np.nan)
    has = cnt > 0
    lo, hi = start[has] + (cnt[has] - 1) // 2, start[has] + cnt[has] // 2
    med[has] = 0.5 * (vs[lo] + vs[hi])
    return med, cnt


def _profile(d: np.ndarray, e: np.ndarray, half: float, step: float,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cross-profile in bins of ``step`` px of ``d`` over [-half, half]: centres, means, bin of each value, counts."""
    nbin = round(2 * half / step)
    k = np.floor((d + half) / step).astype(int)
    ok = (k >= 0) & (k < nbin)
    cnt = np.bincount(k[ok], minlength=nbin).astype(float)
    tot = np.bincount(k[ok], weights=e[ok], minlength=nbin)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = tot / cnt
    return -half + (np.arange(nbin) + 0.5) * step, mean, k, cnt


def _sharpness(d: np.ndarray, e: np.ndarray, half: float) -> tuple[float, float]:
    """Peak of the mean 0.5 px cross-profile smoothed by a 1 px Gaussian, and its position (px)."""
    centres, mean, _, cnt = _profile(d, e, half, 0.5)
    mean = np.where(cnt > 0, mean, 0.0)
    sm = ndimage.gaussian_filter1d(mean, 2.0, mode="constant")
    k = int(np.argmax(sm))
    pos = centres[k]
    if 0 < k < sm.size - 1:
        den = sm[k - 1] - 2 * sm[k] + sm[k + 1]
        if den < 0:
            pos += 0.5 * 0.5 * (sm[k - 1] - sm[k + 1]) / den
    return float(sm[k]), float(pos)


def _fit_profile(d: np.ndarray, e: np.ndarray, half: float) -> tuple[float, float, float, float, float] | None:
    """Gaussian + constant fit of the *median* cross-profile (0.5 px bins; sources crossed by the line do not
    bias it): (const, amp, centre, sigma, amp error)."""
    centres, _, k, cnt = _profile(d, e, half, 0.5)
    ok = (k >= 0) & (k < cnt.size)
    med, _ = _group_median(k[ok], e[ok], cnt.size)
    mad, _ = _group_median(k[ok], np.abs(e[ok] - med[k[ok]]), cnt.size)
    use = cnt >= 5
    if use.sum() < 10:
        return None
    x, y = centres[use], med[use]
    sy = np.maximum(1.2533 * MAD_TO_SIGMA * mad[use] / np.sqrt(cnt[use]), 1e-6)
    outer = np.abs(x) > 0.5 * half
    cst0 = float(np.median(y[outer])) if outer.any() else 0.0
    kmax = int(np.argmax(y))
    a0 = max(float(y[kmax] - cst0), 1e-3)
    above = x[(y - cst0) > 0.5 * a0]
    s0 = float(np.clip((above.max() - above.min()) / FWHM_PER_SIGMA, 0.5, half / 2)) if above.size else 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, pcov = optimize.curve_fit(
                _gauss, x, y, p0=[cst0, a0, float(x[kmax]), s0], sigma=sy, absolute_sigma=True, max_nfev=400,
                bounds=([-np.inf, -np.inf, -half, 0.1], [np.inf, np.inf, half, half]))
    except (RuntimeError, ValueError):
        return None
    cst, amp, mu, sig = (float(v) for v in popt)
    amp_err = float(np.sqrt(pcov[1, 1])) if np.isfinite(pcov[1, 1]) else float("inf")
    return cst, amp, mu, abs(sig), amp_err


def _slices(along: np.ndarray, dm: np.ndarray, e: np.ndarray, w: np.ndarray, sig: float, a_lo: float,
            n_sl: int, sub: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched-filter ridge amplitude (e-/px) of the trail in slices of ``sub`` px along the line, its error,
    and whether the slice is usable (enough of the profile and of the sky beside it unmasked). The sky of a
    slice is the median of the pixels 3 sigma + 2 px to 3 sigma + 10 px from the centre line."""
    q = np.clip(((along - a_lo) / sub).astype(int), 0, n_sl - 1)
    side = 3.0 * sig + 2.0
    wing = (np.abs(dm) > side) & (np.abs(dm) <= side + 8.0)
    base, n_wing = _group_median(q[wing], e[wing], n_sl)
    core = np.abs(dm) <= max(3.0 * sig, 1.5)
    qc, gc = q[core], np.exp(-0.5 * (dm[core] / sig) ** 2)
    ec, wc = e[core] - np.nan_to_num(base)[qc], w[core]
    num = np.bincount(qc, weights=gc * wc * ec, minlength=n_sl)
    den = np.bincount(qc, weights=gc * gc * wc, minlength=n_sl)
    cover = np.bincount(qc, weights=gc, minlength=n_sl)
    ok = (n_wing >= 8) & (cover >= 0.5 * sub * sig * math.sqrt(2.0 * math.pi)) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = np.where(ok, num / den, 0.0)
        err = np.where(ok, 1.0 / np.sqrt(den), np.inf)
    return amp, err, ok


def _segments(amp: np.ndarray, err: np.ndarray, ok: np.ndarray, per: int, nsig: float,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group slices ``per`` at a time into segments: median amplitude, its S/N, and state (1 present: S/N >
    ``nsig``; 0 absent; -1 unknown: fewer than 3 usable slices). The median ignores sources on the line."""
    nseg = -(-amp.size // per)
    amps, snrs, state = np.zeros(nseg), np.zeros(nseg), np.full(nseg, -1, dtype=np.int8)
    for k in range(nseg):
        sl = slice(k * per, (k + 1) * per)
        a, e = amp[sl][ok[sl]], err[sl][ok[sl]]
        if a.size < 3:
            continue
        amps[k] = float(np.median(a))
        snrs[k] = amps[k] / (1.2533 * math.sqrt(float(np.mean(e**2)) / a.size))
        state[k] = 1 if snrs[k] > nsig else 0
    return amps, snrs, state


def _end(amp: np.ndarray, err: np.ndarray, ok: np.ndarray, first: int, direction: int, n: int,
         level: float) -> int:
    """Slice index where a trail of ridge amplitude ``level`` ends, scanning ``n`` slices from ``first``
    in ``direction`` (+1/-1): the boundary maximising the likelihood of "``level`` inside, nothing outside".
    Returns the index of the last slice inside (``first - direction`` if none)."""
    llr = []
    for m in range(n):
        q = first + direction * m
        if not 0 <= q < amp.size:
            break
        llr.append((amp[q] * level - 0.5 * level * level) / err[q] ** 2 if ok[q] else 0.0)
    best = int(np.argmax(np.concatenate([[0.0], np.cumsum(llr)])))
    return first + direction * (best - 1)


def _runs(state: np.ndarray) -> list[tuple[int, int]]:
    """Stretches [i, j] of segments where the trail is present (1), bridging unknown segments (-1) and single
    absent ones (0) between present segments; each run starts and ends on a present segment."""
    runs: list[tuple[int, int]] = []
    n = state.size
    i = 0
    while i < n:
        if state[i] != 1:
            i += 1
            continue
        j = last = i
        while j + 1 < n:
            nxt = state[j + 1]
            if nxt == 1:
                j += 1
                last = j
            elif nxt == -1 or (nxt == 0 and j == last and j + 2 < n and state[j + 2] == 1):
                j += 1
            else:
                break
        runs.append((i, last))
        i = last + 1
    return runs


@dataclass
class _Meas:
    """A line measured along its length: profile fit (ridge ``amp`` e-/px, ``sig`` px) of the line
    x cos phi + y sin phi = r, the stretch [s_lo, s_hi] (along = -x sin phi + y cos phi) where the trail is
    present, the brightest-tenth segment amplitude, and the line refitted to segment centroids (phi2, r2)."""

    phi: float
    r: float
    amp: float
    amp_err: float
    sig: float
    s_lo: float
    s_hi: float
    a_lo: float
    a_hi: float
    amp_hi: float
    phi2: float
    r2: float


def _measure(chip: _Chip, phi: float, r: float, p: TrailParams) -> _Meas | str:
    """Fit the cross-profile of a line, find where along it the trail is present and refit its position to
    the centroids of its segments; a string says why the line is not a trail."""
    c, s = math.cos(phi), math.sin(phi)
    half = max(12.0, 3.0 * p.bin_size) + 10.0
    ys, xs = chip.band(phi, r, half)
    use = chip.usable[ys, xs]
    if use.sum() < p.min_length * 4:
        return "too few usable pixels along the line"
    ys, xs = ys[use], xs[use]
    fx, fy = xs.astype(float), ys.astype(float)
    d = fx * c + fy * s - r
    along = -fx * s + fy * c
    e = chip.resid[ys, xs].astype(np.float64)
    w = 1.0 / chip.noise[ys, xs].astype(np.float64) ** 2
    fit = _fit_profile(d, e, half)
    if fit is None:
        return "profile fit failed"
    _, amp, mu, sig, amp_err = fit
    if sig < p.min_sigma and abs(mu) < half - 10.0:
        chip.defect = (phi, r + mu)  # a column/row defect or a sharp artefact: leave it out of the search
    if not (amp > p.fit_nsigma * amp_err and p.min_sigma <= sig <= p.max_sigma and abs(mu) < half - 10.0):
        return f"profile: amplitude {amp:.3g} +- {amp_err:.2g}, sigma {sig:.3g}, centre {mu:+.3g}"
    dm = d - mu
    side = 3.0 * sig + 2.0
    n_left, n_right = int(((dm < -side) & (dm > -side - 8)).sum()), int(((dm > side) & (dm < side + 8)).sum())
    if min(n_left, n_right) < 0.25 * max(n_left, n_right, 1):
        return "profile not measured on both sides (chip edge)"

    # presence along the line
    per = 8
    sub = p.seg_len / per
    a_lo, a_hi = float(along.min()) - 0.5, float(along.max()) + 0.5
    n_sl = max(per, math.ceil((a_hi - a_lo) / sub))
    sl_amp, sl_err, sl_ok = _slices(along, dm, e, w, sig, a_lo, n_sl, sub)
    amps, snrs, state = _segments(sl_amp, sl_err, sl_ok, per, p.seg_nsigma)
    runs = _runs(state)
    if not runs:
        return "no segment with the trail"
    scores = [float(np.sum(np.maximum(snrs[i:j + 1], 0.0) ** 2)) for i, j in runs]
    i, j = runs[int(np.argmax(scores))]
    present = state[i:j + 1] == 1
    level = float(np.median(amps[i:j + 1][present]))
    q_lo = _end(sl_amp, sl_err, sl_ok, (i + 1) * per - 1, -1, 2 * per, level) if i > 0 else 0
    q_hi = _end(sl_amp, sl_err, sl_ok, j * per, +1, 2 * per, level) if j < state.size - 1 else n_sl - 1
    # a trail seen up to unusable slices at the chip's edge (e.g. its profile cut by the edge) runs on to it
    s_lo = a_lo + q_lo * sub if i > 0 and sl_ok[:max(q_lo, 0)].any() else a_lo - 1.0
    s_hi = a_lo + (q_hi + 1) * sub if j < state.size - 1 and sl_ok[q_hi + 1:].any() else a_hi + 1.0
    known = state[i:j + 1] >= 0
    if s_hi - s_lo < p.min_length or present.sum() < 2 or present.sum() < 0.6 * known.sum():
        return f"present over {s_hi - s_lo:.0f} px ({present.sum()} of {known.sum()} segments)"
    # refit over the stretch found
    inside = (along >= s_lo) & (along <= s_hi)
    fit2 = _fit_profile(dm[inside], e[inside], half)
    if fit2 is not None and fit2[1] > p.fit_nsigma * fit2[4] and p.min_sigma <= fit2[3] <= p.max_sigma \
            and abs(fit2[2]) < 2.0 * sig:
        _, amp, mu2, sig, amp_err = fit2
        mu += mu2
        dm = d - mu
    amp_hi = max(amp, float(np.percentile(amps[i:j + 1][present], 90)))
    spike = _spike(chip, phi, r + mu, sig, amps[i:j + 1][present], s_lo, s_hi, p)
    if spike:
        return spike

    # centroid of each present segment of the stretch (median profile, 0.5 px bins, peak of its
    # convolution with the fitted Gaussian), then a straight line through them
    segs = np.flatnonzero(state == 1)
    segs = segs[(segs >= i) & (segs <= j)]
    phi2, r2 = phi, r + mu
    if segs.size >= 2:
        hw = 3.0 * sig + 3.0
        nbin = round(2 * hw / 0.5)
        kseg = np.clip(((along - a_lo) / p.seg_len).astype(int), 0, state.size - 1)
        kb = np.floor((dm + hw) / 0.5).astype(int)
        sel = (kb >= 0) & (kb < nbin) & np.isin(kseg, segs)
        med, _cnt = _group_median(kseg[sel] * nbin + kb[sel], e[sel], state.size * nbin)
        prof = np.nan_to_num(med.reshape(state.size, nbin)[segs])
        sm = ndimage.gaussian_filter1d(prof, sig / 0.5, axis=1, mode="constant")
        kmax = np.argmax(sm, axis=1)
        pos = -hw + (kmax + 0.5) * 0.5
        inner = (kmax > 0) & (kmax < nbin - 1)
        rows = np.arange(segs.size)[inner]
        y0, y1, y2 = sm[rows, kmax[inner] - 1], sm[rows, kmax[inner]], sm[rows, kmax[inner] + 1]
        den = y0 - 2 * y1 + y2
        pos[inner] += np.where(den < 0, 0.25 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
        sk = a_lo + (segs + 0.5) * p.seg_len
        wk = np.maximum(snrs[segs], 1.0)
        good = np.ones(segs.size, bool)
        for _ in range(3):
            if good.sum() < 2:
                break
            coef = np.polyfit(sk[good], pos[good], 1, w=wk[good])
            res = pos - np.polyval(coef, sk)
            scatter = 1.4826 * float(np.median(np.abs(res[good]))) + 0.05
            new = np.abs(res) < 4.0 * scatter
            if (new == good).all():
                break
            good = new
        if good.sum() >= 2:
            s1, s2 = max(s_lo, a_lo), min(s_hi, a_hi)
            d1, d2 = mu + float(np.polyval(coef, s1)), mu + float(np.polyval(coef, s2))
            x1, y1_ = (r + d1) * c - s1 * s, (r + d1) * s + s1 * c
            x2, y2_ = (r + d2) * c - s2 * s, (r + d2) * s + s2 * c
            phi2 = math.atan2(y2_ - y1_, x2 - x1) - 0.5 * math.pi
            phi2 = phi2 % math.pi
            r2 = x1 * math.cos(phi2) + y1_ * math.sin(phi2)
    return _Meas(phi=phi, r=r + mu, amp=amp, amp_err=amp_err, sig=sig, s_lo=s_lo, s_hi=s_hi, a_lo=a_lo, a_hi=a_hi,
                 amp_hi=amp_hi, phi2=phi2, r2=r2)


def _spike(chip: _Chip, phi: float, r: float, sig: float, amps: np.ndarray, s_lo: float, s_hi: float,
           p: TrailParams) -> str:
    """Why the line is a diffraction spike or halo feature ('' if not): it fades by more than ``spike_ratio``
    along its stretch and its bright end runs into a masked source (a star's core, saturated or not)."""
    if amps.size < 4:
        return ""
    k = max(2, amps.size // 4)
    first, last = float(np.median(amps[:k])), float(np.median(amps[-k:]))
    if max(first, last) < p.spike_ratio * max(min(first, last), 1e-9 * max(first, last)):
        return ""
    end = s_lo if first > last else s_hi
    ys, xs = chip.band(phi, r, 3.0 * sig + 2.0)
    along = -xs * math.sin(phi) + ys * math.cos(phi)
    near = np.abs(along - end) <= p.seg_len
    if near.sum() < 8 or chip.usable[ys[near], xs[near]].mean() > 0.7:
        return ""
    return f"fades from {max(first, last):.3g} to {min(first, last):.3g} e- away from a masked source (spike)"


def _verify(chip: _Chip, phi: float, r: float, snr: float, p: TrailParams,
            ) -> tuple[TrailLine | None, np.ndarray | None, str]:
    """Refine a candidate line (full-res phi, r) and measure it; (line, mask pixels (y, x), reason)."""
    b = p.bin_size
    dphi = math.pi / chip.n_theta
    half0 = max(16.0, 4.0 * b) + 4.0
    ys, xs = chip.band(phi, r, half0)
    use = chip.usable[ys, xs]
    ys, xs = ys[use], xs[use]
    if ys.size < p.min_length * 4:
        return None, None, "too few usable pixels along the line"
    e = chip.resid[ys, xs].astype(np.float64)
    e = np.minimum(e, np.percentile(e, 99.5))  # cosmic rays
    fx, fy = xs.astype(float), ys.astype(float)
    # rotate about the point of the line nearest the band's centre of mass
    c0, s0 = math.cos(phi), math.sin(phi)
    t0 = -fx.mean() * s0 + fy.mean() * c0
    px, py = r * c0 - t0 * s0, r * s0 + t0 * c0
    best = (-np.inf, 0.0, 0.0)
    for dp in np.linspace(-1.5 * dphi, 1.5 * dphi, 25):
        ph = phi + dp
        d = (fx - px) * math.cos(ph) + (fy - py) * math.sin(ph)
        val, pos = _sharpness(d, e, half0 - 4.0)
        if val > best[0]:
            best = (val, ph, pos)
    _, phi, pos = best
    r = px * math.cos(phi) + py * math.sin(phi) + pos

    m = _measure(chip, phi, r, p)
    if isinstance(m, str):
        return None, None, m
    for _ in range(2):  # follow the segment centroids (the transform's angle is coarse for short trails)
        if abs(m.phi2 - m.phi) * 0.5 * (m.s_hi - m.s_lo) < 0.05 and abs(m.r2 - m.r) < 0.05:
            break
        m2 = _measure(chip, m.phi2, m.r2, p)
        if isinstance(m2, str):
            if chip.defect is not None:  # the refined line is a pixel defect seen at a slant
                return None, None, m2
            break
        m = m2
    phi, r_line, amp, amp_err, sig = m.phi, m.r, m.amp, m.amp_err, m.sig
    s_lo, s_hi = m.s_lo, m.s_hi
    c, s = math.cos(phi), math.sin(phi)
    thresh = p.edge_nsigma * chip.sky_noise
    halfwidth = sig * math.sqrt(2.0 * math.log(m.amp_hi / thresh)) if m.amp_hi > thresh else 0.0
    halfwidth = max(halfwidth, 2.0 * sig) + p.pad

    # the mask (every pixel, usable or not)
    my, mx = chip.band(phi, r_line, halfwidth)
    ma = -mx * s + my * c
    keep = (ma >= s_lo - p.pad) & (ma <= s_hi + p.pad)
    my, mx = my[keep], mx[keep]
    ok = chip.good[my, mx]
    mean_sb = float(np.mean(chip.resid[my, mx][ok])) if ok.any() else float("nan")

    # report in the line-direction convention: angle = phi + 90 deg
    ang = (math.degrees(phi) + 90.0) % 180.0
    s_in = [-np.inf, np.inf]  # where the centre line is on the chip
    for lo_hi in ((r_line * c - (chip.nx - 1)) / s, r_line * c / s) if abs(s) > 1e-12 else (), \
            (-r_line * s / c, (chip.ny - 1 - r_line * s) / c) if abs(c) > 1e-12 else ():
        s_in = [max(s_in[0], min(lo_hi)), min(s_in[1], max(lo_hi))]
    sv0, sv1 = max(s_lo, s_in[0]), min(s_hi, s_in[1])
    if sv0 > sv1:
        sv0 = sv1 = 0.5 * (sv0 + sv1)
    x0, y0 = r_line * c - sv0 * s, r_line * s + sv0 * c
    x1, y1 = r_line * c - sv1 * s, r_line * s + sv1 * c
    line = TrailLine(
        angle=float(ang), rho=float(r_line), x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1),
        length=float(math.hypot(x1 - x0, y1 - y0)), sigma=float(sig),
        fwhm=float(sig * FWHM_PER_SIGMA), width=float(2.0 * halfwidth), peak=float(amp),
        flux_per_px=float(amp * sig * math.sqrt(2.0 * math.pi)), mean_sb=mean_sb, snr=float(snr),
        profile_snr=float(amp / amp_err), n_pixels=int(my.size))
    return line, np.vstack([my, mx]), "ok"


def find_trails(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, params: TrailParams | None = None) -> Trails:
    """Detect satellite/aircraft trails on a reduced chip and mask them.

    ``sci`` float e- (flat-fielded, sky not subtracted), ``var`` e-^2, ``dq`` uint16 bits of :mod:`wisp.dq`
    (all (ny, nx)). Returns :class:`Trails`: ``mask`` (bool, True on trail pixels: set DQ TRAIL there) and
    the measured lines. Raises ValueError for mismatched shapes or a chip without a usable pixel.
    """
    p = params or TrailParams()
    sci = np.asarray(sci, dtype=np.float32)
    var = np.asarray(var, dtype=np.float32)
    dq = np.asarray(dq)
    if sci.ndim != 2 or var.shape != sci.shape or dq.shape != sci.shape:
        raise ValueError(f"sci, var and dq must be 2-D of one shape; got {sci.shape}, {var.shape}, {dq.shape}")
    chip = _Chip(sci, var, dq, p)
    lines: list[TrailLine] = []
    rejected: list[tuple[int, float]] = []
    n_cand = 0
    b = p.bin_size
    while len(lines) < p.max_trails and n_cand < p.max_candidates:
        t, off = chip.transform()
        for it, kr in rejected:
            chip.suppress(t, it, kr)
        found = False
        while n_cand < p.max_candidates:
            it, k = (int(v) for v in np.unravel_index(int(np.argmax(t)), t.shape))
            snr = float(t[it, k])
            if not snr > p.detect_nsigma:
                break
            n_cand += 1
            phi = float(chip.phi[it])
            r_b = chip.r0 + k + off[it, k]
            r_full = b * r_b + 0.5 * (b - 1) * (math.cos(phi) + math.sin(phi))
            line, pix, _reason = _verify(chip, phi, r_full, snr, p)
            if line is not None and pix is not None and chip.trail_mask[pix[0], pix[1]].mean() > 0.5:
                line = None  # the same trail again
            if line is None or pix is None:
                rejected.append((int(it), float(k + off[it, k])))
                chip.suppress(t, int(it), float(k + off[it, k]))
                if chip.defect is not None:
                    dy, dx = chip.band(*chip.defect, 2.0)
                    chip.excluded[dy, dx] = True
                    chip.defect = None
                    found = True  # recompute the transform without it
                    break
                continue
            lines.append(line)
            chip.trail_mask[pix[0], pix[1]] = True
            chip.excluded[pix[0], pix[1]] = True
            found = True
            break
        if not found:
            break
    return Trails(mask=chip.trail_mask.copy(), lines=lines, n_candidates=n_cand)
