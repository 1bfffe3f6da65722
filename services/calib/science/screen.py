"""Screening of input frames before stacking: level and noise of every frame from a fixed sample of rows,
and rejection of frames that do not look like the others (each with a recorded reason).

Statistics use a deterministic sample of ``sample_rows`` evenly spaced rows (no randomness), so memory is
N x sample_rows x nx and results do not depend on how the stack is later split into bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.calib.science.overscan import MAD_TO_SIGMA
from services.calib.science.sources import RowSource, read_rows

ScaleSpec = Sequence[float] | Literal["median"] | None


@dataclass(frozen=True)
class Screening:
    """Rules that reject an input frame before stacking; ``None`` switches a rule off.

    ``max_bad_fraction``: largest allowed fraction of non-finite pixels. ``level_ratio`` r: reject if the
    frame's median level / the median of all levels is outside [1/r, r]. ``level_dev`` k: reject if
    |level - median level| > k x the median per-pixel noise. ``noise_ratio`` r: reject if the frame's
    inter-frame noise / the median noise is outside [1/r, r]. The relative rules need >= 3 frames (with
    two, nobody can tell which one is odd). A frame with zero pixel-to-pixel spread is always rejected.
    """

    max_bad_fraction: float = 0.01
    level_ratio: float | None = None
    level_dev: float | None = None
    noise_ratio: float | None = 1.5
    sample_rows: int = 64


@dataclass(frozen=True)
class FrameStats:
    """Statistics of one input frame (input units, before scaling). ``level``: median of the sample;
    ``pixel_noise``: robust std of adjacent-pixel differences / sqrt(2); ``noise``: per-pixel noise between
    frames (robust, from differences to the other frames; structure common to all frames cancels), NaN if
    not measured; ``bad_fraction``: non-finite fraction."""

    index: int
    level: float
    pixel_noise: float
    noise: float
    bad_fraction: float


@dataclass(frozen=True)
class RejectedFrame:
    """An input frame left out of a stack: its index, a stable ``code`` (non_finite, constant, level, scale,
    noise) and a sentence with the numbers."""

    index: int
    code: str
    reason: str


def _robust_std(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    return MAD_TO_SIGMA * float(np.median(np.abs(v - np.median(v))))


def sample_rows(ny: int, n: int) -> np.ndarray:
    """Evenly spaced row indices (at most ``n``) covering the frame."""
    return np.unique(np.linspace(0, ny - 1, max(1, min(n, ny))).round().astype(int))


def _read_sample(frames: Sequence[RowSource], rows: np.ndarray) -> np.ndarray:
    nx = frames[0].shape[1]
    out = np.empty((len(frames), rows.size, nx), dtype=np.float64)
    for i, f in enumerate(frames):
        for j, r in enumerate(rows):
            out[i, j] = read_rows(f, int(r), int(r) + 1)[0]
    return out


def inter_frame_noise(sample: np.ndarray, scales: np.ndarray | None = None,
                      index: Sequence[int] | None = None) -> np.ndarray:
    """Per-frame noise sigma_i (units of ``sample`` x ``scales``) of N >= 3 aligned frames: ``sample`` (shape
    (frames, ...)), or its frames ``index`` if given; frame ``index[i]`` multiplied by ``scales[i]`` if given.

    D_i = x_i - mean of the others has var V_i = s_i + sum_{j != i} s_j / (N-1)^2 (s = sigma^2); V_i is
    measured robustly (MAD) and the linear system solved exactly for s, so one noisy frame does not inflate
    the others' estimates. Works frame by frame: memory beyond ``sample`` is a few rows of one frame.
    """
    idx = list(range(sample.shape[0])) if index is None else [int(i) for i in index]
    n = len(idx)
    flat = sample.reshape(sample.shape[0], -1)
    finite = np.ones(flat.shape[1], dtype=bool)
    for i in idx:
        finite &= np.isfinite(flat[i])
    every = bool(finite.all())

    def row(i: int) -> np.ndarray:
        r = flat[idx[i]] if every else flat[idx[i], finite]
        return r * scales[i] if scales is not None else r

    total = row(0).copy()  # accumulated frame by frame: the same sums as flat.sum(axis=0)
    for i in range(1, n):
        total += row(i)
    v = np.empty(n)
    for i in range(n):
        r = row(i)
        v[i] = _robust_std(r - (total - r) / (n - 1)) ** 2
    c = 1.0 / (n - 1) ** 2
    a = 1.0 - c  # the system is (a I + c 11^T) s = V; its inverse in closed form (no LAPACK: bit-stable)
    s = (v - c * float(v.sum()) / (a + n * c)) / a
    return np.sqrt(np.clip(s, 0.0, None))


def screen_frames(frames: Sequence[RowSource], scale: ScaleSpec = None, rules: Screening | None = None
                  ) -> tuple[list[FrameStats], list[int], list[RejectedFrame], np.ndarray]:
    """Measure every frame and reject the odd ones. Returns (stats, indices used, rejected, scales) where
    ``scales[i]`` multiplies frame i before stacking (1/level for ``scale='median'``)."""
    rules = rules or Screening(level_ratio=None, level_dev=None, noise_ratio=None)
    n = len(frames)
    sample = _read_sample(frames, sample_rows(frames[0].shape[0], rules.sample_rows))
    bad_frac = [float(np.mean(~np.isfinite(s))) for s in sample]
    levels = [float(np.nanmedian(s)) if f < 1 else float("nan") for s, f in zip(sample, bad_frac, strict=True)]
    pix = [_robust_std(np.diff(s, axis=1)) / np.sqrt(2.0) for s in sample]
    rejected: list[RejectedFrame] = []
    used = []
    for i in range(n):
        if bad_frac[i] > rules.max_bad_fraction:
            rejected.append(RejectedFrame(i, "non_finite", f"{100 * bad_frac[i]:.2f}% of the sampled pixels are "
                                          f"not finite (allowed {100 * rules.max_bad_fraction:.2f}%)"))
        elif not pix[i] > 0:
            rejected.append(RejectedFrame(i, "constant", f"no pixel-to-pixel variation (level {levels[i]:.6g}): "
                                          "an empty or constant frame"))
        else:
            used.append(i)
    if len(used) >= 3 and (rules.level_ratio is not None or rules.level_dev is not None):
        med = float(np.median([levels[i] for i in used]))
        noise = float(np.median([pix[i] for i in used]))
        keep = []
        for i in used:
            ratio = levels[i] / med if med != 0 else float("inf")
            r = rules.level_ratio
            if r is not None and not 1.0 / r <= ratio <= r:
                rejected.append(RejectedFrame(i, "level", f"median level {levels[i]:.6g} is {ratio:.3g}x the median "
                                              f"of the frames ({med:.6g}); allowed {1 / r:.3g}-{r:.3g}x"))
            elif rules.level_dev is not None and abs(levels[i] - med) > rules.level_dev * noise:
                rejected.append(RejectedFrame(
                    i, "level", f"median level {levels[i]:.6g} differs from the median of the frames ({med:.6g}) "
                    f"by {abs(levels[i] - med) / noise:.3g} x the pixel noise {noise:.4g} "
                    f"(allowed {rules.level_dev:g})"))
            else:
                keep.append(i)
        used = keep
    scales = np.ones(n)
    if isinstance(scale, str):
        if scale != "median":
            raise ValueError(f"scale must be a sequence of numbers, 'median' or None, not {scale!r}")
        for i in list(used):
            if not (np.isfinite(levels[i]) and levels[i] > 0):
                rejected.append(RejectedFrame(i, "scale", f"median level {levels[i]:.6g} is not positive: "
                                              "cannot scale the frame to a common level"))
                used.remove(i)
            else:
                scales[i] = 1.0 / levels[i]
    elif scale is not None:
        if len(scale) != n:
            raise ValueError(f"{len(scale)} scale factors for {n} frames")
        scales = np.asarray(scale, dtype=np.float64)
    noise_all = np.full(n, np.nan)
    while len(used) >= 3:
        sig = inter_frame_noise(sample, scales[used], index=used) / np.abs(scales[used])
        noise_all[used] = sig
        r = rules.noise_ratio
        if r is None:
            break
        rel = sig / np.median(sig)
        worst = int(np.argmax(np.maximum(rel, 1.0 / np.maximum(rel, 1e-30))))
        if 1.0 / r <= rel[worst] <= r:
            break
        i = used.pop(worst)
        rejected.append(RejectedFrame(i, "noise", f"noise {sig[worst]:.4g} is {rel[worst]:.3g}x the median noise "
                                      f"of the frames ({np.median(sig):.4g}); allowed {1 / r:.3g}-{r:.3g}x"))
    if len(used) < 3:
        noise_all[used] = np.asarray(pix)[used]
    stats = [FrameStats(i, levels[i], float(pix[i]), float(noise_all[i]), bad_frac[i]) for i in range(n)]
    return stats, used, sorted(rejected, key=lambda r: r.index), scales
