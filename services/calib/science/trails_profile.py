"""Trail detection, step 5 of :mod:`.trails`: a candidate line measured on the full-resolution pixels (Gaussian
fit of its median cross-profile, presence along it in slices and segments, the ends of the stretch found, the
refit through segment centroids and the diffraction-spike test).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, optimize

from services.calib.science.trails_hough import Chip

if TYPE_CHECKING:
    from services.calib.science.trails import TrailParams

MAD_TO_SIGMA = 1.482602218505602
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _gauss(d: np.ndarray, c: float, a: float, mu: float, sigma: float) -> np.ndarray:
    return c + a * np.exp(-0.5 * ((d - mu) / sigma) ** 2)


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


def sharpness(d: np.ndarray, e: np.ndarray, half: float) -> tuple[float, float]:
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


def measure(chip: Chip, phi: float, r: float, p: TrailParams) -> _Meas | str:
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


def _spike(chip: Chip, phi: float, r: float, sig: float, amps: np.ndarray, s_lo: float, s_hi: float,
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
