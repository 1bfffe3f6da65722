"""The simulated camera: chip layout in the focal plane and per-chip electronics (fixed for the night).

Coordinates: chip pixel coordinates are 0-based (x = column, y = row, pixel centres at integers, numpy
``data[y, x]``); FITS pixel coordinates are these + 1. The *focal-plane* frame (u, v) is in pixels
relative to the optical axis, parallel to the chip axes (chips are not rotated). ``x0, y0`` is the
nominal mosaic position of a chip's pixel (0, 0) (what DETSEC says); the true position includes a small
mounting offset, so the true optical axis in chip coordinates is ``(axis_x, axis_y)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wisp.sim.config import SimConfig, stream


@dataclass(frozen=True)
class Chip:
    """One CCD: geometry (px) and electronics.

    ``gain`` e-/ADU, ``read_noise`` e- rms, ``bias_level`` ADU (mean of the data section),
    ``saturate`` ADU (raw value at which the ADC/full well clips), ``full_well`` e- (charge above it
    bleeds along the column), ``qe`` relative quantum efficiency per filter.
    """

    chip_id: int
    col: int
    row: int
    x0: int
    y0: int
    axis_x: float
    axis_y: float
    nominal_axis_x: float
    nominal_axis_y: float
    gain: float
    read_noise: float
    bias_level: float
    saturate: int
    qe: dict[str, float]

    @property
    def extname(self) -> str:
        """FITS extension name, 'CCD1'...'CCDn'."""
        return f"CCD{self.chip_id}"

    @property
    def ccdname(self) -> str:
        """Serial-number-like detector name."""
        return f"WSC-{self.chip_id:02d}"

    @property
    def full_well(self) -> float:
        """Charge (e-) at which a pixel saturates: the data-section bias plus this reads ``saturate``."""
        return (self.saturate - self.bias_level) * self.gain


@dataclass(frozen=True)
class Camera:
    """The mosaic: ``ncols`` x ``nrows`` grid of chips; ``r_corner`` (px) is the distance from the optical
    axis to the farthest data pixel corner, the unit of every field-dependent pattern."""

    nx: int
    ny: int
    overscan: int
    gap: int
    ncols: int
    nrows: int
    chips: tuple[Chip, ...]
    r_corner: float

    def focal_plane(self, chip: Chip, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chip pixel coordinates (0-based) -> true focal-plane offsets (u, v) from the optical axis (px)."""
        return x - chip.axis_x, y - chip.axis_y


def grid_shape(n_chips: int) -> tuple[int, int]:
    """(ncols, nrows) for n chips: the squarest exact factorisation (8 -> 4x2, 10 -> 5x2) unless it is
    too elongated (7 -> 3x3 with two empty slots)."""
    ncols = min(c for c in range(1, n_chips + 1) if n_chips % c == 0 and c * c >= n_chips)
    if ncols * ncols <= 3 * n_chips:
        return ncols, n_chips // ncols
    ncols = math.ceil(math.sqrt(n_chips))
    return ncols, math.ceil(n_chips / ncols)


def build_camera(config: SimConfig) -> Camera:
    """Lay out the chips (row-major from the bottom-left, CCD1 at DETSEC origin) and draw electronics."""
    rng = stream(config.seed, "camera")
    ncols, nrows = grid_shape(config.n_chips)
    nx, ny, gap = config.chip_nx, config.chip_ny, config.gap
    width = ncols * nx + (ncols - 1) * gap
    height = nrows * ny + (nrows - 1) * gap
    axis_mx, axis_my = (width - 1) / 2.0, (height - 1) / 2.0
    chips = []
    r_corner = 0.0
    for k in range(config.n_chips):
        col, row = k % ncols, k // ncols
        x0, y0 = col * (nx + gap), row * (ny + gap)
        mount = rng.normal(0.0, 1.5, 2) if config.n_chips > 1 else np.zeros(2)
        axis_x, axis_y = round(axis_mx - x0 - mount[0], 3), round(axis_my - y0 - mount[1], 3)
        for cx in (-0.5, nx - 0.5):
            for cy in (-0.5, ny - 0.5):
                r_corner = max(r_corner, math.hypot(cx - axis_x, cy - axis_y))
        bias_level = round(float(rng.uniform(950.0, 1100.0)), 1)
        chips.append(Chip(
            chip_id=k + 1, col=col, row=row, x0=x0, y0=y0,
            axis_x=float(axis_x), axis_y=float(axis_y),
            nominal_axis_x=axis_mx - x0, nominal_axis_y=axis_my - y0,
            gain=round(float(rng.uniform(1.6, 2.4)), 3),
            read_noise=round(float(rng.uniform(3.5, 6.5)), 2),
            bias_level=bias_level,
            saturate=min(65535, round(float(bias_level + rng.uniform(58000.0, 62000.0)))),
            qe={f: round(float(1.0 + rng.normal(0.0, 0.03)), 4) for f in config.filters},
        ))
    return Camera(nx=nx, ny=ny, overscan=config.overscan, gap=gap, ncols=ncols, nrows=nrows,
                  chips=tuple(chips), r_corner=r_corner)
