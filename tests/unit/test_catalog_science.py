"""Catalogue science on synthetic images with exact truth: photometry, sizes, classes, DQ, flags, contracts."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS
from scipy.special import erf

from services.catalog.science import COLUMNS, ExtractParams, extract, psf_fwhm, summary
from services.catalog.science import flags as F
from services.catalog.science.extract import magnitudes
from wisp import dq
from wisp.dq import BAD as DQ_BAD
from wisp.dq import COSMIC_RAY as DQ_COSMIC
from wisp.dq import SATURATED as DQ_SATURATED
from wisp.errors import InvalidInput

SCALE = 0.25    # arcsec/px
SKY = 300.0     # e-/px
RN = 5.0        # e-
SIGMA = 1.6     # px: Gaussian PSF, FWHM 3.77 px = 0.94"
EXPTIME = 60.0
ZP = 25.0       # mag for 1 e-/s


def gaussian(shape: tuple[int, int], x0: float, y0: float, flux: float, sigma: float) -> np.ndarray:
    """A pixel-integrated circular Gaussian (e-)."""
    def edges(n: int, c: float) -> np.ndarray:
        e = (np.arange(n + 1) - 0.5 - c) / (math.sqrt(2.0) * sigma)
        return np.diff(0.5 * erf(e))
    return flux * np.outer(edges(shape[0], y0), edges(shape[1], x0))


def moffat(shape: tuple[int, int], x0: float, y0: float, flux: float, fwhm: float, beta: float) -> np.ndarray:
    """A circular Moffat (e-) sampled on a 5x5 sub-grid per pixel."""
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    sub = (np.arange(5) - 2) / 5.0
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    for dy in sub:
        for dx in sub:
            img += (1.0 + ((xx + dx - x0) ** 2 + (yy + dy - y0) ** 2) / alpha**2) ** -beta
    return flux * img / 25.0 * (beta - 1.0) / (math.pi * alpha**2)


def observe(light: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """sci (e-, sky included) and its variance, with Gaussian-approximated shot and read noise."""
    var = SKY + light + RN**2
    sci = SKY + light + np.random.default_rng(seed).normal(0.0, np.sqrt(var))
    return sci.astype(np.float32), var.astype(np.float32)


STARS = [(40.3, 50.7, 2e4), (120.6, 60.2, 5e4), (200.1, 200.9, 1e5), (60.8, 190.4, 3e4), (150.5, 130.5, 8e3)]
GALAXY = (100.0, 200.0, 6e4, 5.0)  # x, y, flux, sigma px: clearly resolved


@pytest.fixture(scope="module")
def field() -> dict[str, np.ndarray]:
    shape = (256, 256)
    light = sum(gaussian(shape, x, y, f, SIGMA) for x, y, f in STARS)
    light = light + gaussian(shape, *GALAXY)
    sci, var = observe(light)
    return {"sci": sci, "var": var}


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [128.5, 128.5]
    w.wcs.cd = [[-SCALE / 3600, 0.0], [0.0, SCALE / 3600]]
    return w


def _run(sci: np.ndarray, var: np.ndarray | None = None, dq: np.ndarray | None = None, *, wcs: WCS | None = None,
         zeropoint: float | None = ZP, **params: Any) -> Table:
    return extract(sci, var, dq, wcs=wcs, zeropoint=zeropoint, exptime_s=EXPTIME, pixel_scale_arcsec=SCALE,
                   params=ExtractParams(**params))


def _nearest(cat: Table, x: float, y: float) -> tuple[int, float]:
    d = np.hypot(np.asarray(cat["X"]) - x, np.asarray(cat["Y"]) - y)
    return int(np.argmin(d)), float(d.min())


def test_stars_positions_fluxes_sizes_and_classes(field: dict[str, np.ndarray]) -> None:
    cat = _run(field["sci"], field["var"], wcs=_wcs())
    assert list(cat.colnames) == list(COLUMNS)
    assert len(cat) == len(STARS) + 1  # nothing spurious on this clean field
    w = _wcs()
    for x, y, flux in STARS:
        k, d = _nearest(cat, x, y)
        row = cat[k]
        assert d < 0.05, (x, y, d)
        assert d < 5 * max(row["XERR"], row["YERR"]) + 0.01
        # a Gaussian: the 8" (32 px) aperture holds everything, AUTO (>= 3.5 A) more than 99 %
        assert row["FLUX_APER"][2] == pytest.approx(flux, abs=4 * row["FLUXERR_APER"][2])
        assert row["FLUX_AUTO"] == pytest.approx(flux, rel=0.02, abs=4 * row["FLUXERR_AUTO"])
        assert row["FLUX_APER"][0] < row["FLUX_APER"][1]
        assert row["MAG_AUTO"] == pytest.approx(ZP - 2.5 * math.log10(row["FLUX_AUTO"] / EXPTIME), abs=1e-9)
        assert row["MAGERR_AUTO"] == pytest.approx(1.0857 * row["FLUXERR_AUTO"] / row["FLUX_AUTO"], rel=1e-3)
        assert row["FWHM"] == pytest.approx(2.3548 * SIGMA * SCALE, rel=0.03)
        # SExtractor's (sep's) half-light radius of a pixelated Gaussian runs ~3 % high
        assert row["FLUX_RADIUS"] == pytest.approx(1.1774 * SIGMA, rel=0.06)
        assert row["ELLIPTICITY"] < 0.1 and row["FLAGS"] == 0 and row["CLASS"] == 1.0
        assert row["SNR"] == pytest.approx(row["FLUX_AUTO"] / row["FLUXERR_AUTO"])
        assert row["BACKGROUND"] == pytest.approx(SKY, abs=3.0)
        ra, dec = w.pixel_to_world_values(row["X"], row["Y"])
        assert (row["RA"], row["DEC"]) == pytest.approx((float(ra), float(dec)), abs=1e-10)
    k, _ = _nearest(cat, GALAXY[0], GALAXY[1])
    assert cat["CLASS"][k] == 0.0 and cat["FWHM"][k] > 2.5 * 2.3548 * SIGMA * SCALE
    assert cat.meta["PSFFWHM"] == pytest.approx(2.3548 * SIGMA * SCALE, rel=0.03)
    assert psf_fwhm(cat, min_snr=20) == pytest.approx(2.3548 * SIGMA * SCALE, rel=0.03)
    s = summary(cat, min_snr=20)
    assert (s["n_sources"], s["n_point"], s["n_extended"], s["n_flagged"]) == (6, 5, 1, 0)
    assert s["median_ellipticity"] < 0.1 and s["median_background"] == pytest.approx(SKY, abs=3.0)


@pytest.mark.parametrize("beta", [2.5, 4.5])
def test_fwhm_follows_the_profile_not_a_gaussian_assumption(beta: float) -> None:
    fwhm = 4.0
    light = np.sum([moffat((128, 128), x, y, 5e4, fwhm, beta) for x, y in [(40.2, 40.7), (90.5, 85.1), (35.9, 95.3)]],
                   axis=0)
    sci, var = observe(light, seed=2)
    cat = _run(sci, var)
    assert len(cat) == 3
    assert np.allclose(cat["FWHM"] / SCALE, fwhm, rtol=0.03)
    # 2 x half-light radius would be the Gaussian answer: wrong by 10-40 % for these wings
    assert not np.allclose(2 * cat["FLUX_RADIUS"], fwhm, rtol=0.08)


def test_input_untouched_and_deterministic(field: dict[str, np.ndarray]) -> None:
    sci, var = field["sci"].copy(), field["var"].copy()
    dq = np.zeros(sci.shape, np.uint16)
    dq[:, 30] = DQ_BAD
    a = _run(sci, var, dq)
    b = _run(sci, var, dq)
    assert np.array_equal(sci, field["sci"]) and np.array_equal(var, field["var"])
    assert all(np.array_equal(a[c], b[c], equal_nan=True) for c in a.colnames)


def test_bad_column_through_a_star_neither_splits_nor_biases_it() -> None:
    x0, y0, flux = 60.0, 64.3, 4e4
    sci, var = observe(gaussian((128, 128), x0, y0, flux, SIGMA) + gaussian((128, 128), 20.5, 100.2, 2e4, SIGMA))
    dq = np.zeros(sci.shape, np.uint16)
    dq[:, 58] = DQ_BAD            # a dead column 2 px from the centre
    sci[:, 58] = 0.0
    dq[100:102, 100:104] = DQ_COSMIC  # a masked cosmic ray
    sci[100:102, 100:104] = 5e4
    cat = _run(sci, var, dq)
    assert len(cat) == 2
    k, d = _nearest(cat, x0, y0)
    assert d < 0.1 and cat["FLAGS"][k] & F.BADPIX and cat["FLAGS_APER"][k][0] & F.BADPIX
    assert cat["FLUX_AUTO"][k] == pytest.approx(flux, rel=0.03)
    clean = cat[1 - k]
    assert clean["FLAGS"] == 0 and clean["FLAGS_APER"][2] == 0
    # without DQ the dead column and the cosmic ray are taken at face value
    assert len(_run(sci, var)) > 2


def test_saturated_truncated_and_blended_flags() -> None:
    shape = (128, 128)
    light = (gaussian(shape, 64.0, 64.0, 2e5, SIGMA) + gaussian(shape, 1.5, 80.0, 3e4, SIGMA)
             + gaussian(shape, 28.0, 30.0, 3e4, SIGMA) + gaussian(shape, 35.0, 30.0, 2e4, SIGMA))
    sci, var = observe(light)
    dq = np.where(sci > 8000, DQ_SATURATED, 0).astype(np.uint16)
    cat = _run(sci, var, dq)
    flags = {(round(float(r["X"])) // 8, round(float(r["Y"])) // 8): int(r["FLAGS"]) for r in cat}
    assert flags[(8, 8)] & F.SATURATED and not flags[(8, 8)] & F.TRUNCATED
    assert any(v & F.TRUNCATED for (i, _), v in flags.items() if i == 0)
    blended = [v for (i, j), v in flags.items() if j in (3, 4) and i in (3, 4)]
    assert len(blended) == 2 and all(v & F.BLENDED for v in blended)
    assert all(F.describe(v) for v in blended)
    # the same from a saturation level instead of DQ (SExtractor's SATUR_LEVEL)
    cat2 = _run(sci, var, None, saturation_e=SKY + 8000)
    k, _ = _nearest(cat2, 64.0, 64.0)
    assert cat2["FLAGS"][k] & F.SATURATED


def test_no_variance_no_zeropoint_no_wcs(field: dict[str, np.ndarray]) -> None:
    cat = _run(field["sci"], None, zeropoint=None)
    assert len(cat) == len(STARS) + 1
    assert np.isnan(cat["MAG_AUTO"]).all() and np.isnan(cat["RA"]).all() and np.isnan(cat["MAG_APER"]).all()
    assert "MAGZP" not in cat.meta and cat.meta["EXPTIME"] == EXPTIME and cat.meta["APER03"] == 8.0
    # global background RMS + shot noise: the errors agree with the variance-map ones
    with_var = _run(field["sci"], field["var"])
    assert np.allclose(np.sort(cat["FLUXERR_AUTO"]), np.sort(with_var["FLUXERR_AUTO"]), rtol=0.1)
    no_poisson = _run(field["sci"], None, source_poisson=False)
    assert (no_poisson["FLUXERR_AUTO"] < cat["FLUXERR_AUTO"]).all()


def test_magnitudes_are_nan_without_positive_flux_or_zeropoint() -> None:
    flux, err = np.array([600.0, 0.0, -5.0, np.nan]), np.array([6.0, 1.0, 1.0, 1.0])
    mag, magerr = magnitudes(flux, err, 25.0, 60.0)
    assert mag[0] == pytest.approx(25.0 - 2.5 * math.log10(10.0)) and magerr[0] == pytest.approx(1.0857e-2, rel=1e-3)
    assert np.isnan(mag[1:]).all() and np.isnan(magerr[1:]).all()
    assert np.isnan(magnitudes(flux, err, None, 60.0)[0]).all()


def test_empty_image_gives_an_empty_catalogue() -> None:
    sci, var = observe(np.zeros((96, 96)))
    cat = _run(sci, var)
    assert len(cat) == 0 and list(cat.colnames) == list(COLUMNS) and cat["FLUX_APER"].shape == (0, 3)
    assert math.isnan(psf_fwhm(cat)) and summary(cat)["n_sources"] == 0


def test_params_are_validated_with_hints() -> None:
    p = ExtractParams()
    assert (p.detect_thresh, p.minarea, p.apertures_arcsec, p.back_size, p.deblend_nthresh, p.deblend_cont,
            p.kron_factor, p.kron_min_radius) == (1.5, 5, (2.0, 4.0, 8.0), 64, 32, 0.005, 2.5, 3.5)
    assert ExtractParams.from_dict(p.to_dict()) == p
    assert ExtractParams.from_dict({"apertures_arcsec": [3, 6]}).apertures_arcsec == (3.0, 6.0)
    with pytest.raises(InvalidInput, match="did you mean 'detect_thresh'"):
        ExtractParams.from_dict({"detect_tresh": 2.0})
    for bad in [{"detect_thresh": 0}, {"apertures_arcsec": ()}, {"back_filter_size": 2}, {"filter_kernel": "tophat"},
                {"deblend_cont": 2.0}, {"minarea": 0}]:
        with pytest.raises(InvalidInput) as err:
            ExtractParams(**bad)  # type: ignore[arg-type]
        assert err.value.code == "catalog.params"


def test_bad_inputs_are_invalid_input() -> None:
    sci, var = observe(np.zeros((64, 64)))
    cases = [lambda: _run(sci[0]), lambda: _run(sci, var[:10]), lambda: _run(sci, var, np.zeros((64, 64), float)),
             lambda: _run(sci, var, np.full((64, 64), DQ_BAD, np.uint16)),
             lambda: extract(sci, var, None, wcs=None, zeropoint=None, exptime_s=0.0, pixel_scale_arcsec=SCALE)]
    for case in cases:
        with pytest.raises(InvalidInput):
            case()



def test_default_dq_bits_follow_the_weight_map() -> None:
    p = ExtractParams()
    # every pixel the weight map zeroes is either left out (interpolated) or flagged as saturated
    assert p.dq_mask_bits | p.dq_saturated_bits == dq.WEIGHT_BAD_BITS and not p.dq_mask_bits & dq.INTERPOLATED


def test_catalogue_writes_to_fits_without_loss(field: dict[str, np.ndarray], tmp_path: Any) -> None:
    cat = _run(field["sci"], field["var"], wcs=_wcs())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unit or header value may be dropped
        cat.write(tmp_path / "cat.fits")
        back = Table.read(tmp_path / "cat.fits")
    assert back.colnames == cat.colnames and back["FLUX_APER"].shape == cat["FLUX_APER"].shape
    assert np.array_equal(back["FLAGS"], cat["FLAGS"]) and back.meta["PSFFWHM"] == cat.meta["PSFFWHM"]
