"""The per-chip solve: detect -> match against the reference catalogue -> fit TAN-SIP -> re-match and refit
-> photometric zeropoint, and the FITS header the adapter stores as the solution product.

Header keywords besides the WCS: ASTRMS (radial RMS, mas), ASTNREF (stars kept), ASTNREJ (clipped),
ASTDRA/ASTDDEC (mean solution - reference on RA cos(dec)/Dec, mas), ASTSRA/ASTSDEC (their standard
deviations, mas), ASTORDER (SIP order used), ASTNDET (stars detected), ASTEPOCH (Julian year of the
reference positions), ASTOFFS (arcsec, header -> solved position of the chip centre), ASTROT (deg,
solved - header position angle); MAGZP (m = MAGZP - 2.5 log10(e-/s), at the airmass), MAGZPERR,
MAGZPN, MAGZPRMS (mag), MAGZPBND (reference band), MAGZPAM (airmass) when a zeropoint was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.spatial import cKDTree

from services.astrometry.science.columns import bands_of
from services.astrometry.science.detect import FLAG_CROWDED, detect_stars
from services.astrometry.science.fit import Solution, fit_tan_sip
from services.astrometry.science.match import Match, match_stars, nearest_pairs
from services.astrometry.science.params import AstrometryParams
from services.astrometry.science.photometry import ZeroPoint, fit_zeropoint
from services.astrometry.science.refcat import apply_proper_motion
from wisp.errors import InvalidInput
from wisp.sphere import separation

DEFAULT_REF_ERR_MAS = 20.0  # per axis, when the catalogue gives no position errors


@dataclass(frozen=True)
class ChipSolution:
    """The solved chip: ``wcs`` (TAN-SIP), ``header`` (WCS + WISP keywords, see the module docstring),
    the astrometric ``solution``, the ``zeropoint`` (None when it could not be measured: see
    ``warnings``), the initial ``match`` (indices into the references near the chip, not the input), the
    matched ``stars`` table (detections with ``ref_row``: row of the input reference table, ``ra_ref``,
    ``dec_ref``, ``mag_ref``, solved ``ra``/``dec``, ``dra_mas``/``ddec_mas``, ``used_astrom``,
    ``used_phot``) and the number of stars detected."""

    wcs: WCS
    header: fits.Header
    solution: Solution
    zeropoint: ZeroPoint | None
    match: Match
    stars: Table
    n_detected: int
    warnings: tuple[str, ...] = field(default=())


def _as_wcs(header_wcs: WCS | fits.Header) -> WCS:
    wcs = header_wcs if isinstance(header_wcs, WCS) else WCS(header_wcs)
    if not wcs.has_celestial or wcs.naxis != 2:
        raise InvalidInput("the header WCS must be 2-D celestial", code="astrometry.bad_wcs")
    return wcs


def _project(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World -> 0-based pixel with the full WCS (SIP included); the core WCS where that does not converge."""
    if ra.size == 0:
        return ra.copy(), dec.copy()
    try:
        x, y = wcs.all_world2pix(ra, dec, 0, quiet=True)
    except Exception:  # astropy raises various errors far outside a SIP's domain
        x, y = wcs.wcs_world2pix(ra, dec, 0)
    return np.asarray(x, float), np.asarray(y, float)


def _position_angle(wcs: WCS) -> float:
    """Position angle (deg, east of north) of the pixel +y axis."""
    cd = wcs.pixel_scale_matrix
    return float(np.degrees(np.arctan2(cd[0, 1], cd[1, 1])))


def _references(refcat: Table, epoch: float, band: str | None, params: AstrometryParams) -> tuple[Table, str | None]:
    """References moved to ``epoch`` with a magnitude column ``_mag`` for ordering (band, else any band)."""
    if "EPOCH" in refcat.meta:
        refs = apply_proper_motion(refcat, epoch)
    elif "pmra" in refcat.colnames and np.any(np.asarray(refcat["pmra"]) != 0):
        raise InvalidInput("reference catalogue has proper motions but no EPOCH", code="refcat.no_epoch")
    else:
        refs = refcat.copy()
    refs["_row"] = np.arange(len(refs))
    bands = bands_of(refs)
    use = band if band in refs.colnames else (bands[0] if bands else None)
    refs["_mag"] = np.asarray(refs[use], float) if use else np.zeros(len(refs))
    if params.ref_mag_limit is not None and use:
        refs = refs[~(np.asarray(refs["_mag"]) > params.ref_mag_limit)]
    return refs, (band if use == band else None)


def _weights(stars: Table, refs: Table, scale_mas: float, coeff: float) -> np.ndarray:
    """1-D position error (mas) per matched pair: reference error (+ proper motion) and centroid error."""
    if "ra_err" in refs.colnames and "dec_err" in refs.colnames:
        ref_err = np.sqrt(0.5 * (np.asarray(refs["ra_err"], float) ** 2 + np.asarray(refs["dec_err"], float) ** 2))
        ref_err = np.where(np.isfinite(ref_err), ref_err, DEFAULT_REF_ERR_MAS)
    else:
        ref_err = np.full(len(refs), DEFAULT_REF_ERR_MAS)
    snr = np.clip(np.asarray(stars["snr"], float), 1.0, None)
    return np.hypot(ref_err, coeff * np.asarray(stars["fwhm"], float) / snr * scale_mas)


def solve_chip(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, header_wcs: WCS | fits.Header,
               refcat_table: Table, *, epoch: float, exptime: float, airmass: float | None = None,
               band: str | None = None, params: AstrometryParams | None = None, saturation: float | None = None,
               extinction: float | None = None) -> ChipSolution:
    """Solve one reduced chip: ``sci`` (e-, background included), ``var`` (e-^2), ``dq`` (non-zero = bad),
    the approximate ``header_wcs`` (1-based FITS WCS of this chip), a standard reference table
    (:func:`~services.astrometry.science.refcat.read_table` / ``load_region``; positions at
    ``meta['EPOCH']`` are moved to ``epoch``, Julian year of the observation), ``exptime`` (s),
    ``airmass`` and the ``band`` whose reference magnitudes calibrate the zeropoint. Raises
    ``InvalidInput`` ``astrometry.no_match`` when no credible solution exists.
    """
    p = params or AstrometryParams()
    wcs0 = _as_wcs(header_wcs)
    ny, nx = sci.shape
    scale_deg = float(np.mean(proj_plane_pixel_scales(wcs0)))
    scale_mas = scale_deg * 3.6e6
    stars = detect_stars(sci, var, dq, thresh=p.detect_thresh, minarea=p.detect_minarea, aper_rhalf=p.aper_rhalf,
                         saturation=saturation, background_box=p.background_box)
    refs, zp_band = _references(refcat_table, epoch, band, p)
    cra, cdec = (float(v) for v in wcs0.all_pix2world((nx - 1) / 2.0, (ny - 1) / 2.0, 0))
    reach_deg = 0.5 * np.hypot(nx, ny) * scale_deg * 1.2 + p.max_shift_arcmin / 60.0
    refs = refs[separation(np.asarray(refs["ra"], float), np.asarray(refs["dec"], float), cra, cdec) < reach_deg]
    rx, ry = _project(wcs0, np.asarray(refs["ra"], float), np.asarray(refs["dec"], float))
    match = match_stars(stars["x"], stars["y"], stars["flux"], rx, ry, refs["_mag"], shape=(ny, nx),
                        max_shift_px=p.max_shift_arcmin * 60000.0 / scale_mas, max_rot_deg=p.max_rot_deg,
                        rot_step_deg=p.rot_step_deg, scale_tol=p.scale_tol, n_bright=p.n_bright,
                        radius_px=p.match_radius_px, min_matches=p.min_matches)
    bright = np.asarray(stars["snr"], float) >= p.astrom_min_snr
    if bright[match.det_index].sum() < p.astrom_min_keep:
        bright[:] = True  # too few bright stars: every matched star, weighted, is better than too few
    det_i, ref_i = match.det_index, match.ref_index
    det_i, ref_i = det_i[bright[det_i]], ref_i[bright[det_i]]
    crpix = (float(wcs0.wcs.crpix[0]), float(wcs0.wcs.crpix[1]))
    tree = cKDTree(np.column_stack([np.asarray(stars["x"], float), np.asarray(stars["y"], float)]))
    sol: Solution | None = None
    for rnd in range(p.refine_rounds + 1):
        det, ref = stars[det_i], refs[ref_i]
        sol = fit_tan_sip(det["x"], det["y"], ref["ra"], ref["dec"], crpix=crpix, sip_order=p.sip_order,
                          clip_sigma=p.clip_sigma, max_iter=p.max_iter, shape=(ny, nx),
                          sigma_mas=_weights(det, ref, scale_mas, p.centroid_coeff),
                          min_stars_per_term=p.min_stars_per_term)
        if rnd == p.refine_rounds:
            break
        px, py = _project(sol.wcs, np.asarray(refs["ra"], float), np.asarray(refs["dec"], float))
        near = np.flatnonzero((px > -5) & (px < nx + 4) & (py > -5) & (py < ny + 4))
        r_near, d_new = nearest_pairs(px[near], py[near], tree, p.final_radius_arcsec * 1000.0 / scale_mas)
        order = np.argsort(d_new, kind="stable")
        det_i, ref_i = d_new[order], near[r_near][order]
        det_i, ref_i = det_i[bright[det_i]], ref_i[bright[det_i]]
    assert sol is not None
    if sol.n_ref < p.min_matches:
        raise InvalidInput(f"no astrometric match: only {sol.n_ref} stars survive the fit (need {p.min_matches})",
                           code="astrometry.no_match", n_matched=sol.n_ref, min_matches=p.min_matches)
    det, ref = stars[det_i], refs[ref_i]
    table = det.copy()
    table["ref_row"] = np.asarray(ref["_row"], dtype=np.int64)
    table["ra_ref"], table["dec_ref"] = np.asarray(ref["ra"], float), np.asarray(ref["dec"], float)
    table["mag_ref"] = np.asarray(ref["_mag"], float)
    ra, dec = sol.wcs.all_pix2world(det["x"], det["y"], 0)
    table["ra"], table["dec"] = ra, dec
    table["dra_mas"], table["ddec_mas"], table["used_astrom"] = sol.dra_mas, sol.ddec_mas, sol.used
    warnings: list[str] = []
    zp: ZeroPoint | None = None
    big_snr = np.asarray(det["flux"], float) / np.clip(np.asarray(det["flux_err"], float), 1e-30, None)
    pick = (big_snr >= p.zp_min_snr) & np.isfinite(table["mag_ref"])
    pick &= (np.asarray(det["flags"]) & FLAG_CROWDED) == 0
    if zp_band is None:
        warnings.append(f"no reference magnitudes in band {band!r}: no zeropoint")
    else:
        err = np.asarray(ref[zp_band + "_err"], float) if zp_band + "_err" in ref.colnames else None
        try:
            zp = fit_zeropoint(np.where(pick, det["flux"], np.nan), det["flux_err"], table["mag_ref"], exptime,
                               airmass, ref_mag_err=err, clip=p.zp_clip, floor_mag=p.zp_floor_mag,
                               extinction=extinction)
        except InvalidInput as exc:
            warnings.append(f"zeropoint: {exc.message}")
    table["used_phot"] = zp.used if zp is not None else np.zeros(len(table), bool)
    header = _header(sol, zp, zp_band, wcs0, len(stars), epoch, (nx, ny), airmass)
    return ChipSolution(wcs=sol.wcs, header=header, solution=sol, zeropoint=zp, match=match, stars=table,
                        n_detected=len(stars), warnings=tuple(warnings))


def _header(sol: Solution, zp: ZeroPoint | None, band: str | None, wcs0: WCS, n_det: int, epoch: float,
            size: tuple[int, int], airmass: float | None) -> fits.Header:
    h = sol.header.copy()
    centre = ((size[0] - 1) / 2.0, (size[1] - 1) / 2.0)
    ra0, dec0 = wcs0.all_pix2world(*centre, 0)
    ra1, dec1 = sol.wcs.all_pix2world(*centre, 0)
    offset = float(separation(np.array(ra1), np.array(dec1), float(ra0), float(dec0))) * 3600.0
    rot = (_position_angle(sol.wcs) - _position_angle(wcs0) + 180.0) % 360.0 - 180.0
    cards: list[tuple[str, str | float | int | None, str]] = [
        ("ASTRMS", round(sol.rms_mas, 3), "[mas] radial RMS of reference residuals"),
        ("ASTNREF", sol.n_ref, "reference stars in the fit"),
        ("ASTNREJ", sol.n_rejected, "reference stars clipped"),
        ("ASTDRA", round(sol.mean_dra_mas, 3), "[mas] mean solution-ref on RA cos(Dec)"),
        ("ASTDDEC", round(sol.mean_ddec_mas, 3), "[mas] mean solution-ref on Dec"),
        ("ASTSRA", round(sol.sigma_dra_mas, 3), "[mas] std of RA cos(Dec) residuals"),
        ("ASTSDEC", round(sol.sigma_ddec_mas, 3), "[mas] std of Dec residuals"),
        ("ASTORDER", sol.sip_order, "SIP order used"),
        ("ASTNDET", n_det, "point sources detected"),
        ("ASTEPOCH", float(epoch), "[yr] Julian epoch of the reference positions"),
        ("ASTOFFS", round(offset, 3), "[arcsec] header -> solved chip centre"),
        ("ASTROT", round(float(rot), 5), "[deg] solved - header position angle"),
    ]
    if zp is not None:
        cards += [
            ("MAGZP", round(zp.zp, 5), "[mag] m = MAGZP - 2.5 log10(e-/s), at MAGZPAM"),
            ("MAGZPERR", round(zp.zp_err, 5), "[mag] error of MAGZP"),
            ("MAGZPN", zp.n, "stars in the zeropoint"),
            ("MAGZPRMS", round(zp.rms, 5), "[mag] RMS of zeropoint residuals"),
            ("MAGZPBND", band, "reference catalogue band"),
        ]
        if airmass is not None:
            cards.append(("MAGZPAM", float(airmass), "airmass of the zeropoint"))
    for card in cards:
        h.append(card)
    return h
