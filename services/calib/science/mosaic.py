"""Gain harmonisation across a mosaic: one photometric scale for the per-chip master flats of one filter.

Pure science: numbers and arrays in, factors out; no I/O.

Each master flat is normalised to median 1 on its own chip (:func:`~.masters.make_master_flat`), which
throws away the chip-to-chip differences in response (QE) and in the gain calibration. The dome flat
illuminates the whole focal plane in one exposure, so its count rate in electrons, ``level_rate x gain``
(e-/s; ``level_rate`` is the median bias-subtracted ADU/s of the chip's flat), compares the chips directly.

**In the pipeline** the master flat of chip k measures its factor from the dome-flat *exposures* it is made
of (:func:`exposure_factors` of :func:`sampled_level` of every chip's frame of those exposures): the factor
depends on raw frames only, not on the other chips' master products, and lamp changes between exposures
cancel. :func:`harmonise_mosaic` does the same from master flats, with a border diagnostic.

**Returned factors.** For chip k, ``g_k = level_rate_k x gain_k / ref`` with ``ref`` the same product for
the reference chip (or, by default, the median over the mosaic). Multiply chip k's *normalised* master flat
by ``g_k`` (``flat_k x g_k``, i.e. divide the flat-fielded science chip by ``g_k``): then every chip's flat
is the detected e-/s per unit of lamp light relative to the mosaic reference, and a star gives the same
flat-fielded e- on every chip. The factor uses the same header gain the reduction uses, so an error in a
chip's gain is corrected too (ADU x wrong gain / (flat x g) is again right).

**Vignetting.** ``g_k`` is the median over the chip of (response x illumination), so it includes the mean
vignetting at the chip's position. That is deliberate, and is the same assumption the per-chip flat already
makes inside the chip: the dome light passes through the same optics as the sky, so vignetting is part of the
response and must stay in the harmonised flat (removing it would make stars on the outer chips too faint).
If the dome illumination differs from the sky's, that is an illumination (star-flat) correction for every
pixel, not a chip-to-chip gain issue.

**Comparing like with like: the QE step at the chip borders (diagnostic).** With the chips' mosaic positions
and flat images, :func:`harmonise_mosaic` also measures the *discontinuity* of the e-/s rate across the gap
between every pair of adjacent chips: the illumination and the vignetting are continuous across a gap, the
detector response is not, so the ratio (each side's profile perpendicular to the border extrapolated
linearly to the middle of the gap) is the ratio of the two chips' response at the border (their relative QE,
free of vignetting). A least-squares fit over all borders gives ``qe_k`` (mosaic median 1). It is for QC
(compare with the lab QE, or across nights), not a factor to apply.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from services.calib.science.masters import MasterFlat
from services.calib.science.overscan import MAD_TO_SIGMA
from services.calib.science.sources import RowSource, read_rows

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BorderRatio(Generic[K]):
    """The e-/s rate of chip ``a`` over that of chip ``b`` at their shared border (``axis`` 'x': a is left
    of b, 'y': a is below b): ``ratio`` at the middle of the gap, the median over ``n`` blocks along the
    border, and ``error`` its standard error (from the scatter of the block ratios)."""

    a: K
    b: K
    axis: str
    ratio: float
    error: float
    n: int


@dataclass(frozen=True)
class MosaicScale(Generic[K]):
    """Result of :func:`harmonise_mosaic`.

    ``factors``: ``g_k`` per chip, the factor by which chip k's normalised master flat is multiplied so that
    all chips share the reference's photometric scale (dimensionless; see the module doc). ``rates_e``:
    ``level_rate x gain`` per chip (e-/s, the flat's median count rate in electrons). ``reference``: the
    chip whose factor is 1, or None for the mosaic median. ``qe``: relative response step measured at the
    chip borders (median 1; NaN for a chip without measured neighbours; empty without positions);
    ``borders``: the measured border ratios; ``qe_rms``: rms of the log-ratio residuals of the border fit
    (a closure check; 0 for a tree of borders)."""

    factors: dict[K, float]
    rates_e: dict[K, float]
    reference: K | None
    qe: dict[K, float] = field(default_factory=dict)
    borders: tuple[BorderRatio[K], ...] = ()
    qe_rms: float = float("nan")


def gain_factors(level_rates: Mapping[K, float], gains: Mapping[K, float], *,
                 reference: K | None = None) -> tuple[dict[K, float], dict[K, float]]:
    """``(g, rates_e)``: ``rates_e[k] = level_rates[k] (ADU/s) x gains[k] (e-/ADU)`` and
    ``g[k] = rates_e[k] / rates_e[reference]`` (reference None: the median of ``rates_e``)."""
    if set(level_rates) != set(gains):
        raise ValueError(f"level rates for chips {sorted(map(str, level_rates))} but gains for "
                         f"{sorted(map(str, gains))}")
    rates = {k: float(level_rates[k]) * float(gains[k]) for k in level_rates}
    bad = [k for k, r in rates.items() if not (np.isfinite(r) and r > 0)]
    if bad or not rates:
        raise ValueError(f"chips {bad} have no positive flat level x gain" if bad else "no chips")
    if reference is None:
        ref = float(np.median(list(rates.values())))
    elif reference in rates:
        ref = rates[reference]
    else:
        raise ValueError(f"reference chip {reference!r} is not among the chips")
    return {k: r / ref for k, r in rates.items()}, rates


def sampled_level(view: RowSource, *, n_bands: int = 8, band_rows: int = 16) -> float:
    """Median (ADU) of ``n_bands`` evenly spaced bands of ``band_rows`` rows of an overscan-corrected, trimmed
    frame (:func:`~.overscan.overscan_trimmed`): a chip's flat level from ~128 rows instead of the whole chip
    (vignetting inside the chip is sampled evenly, so it agrees with the whole-chip median to ~0.1 %)."""
    ny = view.shape[0]
    starts = np.linspace(0, max(ny - band_rows, 0), n_bands).astype(int)
    bands = [read_rows(view, int(r0), min(int(r0) + band_rows, ny)) for r0 in np.unique(starts)]
    values = np.concatenate([b.ravel() for b in bands])
    return float(np.nanmedian(values))


def exposure_factors(levels: Sequence[Mapping[K, float]], gains: Mapping[K, float]) -> dict[K, float]:
    """``g_k`` from dome-flat exposures of the whole mosaic: in each exposure, ``level_k x gain_k`` over the
    median of that product across its chips (:func:`gain_factors`); then, per chip, the median over the
    exposures (so lamp changes between exposures cancel). ``levels``: one ``{chip: ADU}`` per exposure. Chips
    without a gain or a positive finite level (a dead amplifier) are left out of that exposure; a chip left
    out of every exposure gets no factor."""
    per_chip: dict[K, list[float]] = {}
    for exposure in levels:
        usable = {k: v for k, v in exposure.items() if k in gains and np.isfinite(v) and v > 0 and gains[k] > 0}
        if len(usable) < 2:
            continue
        factors, _ = gain_factors(usable, {k: gains[k] for k in usable})
        for k, g in factors.items():
            per_chip.setdefault(k, []).append(g)
    return {k: float(np.median(v)) for k, v in per_chip.items()}


def _side_profile(rate: np.ndarray, good: np.ndarray | None) -> np.ndarray:
    """Per-row (along axis 0) median of a strip, NaN where no good pixel."""
    a = np.where(good, rate, np.nan) if good is not None else rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        return np.asarray(np.nanmedian(a, axis=0), dtype=np.float64)


def _extrapolate(profile: np.ndarray, pos: np.ndarray, at: float, extrapolate: bool) -> float:
    ok = np.isfinite(profile)
    if ok.sum() < 2 or not extrapolate:
        return float(np.nanmedian(profile)) if ok.any() else float("nan")
    for _ in range(5):  # a straight line, points beyond 3 sigma (MAD) of the residuals dropped
        coef = np.polyfit(pos[ok], profile[ok], 1)
        res = profile - np.polyval(coef, pos)
        sig = MAD_TO_SIGMA * float(np.median(np.abs(res[ok])))
        keep = ok & (np.abs(res) <= 3.0 * sig) if sig > 0 else ok
        if keep.sum() < 2 or np.array_equal(keep, ok):
            break
        ok = keep
    return float(np.polyval(coef, at))


def border_ratio(rate_a: np.ndarray, rate_b: np.ndarray, pos_a: np.ndarray, pos_b: np.ndarray, at: float, *,
                 good_a: np.ndarray | None = None, good_b: np.ndarray | None = None,
                 extrapolate: bool = True, block: int = 16) -> tuple[float, float, int]:
    """Ratio a/b of two strips facing each other across a border, ``(ratio, error, n)``.

    ``rate_a``/``rate_b``: (n_along, width) e-/s strips, axis 1 perpendicular to the border, at mosaic
    coordinates ``pos_a``/``pos_b`` (px, one per column) with the middle of the gap at ``at``. The border is
    cut into blocks of ``block`` px along it; in each block, each side's profile across the border (median
    over the block's pixels along it) is fitted with a straight line (3-sigma clipped) and evaluated at
    ``at`` (``extrapolate=False``: the median of the block). The ratio is the median over the blocks of the
    block ratios (robust to dust donuts and defects touching a few blocks), ``error`` its standard error
    from their scatter, ``n`` the number of blocks used.
    """
    n = rate_a.shape[0]
    logs = []
    for s in range(0, max(n - block, 0) + 1, block):
        e = min(s + block, n) if n - (s + block) >= block else n  # the last block takes the remainder
        ga = None if good_a is None else good_a[s:e]
        gb = None if good_b is None else good_b[s:e]
        ba = _extrapolate(_side_profile(rate_a[s:e], ga), pos_a, at, extrapolate)
        bb = _extrapolate(_side_profile(rate_b[s:e], gb), pos_b, at, extrapolate)
        if np.isfinite(ba) and np.isfinite(bb) and bb > 0 and ba > 0:
            logs.append(np.log(ba / bb))
        if e == n:
            break
    if not logs:
        return float("nan"), float("nan"), 0
    lb = np.asarray(logs)
    centre = float(np.median(lb))
    # standard error of a median: 1.2533 sigma / sqrt(n)
    err = 1.2533 * MAD_TO_SIGMA * float(np.median(np.abs(lb - centre))) / np.sqrt(lb.size) if lb.size >= 3 \
        else float("nan")
    ratio = float(np.exp(centre))
    return ratio, float(err * ratio), int(lb.size)


def border_ratios(images: Mapping[K, np.ndarray], rates_e: Mapping[K, float],
                  origins: Mapping[K, tuple[float, float]], *, masks: Mapping[K, np.ndarray] | None = None,
                  width: int = 32, max_gap: float = 100.0, extrapolate: bool = True) -> list[BorderRatio[K]]:
    """Border ratios between every pair of adjacent chips.

    ``images``: normalised flats (median 1) per chip; ``rates_e``: their median count rate (e-/s), so that
    ``image x rate`` is e-/s; ``origins``: mosaic position (px) of each chip's pixel (0, 0), e.g. from
    ``DETSEC`` (x0, y0; chips not rotated, same pixel scale); ``masks``: optional bad-pixel maps (non-zero =
    bad); ``width``: strip width (px) on each side; chips are adjacent when the gap between facing edges is
    0..``max_gap`` px and they share at least ``2 x width`` px along the edge.
    """
    keys = list(images)
    out: list[BorderRatio[K]] = []
    for a in keys:
        for b in keys:
            if a == b:
                continue
            ia, ib = images[a], images[b]
            (xa, ya), (xb, yb) = origins[a], origins[b]
            nya, nxa = ia.shape
            nyb, nxb = ib.shape
            for axis in ("x", "y"):
                if axis == "x":
                    gap = xb - (xa + nxa)
                    lo, hi = max(ya, yb), min(ya + nya, yb + nyb)
                else:
                    gap = yb - (ya + nya)
                    lo, hi = max(xa, xb), min(xa + nxa, xb + nxb)
                if not (0 <= gap <= max_gap and hi - lo >= 2 * width):
                    continue
                oa, ob = (ya, yb) if axis == "x" else (xa, xb)
                sa = slice(round(lo - oa), round(hi - oa))
                sb = slice(round(lo - ob), round(hi - ob))
                ra = ia * rates_e[a]
                rb = ib * rates_e[b]
                ma = None if masks is None else masks[a] == 0
                mb = None if masks is None else masks[b] == 0
                if axis == "x":
                    stra, strb = ra[sa, nxa - width:], rb[sb, :width]
                    ga = None if ma is None else ma[sa, nxa - width:]
                    gb = None if mb is None else mb[sb, :width]
                    pa = xa + np.arange(nxa - width, nxa, dtype=float)
                    pb = xb + np.arange(width, dtype=float)
                    at = 0.5 * (xa + nxa - 1 + xb)
                else:
                    stra, strb = ra[nya - width:, sa].T, rb[:width, sb].T
                    ga = None if ma is None else ma[nya - width:, sa].T
                    gb = None if mb is None else mb[:width, sb].T
                    pa = ya + np.arange(nya - width, nya, dtype=float)
                    pb = yb + np.arange(width, dtype=float)
                    at = 0.5 * (ya + nya - 1 + yb)
                ratio, err, n = border_ratio(stra, strb, pa, pb, at, good_a=ga, good_b=gb,
                                             extrapolate=extrapolate)
                out.append(BorderRatio(a, b, axis, ratio, err, n))
    return out


def _solve_borders(keys: list[K], borders: list[BorderRatio[K]]) -> tuple[dict[K, float], float]:
    """Least-squares log response per chip from the border ratios (weighted by 1/error^2), median 1."""
    idx = {k: i for i, k in enumerate(keys)}
    ok = [b for b in borders if np.isfinite(b.ratio) and b.ratio > 0]
    linked = {b.a for b in ok} | {b.b for b in ok}
    if not ok:
        return {k: float("nan") for k in keys}, float("nan")
    errs = np.array([b.error / b.ratio if np.isfinite(b.error) and b.error > 0 else np.nan for b in ok])
    floor = float(np.nanmedian(errs)) if np.isfinite(errs).any() else 1.0
    w = 1.0 / np.where(np.isfinite(errs), np.maximum(errs, 0.1 * floor), floor)
    design = np.zeros((len(ok) + 1, len(keys)))
    rhs = np.zeros(len(ok) + 1)
    for r, b in enumerate(ok):
        design[r, idx[b.a]], design[r, idx[b.b]] = w[r], -w[r]
        rhs[r] = w[r] * np.log(b.ratio)
    design[-1, [idx[k] for k in linked]] = 1.0  # sum of the linked chips' logs = 0 (the scale is free)
    sol = np.linalg.lstsq(design, rhs, rcond=None)[0]
    resid = np.array([np.log(b.ratio) - (sol[idx[b.a]] - sol[idx[b.b]]) for b in ok])
    vals = {k: float(np.exp(sol[idx[k]])) if k in linked else float("nan") for k in keys}
    med = float(np.median([v for v in vals.values() if np.isfinite(v)]))
    return {k: v / med for k, v in vals.items()}, float(np.sqrt(np.mean(resid**2)))


def harmonise_mosaic(flats: Mapping[K, MasterFlat], gains: Mapping[K, float], *,
                     origins: Mapping[K, tuple[float, float]] | None = None, reference: K | None = None,
                     masks: Mapping[K, np.ndarray] | None = None, border_width: int = 32,
                     max_gap: float = 100.0, extrapolate: bool = True) -> MosaicScale[K]:
    """Per-chip factors putting the master flats of one filter (one exposure set over the whole mosaic) on
    one photometric scale; see the module doc.

    ``flats``: :class:`MasterFlat` per chip (``level_rate`` ADU/s is used; with ``origins`` also
    ``image``); ``gains``: e-/ADU per chip (the values the reduction uses); ``reference``: the chip whose
    factor is 1 (None: the mosaic median of ``level_rate x gain``). With ``origins`` (mosaic px of each
    chip's pixel (0, 0)) the QE step across the chip borders is measured as a diagnostic (``border_width``
    px strips, gaps up to ``max_gap`` px, ``masks`` bad pixels excluded, ``extrapolate`` to the gap middle).
    """
    factors, rates = gain_factors({k: f.level_rate for k, f in flats.items()}, gains, reference=reference)
    if origins is None:
        return MosaicScale(factors=factors, rates_e=rates, reference=reference)
    missing = [k for k in flats if k not in origins]
    if missing:
        raise ValueError(f"no mosaic origin for chips {missing}")
    borders = border_ratios({k: np.asarray(f.image, dtype=np.float64) for k, f in flats.items()}, rates, origins,
                            masks=masks, width=border_width, max_gap=max_gap, extrapolate=extrapolate)
    qe, rms = _solve_borders(list(flats), borders)
    return MosaicScale(factors=factors, rates_e=rates, reference=reference, qe=qe, borders=tuple(borders),
                       qe_rms=rms)
