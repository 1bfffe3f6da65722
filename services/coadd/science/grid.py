"""The common output grid of a coadd: a north-up, east-left TAN projection covering every input.

Footprints are sampled along the outer pixel edges of each input with its full (SIP) WCS; the grid is
centred (CRVAL at the central pixel) on the centre of the union's extent in its own tangent plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS

from wisp.errors import InvalidInput
from wisp.sphere import separation, tan_deproject, tan_project


def edge_pixels(shape: tuple[int, int], step: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """0-based (x, y) points every <= ``step`` px along the outer pixel edges of an image of ``shape``."""
    ny, nx = shape
    ex = np.linspace(-0.5, nx - 0.5, max(2, math.ceil(nx / step) + 1))
    ey = np.linspace(-0.5, ny - 0.5, max(2, math.ceil(ny / step) + 1))
    x = np.concatenate([ex, ex, np.full(ey.size, -0.5), np.full(ey.size, nx - 0.5)])
    y = np.concatenate([np.full(ex.size, -0.5), np.full(ex.size, ny - 0.5), ey, ey])
    return x, y


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])


def gnomonic(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) deg -> tangent-plane (xi east, eta north) deg at (ra0, dec0); refuses the far hemisphere."""
    if np.any(separation(np.asarray(ra), np.asarray(dec), ra0, dec0) >= 90.0):
        raise InvalidInput("the inputs span more than a hemisphere", code="coadd.grid")
    return tan_project(np.asarray(ra), np.asarray(dec), ra0, dec0)


def _deproject(xi: float, eta: float, ra0: float, dec0: float) -> tuple[float, float]:
    ra, dec = tan_deproject(np.array(xi), np.array(eta), ra0, dec0)
    return float(ra), float(dec)


def local_pixel_scale(wcs: WCS, shape: tuple[int, int]) -> float:
    """Local pixel scale (arcsec, square root of the pixel area) at the image centre, SIP included."""
    cx, cy = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    ra, dec = wcs.all_pix2world(np.array([cx, cx + 0.5, cx - 0.5, cx, cx]),
                                np.array([cy, cy, cy, cy + 0.5, cy - 0.5]), 0)
    xi, eta = gnomonic(ra, dec, float(ra[0]), float(dec[0]))
    det = (xi[1] - xi[2]) * (eta[3] - eta[4]) - (xi[3] - xi[4]) * (eta[1] - eta[2])
    return math.sqrt(abs(det)) * 3600.0


def tan_wcs(ra: float, dec: float, scale_arcsec: float, shape: tuple[int, int]) -> WCS:
    """North-up, east-left TAN WCS of ``shape`` (ny, nx) with (ra, dec) deg at the central pixel."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s = scale_arcsec / 3600.0
    wcs.wcs.cd = [[-s, 0.0], [0.0, s]]
    wcs.pixel_shape = (shape[1], shape[0])
    wcs.wcs.set()
    return wcs


def target_grid(wcs_list: Sequence[WCS], shapes: Sequence[tuple[int, int]], *,
                pixel_scale_arcsec: float | None = None, margin_px: int = 10) -> tuple[WCS, tuple[int, int]]:
    """The (WCS, (ny, nx)) of a north-up TAN grid covering the union of the inputs' footprints.

    ``pixel_scale_arcsec`` defaults to the median of the inputs' local scales at their centres;
    ``margin_px`` blank pixels are added on every side. The shape is odd, CRVAL sits at the central pixel.
    """
    if not wcs_list or len(wcs_list) != len(shapes):
        raise InvalidInput("target_grid needs one shape per WCS and at least one input", code="coadd.grid")
    ra_parts, dec_parts = [], []
    for wcs, shape in zip(wcs_list, shapes, strict=True):
        ra, dec = wcs.all_pix2world(*edge_pixels(shape), 0)
        ra_parts.append(ra)
        dec_parts.append(dec)
    ra, dec = np.concatenate(ra_parts), np.concatenate(dec_parts)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise InvalidInput("an input WCS gives non-finite sky positions on its edges", code="coadd.grid")
    scale = pixel_scale_arcsec if pixel_scale_arcsec is not None else float(
        np.median([local_pixel_scale(w, s) for w, s in zip(wcs_list, shapes, strict=True)]))
    if not (scale > 0 and math.isfinite(scale)):
        raise InvalidInput(f"pixel scale must be positive, got {scale}", code="coadd.grid")
    v = _unit(ra, dec).sum(axis=1)
    ra0, dec0 = math.degrees(math.atan2(v[1], v[0])) % 360.0, math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
    for _ in range(4):  # move the tangent point to the centre of the extent; converges in a step or two
        xi, eta = gnomonic(ra, dec, ra0, dec0)
        ra0, dec0 = _deproject((xi.min() + xi.max()) / 2, (eta.min() + eta.max()) / 2, ra0, dec0)
    probe = tan_wcs(ra0, dec0, scale, (1, 1))  # central pixel at 0-based (0, 0)
    x, y = probe.wcs_world2pix(ra, dec, 0)
    half_x = math.ceil(float(np.abs(x).max())) + int(margin_px)
    half_y = math.ceil(float(np.abs(y).max())) + int(margin_px)
    shape_out = (2 * half_y + 1, 2 * half_x + 1)
    return tan_wcs(ra0, dec0, scale, shape_out), shape_out

