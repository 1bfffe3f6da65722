"""The numba kernel of :func:`.cosmics.detect_cosmics`: L.A.Cosmic and its additions, steps 1-8 of
:mod:`.cosmics`, in :func:`lacosmic`.

Only L+, the DQ scan and a 5x5 running minimum of VAR (a lower bound of the noise, to pre-select
candidates) touch every pixel; every median is computed on demand and cached, so the cost is a few passes
over the image plus work proportional to the number of candidates (~0.05 s for 1024^2, one thread).

Compiled on the first call and cached on disk (``cache=True``: ``__pycache__`` next to this file).
"""

from __future__ import annotations

import numba
import numpy as np

from wisp.dq import SATURATED


@numba.njit(cache=True, inline="always")
def _median_inplace(buf: np.ndarray, n: int) -> float:
    """Median of ``buf[:n]`` (insertion sort in place; n is small)."""
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    h = n // 2
    if n % 2 == 1:
        return buf[h]
    return 0.5 * (buf[h - 1] + buf[h])


@numba.njit(cache=True)
def _fill_bad(img: np.ndarray, bad: np.ndarray, fallback: float) -> np.ndarray:
    """Copy of ``img`` (float32) with bad pixels replaced by the median of their good 5x5 neighbours."""
    ny, nx = img.shape
    out = img.copy()
    buf = np.empty(121, np.float64)
    for y in range(ny):
        for x in range(nx):
            if not bad[y, x]:
                continue
            r = 2
            n = 0
            while r <= 5:
                n = 0
                for yy in range(max(y - r, 0), min(y + r + 1, ny)):
                    for xx in range(max(x - r, 0), min(x + r + 1, nx)):
                        if not bad[yy, xx]:
                            buf[n] = img[yy, xx]
                            n += 1
                if n > 0:
                    break
                r += 1
            out[y, x] = _median_inplace(buf, n) if n > 0 else fallback
    return out


@numba.njit(cache=True)
def _lplus(img: np.ndarray) -> np.ndarray:
    """L+: Laplacian of the 2x-subsampled image, negatives clipped, rebinned (mean of the 4 quarters)."""
    ny, nx = img.shape
    out = np.empty((ny, nx), np.float32)
    for y in range(ny):
        ym = max(y - 1, 0)
        yp = min(y + 1, ny - 1)
        for x in range(nx):
            xm = max(x - 1, 0)
            xp = min(x + 1, nx - 1)
            v2 = 2.0 * img[y, x]
            l_ = img[y, xm]
            r_ = img[y, xp]
            u_ = img[ym, x]
            d_ = img[yp, x]
            s = max(v2 - l_ - u_, 0.0) + max(v2 - r_ - u_, 0.0) + max(v2 - l_ - d_, 0.0) + max(v2 - r_ - d_, 0.0)
            out[y, x] = 0.25 * s
    return out


@numba.njit(cache=True)
def _min5(img: np.ndarray) -> np.ndarray:
    """5x5 running minimum (separable; windows clipped at the edges)."""
    ny, nx = img.shape
    tmp = np.empty((ny, nx), np.float32)
    for y in range(ny):
        for x in range(nx):
            m = img[y, x]
            for xx in range(max(x - 2, 0), min(x + 3, nx)):
                m = min(m, img[y, xx])
            tmp[y, x] = m
    out = np.empty((ny, nx), np.float32)
    for y in range(ny):
        y0 = max(y - 2, 0)
        y1 = min(y + 3, ny)
        for x in range(nx):
            m = tmp[y, x]
            for yy in range(y0, y1):
                m = min(m, tmp[yy, x])
            out[y, x] = m
    return out


@numba.njit(cache=True)
def _med_window(img: np.ndarray, bad: np.ndarray, y: int, x: int, r: int, buf: np.ndarray) -> float:
    """Median of the good pixels of ``img`` in the (2r+1)^2 window at (y, x) (the centre value if none)."""
    ny, nx = img.shape
    n = 0
    for yy in range(max(y - r, 0), min(y + r + 1, ny)):
        for xx in range(max(x - r, 0), min(x + r + 1, nx)):
            if not bad[yy, xx]:
                buf[n] = img[yy, xx]
                n += 1
    if n == 0:
        return img[y, x]
    return _median_inplace(buf, n)


@numba.njit(cache=True)
def _noise_at(var: np.ndarray, bad: np.ndarray, noise: np.ndarray, y: int, x: int, buf: np.ndarray) -> float:
    v = noise[y, x]
    if v < 0.0:
        m = _med_window(var, bad, y, x, 2, buf)
        v = np.sqrt(max(m, 1e-6))
        noise[y, x] = v
    return v


@numba.njit(cache=True)
def _sprime_at(lp: np.ndarray, var: np.ndarray, bad: np.ndarray, noise: np.ndarray, sp: np.ndarray, y: int,
               x: int, buf: np.ndarray) -> float:
    """S' = (L+ - med5(L+)) / (2 noise), cached in ``sp`` (NaN = not computed yet)."""
    v = sp[y, x]
    if np.isnan(v):
        nz = _noise_at(var, bad, noise, y, x, buf)
        v = (lp[y, x] - _med_window(lp, bad, y, x, 2, buf)) / (2.0 * nz)
        sp[y, x] = v
    return v


@numba.njit(cache=True)
def _med3_at(img: np.ndarray, m3: np.ndarray, y: int, x: int, buf: np.ndarray) -> float:
    v = m3[y, x]
    if np.isnan(v):
        ny, nx = img.shape
        n = 0
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                buf[n] = img[yy, xx]
                n += 1
        v = _median_inplace(buf, n)
        m3[y, x] = v
    return v


@numba.njit(cache=True)
def _fine_at(img: np.ndarray, m3: np.ndarray, y: int, x: int, nz: float, buf: np.ndarray,
             buf2: np.ndarray) -> float:
    """Fine structure (med3 - med7(med3)) / noise, clipped below at 0.01."""
    ny, nx = img.shape
    n = 0
    for yy in range(max(y - 3, 0), min(y + 4, ny)):
        for xx in range(max(x - 3, 0), min(x + 4, nx)):
            buf2[n] = _med3_at(img, m3, yy, xx, buf)
            n += 1
    c = _med3_at(img, m3, y, x, buf)
    f = (c - _median_inplace(buf2, n)) / nz
    return max(f, 0.01)


@numba.njit(cache=True)
def lacosmic(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, ignore: np.uint16, sigclip: float, sigfrac: float,
             objlim: float, grow: int, grow_sigma: float, sat_guard: int, blob: bool,
             blob_objlim: float, obj_sigma: float) -> np.ndarray:
    """Labels (uint8): 0 clean, 1 core, 2/3 L.A.Cosmic growth, 4/5 wing rings, 6 followed, 9 2x2 spot."""
    ny, nx = sci.shape
    bad = np.zeros((ny, nx), np.bool_)
    nodet = np.zeros((ny, nx), np.bool_)
    nbad = 0
    for y in range(ny):
        for x in range(nx):
            if (dq[y, x] & ignore) != 0 or not np.isfinite(sci[y, x]) or not np.isfinite(var[y, x]) \
                    or var[y, x] <= 0.0:
                bad[y, x] = True
                nodet[y, x] = True
                nbad += 1
                if (dq[y, x] & SATURATED) != 0 and sat_guard > 0:
                    for yy in range(max(y - sat_guard, 0), min(y + sat_guard + 1, ny)):
                        for xx in range(max(x - sat_guard, 0), min(x + sat_guard + 1, nx)):
                            nodet[yy, xx] = True
    if nbad == ny * nx:
        return np.zeros((ny, nx), np.uint8)
    img = sci
    vv = var
    if nbad > 0:
        # fallbacks for pixels with no good pixel within 11x11: medians of a sparse sample of good pixels
        step = max(1, (ny * nx - nbad) // 20001)
        samp = np.empty(20001 + 1, np.float64)
        sampv = np.empty(20001 + 1, np.float64)
        k = 0
        i = 0
        for y in range(ny):
            for x in range(nx):
                if not bad[y, x]:
                    if i % step == 0 and k < samp.size:
                        samp[k] = sci[y, x]
                        sampv[k] = var[y, x]
                        k += 1
                    i += 1
        img = _fill_bad(sci, bad, np.median(samp[:k]))
        vv = _fill_bad(var, bad, np.median(sampv[:k]))
    lp = _lplus(img)
    vmin = _min5(vv)

    noise = np.full((ny, nx), -1.0, np.float32)
    sp = np.full((ny, nx), np.nan, np.float32)
    m3 = np.full((ny, nx), np.nan, np.float32)
    buf = np.empty(64, np.float64)
    buf2 = np.empty(64, np.float64)
    mask = np.zeros((ny, nx), np.uint8)

    # cores (label 1): S' > sigclip and S'/F > objlim; candidates pre-selected with the noise lower bound
    cand_y = np.empty(1024, np.int64)
    cand_x = np.empty(1024, np.int64)
    nc = 0
    for y in range(ny):
        for x in range(nx):
            if nodet[y, x]:
                continue
            if lp[y, x] <= 2.0 * sigclip * np.sqrt(max(vmin[y, x], 1e-6)):
                continue
            s = _sprime_at(lp, vv, bad, noise, sp, y, x, buf)
            if s <= sigclip:
                continue
            f = _fine_at(img, m3, y, x, noise[y, x], buf, buf2)
            if s / f <= objlim:
                continue
            mask[y, x] = 1
            if nc == cand_y.size:
                cand_y = np.concatenate((cand_y, np.empty(nc, np.int64)))
                cand_x = np.concatenate((cand_x, np.empty(nc, np.int64)))
            cand_y[nc] = y
            cand_x[nc] = x
            nc += 1

    # compact 2x2 spots (low-energy hits spread over 2x2 pixels have a Laplacian of only their per-pixel
    # excess, half that of a 1-pixel hit): the 2x2 sum over the median of the 12-pixel ring around it must
    # exceed sigclip x its noise (2 noise), every pixel must be above the ring, and the ring must not rise
    # above the next ring (20 pixels) by more than 1/objlim of the spot's excess (a PSF's would)
    if blob:
        rbuf = np.empty(32, np.float64)
        for y in range(ny - 1):
            for x in range(nx - 1):
                if nodet[y, x] or nodet[y, x + 1] or nodet[y + 1, x] or nodet[y + 1, x + 1]:
                    continue
                if mask[y, x] != 0 or mask[y, x + 1] != 0 or mask[y + 1, x] != 0 or mask[y + 1, x + 1] != 0:
                    continue
                ls = lp[y, x] + lp[y, x + 1] + lp[y + 1, x] + lp[y + 1, x + 1]
                if ls <= 2.0 * sigclip * np.sqrt(max(vmin[y, x], 1e-6)):
                    continue
                if y < 2 or x < 2 or y + 3 >= ny or x + 3 >= nx:
                    continue
                n = 0
                m = 0
                for yy in range(y - 2, y + 4):
                    for xx in range(x - 2, x + 4):
                        if yy >= y and yy <= y + 1 and xx >= x and xx <= x + 1:
                            continue
                        if bad[yy, xx]:
                            continue
                        if yy == y - 2 or yy == y + 3 or xx == x - 2 or xx == x + 3:
                            buf2[m] = img[yy, xx]
                            m += 1
                        else:
                            rbuf[n] = img[yy, xx]
                            n += 1
                if n < 6 or m < 10:
                    continue
                for k in range(n):
                    buf2[m + k] = rbuf[k]
                bkg = _median_inplace(buf2, m + n)  # sorts buf2[:m + n]; recompute the two rings' medians
                ring = _median_inplace(rbuf, n)
                m2 = 0
                for yy in range(y - 2, y + 4):
                    for xx in range(x - 2, x + 4):
                        if (yy == y - 2 or yy == y + 3 or xx == x - 2 or xx == x + 3) and not bad[yy, xx]:
                            buf2[m2] = img[yy, xx]
                            m2 += 1
                outer = _median_inplace(buf2, m2)
                nz = _noise_at(vv, bad, noise, y, x, buf)
                e0 = img[y, x] - bkg
                e1 = img[y, x + 1] - bkg
                e2 = img[y + 1, x] - bkg
                e3 = img[y + 1, x + 1] - bkg
                tot = e0 + e1 + e2 + e3
                # sd of the sum of 4 pixels minus 4 x a median of n + m pixels
                sd = nz * np.sqrt(4.0 + 16.0 * 1.571 / (n + m))
                if tot <= sigclip * sd or min(min(e0, e1), min(e2, e3)) <= nz:
                    continue
                if 0.25 * tot <= blob_objlim * (ring - outer):
                    continue
                # sharper than any PSF: every pixel of the 2x2 above every pixel of the ring around it,
                # and the ring's mean excess a small fraction of the spot's
                rmax = -np.inf
                rsum = 0.0
                for k in range(n):
                    rmax = max(rmax, rbuf[k])
                    rsum += rbuf[k] - bkg
                if rmax >= bkg + min(min(e0, e1), min(e2, e3)) or rsum / n > 0.25 * 0.25 * tot:
                    continue
                for yy in range(y, y + 2):
                    for xx in range(x, x + 2):
                        mask[yy, xx] = 9
                        if nc == cand_y.size:
                            cand_y = np.concatenate((cand_y, np.empty(nc, np.int64)))
                            cand_x = np.concatenate((cand_x, np.empty(nc, np.int64)))
                        cand_y[nc] = yy
                        cand_x[nc] = xx
                        nc += 1

    # L.A.Cosmic growth: neighbours of cores with S' > sigclip, then their neighbours with S' > sigfrac*sigclip
    for stage in range(2):
        thr = sigclip if stage == 0 else sigfrac * sigclip
        n0 = nc
        for i in range(n0):
            cy = cand_y[i]
            cx = cand_x[i]
            for yy in range(max(cy - 1, 0), min(cy + 2, ny)):
                for xx in range(max(cx - 1, 0), min(cx + 2, nx)):
                    if mask[yy, xx] != 0 or nodet[yy, xx]:
                        continue
                    if _sprime_at(lp, vv, bad, noise, sp, yy, xx, buf) > thr:
                        mask[yy, xx] = 2 + stage
                        if nc == cand_y.size:
                            cand_y = np.concatenate((cand_y, np.empty(nc, np.int64)))
                            cand_x = np.concatenate((cand_x, np.empty(nc, np.int64)))
                        cand_y[nc] = yy
                        cand_x[nc] = xx
                        nc += 1

    # flux growth: neighbours whose value exceeds the median of their unflagged good 5x5 neighbours; first
    # "follow" rings at sigclip x noise until nothing is added (wide or long tracks, whose Laplacian/fine
    # structure ratio fails objlim, are followed from their detected part), then ``grow`` rings at
    # ~grow_sigma x noise from every flagged pixel (the faint wings); a masked neighbour is stepped over
    start = 0
    ring = 0
    follow = True
    while follow or ring < grow:
        n0 = nc
        for i in range(start, n0):
            cy = cand_y[i]
            cx = cand_x[i]
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy = cy + dy
                    xx = cx + dx
                    if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                        continue
                    if bad[yy, xx]:
                        yy += dy
                        xx += dx
                        if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                            continue
                    if mask[yy, xx] != 0 or nodet[yy, xx]:
                        continue
                    n = 0
                    for y2 in range(max(yy - 2, 0), min(yy + 3, ny)):
                        for x2 in range(max(xx - 2, 0), min(xx + 3, nx)):
                            if mask[y2, x2] == 0 and not bad[y2, x2] and not (y2 == yy and x2 == xx):
                                buf[n] = img[y2, x2]
                                n += 1
                    if n < 5:
                        continue
                    b = _median_inplace(buf, n)
                    nz = _noise_at(vv, bad, noise, yy, xx, buf2)
                    # pixels along a track (two flagged 4-neighbours) carry charge more often than
                    # pixels touching a flagged one only by a corner
                    n4 = 0
                    if yy > 0 and mask[yy - 1, xx] != 0:
                        n4 += 1
                    if yy + 1 < ny and mask[yy + 1, xx] != 0:
                        n4 += 1
                    if xx > 0 and mask[yy, xx - 1] != 0:
                        n4 += 1
                    if xx + 1 < nx and mask[yy, xx + 1] != 0:
                        n4 += 1
                    thr = grow_sigma - 1.0 if n4 >= 2 else (grow_sigma if n4 == 1 else grow_sigma + 0.5)
                    if follow:
                        thr = sigclip
                    if img[yy, xx] - b <= thr * nz:
                        continue
                    # on a star or galaxy (its 5x5 median above that of the 9x9 window's border) the excess
                    # over the 5x5 median is the object's profile: no flux growth there
                    m = 0
                    for y2 in range(yy - 4, yy + 5):
                        for x2 in range(xx - 4, xx + 5):
                            if (y2 == yy - 4 or y2 == yy + 4 or x2 == xx - 4 or x2 == xx + 4) and 0 <= y2 < ny \
                                    and 0 <= x2 < nx and mask[y2, x2] == 0 and not bad[y2, x2]:
                                buf2[m] = img[y2, x2]
                                m += 1
                    if m >= 8 and b - _median_inplace(buf2, m) > obj_sigma * nz:
                        continue
                    mask[yy, xx] = 6 if follow else 4 + min(ring, 1)
                    if nc == cand_y.size:
                        cand_y = np.concatenate((cand_y, np.empty(nc, np.int64)))
                        cand_x = np.concatenate((cand_x, np.empty(nc, np.int64)))
                    cand_y[nc] = yy
                    cand_x[nc] = xx
                    nc += 1
        if follow and nc == n0:
            follow = False
            start = 0  # the wing rings start from every flagged pixel
        else:
            start = n0
            if not follow:
                ring += 1
    return mask
