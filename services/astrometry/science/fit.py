"""TAN-SIP fitting by linear least squares, with sigma clipping and an inverse (AP/BP) fitted on a grid.

With u = x + 1 - CRPIX1, v = y + 1 - CRPIX2 (x, y 0-based px), the standard coordinates (xi, eta) of
the references on the tangent plane at CRVAL are polynomials of total order <= ``sip_order`` in (u, v):
``xi = sum a_pq u^p v^q``. The constant terms move CRVAL (iterated until they vanish), the linear terms
are the CD matrix, and the higher ones are CD times the SIP terms: ``A = CD^-1 (a_nonlinear, b_nonlinear)``.
So the whole TAN-SIP model is linear in its coefficients and needs no iterative optimiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.stats import norm as norm_dist

from wisp.errors import InvalidInput
from wisp.sphere import tan_deproject, tan_project

MAS_PER_DEG = 3.6e6
RAYLEIGH_MEDIAN = 1.1774  # median of |r| for a 2-D Gaussian of unit sigma per axis


@dataclass(frozen=True)
class Solution:
    """A fitted WCS (``header``: its FITS cards) and the residuals ``dra_mas`` = solution - reference on
    RA cos(dec) and ``ddec_mas``, mas, for every input star (``used``: kept by the clipping).

    Statistics are over the kept stars: ``n_ref`` of them, ``n_rejected`` clipped; ``rms_mas`` is the radial
    RMS sqrt(mean(dra^2 + ddec^2)), ``mean_*``/``sigma_*`` per axis; ``sip_order`` the order actually used
    (lowered when stars are too few for the requested one); ``inverse_max_px`` the worst AP/BP error on
    the chip grid.
    """

    wcs: WCS
    header: fits.Header
    rms_mas: float
    n_ref: int
    mean_dra_mas: float
    mean_ddec_mas: float
    sigma_dra_mas: float
    sigma_ddec_mas: float
    n_rejected: int
    sip_order: int
    inverse_max_px: float
    used: np.ndarray = field(repr=False)
    dra_mas: np.ndarray = field(repr=False)
    ddec_mas: np.ndarray = field(repr=False)


def _terms(order: int, lowest: int = 0) -> list[tuple[int, int]]:
    return [(p, n - p) for n in range(lowest, order + 1) for p in range(n, -1, -1)]


def _design(u: np.ndarray, v: np.ndarray, terms: list[tuple[int, int]], norm: float) -> np.ndarray:
    un, vn = u / norm, v / norm
    return np.column_stack([un**p * vn**q for p, q in terms])


def _solve(design: np.ndarray, values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted linear least squares; ``values`` (n, k) gives (terms, k) coefficients."""
    sw = np.sqrt(w)
    return np.asarray(np.linalg.lstsq(design * sw[:, None], values * sw[:, None], rcond=None)[0])


def _order_for(n: int, requested: int, per_term: float) -> int:
    order = requested
    while order > 1 and n < per_term * len(_terms(order)):
        order -= 1
    return order


def inverse_sip(a: dict[tuple[int, int], float], b: dict[tuple[int, int], float], order: int,
                u_range: tuple[float, float], v_range: tuple[float, float],
                n_grid: int = 32) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float], float]:
    """AP, BP (all terms up to ``order``) fitted on an ``n_grid``^2 grid spanning u_range x v_range (px from
    CRPIX) so that u = U + AP(U, V) where U = u + A(u, v); and the largest error on that grid (px)."""
    uu, vv = np.meshgrid(np.linspace(*u_range, n_grid), np.linspace(*v_range, n_grid))
    u, v = uu.ravel(), vv.ravel()
    big_u = u + sum(c * u**p * v**q for (p, q), c in a.items())
    big_v = v + sum(c * u**p * v**q for (p, q), c in b.items())
    terms = _terms(order)
    norm = max(float(np.max(np.abs(np.concatenate([big_u, big_v])))), 1.0)
    design = _design(big_u, big_v, terms, norm)
    cu, cv = _solve(design, np.column_stack([u - big_u, v - big_v]), np.ones_like(u)).T
    err = np.hypot(design @ cu - (u - big_u), design @ cv - (v - big_v))
    scale = [norm ** -(p + q) for p, q in terms]
    ap = {t: float(c * s) for t, c, s in zip(terms, cu, scale, strict=True)}
    bp = {t: float(c * s) for t, c, s in zip(terms, cv, scale, strict=True)}
    return ap, bp, float(err.max())


def wcs_header(crval: tuple[float, float], crpix: tuple[float, float], cd: np.ndarray,
               a: dict[tuple[int, int], float], b: dict[tuple[int, int], float], sip_order: int,
               ap: dict[tuple[int, int], float], bp: dict[tuple[int, int], float], ap_order: int) -> fits.Header:
    """A FITS TAN(-SIP) header (1-based CRPIX, deg, deg/px); plain TAN when ``sip_order`` < 2."""
    sip = sip_order >= 2
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"] = ("RA---TAN-SIP" if sip else "RA---TAN", "gnomonic projection" + (" + SIP" if sip else ""))
    h["CTYPE2"] = ("DEC--TAN-SIP" if sip else "DEC--TAN", "gnomonic projection" + (" + SIP" if sip else ""))
    h["CUNIT1"], h["CUNIT2"], h["RADESYS"] = "deg", "deg", "ICRS"
    h["CRVAL1"] = (float(crval[0]), "[deg] RA at the reference pixel")
    h["CRVAL2"] = (float(crval[1]), "[deg] Dec at the reference pixel")
    h["CRPIX1"] = (float(crpix[0]), "[px, 1-based] reference pixel")
    h["CRPIX2"] = (float(crpix[1]), "[px, 1-based] reference pixel")
    for i in (1, 2):
        for j in (1, 2):
            h[f"CD{i}_{j}"] = (float(cd[i - 1, j - 1]), "[deg/px]")
    if sip:
        for name, coeffs, order in (("A", a, sip_order), ("B", b, sip_order), ("AP", ap, ap_order),
                                    ("BP", bp, ap_order)):
            h[f"{name}_ORDER"] = (order, "SIP polynomial order")
            for (p, q), c in sorted(coeffs.items()):
                h[f"{name}_{p}_{q}"] = c
    return h


def residuals_mas(wcs: WCS, x: np.ndarray, y: np.ndarray, ra: np.ndarray,
                  dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(solution - reference) on RA cos(dec) and Dec, mas, for 0-based pixel positions."""
    ra_fit, dec_fit = wcs.all_pix2world(x, y, 0)
    dra = ((ra_fit - ra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec)) * MAS_PER_DEG
    return dra, (dec_fit - dec) * MAS_PER_DEG


def fit_tan_sip(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray, *, crpix: tuple[float, float],
                sip_order: int = 3, clip_sigma: float = 3.0, max_iter: int = 10, sigma_mas: np.ndarray | None = None,
                shape: tuple[int, int] | None = None, crval: tuple[float, float] | None = None,
                min_stars_per_term: float = 2.5) -> Solution:
    """Fit a TAN-SIP WCS to matched stars: pixel ``x, y`` (0-based) and reference ``ra, dec`` (deg, at the
    observation epoch); ``crpix`` is FITS 1-based and kept fixed; ``sigma_mas`` per-star 1-D position errors
    (weights 1/sigma^2; default equal). The order is lowered while there are fewer than ``min_stars_per_term``
    stars per polynomial term. Clipping (up to ``max_iter`` rounds, rejected stars may return) drops stars
    whose radial residual / ``sigma_mas`` lies beyond the 2-D tail of a 1-D ``clip_sigma`` cut (3 -> 3.44
    robust sigmas; sigma from the median residual). ``shape`` (ny, nx) sets the inverse-SIP grid
    (default: the extent of the stars). Raises ``InvalidInput`` ``astrometry.too_few`` below 3 stars.
    """
    x, y, ra, dec = (np.asarray(a, dtype=float) for a in (x, y, ra, dec))
    n = x.size
    if n < 3:
        raise InvalidInput(f"cannot fit a WCS to {n} stars (need 3)", code="astrometry.too_few", n_stars=n)
    sig = np.ones(n) if sigma_mas is None else np.clip(np.asarray(sigma_mas, float), 1e-3, None)
    w_all = 1.0 / sig**2
    u, v = x + 1.0 - crpix[0], y + 1.0 - crpix[1]
    if crval is None:
        vec = np.array([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                        np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))]).sum(axis=1)
        crval = (float(np.degrees(np.arctan2(vec[1], vec[0])) % 360.0),
                 float(np.degrees(np.arctan2(vec[2], np.hypot(vec[0], vec[1])))))
    keep = np.ones(n, dtype=bool)
    norm = max(float(np.max(np.abs(np.concatenate([u, v])))), 1.0)
    limit = float(np.sqrt(-2.0 * np.log(2.0 * norm_dist.sf(clip_sigma))))  # same tail as 1-D clip_sigma
    for rnd in range(max_iter + 1):
        order = _order_for(int(keep.sum()), sip_order, min_stars_per_term)
        terms = _terms(order)
        for _ in range(4):  # move CRVAL to where the constant terms vanish
            xi, eta = tan_project(ra, dec, *crval)
            design = _design(u, v, terms, norm)
            cx, cy = _solve(design[keep], np.column_stack([xi, eta])[keep], w_all[keep]).T
            new = tan_deproject(np.array(cx[0]), np.array(cy[0]), *crval)
            crval = (float(new[0]), float(new[1]))
            if np.hypot(cx[0], cy[0]) * MAS_PER_DEG < 1e-3:
                break
        xi, eta = tan_project(ra, dec, *crval)
        res = np.hypot(design @ cx - xi, design @ cy - eta) * MAS_PER_DEG / sig
        sigma_1d = float(np.median(res[keep])) / RAYLEIGH_MEDIAN
        new_keep = res <= limit * max(sigma_1d, 1e-9)
        if rnd == max_iter or new_keep.sum() < 3 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    scale_back = np.array([norm ** -(p + q) for p, q in terms])
    cx, cy = cx * scale_back, cy * scale_back
    coef_x = dict(zip(terms, cx, strict=True))
    coef_y = dict(zip(terms, cy, strict=True))
    cd = np.array([[coef_x[(1, 0)], coef_x[(0, 1)]], [coef_y[(1, 0)], coef_y[(0, 1)]]])
    cd_inv = np.linalg.inv(cd)
    a: dict[tuple[int, int], float] = {}
    b: dict[tuple[int, int], float] = {}
    for t in _terms(order, lowest=2):
        a[t] = float(cd_inv[0, 0] * coef_x[t] + cd_inv[0, 1] * coef_y[t])
        b[t] = float(cd_inv[1, 0] * coef_x[t] + cd_inv[1, 1] * coef_y[t])
    if shape is not None:
        u_range = (0.5 - crpix[0] - 0.02 * shape[1], shape[1] + 0.5 - crpix[0] + 0.02 * shape[1])
        v_range = (0.5 - crpix[1] - 0.02 * shape[0], shape[0] + 0.5 - crpix[1] + 0.02 * shape[0])
    else:
        u_range, v_range = (float(u.min()), float(u.max())), (float(v.min()), float(v.max()))
    ap_order = order + 1
    ap, bp, inv_err = inverse_sip(a, b, ap_order, u_range, v_range) if order >= 2 else ({}, {}, 0.0)
    header = wcs_header(crval, crpix, cd, a, b, order, ap, bp, ap_order)
    wcs = WCS(header)
    dra, ddec = residuals_mas(wcs, x, y, ra, dec)
    k = keep
    return Solution(
        wcs=wcs, header=header, rms_mas=float(np.sqrt(np.mean(dra[k] ** 2 + ddec[k] ** 2))), n_ref=int(k.sum()),
        mean_dra_mas=float(np.mean(dra[k])), mean_ddec_mas=float(np.mean(ddec[k])),
        sigma_dra_mas=float(np.std(dra[k])), sigma_ddec_mas=float(np.std(ddec[k])), n_rejected=int(n - k.sum()),
        sip_order=order, inverse_max_px=inv_err, used=keep, dra_mas=dra, ddec_mas=ddec)
