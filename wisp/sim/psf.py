"""Moffat PSF varying over the focal plane, and pixel-integrated source stamps (stars and galaxies).

Stamps are rendered on a sub-pixel grid (``oversample`` x ``oversample`` samples per pixel, sample
centres at ``(k + 0.5) / n - 0.5`` px from the pixel centre) and summed per pixel, so a stamp is the
integral of the profile over each pixel and sub-pixel positions are exact. Positions are 0-based chip
pixel coordinates; a stamp of radius R starts at pixel ``(round(x) - R, round(y) - R)``. Fluxes in e-.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft

STAR_OVERSAMPLE = 5
GALAXY_OVERSAMPLE = 3
PSF_FLUX_FRACTION = 0.997  # a faint star's stamp holds at least this fraction of its flux
MAX_RADIUS = 80  # px


@dataclass(frozen=True)
class PsfModel:
    """PSF of one exposure. With rho = (u, v) / r_corner (focal-plane offsets over the corner radius):

    FWHM = ``fwhm`` * (1 + ``radial`` |rho|^2 + ``tilt_x`` rho_x + ``tilt_y`` rho_y), arcsec, the geometric
    mean of the major and minor axis FWHM; ellipticity vector (e1 + ``astig`` (rho_x^2 - rho_y^2),
    e2 + ``astig`` 2 rho_x rho_y) with modulus e = 1 - b/a and major axis at theta = atan2(e2, e1) / 2
    (counter-clockwise from +x). Profile: Moffat (1 + q^2)^-``beta``.
    """

    fwhm: float
    beta: float
    radial: float
    tilt_x: float
    tilt_y: float
    e1: float
    e2: float
    astig: float

    def at(self, u: np.ndarray, v: np.ndarray, r_corner: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FWHM arcsec, ellipticity 1 - b/a, major-axis angle deg from +x) at focal-plane offsets (px)."""
        rx, ry = np.asarray(u) / r_corner, np.asarray(v) / r_corner
        fwhm = self.fwhm * (1.0 + self.radial * (rx**2 + ry**2) + self.tilt_x * rx + self.tilt_y * ry)
        e1 = self.e1 + self.astig * (rx**2 - ry**2)
        e2 = self.e2 + self.astig * 2.0 * rx * ry
        return fwhm, np.hypot(e1, e2), np.degrees(0.5 * np.arctan2(e2, e1))


def moffat_axes(fwhm_px: float, e: float, beta: float) -> tuple[float, float]:
    """Moffat scale lengths (px) along the major and minor axes for a geometric-mean FWHM (px)."""
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return alpha / math.sqrt(1.0 - e), alpha * math.sqrt(1.0 - e)


def _moffat(dx: np.ndarray, dy: np.ndarray, a: float, b: float, theta_deg: float, beta: float) -> np.ndarray:
    """Unit-integral elliptical Moffat surface brightness (per px^2) at offsets (px)."""
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    q2 = ((dx * c + dy * s) / a) ** 2 + ((dy * c - dx * s) / b) ** 2
    return (beta - 1.0) / (math.pi * a * b) * (1.0 + q2) ** (-beta)


def star_radius(flux: float, fwhm_px: float, e: float, beta: float, floor_e: float = 0.5) -> int:
    """Stamp radius (px): holds ``PSF_FLUX_FRACTION`` of the flux and reaches down to ``floor_e`` e-/px."""
    a, b = moffat_axes(fwhm_px, e, beta)
    r_flux = a * math.sqrt((1.0 - PSF_FLUX_FRACTION) ** (1.0 / (1.0 - beta)) - 1.0)
    peak = flux * (beta - 1.0) / (math.pi * a * b)
    r_wing = a * math.sqrt(max(peak / floor_e, 1.0) ** (1.0 / beta) - 1.0)
    return min(MAX_RADIUS, math.ceil(max(r_flux, r_wing)))


def _subpixel_axis(centre: float, radius: int, n: int) -> tuple[int, np.ndarray]:
    """First pixel index of the stamp and the sub-pixel sample offsets (px) from ``centre``."""
    first = round(centre) - radius
    pix = np.arange(first, first + 2 * radius + 1, dtype=float) - centre
    return first, (pix[:, None] + (np.arange(n) + 0.5) / n - 0.5).ravel()


def _bin(fine: np.ndarray, n: int) -> np.ndarray:
    size = fine.shape[0] // n
    return fine.reshape(size, n, size, n).sum(axis=(1, 3))


def star_stamp(x: float, y: float, flux: float, fwhm_px: float, e: float, theta_deg: float, beta: float,
               radius: int) -> tuple[int, int, np.ndarray]:
    """(x_first, y_first, stamp e-/px) of a point source: the PSF integrated over each pixel."""
    n = STAR_OVERSAMPLE
    x0, dx = _subpixel_axis(x, radius, n)
    y0, dy = _subpixel_axis(y, radius, n)
    a, b = moffat_axes(fwhm_px, e, beta)
    fine = _moffat(dx[None, :], dy[:, None], a, b, theta_deg, beta)
    return x0, y0, _bin(fine, n) * (flux / n**2)


def sersic_b(n: float) -> float:
    """b_n such that r_e encloses half the light (Ciotti & Bertin 1999 expansion)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def galaxy_stamp(x: float, y: float, flux: float, r_e_px: float, n_sersic: float, q: float,
                 theta_deg: float, fwhm_px: float, e: float, psf_theta_deg: float,
                 beta: float) -> tuple[int, int, np.ndarray]:
    """(x_first, y_first, stamp e-/px) of a Sersic galaxy convolved with the PSF.

    The galaxy (half-light semi-major axis ``r_e_px``, axis ratio ``q``, major axis at ``theta_deg`` from
    +x) is tapered to zero between 3.5 and 4.5 r_e and normalised to ``flux``; the PSF kernel is cut at
    its ``PSF_FLUX_FRACTION`` radius and normalised to 1, and the stamp is padded by that radius, so the
    stamp sums to ``flux`` up to rounding.
    """
    n = GALAXY_OVERSAMPLE
    r_psf = star_radius(0.0, fwhm_px, e, beta)
    r_gal = math.ceil(4.5 * r_e_px) + 1
    _, dx = _subpixel_axis(x, r_gal, n)
    _, dy = _subpixel_axis(y, r_gal, n)
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    rell = np.hypot(dx[None, :] * c + dy[:, None] * s, (dy[:, None] * c - dx[None, :] * s) / q) / r_e_px
    taper = np.clip(4.5 - rell, 0.0, 1.0)
    gal = np.exp(-sersic_b(n_sersic) * (rell ** (1.0 / n_sersic) - 1.0)) * (0.5 - 0.5 * np.cos(np.pi * taper))
    gal *= flux / gal.sum()

    k = np.arange(-r_psf * n, r_psf * n + 1) / n  # kernel sample offsets (px), same spacing as the grid
    a, b = moffat_axes(fwhm_px, e, beta)
    kernel = _moffat(k[None, :], k[:, None], a, b, psf_theta_deg, beta)
    kernel[np.hypot(k[None, :], k[:, None]) > r_psf] = 0.0
    # Circular convolution on a grid larger than the stamp, the kernel centre at index 0: the galaxy sits
    # r_psf px from the stamp edges, so nothing wraps and this is the linear convolution.
    size = (2 * (r_gal + r_psf) + 1) * n
    shape = (fft.next_fast_len(size, real=True),) * 2
    padded = np.zeros(shape)
    padded[r_psf * n:r_psf * n + gal.shape[0], r_psf * n:r_psf * n + gal.shape[1]] = gal
    wrapped = np.zeros(shape)
    wrap = np.arange(-r_psf * n, r_psf * n + 1) % shape[0]
    wrapped[np.ix_(wrap, wrap)] = kernel / kernel.sum()
    conv = fft.irfft2(fft.rfft2(padded) * fft.rfft2(wrapped), shape)
    radius = r_gal + r_psf
    return round(x) - radius, round(y) - radius, _bin(np.maximum(conv[:size, :size], 0.0), n)
