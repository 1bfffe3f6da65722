"""The pieces of the astrometry science on synthetic data with exact truth: detection, matching, TAN-SIP
fitting and the photometric zeropoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points
from scipy.special import erf

from services.astrometry.science import AstrometryParams, detect_stars, fit_tan_sip, fit_zeropoint, match_stars
from services.astrometry.science.detect import FLAG_EXTENDED, FLAG_MASKED
from services.astrometry.science.match import apply_affine
from wisp.errors import InvalidInput

SHAPE = (1024, 1024)


def _true_wcs(rotation_deg: float = 0.7) -> WCS:
    """A TAN-SIP WCS with a general third-order distortion (~2 px at the corners)."""
    t = np.radians(rotation_deg)
    s = 0.26 / 3600.0
    h = fits.Header()
    h.update({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CRVAL1": 150.1, "CRVAL2": 2.2,
              "CRPIX1": 600.5, "CRPIX2": 300.5, "CD1_1": -s * np.cos(t), "CD1_2": s * np.sin(t),
              "CD2_1": s * np.sin(t), "CD2_2": s * np.cos(t), "A_ORDER": 3, "B_ORDER": 3,
              "A_2_0": 2e-7, "A_1_1": -1e-7, "A_0_2": 3e-7, "B_2_0": -2e-7, "B_0_2": 1e-7, "B_1_1": 2e-7,
              "A_3_0": 1.2e-9, "A_1_2": 1.2e-9, "B_2_1": 1.2e-9, "B_0_3": 1.2e-9, "A_2_1": 3e-10})
    return WCS(h)


def _grid_error_px(fitted: WCS, truth: WCS, step: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:SHAPE[0]:step, 0:SHAPE[1]:step]
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    tx, ty = truth.all_world2pix(*fitted.all_pix2world(x, y, 0), 0)
    return np.asarray(np.hypot(tx - x, ty - y))


def test_fit_recovers_an_exact_tan_sip() -> None:
    truth = _true_wcs()
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1023, 300), rng.uniform(0, 1023, 300)
    ra, dec = truth.all_pix2world(x, y, 0)
    sol = fit_tan_sip(x, y, ra, dec, crpix=(600.5, 300.5), shape=SHAPE)
    assert sol.sip_order == 3 and sol.n_rejected == 0 and sol.n_ref == 300
    assert _grid_error_px(sol.wcs, truth).max() < 1e-5
    assert sol.rms_mas < 1e-3 and sol.inverse_max_px < 1e-3
    assert sol.wcs.wcs.ctype[0] == "RA---TAN-SIP" and sol.wcs.sip.ap is not None
    assert np.allclose(sol.wcs.wcs.crval, [150.1, 2.2], atol=1e-10)
    back_x, back_y = sol.wcs.all_world2pix(ra, dec, 0)
    assert np.max(np.hypot(back_x - x, back_y - y)) < 1e-5
    # the inverse polynomial alone (AP/BP, what non-iterative readers use) is good to 1e-3 px
    fx, fy = sol.wcs.sip_foc2pix(*sol.wcs.sip_pix2foc(x + 1, y + 1, 1), 1)
    assert np.max(np.hypot(fx - x - 1, fy - y - 1)) < 1e-3
    assert sol.header["A_ORDER"] == 3 and sol.header["AP_ORDER"] == 4


def test_fit_clips_outliers_and_matches_astropy() -> None:
    truth = _true_wcs(-1.2)
    rng = np.random.default_rng(4)
    n = 250
    x, y = rng.uniform(0, 1023, n), rng.uniform(0, 1023, n)
    ra, dec = truth.all_pix2world(x, y, 0)
    noise = rng.normal(0, 20.0, (2, n)) / 3.6e6  # 20 mas per axis
    ra = ra + noise[0] / np.cos(np.radians(dec))
    dec = dec + noise[1]
    bad = np.arange(0, n, 50)
    dec[bad] += 2.0 / 3600.0  # 2 arcsec off: wrong matches
    sol = fit_tan_sip(x, y, ra, dec, crpix=(600.5, 300.5), shape=SHAPE)
    assert not sol.used[bad].any() and sol.n_rejected >= bad.size and sol.n_rejected < bad.size + 5
    assert 20 < sol.rms_mas < 36  # radial RMS of 20 mas per axis is 28 mas
    assert abs(sol.mean_dra_mas) < 5 and abs(sol.sigma_ddec_mas - 20) < 4
    assert _grid_error_px(sol.wcs, truth).max() < 0.1
    ok = sol.used
    astropy_wcs = fit_wcs_from_points((x[ok], y[ok]), SkyCoord(ra[ok], dec[ok], unit="deg"),
                                      proj_point=SkyCoord(150.1, 2.2, unit="deg"), sip_degree=3)
    assert np.median(_grid_error_px(sol.wcs, astropy_wcs)) < 0.02


def test_fit_lowers_the_order_for_few_stars_and_refuses_too_few() -> None:
    truth = _true_wcs()
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 1023, 12), rng.uniform(0, 1023, 12)
    ra, dec = truth.all_pix2world(x, y, 0)
    sol = fit_tan_sip(x, y, ra, dec, crpix=(600.5, 300.5), shape=SHAPE)
    assert sol.sip_order == 1 and sol.wcs.wcs.ctype[0] == "RA---TAN" and sol.wcs.sip is None
    with pytest.raises(InvalidInput) as err:
        fit_tan_sip(x[:2], y[:2], ra[:2], dec[:2], crpix=(600.5, 300.5))
    assert err.value.code == "astrometry.too_few"


def _pixel_gaussian(image: np.ndarray, x0: float, y0: float, flux: float, sigma: float) -> None:
    """Add a pixel-integrated circular Gaussian (exact sub-pixel position)."""
    ny, nx = image.shape
    ex = np.diff(erf((np.arange(nx + 1) - 0.5 - x0) / (np.sqrt(2) * sigma))) / 2
    ey = np.diff(erf((np.arange(ny + 1) - 0.5 - y0) / (np.sqrt(2) * sigma))) / 2
    image += flux * np.outer(ey, ex)


def test_detection_centroids_fluxes_and_flags() -> None:
    rng = np.random.default_rng(6)
    ny, nx = 300, 300
    truth = np.zeros((ny, nx))
    stars = [(rng.uniform(20, 280), rng.uniform(20, 280)) for _ in range(25)]
    stars = [s for i, s in enumerate(stars) if all(np.hypot(s[0] - t[0], s[1] - t[1]) > 25 for t in stars[:i])]
    for x0, y0 in stars:
        _pixel_gaussian(truth, x0, y0, 2e4, 1.5)
    _pixel_gaussian(truth, 150.3, 10.0, 3e4, 5.0)  # a fuzzy galaxy
    sky = 100.0
    sci = (truth + sky + rng.normal(0, 1, truth.shape) * np.sqrt(truth + sky)).astype(np.float32)
    sci[200, 10] += 4000.0  # a cosmic ray: one pixel
    dq = np.zeros(truth.shape, np.uint8)
    sx, sy = stars[0]
    cx, cy = round(sx), round(sy)
    dq[cy - 1:cy + 2, cx - 1:cx + 2] = 4  # a "saturated" core
    table = detect_stars(sci, (truth + sky).astype(np.float32), dq)
    every = detect_stars(sci, (truth + sky).astype(np.float32), dq, stars_only=False)
    found = {(round(x), round(y)) for x, y in zip(table["x"], table["y"], strict=True)}
    assert (round(sx), round(sy)) not in found and (10, 200) not in found
    galaxy = every[np.hypot(every["x"] - 150.3, every["y"] - 10.0) < 2]
    assert len(galaxy) == 1 and galaxy["flags"][0] & FLAG_EXTENDED
    masked = every[np.hypot(every["x"] - sx, every["y"] - sy) < 2]
    assert len(masked) == 1 and masked["flags"][0] & FLAG_MASKED
    assert len(table) == len(stars) - 1
    for row in table:
        d = [np.hypot(row["x"] - x, row["y"] - y) for x, y in stars]
        assert min(d) < 0.05  # px: windowed centroids at S/N ~ 100
    assert np.all(np.abs(table["flux"] / 2e4 - 1) < 0.03)  # a 6 r_half aperture holds a Gaussian
    assert abs(np.median(table["fwhm"]) - 2.355 * 1.5) < 0.2  # 2 r_half = FWHM for a Gaussian
    assert list(table["flux"]) == sorted(table["flux"], reverse=True)


def _sky_and_detections(rng: np.random.Generator, shift: tuple[float, float], rot_deg: float, scale: float,
                        n_ref: int = 4000) -> tuple[np.ndarray, ...]:
    """References over a wide area (header pixels), and detections = the true transform of those on the
    chip, 30 % missing, plus 80 spurious sources."""
    ny, nx = SHAPE
    rx, ry = rng.uniform(-2500, 3500, n_ref), rng.uniform(-2500, 3500, n_ref)
    mag = rng.uniform(14, 21, n_ref)
    c, s = np.cos(np.radians(rot_deg)) * scale, np.sin(np.radians(rot_deg)) * scale
    t = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
    dx, dy = apply_affine(t, rx, ry)
    on = np.flatnonzero((dx > 5) & (dx < nx - 5) & (dy > 5) & (dy < ny - 5) & (rng.uniform(size=n_ref) > 0.3))
    det_x = np.concatenate([dx[on] + rng.normal(0, 0.1, on.size), rng.uniform(0, nx, 80)])
    det_y = np.concatenate([dy[on] + rng.normal(0, 0.1, on.size), rng.uniform(0, ny, 80)])
    flux = np.concatenate([10 ** (-0.4 * (mag[on] - 25)), rng.uniform(10, 1e4, 80)])
    return rx, ry, mag, det_x, det_y, flux, on


@pytest.mark.parametrize(("shift", "rot"), [((1500.0, -900.0), 2.3), ((-300.0, 1700.0), -2.7), ((10.0, 5.0), 0.0)])
def test_match_recovers_large_offsets_and_rotations(shift: tuple[float, float], rot: float) -> None:
    rng = np.random.default_rng(7)
    rx, ry, mag, det_x, det_y, flux, on = _sky_and_detections(rng, shift, rot, 1.004)
    m = match_stars(det_x, det_y, flux, rx, ry, mag, shape=SHAPE, max_shift_px=8 * 60 / 0.26)
    assert m.n > 0.9 * on.size
    assert np.array_equal(on[m.det_index[m.det_index < on.size]], m.ref_index[m.det_index < on.size])
    assert m.det_index.max() < on.size  # no spurious detection matched
    assert abs(m.rotation_deg - rot) < 0.01 and abs(m.scale - 1.004) < 1e-4 and m.rms_px < 0.2


def test_match_never_invents_a_solution() -> None:
    rng = np.random.default_rng(8)
    for _ in range(15):
        n_det, n_ref = int(rng.integers(20, 400)), int(rng.integers(50, 6000))
        with pytest.raises(InvalidInput) as err:
            match_stars(rng.uniform(0, 1024, n_det), rng.uniform(0, 1024, n_det), rng.uniform(1, 9, n_det),
                        rng.uniform(-1900, 2900, n_ref), rng.uniform(-1900, 2900, n_ref), rng.uniform(14, 21, n_ref),
                        shape=SHAPE, max_shift_px=1846)
        assert err.value.code == "astrometry.no_match" and "n_detected" in err.value.details
    with pytest.raises(InvalidInput, match="need 6 of each"):
        match_stars(np.arange(3.0), np.arange(3.0), np.ones(3), np.arange(50.0), np.arange(50.0), np.ones(50),
                    shape=SHAPE, max_shift_px=100, min_matches=6)


def test_zeropoint_convention_clipping_and_errors() -> None:
    rng = np.random.default_rng(9)
    zp_true, exptime, n = 25.3, 60.0, 80
    mag = rng.uniform(15, 20, n)
    flux = exptime * 10 ** (-0.4 * (mag - zp_true))
    flux_err = np.sqrt(flux + 2000.0)
    measured = flux + rng.normal(0, 1, n) * flux_err
    measured[:4] *= 1.5  # blends
    zp = fit_zeropoint(measured, flux_err, mag, exptime, 1.3, ref_mag_err=np.full(n, 0.01), extinction=0.1)
    assert abs(zp.zp - zp_true) < 4 * zp.zp_err and zp.zp_err < 0.005
    assert not zp.used[:4].any() and zp.n_rejected >= 4 and zp.n == zp.used.sum()
    assert zp.zp_airmass0 == pytest.approx(zp.zp + 0.13)
    np.testing.assert_allclose(zp.magnitude(flux), mag + zp.zp - zp_true, atol=1e-12)
    with pytest.raises(InvalidInput) as err:
        fit_zeropoint(np.array([1.0, -1.0]), np.ones(2), np.array([20.0, 20.0]), 10.0)
    assert err.value.code == "photometry.too_few"


def test_params_reject_typos_with_a_hint() -> None:
    params = AstrometryParams.from_dict({"sip_order": 2, "max_shift_arcmin": 10.0})
    assert params.sip_order == 2 and params.to_dict()["max_shift_arcmin"] == 10.0
    with pytest.raises(InvalidInput, match="did you mean 'sip_order'"):
        AstrometryParams.from_dict({"sip_ordr": 2})
    with pytest.raises(InvalidInput, match="sip_order"):
        AstrometryParams(sip_order=9)


def test_centroids_agree_with_sextractor_on_a_real_image(shared_data: Any) -> None:
    """ESO NTT image of the sep project: our windowed centroids against SExtractor's XWIN/YWIN."""
    folder = shared_data / "sep-ntt"
    image = fits.getdata(folder / "image.fits").astype(np.float32)
    rms = fits.getdata(folder / "rms.fits").astype(np.float32)
    cat = np.loadtxt(folder / "image.cat")  # columns listed in its header; XWIN/YWIN are 1-based
    table = detect_stars(image, rms=rms, thresh=1.5, stars_only=False)
    bright = (cat[:, 15] / cat[:, 16] > 50) & (cat[:, 20] == 0)
    assert bright.sum() >= 4
    d = np.hypot(cat[bright, 3:4] - 1 - table["x"][None, :], cat[bright, 4:5] - 1 - table["y"][None, :])
    offsets = d.min(axis=1)  # px; the window differs for extended objects (sep's r_half is not SExtractor's)
    assert np.median(offsets) < 0.01 and np.max(offsets) < 0.1
