"""Gnomonic (TAN) projection with a radial SIP distortion, and the FITS WCS headers built from it.

A chip's WCS is the camera's: CRVAL = pointing (deg), CRPIX = optical axis in the chip's FITS pixel
coordinates (= 0-based + 1), CD = pixel scale x rotation (east left, north up at rotation 0), and SIP
terms ``f(u, v) = k u (u^2 + v^2)``, ``g(u, v) = k v (u^2 + v^2)`` of the focal-plane offsets
(u, v) in px. Because chips are not rotated, the same k describes every chip exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from wisp.sim.camera import Chip
from wisp.sphere import tan_deproject, tan_project


@dataclass(frozen=True)
class Pointing:
    """Where the optical axis points (deg, ICRS) and the camera rotation: the position angle (deg, east of
    north) of the chip +y axis; at rotation 0 north is +y and east is -x."""

    ra: float
    dec: float
    rotation: float = 0.0


def cd_matrix(scale_arcsec: float, rotation_deg: float) -> np.ndarray:
    """CD matrix (deg/px) for a pixel scale and a rotation; east is towards -x at rotation 0."""
    s, t = scale_arcsec / 3600.0, np.radians(rotation_deg)
    return s * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])


def sip_k(distortion_px: float, r_corner: float) -> float:
    """The radial SIP coefficient (px^-2) that displaces the mosaic corner by ``distortion_px``."""
    return distortion_px / r_corner**3


def sky_to_focal(ra: np.ndarray, dec: np.ndarray, pointing: Pointing, scale_arcsec: float,
                 k: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky (deg) -> true focal-plane offsets (u, v) in px from the optical axis (SIP inverted exactly)."""
    xi, eta = tan_project(ra, dec, pointing.ra, pointing.dec)
    inv = np.linalg.inv(cd_matrix(scale_arcsec, pointing.rotation))
    big_u = inv[0, 0] * xi + inv[0, 1] * eta
    big_v = inv[1, 0] * xi + inv[1, 1] * eta
    big_r = np.hypot(big_u, big_v)
    r = big_r.copy()
    for _ in range(8):  # Newton on r + k r^3 = R, converges to machine precision for |k r^2| << 1
        r -= (r + k * r**3 - big_r) / (1.0 + 3.0 * k * r**2)
    ratio = np.divide(r, big_r, out=np.ones_like(r), where=big_r > 0)
    return big_u * ratio, big_v * ratio


def offset_sky(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """The point at tangent-plane offsets (arcsec, east/north) from (ra, dec)."""
    r, d = tan_deproject(np.array(east_arcsec / 3600.0), np.array(north_arcsec / 3600.0), ra, dec)
    return float(r), float(d)


def _base_cards(pointing: Pointing, crpix: tuple[float, float], scale_arcsec: float,
                sip: bool) -> list[tuple[str, object, str]]:
    cd = cd_matrix(scale_arcsec, pointing.rotation)
    suffix = "-SIP" if sip else ""
    return [
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN" + suffix, "gnomonic projection" + (" + SIP distortion" if sip else "")),
        ("CTYPE2", "DEC--TAN" + suffix, "gnomonic projection" + (" + SIP distortion" if sip else "")),
        ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""),
        ("RADESYS", "ICRS", "reference frame"),
        ("CRVAL1", round(pointing.ra, 10), "[deg] RA at the reference pixel"),
        ("CRVAL2", round(pointing.dec, 10), "[deg] Dec at the reference pixel"),
        ("CRPIX1", round(crpix[0], 6), "[px, 1-based] reference pixel (optical axis)"),
        ("CRPIX2", round(crpix[1], 6), "[px, 1-based] reference pixel (optical axis)"),
        ("CD1_1", float(cd[0, 0]), "[deg/px]"), ("CD1_2", float(cd[0, 1]), "[deg/px]"),
        ("CD2_1", float(cd[1, 0]), "[deg/px]"), ("CD2_2", float(cd[1, 1]), "[deg/px]"),
    ]


def header_wcs_cards(chip: Chip, pointing: Pointing, scale_arcsec: float) -> list[tuple[str, object, str]]:
    """The TAN-only WCS a raw file carries: the header pointing and the nominal (DETSEC) chip layout."""
    crpix = (chip.nominal_axis_x + 1.0, chip.nominal_axis_y + 1.0)
    return _base_cards(pointing, crpix, scale_arcsec, sip=False)


def true_wcs_header(chip: Chip, pointing: Pointing, scale_arcsec: float, k: float) -> fits.Header:
    """The exact WCS of a chip (TAN-SIP, 1-based FITS pixels), readable by ``astropy.wcs.WCS``."""
    header = fits.Header()
    for card in _base_cards(pointing, (chip.axis_x + 1.0, chip.axis_y + 1.0), scale_arcsec, sip=True):
        header.append(card)
    header.append(("A_ORDER", 3, "SIP polynomial order"))
    header.append(("B_ORDER", 3, "SIP polynomial order"))
    for name in ("A_3_0", "A_1_2", "B_2_1", "B_0_3"):
        header.append((name, k, "radial distortion k [px^-2]"))
    return header
