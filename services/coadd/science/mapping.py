"""The destination -> source pixel mapping of a resampling, interpolated from a coarse grid.

The exact mapping (destination pixel -> sky with the destination WCS -> source pixel with the full,
SIP-including source WCS) is evaluated on a regular grid of nodes every ``step`` px over the destination
box, together with the pixel-area ratio ``|det d(src)/d(dst)|`` (central differences, h = 0.5 px).
Every pixel then gets its source position and area ratio by bilinear interpolation of the nodes. The
interpolation error is measured at every cell centre whose source position is near the source image;
when it exceeds the tolerance the step is halved (down to exact evaluation at step 1).
Pixel coordinates are 0-based (numpy ``[y, x]``, pixel centres at integers) throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from wisp.errors import InvalidInput


def dst_to_src(dst_wcs: WCS, src_wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact mapping of destination pixel positions (0-based px) to source pixel positions (0-based px)."""
    ra, dec = dst_wcs.all_pix2world(x, y, 0)
    xs, ys = src_wcs.all_world2pix(ra, dec, 0, tolerance=1e-7, maxiter=50, quiet=True)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _nodes(start: int, stop: int, step: int) -> np.ndarray:
    """Regularly spaced node coordinates from ``start`` that reach at least ``stop - 1``."""
    n_cells = max(1, math.ceil((stop - 1 - start) / step))
    return start + step * np.arange(n_cells + 1, dtype=np.float64)


@dataclass(frozen=True)
class PixelMap:
    """Source x, y (px) and area ratio (destination pixel area / source pixel area) at the nodes of a
    regular grid (``step`` px, first node at ``origin`` = (y0, x0)); ``max_error`` is the largest
    interpolation error found at the checked cell centres (px)."""

    nodes: np.ndarray  # (3, ny_nodes, nx_nodes): xs, ys, area
    origin: tuple[int, int]
    step: int
    max_error: float

    def interpolate(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(3, len(rows), len(cols)) float64: xs, ys, area at destination pixels rows x cols (0-based)."""
        cy, ty = self._cells(rows, self.origin[0], self.nodes.shape[1])
        cx, tx = self._cells(cols, self.origin[1], self.nodes.shape[2])
        ty = ty[None, :, None]
        along_y = self.nodes[:, cy, :] * (1.0 - ty) + self.nodes[:, cy + 1, :] * ty
        return along_y[:, :, cx] * (1.0 - tx) + along_y[:, :, cx + 1] * tx

    def points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(3, n) float64: xs, ys, area at the scattered destination pixels (rows[i], cols[i]) (0-based)."""
        cy, ty = self._cells(rows, self.origin[0], self.nodes.shape[1])
        cx, tx = self._cells(cols, self.origin[1], self.nodes.shape[2])
        n = self.nodes
        along_y0 = n[:, cy, cx] * (1.0 - ty) + n[:, cy + 1, cx] * ty
        along_y1 = n[:, cy, cx + 1] * (1.0 - ty) + n[:, cy + 1, cx + 1] * ty
        return along_y0 * (1.0 - tx) + along_y1 * tx

    def _cells(self, coord: np.ndarray, start: int, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
        rel = (np.asarray(coord, dtype=np.float64) - start) / self.step
        cell = np.clip(np.floor(rel).astype(np.intp), 0, n_nodes - 2)
        return cell, rel - cell


def build_map(dst_wcs: WCS, src_wcs: WCS, src_shape: tuple[int, int], box: tuple[int, int, int, int], *,
              step: int = 32, tolerance_px: float = 1e-3, reach_px: float = 4.0) -> PixelMap:
    """The interpolated mapping over the destination box ``(y0, y1, x0, x1)`` (half-open, px).

    ``tolerance_px``: largest accepted interpolation error; ``reach_px``: cells whose centre maps within this
    distance of the source image are checked.
    """
    y0, y1, x0, x1 = box
    ny_src, nx_src = src_shape
    step = max(1, int(step))
    while True:
        gy, gx = _nodes(y0, y1, step), _nodes(x0, x1, step)
        yy, xx = np.meshgrid(gy, gx, indexing="ij")
        cyy, cxx = np.meshgrid(gy[:-1] + step / 2, gx[:-1] + step / 2, indexing="ij")
        h = 0.5
        px = np.concatenate([xx.ravel(), (xx + h).ravel(), (xx - h).ravel(), xx.ravel(), xx.ravel(), cxx.ravel()])
        py = np.concatenate([yy.ravel(), yy.ravel(), yy.ravel(), (yy + h).ravel(), (yy - h).ravel(), cyy.ravel()])
        sx, sy = dst_to_src(dst_wcs, src_wcs, px, py)
        n = xx.size
        parts_x = [sx[i * n:(i + 1) * n].reshape(xx.shape) for i in range(5)]
        parts_y = [sy[i * n:(i + 1) * n].reshape(xx.shape) for i in range(5)]
        dxdx, dydx = (parts_x[1] - parts_x[2]) / (2 * h), (parts_y[1] - parts_y[2]) / (2 * h)
        dxdy, dydy = (parts_x[3] - parts_x[4]) / (2 * h), (parts_y[3] - parts_y[4]) / (2 * h)
        area = np.abs(dxdx * dydy - dxdy * dydx)
        nodes = np.stack([parts_x[0], parts_y[0], area])
        if not np.all(np.isfinite(nodes)):
            raise InvalidInput("the WCS mapping between the source and the destination is not finite",
                               code="coadd.wcs_mapping", step=step)
        if step == 1:
            return PixelMap(nodes, (y0, x0), step, 0.0)
        exact_x, exact_y = sx[5 * n:].reshape(cxx.shape), sy[5 * n:].reshape(cxx.shape)
        near = ((exact_x > -0.5 - reach_px) & (exact_x < nx_src - 0.5 + reach_px)
                & (exact_y > -0.5 - reach_px) & (exact_y < ny_src - 0.5 + reach_px))
        interp_x = 0.25 * (nodes[0, :-1, :-1] + nodes[0, 1:, :-1] + nodes[0, :-1, 1:] + nodes[0, 1:, 1:])
        interp_y = 0.25 * (nodes[1, :-1, :-1] + nodes[1, 1:, :-1] + nodes[1, :-1, 1:] + nodes[1, 1:, 1:])
        err = np.hypot(interp_x - exact_x, interp_y - exact_y)[near]
        if not np.all(np.isfinite(err)):
            raise InvalidInput("the WCS mapping between the source and the destination is not finite",
                               code="coadd.wcs_mapping", step=step)
        max_error = float(err.max()) if err.size else 0.0
        if max_error <= tolerance_px:
            return PixelMap(nodes, (y0, x0), step, max_error)
        step = max(1, step // 2)
