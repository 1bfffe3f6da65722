"""Interpolation kernels as look-up tables over the sub-pixel phase.

A kernel of ``taps`` samples is applied to the source pixels ``floor(x) - offset ... floor(x) - offset +
taps - 1`` around a position ``x`` (px). Its 1-D weights depend only on the phase ``f = x - floor(x)``;
they are tabulated at ``PHASES + 1`` phases (0 ... 1 inclusive; the phase is rounded to the nearest
entry, i.e. at most 1/(2 PHASES) px = 1.2e-4 px off) and normalised to a sum of 1, so a constant image
stays exactly constant. Each table row holds three weight sets used by the resampler:
``k`` (flux), ``k**2`` (variance propagation) and ``|k| / sum|k|`` (weights and bad-pixel fractions).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

PHASES = 4096
KERNELS = ("lanczos3", "bilinear")


@dataclass(frozen=True)
class Kernel:
    """A separable kernel: ``taps`` weights per axis starting ``offset`` px left of ``floor(x)``;
    ``table[p]`` is a float32 (3, taps) array ``[k, k**2, |k|/sum|k|]`` at phase ``p / PHASES``;
    ``table_t[:, p]`` holds the same weights as (taps, 3)."""

    name: str
    taps: int
    offset: int
    table: np.ndarray
    table_t: np.ndarray  # the same as (taps, PHASES + 1, 3)

    def phase_index(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (px, float64) -> (first tap index, table row), both intp."""
        fl = np.floor(x)
        row = ((x - fl) * PHASES + 0.5).astype(np.intp)
        return fl.astype(np.intp) - self.offset, row


def _lanczos(d: np.ndarray, a: int) -> np.ndarray:
    return np.where(np.abs(d) < a, np.sinc(d) * np.sinc(d / a), 0.0)


@cache
def get_kernel(name: str) -> Kernel:
    """The tabulated kernel called ``name`` (one of ``KERNELS``)."""
    f = np.arange(PHASES + 1, dtype=np.float64)[:, None] / PHASES
    if name == "lanczos3":
        taps, offset = 6, 2
        k = _lanczos(np.arange(taps)[None, :] - offset - f, 3)
    elif name == "bilinear":
        taps, offset = 2, 0
        k = np.hstack([1.0 - f, f])
    else:
        raise ValueError(f"unknown kernel {name!r}; expected one of {KERNELS}")
    k = k / k.sum(axis=1, keepdims=True)
    absn = np.abs(k) / np.abs(k).sum(axis=1, keepdims=True)
    table = np.ascontiguousarray(np.stack([k, k * k, absn], axis=1), dtype=np.float32)
    table_t = np.ascontiguousarray(table.transpose(2, 0, 1))
    table.setflags(write=False)
    table_t.setflags(write=False)
    return Kernel(name, taps, offset, table, table_t)
