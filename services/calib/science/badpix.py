"""Bad-pixel map of one chip from its master calibrations: hot pixels, cold pixels and bad column segments.

Pure science: arrays (or the master dataclasses of :mod:`.masters`) in, a bit map out; no I/O.

Bits of :attr:`BadPixelMap.mask` (uint8, the same values as the simulator's ``truth/bpm.fits``):

* :data:`BPM_HOT` (1): a pixel far *above* its local model in the master bias (a bias-level offset) or in
  the master dark (dark current), or (only with ``flat_bright_sigma``) in a master flat; also a non-finite
  master-bias or master-dark pixel.
* :data:`BPM_COLD` (2): a pixel far *below* its local model in at least ``flat_votes`` master flats (low
  response: cold or dead); also a non-finite or non-positive master-flat pixel.
* :data:`BPM_BADCOL` (4): a pixel of a bad column segment: a run of >= ``badcol_min_rows`` rows of one
  column whose running median deviates coherently from the neighbouring columns (hot in the bias or dark,
  dead or bright in a flat). The segments found are listed in :attr:`BadPixelMap.columns`.

A pixel can carry several bits (a hot pixel inside a hot column has 1 | 4).

Every test is relative to a *local* model, so smooth structure is never flagged:

* bias and dark: ``row profile (median of each row) + column profile (running median of ``column_window``
  rows along each column)``. The column profile keeps the bias's fixed column pattern and follows a bad
  column, so a hot pixel inside a hot column is still found; the column profile itself, compared with the
  median of the ``badcol_neighbours`` neighbouring columns, finds the bad column segments.
* flats: ``m = median filter of flat_window x flat_window px`` (follows vignetting, illumination gradients
  and dust donuts, which are not defects), then ``r = flat / m`` and the column profile ``c`` = running
  median of ``r`` over ``column_window`` rows; a pixel is cold when ``r / c - 1`` is below
  ``-cold_sigma`` sigma, and a column segment is bad where ``|c - 1|`` is above ``badcol_sigma`` sigma.

Noise: the residual of pixel i is divided by ``sigma_i = sqrt(var_i + s_x^2)``, with ``var_i`` the master's
own variance (``MasterBias.var``, ``MasterFlat.var``, ``dark_var``; 0 if not given) propagated through the
model, and ``s_x^2 = max(MAD^2 - median(var), 0)`` the excess scatter of the residual map over that
variance, from its robust (MAD) standard deviation: photo-response non-uniformity in a flat, the model's
own noise in a bias. Without a variance the robust scatter alone is used. So ``hot_sigma = 5`` means five
times the master's pixel noise. Column thresholds are in units of the robust scatter of the column-profile
map (which includes the bias's fixed column-to-column pattern, ~1 ADU in the simulator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from scipy import ndimage

from services.calib.science.masters import MasterBias, MasterFlat
from services.calib.science.overscan import MAD_TO_SIGMA

BPM_HOT = 1
BPM_COLD = 2
BPM_BADCOL = 4

ColumnKind = Literal["hot", "dead", "bright"]


class ImageWithVar(Protocol):
    """Any master with an ``image`` and a ``var`` (None if unknown), e.g. a master dark (ADU/s, (ADU/s)^2)."""

    @property
    def image(self) -> np.ndarray: ...

    @property
    def var(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class ColumnDefect:
    """A bad column segment: column ``x``, rows ``y0 <= y < y1`` (0-based), ``kind`` ('hot': above its
    neighbours in the bias or dark; 'dead': low response in a flat; 'bright': high response in a flat),
    ``value`` its median level (bias/dark: excess over the neighbouring columns, in the master's unit, ADU
    for a bias; flat: relative response, 1 = like its neighbours) and ``source`` ('bias', 'dark' or
    'flat <name>')."""

    x: int
    y0: int
    y1: int
    kind: ColumnKind
    value: float
    source: str

    @property
    def n_pixels(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class BadPixelMap:
    """Bad-pixel map of one chip.

    ``mask`` uint8 (ny, nx) with bits :data:`BPM_HOT` | :data:`BPM_COLD` | :data:`BPM_BADCOL` (0 = good);
    ``n_hot``, ``n_cold``, ``n_badcol_pixels`` pixels carrying each bit, ``n_bad`` pixels with any bit
    (before ``grow``; ``n_grown`` pixels added by growing); ``columns`` the bad column segments;
    ``noise`` the median pixel noise used per input (``'bias'`` ADU, ``'flat <name>'`` relative response,
    ``'dark'`` dark unit) and ``sources`` which inputs were used."""

    mask: np.ndarray
    n_hot: int
    n_cold: int
    n_badcol_pixels: int
    n_bad: int
    n_grown: int
    columns: tuple[ColumnDefect, ...]
    noise: dict[str, float] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        """Fraction of the chip's pixels that are flagged (after growing)."""
        return float(np.count_nonzero(self.mask)) / max(self.mask.size, 1)


def _robust_sigma(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    return MAD_TO_SIGMA * float(np.median(np.abs(v - np.median(v))))


def _pixel_sigma(resid: np.ndarray, var: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Per-pixel noise of a residual map: master variance plus the robust excess scatter (see module doc)."""
    mad = _robust_sigma(resid)
    if var is None:
        return np.full(resid.shape, mad), mad
    v = np.where(np.isfinite(var) & (var >= 0), var, np.nan)
    med_var = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
    v = np.where(np.isfinite(v), v, med_var)
    excess = max(mad * mad - med_var, 0.0)
    sigma = np.sqrt(v + excess)
    return sigma, float(np.median(sigma))


def _fill(image: np.ndarray, value: float) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    return np.where(np.isfinite(a), a, value)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a 1-D boolean array."""
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _refine_edge(excess: np.ndarray, edge: int, half: float, width: int, start: bool) -> int:
    """Move a segment edge to the row that best separates pixel values above/below ``half`` within
    ``width`` rows of it (a running median blurs a step by a few rows in noise)."""
    n = excess.size
    lo, hi = max(edge - width, 0), min(edge + width, n)
    inside = (excess > half) if half > 0 else (excess < half)
    best, best_cost = edge, None
    for e in range(lo, hi + 1):
        if start:  # outside below e, inside from e
            cost = int(np.count_nonzero(inside[lo:e])) + int(np.count_nonzero(~inside[e:hi]))
        else:  # inside below e, outside from e
            cost = int(np.count_nonzero(~inside[lo:e])) + int(np.count_nonzero(inside[e:hi]))
        if best_cost is None or cost < best_cost or (cost == best_cost and abs(e - edge) < abs(best - edge)):
            best, best_cost = e, cost
    return best


def _column_segments(profile_excess: np.ndarray, pixel_excess: np.ndarray, threshold: float, *, sign: int,
                     min_rows: int, max_gap: int, refine: int) -> list[tuple[int, int, int]]:
    """(x, y0, y1) of the runs of >= ``min_rows`` rows where ``sign * profile_excess > threshold`` (gaps of
    <= ``max_gap`` rows closed), edges refined on ``pixel_excess``."""
    flagged = sign * profile_excess > threshold
    if max_gap > 0:
        flagged = ndimage.binary_closing(flagged, structure=np.ones((2 * max_gap + 1, 1), bool),
                                         border_value=0) | flagged
    out = []
    for x in np.flatnonzero(flagged.sum(axis=0) >= min_rows):
        for y0, y1 in _runs(flagged[:, x]):
            if y1 - y0 < min_rows:
                continue
            level = float(np.median(profile_excess[y0:y1, x]))
            half = 0.5 * level
            col = pixel_excess[:, x]
            y0r = _refine_edge(col, y0, half, refine, start=True)
            y1r = _refine_edge(col, y1, half, refine, start=False)
            if y1r - y0r >= min_rows:
                out.append((int(x), int(y0r), int(y1r)))
    return out


def _additive_defects(image: np.ndarray, var: np.ndarray | None, *, hot_sigma: float, badcol_sigma: float,
                      column_window: int, neighbours: int, min_rows: int, max_gap: int, source: str,
                      ) -> tuple[np.ndarray, list[ColumnDefect], float]:
    """Hot pixels and hot column segments of an additive master (bias or dark): see the module doc."""
    finite = np.isfinite(image)
    fill = float(np.median(image[finite])) if finite.any() else 0.0
    a = _fill(image, fill)
    row = np.median(a, axis=1)
    r0 = a - row[:, None]
    colprof = ndimage.median_filter(r0, size=(column_window, 1), mode="reflect")
    resid = r0 - colprof
    sigma, med_sigma = _pixel_sigma(resid, None if var is None else np.asarray(var, dtype=np.float64))
    hot = (resid > hot_sigma * sigma) | ~finite

    base = ndimage.median_filter(colprof, size=(1, 2 * neighbours + 1), mode="reflect")
    col_excess = colprof - base
    col_sigma = _robust_sigma(col_excess)
    segs = _column_segments(col_excess, r0 - base, badcol_sigma * col_sigma, sign=1, min_rows=min_rows,
                            max_gap=max_gap, refine=column_window)
    cols = [ColumnDefect(x, y0, y1, "hot", float(np.median(col_excess[y0:y1, x])), source) for x, y0, y1 in segs]
    return hot, cols, med_sigma


def _flat_defects(flat: np.ndarray, var: np.ndarray | None, *, cold_sigma: float, bright_sigma: float | None,
                  badcol_sigma: float, flat_window: int, column_window: int, min_rows: int, max_gap: int,
                  source: str) -> tuple[np.ndarray, np.ndarray, list[ColumnDefect], float]:
    """Cold (and optionally bright) pixels and dead/bright column segments of a normalised master flat."""
    finite = np.isfinite(flat) & (np.nan_to_num(flat) > 0)
    fill = float(np.median(flat[finite])) if finite.any() else 1.0
    a = _fill(np.where(finite, flat, np.nan), fill)
    model = ndimage.median_filter(a, size=flat_window, mode="reflect")
    model = np.where(model > 0, model, fill)
    r = a / model
    c = ndimage.median_filter(r, size=(column_window, 1), mode="reflect")
    cpos = c > 0.02  # below 2 % response the pixel test inside a dead column is meaningless
    d = np.where(cpos, r / np.where(cpos, c, 1.0), 1.0) - 1.0
    var_d = None
    if var is not None:
        var_d = np.asarray(var, dtype=np.float64) / (model * np.where(cpos, c, 1.0)) ** 2
    sigma, med_sigma = _pixel_sigma(np.where(cpos & finite, d, np.nan), var_d)
    cold = ((d < -cold_sigma * sigma) & cpos) | ~finite
    bright = (d > bright_sigma * sigma) & cpos & finite if bright_sigma is not None else np.zeros_like(cold)

    ce = c - 1.0
    col_sigma = _robust_sigma(ce)
    thr = badcol_sigma * col_sigma
    cols: list[ColumnDefect] = []
    for sign, kind in ((-1, "dead"), (1, "bright")):
        for x, y0, y1 in _column_segments(ce, r - 1.0, thr, sign=sign, min_rows=min_rows, max_gap=max_gap,
                                          refine=column_window):
            k: ColumnKind = "dead" if kind == "dead" else "bright"
            cols.append(ColumnDefect(x, y0, y1, k, float(np.median(c[y0:y1, x])), source))
    return cold, bright, cols, med_sigma


def find_bad_pixels(master_bias: MasterBias | np.ndarray | None = None,
                    master_flats: Mapping[str, MasterFlat | np.ndarray] | Sequence[MasterFlat | np.ndarray] = (),
                    master_dark: ImageWithVar | np.ndarray | None = None, *, bias_var: np.ndarray | None = None,
                    dark_var: np.ndarray | None = None, hot_sigma: float = 5.0, cold_sigma: float = 5.0,
                    flat_bright_sigma: float | None = None, flat_votes: int = 1, badcol_sigma: float = 5.0,
                    badcol_min_rows: int = 20, badcol_neighbours: int = 7, badcol_max_gap: int = 3,
                    column_window: int = 31, flat_window: int = 7, grow: int = 0) -> BadPixelMap:
    """Bad-pixel map of one chip from its masters (see the module doc for bits, models and noise).

    ``master_bias``: :class:`MasterBias` (its ``var`` is used) or an ADU image (then ``bias_var`` ADU^2 if
    known): hot pixels (bias offset) and hot column segments. ``master_flats``: normalised master flats of
    one or more filters (:class:`MasterFlat`, its ``var`` used, or images), as a mapping name -> flat or a
    sequence: cold pixels (in at least ``flat_votes`` of them) and dead/bright column segments.
    ``master_dark``: optional dark-current image in any linear unit (e.g. ADU/s or e-/s) with optional
    ``dark_var`` (its unit squared), or a master with ``image`` and ``var`` (e.g. a master dark): hot
    pixels and hot columns by dark current.

    Thresholds: ``hot_sigma`` / ``cold_sigma`` / ``flat_bright_sigma`` in units of the pixel noise
    ``sqrt(var + excess)`` of the residual from the local model; ``badcol_sigma`` in units of the robust
    scatter of the column-profile map; ``badcol_min_rows`` rows (the shortest segment reported),
    ``badcol_neighbours`` columns on each side define a column's reference, ``badcol_max_gap`` rows of
    gap closed inside a segment. Models: ``column_window`` rows (odd) of running median along columns,
    ``flat_window`` px (odd) square median filter of the flat. ``grow``: dilate the final mask by this many
    pixels (square, 8-connected; each grown pixel inherits the bits of its flagged neighbours); 0 = none.
    """
    flats: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    items = master_flats.items() if isinstance(master_flats, Mapping) else enumerate(master_flats)
    for name, f in items:
        if isinstance(f, MasterFlat):
            flats.append((str(name), np.asarray(f.image, dtype=np.float64), f.var))
        else:
            flats.append((str(name), np.asarray(f, dtype=np.float64), None))
    shapes = {fl[1].shape for fl in flats}
    bias_img: np.ndarray | None = None
    if master_bias is not None:
        if isinstance(master_bias, MasterBias):
            bias_img, bias_var = np.asarray(master_bias.image, dtype=np.float64), master_bias.var
        else:
            bias_img = np.asarray(master_bias, dtype=np.float64)
        shapes.add(bias_img.shape)
    dark_img: np.ndarray | None = None
    if master_dark is not None:
        if isinstance(master_dark, np.ndarray):
            dark_img = np.asarray(master_dark, dtype=np.float64)
        else:
            dark_img, dark_var = np.asarray(master_dark.image, dtype=np.float64), master_dark.var
        shapes.add(dark_img.shape)
    if not shapes:
        raise ValueError("find_bad_pixels needs at least one of master_bias, master_flats, master_dark")
    if len(shapes) != 1:
        raise ValueError(f"master calibrations of different shapes: {sorted(shapes)}")
    if not 1 <= flat_votes <= max(len(flats), 1):
        raise ValueError(f"flat_votes={flat_votes} must be in 1..{max(len(flats), 1)}")
    column_window |= 1
    flat_window |= 1
    shape = shapes.pop()
    if len(shape) != 2:
        raise ValueError(f"master calibrations must be 2-D, got shape {shape}")

    hot = np.zeros(shape, bool)
    bright = np.zeros(shape, bool)
    cold_votes = np.zeros(shape, np.int16)
    columns: list[ColumnDefect] = []
    noise: dict[str, float] = {}
    sources: list[str] = []
    common = {"column_window": column_window, "min_rows": badcol_min_rows, "max_gap": badcol_max_gap}
    additive = [("bias", bias_img, bias_var), ("dark", dark_img, dark_var)]
    for name, img, var in additive:
        if img is None:
            continue
        h, cols, s = _additive_defects(np.asarray(img, dtype=np.float64), var, hot_sigma=hot_sigma,
                                       badcol_sigma=badcol_sigma, neighbours=badcol_neighbours, source=name,
                                       **common)
        hot |= h
        columns += cols
        noise[name] = s
        sources.append(name)
    for name, img, var in flats:
        src = f"flat {name}"
        c, b, cols, s = _flat_defects(img, var, cold_sigma=cold_sigma, bright_sigma=flat_bright_sigma,
                                      badcol_sigma=badcol_sigma, flat_window=flat_window, source=src, **common)
        cold_votes += c
        bright |= b
        columns += cols
        noise[src] = s
        sources.append(src)

    mask = np.zeros(shape, np.uint8)
    mask[hot | bright] |= BPM_HOT
    mask[cold_votes >= flat_votes] |= BPM_COLD
    for col in columns:
        mask[col.y0:col.y1, col.x] |= BPM_BADCOL
    n_bad = int(np.count_nonzero(mask))
    n_grown = 0
    if grow > 0:
        grown = np.zeros_like(mask)
        for bit in (BPM_HOT, BPM_COLD, BPM_BADCOL):
            sel = ndimage.binary_dilation((mask & bit) != 0, structure=np.ones((3, 3), bool), iterations=grow)
            grown[sel] |= bit
        n_grown = int(np.count_nonzero(grown)) - n_bad
        mask = grown
    columns.sort(key=lambda c: (c.x, c.y0, c.source))
    return BadPixelMap(mask=mask, n_hot=int(np.count_nonzero(mask & BPM_HOT)),
                       n_cold=int(np.count_nonzero(mask & BPM_COLD)),
                       n_badcol_pixels=int(np.count_nonzero(mask & BPM_BADCOL)), n_bad=n_bad, n_grown=n_grown,
                       columns=tuple(columns), noise=noise, sources=tuple(sources))
