"""Night-sky flat (illumination correction, "super-flat") and fringe frame from reduced science chips.

Inputs: reduced chips of ONE chip and filter (``SCI`` e-, flat-fielded, sky NOT subtracted; ``VAR`` e-^2;
``DQ`` bits of :mod:`wisp.dq`), from dithered exposures so that sources move between frames while the
detector's patterns stay put.

Sky frames (:func:`sky_frames`): each frame's sky level ``s_i`` is the median of its usable pixels. Sources
are found in three passes, because a single frame cannot tell a fringe from a faint source: (1) the
sky-normalised frames ``SCI_i / s_i`` are median-combined *without* source masks (sources move, so the
median rejects them; fringes and illumination stay); (2) each frame minus ``s_i x`` that median is searched
with ``sep`` (background mesh ``back_size`` px, threshold ``thresh`` x sqrt(VAR), ``minarea`` px) and the
detections are grown by ``dilate_px``; (3) pixels with DQ bits in ``bad_bits``, non-finite pixels and the
grown detections become NaN in ``SCI_i / s_i``.

Super-flat (:func:`make_superflat`): the masked, sky-normalised frames are combined (``combine``: median
or sigma-clipped mean, NaN = missing), the stack is reduced to ``box`` x ``box`` px cell medians and a
2-D polynomial of order ``order`` is fitted to them (iteratively clipped at 3 sigma; cells with < 25 %
usable pixels are ignored): the illumination correction is low-order by construction, so fringes, residual
sources and noise do not leak into it. It is normalised to median 1 over the chip. A reduced frame is
corrected by *dividing* SCI by the map (VAR by its square), i.e. the master flat is multiplied by it.

Fringe frame (:func:`make_fringe_frame`): the masked, sky-normalised frames divided by the super-flat, minus
1 and minus each frame's own low-order residual (sky gradients), median-combined; the large-scale part of the
stack is removed (same cell fit) and the result lightly smoothed (Gaussian ``smooth_px``, NaN-aware).
The pattern is *per unit sky*: a frame of sky level ``s`` carries ``amplitude x s x pattern`` e- of fringes,
with amplitude ~ 1 for the frames it was built from (it is their median fringe). Removal
(:func:`fit_fringe`, :func:`remove_fringes`): weighted least squares of ``SCI`` against a 2-D polynomial
sky (order ``sky_order``) + ``amplitude x s x pattern`` over usable pixels, iteratively clipping sources
(|residual| > 3 sqrt(VAR), grown by 2 px) unless a source mask is given; then ``SCI - amplitude x s x pattern``.
Fringes are additive: subtract them from the flat-fielded frame *before* any sky subtraction, and
build/apply the super-flat on frames whose fringes are small compared with the illumination error, or
iterate (super-flat, fringe frame, defringe, super-flat again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import sep
from scipy import ndimage

from services.calib.science.combine import combine
from services.calib.science.screen import Screening
from wisp.dq import WEIGHT_BAD_BITS
from wisp.errors import InvalidInput

CombineMethod = Literal["median", "sigclip_mean"]
#: masked sky frames are mostly NaN-free but sources and bad pixels can take a good part of a frame: keep
#: every frame that has >= 10 % usable pixels (no level or noise rules: the frames are normalised already)
SKY_SCREENING = Screening(max_bad_fraction=0.9, level_ratio=None, level_dev=None, noise_ratio=None)


@dataclass(frozen=True)
class SourceMasking:
    """How :func:`sky_frames` masks: pixels with any DQ bit of ``bad_bits``; sep detections above ``thresh``
    x sqrt(VAR) (x the background rms without VAR) with >= ``minarea`` px, on a background mesh of
    ``back_size`` px, grown by a disk of ``dilate_px`` px radius."""

    bad_bits: int = WEIGHT_BAD_BITS
    thresh: float = 2.0
    minarea: int = 5
    back_size: int = 64
    dilate_px: int = 4


@dataclass(frozen=True)
class SkyFrames:
    """Sky-normalised frames with sources and bad pixels masked: ``normalised`` float32 ``SCI_i / s_i`` (NaN
    where masked), ``levels`` the sky levels ``s_i`` (e-), ``masks`` bool (True = masked),
    ``masked_fraction`` per frame, ``n_sources`` detections per frame."""

    normalised: tuple[np.ndarray, ...]
    levels: tuple[float, ...]
    masks: tuple[np.ndarray, ...]
    masked_fraction: tuple[float, ...]
    n_sources: tuple[int, ...]


@dataclass(frozen=True)
class SuperFlat:
    """Illumination correction of one chip/filter: ``correction`` float32 (ny, nx), median 1 (divide SCI by
    it); ``stack`` float32 the combined sky-normalised frames before the fit (NaN where nothing was usable);
    ``n_used`` uint16 frames per pixel; ``levels`` sky level per frame (e-); ``stats``: ``n_frames``,
    ``masked_fraction`` (mean), ``fit_rms`` (rms of the cell medians about the fit), ``n_cells``,
    ``peak_to_peak`` (max - min of the correction), ``rms`` (rms of the correction about 1)."""

    correction: np.ndarray
    stack: np.ndarray
    n_used: np.ndarray
    levels: tuple[float, ...]
    stats: dict[str, float]


@dataclass(frozen=True)
class FringeFrame:
    """Fringe pattern of one chip/filter, per unit sky: ``pattern`` float32 (ny, nx), zero mean over the
    pixels where it was measured (0 where no frame had a usable pixel); ``n_used`` uint16 frames per
    pixel; ``levels`` sky level per frame (e-); ``stats``: ``n_frames``, ``rms`` of the pattern, ``noise``
    (expected rms of the pattern's noise per pixel, from the frames' sky noise)."""

    pattern: np.ndarray
    n_used: np.ndarray
    levels: tuple[float, ...]
    stats: dict[str, float]


@dataclass(frozen=True)
class FringeFit:
    """Fitted fringe amplitude of one frame: fringes = ``amplitude x level x pattern`` (e-); ``error`` the
    1-sigma error of ``amplitude``; ``level`` the frame's sky level (e-); ``n_pixels`` used in the fit."""

    amplitude: float
    error: float
    level: float
    n_pixels: int


def _check_frames(scis: Sequence[np.ndarray], others: Sequence[Sequence[np.ndarray] | None]) -> tuple[int, int]:
    if not scis:
        raise InvalidInput("no frames given", code="calib.no_frames")
    shape = np.shape(scis[0])
    for seq in (scis, *[o for o in others if o is not None]):
        if len(seq) != len(scis) or any(np.shape(a) != shape for a in seq):
            raise InvalidInput(f"SCI, VAR and DQ frames must all have shape {shape}, one of each per frame",
                               code="calib.shape")
    if len(shape) != 2:
        raise InvalidInput(f"frames must be 2-D, got shape {shape}", code="calib.shape")
    return int(shape[0]), int(shape[1])


def _usable(sci: np.ndarray, dq: np.ndarray | None, bad_bits: int) -> np.ndarray:
    ok = np.isfinite(sci)
    if dq is not None:
        ok &= (np.asarray(dq) & bad_bits) == 0
    return ok


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r + r)


def _detect(resid: np.ndarray, var: np.ndarray | None, bad: np.ndarray, m: SourceMasking
            ) -> tuple[np.ndarray, int]:
    """Sources in a sky-free frame (e-): sep detection grown by ``m.dilate_px``; (mask, number found)."""
    data = np.ascontiguousarray(np.where(bad, 0.0, resid), dtype=np.float64)
    size = int(min(m.back_size, *data.shape))
    bkg = sep.Background(data, mask=bad, bw=size, bh=size, fw=3, fh=3)
    data -= bkg.back()
    err: np.ndarray | float
    if var is not None:
        valid = ~bad & np.isfinite(var) & (var > 0)
        err = np.ascontiguousarray(np.sqrt(np.where(valid, var, 1e60)), dtype=np.float64)
    else:
        err = float(bkg.globalrms)
    old_stack = sep.get_extract_pixstack()
    sep.set_extract_pixstack(max(old_stack, data.size))
    try:
        objects, segmap = sep.extract(data, m.thresh, err=err, mask=bad, minarea=m.minarea, deblend_cont=1.0,
                                      clean=False, segmentation_map=True)
    finally:
        sep.set_extract_pixstack(old_stack)
    found = segmap > 0
    if m.dilate_px > 0 and found.any():
        found = ndimage.binary_dilation(found, structure=_disk(m.dilate_px))
    return found, len(objects)


def sky_frames(scis: Sequence[np.ndarray], dqs: Sequence[np.ndarray] | None = None,
               vars_: Sequence[np.ndarray] | None = None, *, correction: np.ndarray | None = None,
               masking: SourceMasking = SourceMasking()) -> SkyFrames:
    """Mask sources and bad pixels and normalise each frame by its sky level (see the module docstring).

    ``scis`` e- (sky included), ``dqs`` DQ bits, ``vars_`` e-^2 (for the detection threshold), ``masking``
    the rules (:class:`SourceMasking`); ``correction``: an illumination correction to divide the frames
    (and VAR by its square) by first. Needs >= 3 frames (the unmasked median must reject moving
    sources)."""
    _check_frames(scis, [dqs, vars_])
    if len(scis) < 3:
        raise InvalidInput(f"{len(scis)} frames: a sky stack needs >= 3 dithered frames", code="calib.no_frames")
    frames, usable, levels = [], [], []
    for i, sci in enumerate(scis):
        f = np.asarray(sci, dtype=np.float64)
        var = None if vars_ is None else np.asarray(vars_[i], dtype=np.float64)
        if correction is not None:
            f = f / correction
            var = None if var is None else var / correction**2
        ok = _usable(f, None if dqs is None else dqs[i], masking.bad_bits)
        if ok.sum() < 0.1 * ok.size:
            raise InvalidInput(f"frame {i} has only {ok.mean():.1%} usable pixels", code="calib.no_good_pixels")
        level = float(np.median(f[ok]))
        if not level > 0:
            raise InvalidInput(f"frame {i} has sky level {level:.4g} e-: sky frames need a positive sky",
                               code="calib.bad_sky")
        frames.append((f, var))
        usable.append(ok)
        levels.append(level)
    # pass 1: unmasked median of the normalised frames keeps the fixed patterns, drops the moving sources
    first = combine([np.where(ok, f / s, np.nan) for (f, _), ok, s in zip(frames, usable, levels, strict=True)],
                    method="median", scale=None, screening=SKY_SCREENING).image.astype(np.float64)
    first = np.where(np.isfinite(first), first, 1.0)
    normalised, masks, fractions, counts = [], [], [], []
    for (f, var), ok, s in zip(frames, usable, levels, strict=True):
        found, n = _detect(f - s * first, var, ~ok, masking)
        mask = found | ~ok
        normalised.append(np.where(mask, np.nan, f / s).astype(np.float32))
        masks.append(mask)
        fractions.append(float(mask.mean()))
        counts.append(n)
    return SkyFrames(normalised=tuple(normalised), levels=tuple(levels), masks=tuple(masks),
                     masked_fraction=tuple(fractions), n_sources=tuple(counts))


def _terms(order: int) -> list[tuple[int, int]]:
    """Exponents (i, j) of the polynomial terms x^i y^j with i + j <= order."""
    return [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]


def _design(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Columns x^i y^j (i + j <= order) of normalised coordinates in [-1, 1] (x, y: 1-D, same length)."""
    return np.stack([x**i * y**j for i, j in _terms(order)], axis=-1)


def _norm_axes(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows and columns mapped to [-1, 1]."""
    sy, sx = (ny - 1) / 2.0, (nx - 1) / 2.0
    return (np.arange(ny, dtype=float) - sy) / max(sy, 1.0), (np.arange(nx, dtype=float) - sx) / max(sx, 1.0)


def _poly_image(coef: np.ndarray, order: int, ny: int, nx: int) -> np.ndarray:
    """Evaluate the polynomial at every pixel (float64 (ny, nx)), one term at a time (O(ny nx) memory)."""
    yn, xn = _norm_axes(ny, nx)
    out = np.zeros((ny, nx))
    for c, (i, j) in zip(coef, _terms(order), strict=True):
        out += c * np.outer(yn**j, xn**i)
    return out


def lowpass(image: np.ndarray, *, box: int = 32, order: int = 3, min_fill: float = 0.25
            ) -> tuple[np.ndarray, dict[str, float]]:
    """Low-order model of ``image`` (NaN = missing): medians of ``box`` x ``box`` px cells (the last cell of
    a row/column takes the remainder), then a 2-D polynomial of total degree ``order`` fitted to the cell
    medians (weighted by their pixel counts, 3-sigma clipped, 3 passes) and evaluated at every pixel.
    Returns (model float64, stats ``fit_rms``, ``n_cells``)."""
    ny, nx = image.shape
    ey = np.unique(np.r_[np.arange(0, ny, box)[: max(1, ny // box)], ny])
    ex = np.unique(np.r_[np.arange(0, nx, box)[: max(1, nx // box)], nx])
    cx, cy, val, wt = [], [], [], []
    for y0, y1 in pairwise(ey):
        for x0, x1 in pairwise(ex):
            cell = image[y0:y1, x0:x1]
            good = np.isfinite(cell)
            if good.sum() < min_fill * cell.size:
                continue
            cx.append((x0 + x1 - 1) / 2.0)
            cy.append((y0 + y1 - 1) / 2.0)
            val.append(float(np.median(cell[good])))
            wt.append(float(good.sum()))
    needed = (order + 1) * (order + 2) // 2
    if len(val) < needed:
        raise InvalidInput(f"only {len(val)} usable {box} px cells for a polynomial of order {order} "
                           f"({needed} terms)", code="calib.no_good_pixels")
    sx, sy = (nx - 1) / 2.0, (ny - 1) / 2.0
    a = _design((np.array(cx) - sx) / max(sx, 1.0), (np.array(cy) - sy) / max(sy, 1.0), order)
    v, w = np.array(val), np.array(wt)
    keep = np.ones(v.size, dtype=bool)
    coef = np.zeros(a.shape[1])
    rms = 0.0
    for _ in range(3):
        sw = np.sqrt(w[keep])
        coef = np.linalg.lstsq(a[keep] * sw[:, None], v[keep] * sw, rcond=None)[0]
        resid = v - a @ coef
        rms = float(np.sqrt(np.average(resid[keep] ** 2, weights=w[keep])))
        new = np.abs(resid) <= 3.0 * max(rms, 1e-12)
        if new.sum() < needed or np.array_equal(new, keep):
            break
        keep = new
    return _poly_image(coef, order, ny, nx), {"fit_rms": rms, "n_cells": float(keep.sum())}


def make_superflat(scis: Sequence[np.ndarray], dqs: Sequence[np.ndarray] | None = None,
                   vars_: Sequence[np.ndarray] | None = None, *, method: CombineMethod = "median",
                   box: int = 32, order: int = 3, masking: SourceMasking = SourceMasking(),
                   frames: SkyFrames | None = None) -> SuperFlat:
    """Illumination correction (median 1; divide SCI by it) from reduced frames of one chip and filter.

    ``method``: ``median`` or ``sigclip_mean`` (3 sigma) of the masked, sky-normalised frames; ``box`` px cells
    and polynomial ``order`` for the low-order fit (:func:`lowpass`); ``frames``: reuse the output of
    :func:`sky_frames` (otherwise computed here with ``masking``)."""
    sky = frames if frames is not None else sky_frames(scis, dqs, vars_, masking=masking)
    res = combine(list(sky.normalised), method=method, scale=None, screening=SKY_SCREENING)
    stack = res.image.astype(np.float32)
    model, fit = lowpass(stack.astype(np.float64), box=box, order=order)
    model /= float(np.median(model))
    correction = model.astype(np.float32)
    stats = {"n_frames": float(len(res.used)), "masked_fraction": float(np.mean(sky.masked_fraction)),
             "fit_rms": fit["fit_rms"], "n_cells": fit["n_cells"],
             "peak_to_peak": float(correction.max() - correction.min()),
             "rms": float(np.sqrt(np.mean((correction.astype(np.float64) - 1.0) ** 2)))}
    return SuperFlat(correction=correction, stack=stack, n_used=res.n_used, levels=sky.levels, stats=stats)


def apply_correction(sci: np.ndarray, var: np.ndarray | None, correction: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Divide a reduced frame by an illumination correction: (SCI / c, VAR / c^2), float32."""
    c = np.asarray(correction, dtype=np.float32)
    out = (np.asarray(sci, dtype=np.float32) / c).astype(np.float32)
    return out, None if var is None else (np.asarray(var, dtype=np.float32) / (c * c)).astype(np.float32)


def _nan_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores NaN (normalised convolution); NaN where no weight."""
    good = np.isfinite(image)
    num = ndimage.gaussian_filter(np.where(good, image, 0.0), sigma, mode="nearest")
    den = ndimage.gaussian_filter(good.astype(float), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-3, num / den, np.nan)


def make_fringe_frame(scis: Sequence[np.ndarray], dqs: Sequence[np.ndarray] | None = None,
                      vars_: Sequence[np.ndarray] | None = None, *, superflat: np.ndarray | None = None,
                      box: int = 32, order: int = 3, frame_order: int = 2, smooth_px: float = 1.5,
                      masking: SourceMasking = SourceMasking(), frames: SkyFrames | None = None) -> FringeFrame:
    """Fringe pattern per unit sky from reduced frames of one chip and filter (see the module docstring).

    ``superflat``: illumination correction to divide the frames by first (None: none); ``frame_order``:
    polynomial order of each frame's own large-scale residual, removed before stacking; ``box``/``order``:
    the large-scale fit removed from the stack; ``smooth_px``: Gaussian sigma (px) of the final smoothing
    (0: none; it multiplies a fringe of period P px by exp(-2 pi^2 smooth_px^2 / P^2): 0.87 at P = 18 px,
    0.95 at 30 px for the default 1.5 px, and divides the pixel noise by 2 sqrt(pi) smooth_px = 5.3).
    ``frames``: reuse :func:`sky_frames` output, which must have been computed with
    ``correction=superflat`` (otherwise computed here with ``masking``)."""
    sky = frames if frames is not None else sky_frames(scis, dqs, vars_, correction=superflat, masking=masking)
    resid = []
    for norm in sky.normalised:
        r = norm.astype(np.float64)
        r -= lowpass(r, box=box, order=frame_order)[0]
        resid.append(r.astype(np.float32))
    res = combine(resid, method="median", scale=None, screening=SKY_SCREENING)
    stack = res.image.astype(np.float64)
    stack -= lowpass(stack, box=box, order=order)[0]
    if smooth_px > 0:
        stack = _nan_gaussian(stack, smooth_px)
    good = np.isfinite(stack)
    if good.any():
        stack[good] -= stack[good].mean()
    pattern = np.where(good, stack, 0.0).astype(np.float32)
    levels = np.array(sky.levels)
    # per-pixel noise of the pattern: relative sky noise 1/sqrt(s) per frame, x 1.25 for the median,
    # / sqrt(N), / (2 sqrt(pi) smooth_px) for the Gaussian smoothing
    noise = 1.2533 * float(np.sqrt(np.mean(1.0 / levels))) / np.sqrt(len(res.used))
    if smooth_px > 0:
        noise /= 2.0 * np.sqrt(np.pi) * smooth_px
    stats = {"n_frames": float(len(res.used)), "rms": float(pattern[good].std()) if good.any() else 0.0,
             "noise": float(noise)}
    return FringeFrame(pattern=pattern, n_used=res.n_used, levels=sky.levels, stats=stats)


def fit_fringe(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, pattern: np.ndarray, *,
               level: float | None = None, source_mask: np.ndarray | None = None, sky_order: int = 2,
               bad_bits: int = WEIGHT_BAD_BITS, clip: float = 3.0, maxiters: int = 5) -> FringeFit:
    """Fringe amplitude of one reduced frame (SCI e-, sky included): weighted least squares of SCI against a
    polynomial sky of order ``sky_order`` + ``amplitude x level x pattern`` over usable pixels (DQ without
    ``bad_bits``, not in ``source_mask``); without a source mask, pixels more than ``clip`` x sqrt(VAR) off
    the fit (grown by 2 px) are dropped and the fit repeated (``maxiters`` passes). ``level``: sky level (e-),
    default the median of the usable pixels."""
    sci = np.asarray(sci, dtype=np.float64)
    ok = _usable(sci, dq, bad_bits) & np.isfinite(pattern)
    if var is not None:
        ok &= np.isfinite(var) & (np.asarray(var) > 0)
    if source_mask is not None:
        ok &= ~np.asarray(source_mask, dtype=bool)
    if ok.sum() < 100:
        raise InvalidInput(f"only {int(ok.sum())} usable pixels to fit the fringes", code="calib.no_good_pixels")
    s = float(np.median(sci[ok])) if level is None else float(level)
    ny, nx = sci.shape
    yn, xn = _norm_axes(ny, nx)
    fringe = s * np.asarray(pattern, dtype=np.float64)
    sw_all = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64)) if var is not None else np.ones_like(sci)
    n_poly = len(_terms(sky_order))
    use = ok.copy()
    coef: np.ndarray = np.zeros(n_poly + 1)
    cov: np.ndarray = np.zeros((n_poly + 1, n_poly + 1))
    resid: np.ndarray = sci
    for _ in range(max(1, maxiters)):
        iy, ix = np.nonzero(use)
        sw = sw_all[iy, ix]
        a = np.empty((iy.size, n_poly + 1))  # sqrt(w)-weighted design matrix of the used pixels only
        a[:, :n_poly] = _design(xn[ix], yn[iy], sky_order)
        a[:, n_poly] = fringe[iy, ix]
        a *= sw[:, None]
        cov = np.linalg.inv(a.T @ a)
        coef = cov @ (a.T @ (sci[iy, ix] * sw))
        del a
        resid = sci - _poly_image(coef[:n_poly], sky_order, ny, nx) - coef[n_poly] * fringe
        if source_mask is not None:
            break
        with np.errstate(invalid="ignore"):
            far = ok & (np.abs(resid) * sw_all > clip)
        far = ndimage.binary_dilation(far, structure=_disk(2)) & ok
        new = ok & ~far
        if np.array_equal(new, use):
            break
        use = new
    err = float(np.sqrt(cov[-1, -1]))
    if var is None:  # scale by the residual scatter when no variance is known
        err *= float(np.std(resid[use]))
    return FringeFit(amplitude=float(coef[-1]), error=err, level=s, n_pixels=int(use.sum()))


def remove_fringes(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, pattern: np.ndarray, *,
                   level: float | None = None, source_mask: np.ndarray | None = None, sky_order: int = 2,
                   bad_bits: int = WEIGHT_BAD_BITS) -> tuple[np.ndarray, FringeFit]:
    """Fit (:func:`fit_fringe`, same parameters) and subtract the fringes: (SCI - amplitude x level x
    pattern as float32, fit). VAR is unchanged (the pattern's own noise, ``FringeFrame.stats['noise']`` x
    amplitude x level, is small next to a frame's)."""
    fit = fit_fringe(sci, var, dq, pattern, level=level, source_mask=source_mask, sky_order=sky_order,
                     bad_bits=bad_bits)
    out = np.asarray(sci, dtype=np.float64) - fit.amplitude * fit.level * np.asarray(pattern, dtype=np.float64)
    return out.astype(np.float32), fit
