"""WCS conversions the peers need: SIP (astropy, our truth) to TPV (the AstrOmatic tools' PV polynomials).

SWarp ignores SIP keywords, so the true TAN-SIP WCS of each chip is re-expressed as TPV: the polynomial
maps intermediate coordinates (x, y) = CD·(p - CRPIX) (deg) to (ξ, η). A cubic SIP on a linear CD is exactly
a cubic TPV, so a least-squares fit on a pixel grid reproduces it to floating-point accuracy (checked).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

# TPV term order (PV1_k): 0:1, 1:x, 2:y, 3:r, 4:x², 5:xy, 6:y², 7:x³, 8:x²y, 9:xy², 10:y³; PV2 swaps x and y.
_TERMS = [(0, 0), (1, 0), (0, 1), None, (2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3)]


def _tan_project(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) deg -> gnomonic standard coordinates (ξ, η) in deg about (ra0, dec0)."""
    a, d, a0, d0 = np.radians(ra), np.radians(dec), np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cols = [x**i * y**j for t in _TERMS if t is not None for i, j in [t]]
    return np.column_stack(cols)


def sip_to_tpv(header: fits.Header, shape: tuple[int, int], n: int = 33) -> tuple[fits.Header, float]:
    """A TPV header (``CTYPE RA---TAN`` + ``PV1_*``/``PV2_*``, the convention SWarp/SCAMP read) equivalent to
    the TAN-SIP WCS in ``header``, and the largest position difference (mas) over the chip."""
    wcs = WCS(header)
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, n), np.linspace(-0.5, ny - 0.5, n))
    px, py = gx.ravel(), gy.ravel()
    crpix = wcs.wcs.crpix - 1.0
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.wcs.get_pc() * wcs.wcs.cdelt[:, None]
    du, dv = px - crpix[0], py - crpix[1]
    lin = cd @ np.vstack([du, dv])
    ra, dec = wcs.all_pix2world(px, py, 0)
    world = np.vstack(_tan_project(ra, dec, float(wcs.wcs.crval[0]), float(wcs.wcs.crval[1])))
    x, y = lin
    a = _design(x, y)
    c1, *_ = np.linalg.lstsq(a, world[0], rcond=None)
    a2 = _design(y, x)
    c2, *_ = np.linalg.lstsq(a2, world[1], rcond=None)
    out = fits.Header()
    for key in ("WCSAXES", "RADESYS", "EQUINOX"):
        if key in header:
            out[key] = header[key]
    out["CTYPE1"], out["CTYPE2"] = "RA---TAN", "DEC--TAN"
    out["CUNIT1"], out["CUNIT2"] = "deg", "deg"
    out["CRVAL1"], out["CRVAL2"] = float(wcs.wcs.crval[0]), float(wcs.wcs.crval[1])
    out["CRPIX1"], out["CRPIX2"] = float(wcs.wcs.crpix[0]), float(wcs.wcs.crpix[1])
    for (i, j), v in zip([(1, 1), (1, 2), (2, 1), (2, 2)], cd.ravel(), strict=True):
        out[f"CD{i}_{j}"] = float(v)
    k_terms = [k for k, t in enumerate(_TERMS) if t is not None]
    for k, v1, v2 in zip(k_terms, c1, c2, strict=True):
        out[f"PV1_{k}"] = float(v1)
        out[f"PV2_{k}"] = float(v2)
    check = out.copy()
    check["CTYPE1"], check["CTYPE2"] = "RA---TPV", "DEC--TPV"
    ra0, dec0 = wcs.all_pix2world(px, py, 0)
    ra1, dec1 = WCS(check).all_pix2world(px, py, 0)
    err = np.hypot((ra1 - ra0) * np.cos(np.radians(dec0)), dec1 - dec0) * 3.6e6
    return out, float(err.max())
