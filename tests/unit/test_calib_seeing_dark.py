"""The PSF FWHM estimate of a reduced chip (for the cosmic-ray detector) and the dark subtraction of
``reduce_frame``, on synthetic data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from services.calib.science import MasterBias, MasterFlat, reduce_frame
from services.calib.science.darks import MasterDark, dark_for_exposure
from services.calib.science.seeing import SeeingParams, estimate_fwhm
from wisp.dq import BAD, SATURATED


def star_field(fwhm: float, n_stars: int, *, beta: float = 3.0, size: int = 384, seed: int = 1,
               sky: float = 500.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moffat stars (fluxes 3e3-3e5 e-) on a flat sky, Poisson + 5 e- read noise; SCI, VAR, DQ."""
    rng = np.random.default_rng(seed)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy, xx = np.mgrid[0:size, 0:size]
    light = np.full((size, size), sky)
    for _ in range(n_stars):
        x0, y0 = rng.uniform(20, size - 20, 2)
        r2 = (xx - x0) ** 2 + (yy - y0) ** 2
        prof = (1.0 + r2 / alpha**2) ** (-beta)
        light += 10 ** rng.uniform(3.5, 5.5) * prof / prof.sum()
    sci = (rng.poisson(light) + rng.normal(0.0, 5.0, light.shape)).astype(np.float32)
    return sci, (light + 25.0).astype(np.float32), np.zeros(light.shape, np.uint16)


@pytest.mark.parametrize("fwhm", [2.5, 3.6, 5.0])
def test_fwhm_of_moffat_stars(fwhm: float) -> None:
    sci, var, dq = star_field(fwhm, 60)
    rng = np.random.default_rng(2)
    for _ in range(40):  # cosmic-ray hits: sharp, must not pull the estimate
        sci[rng.integers(0, 384), rng.integers(0, 384)] += 3000.0
    est = estimate_fwhm(sci, var, dq)
    # point-sampled Moffats: the fit removes a pixel's width (1/12 px^2 in each axis) in quadrature
    expected = np.sqrt(fwhm**2 - 8 * np.log(2) / 12)
    assert est.fwhm_px == pytest.approx(expected, rel=0.03), est
    assert est.n_stars >= 20 and "isolated, unsaturated" in est.reason


def test_masked_and_saturated_stars_are_left_out() -> None:
    sci, var, dq = star_field(3.6, 60)
    yy, xx = np.mgrid[0:384, 0:384]
    big = 2.0 * np.exp(-((xx - 200) ** 2 + (yy - 200) ** 2) / (2 * 6.0**2))  # a wide blob, flagged saturated
    sci += (2e5 * big).astype(np.float32)
    dq[big > 0.5] |= SATURATED
    dq[:, 100] |= BAD
    est = estimate_fwhm(sci, var, dq)
    assert est.fwhm_px == pytest.approx(np.sqrt(3.6**2 - 8 * np.log(2) / 12), rel=0.03)


def test_too_few_stars_gives_no_estimate_and_says_why() -> None:
    sci, var, dq = star_field(3.6, 3)
    est = estimate_fwhm(sci, var, dq)
    assert est.fwhm_px is None and est.n_stars <= 3
    assert est.reason.startswith("only ") and "(need 5)" in est.reason
    blank = estimate_fwhm(np.full((64, 64), 100.0, np.float32), np.full((64, 64), 100.0, np.float32))
    assert blank.fwhm_px is None and blank.n_stars == 0
    with pytest.raises(ValueError):
        estimate_fwhm(sci, var[:10], dq)
    assert estimate_fwhm(sci, var, dq, SeeingParams(min_stars=2)).fwhm_px is None  # no cluster of 3


def test_reduce_subtracts_the_dark_and_carries_its_noise() -> None:
    rng = np.random.default_rng(4)
    ny, nx, gain, rn, t = 40, 50, 2.0, 5.0, 120.0
    bias = rng.normal(0.0, 0.5, (ny, nx)).astype(np.float32)
    flat = rng.uniform(0.9, 1.1, (ny, nx)).astype(np.float32)
    rate = np.full((ny, nx), 0.25, np.float32)  # ADU/s
    rate[7, 9] = 20.0  # a hot pixel
    rate_var = np.full((ny, nx), 1e-4, np.float32)
    master = MasterDark(rate=rate, var=rate_var, n_used=np.full((ny, nx), 3, np.uint16), exptime=300.0, n_frames=3,
                        rejected=(), level=0.25)
    signal_e = 400.0 * flat  # sky, flat-fielded by the detector
    dark_adu, dark_var = dark_for_exposure(master, t)
    raw = np.zeros((ny, nx + 8), np.float32)
    raw[:, :nx] = 1000.0 + bias + signal_e / gain + dark_adu
    raw[:, nx:] = 1000.0
    mb = MasterBias(image=bias, var=np.full((ny, nx), 0.04, np.float32), n_used=None, noise=(), n_frames=5,
                    rejected=())
    mf = MasterFlat(image=flat, var=None, n_used=None, level=1.0, level_rate=1.0, levels=(), n_frames=3, rejected=())
    kw = dict(datasec=(slice(0, ny), slice(0, nx)), biassec=(slice(0, ny), slice(nx, nx + 8)), master_bias=mb,
              master_flat=mf, gain=gain, read_noise=rn, saturation=65535.0)
    with_dark = reduce_frame(raw, **kw, dark=dark_adu, dark_var=dark_var)  # type: ignore[arg-type]
    without = reduce_frame(raw, **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose(with_dark.sci, 400.0, rtol=1e-4)  # the hot pixel too
    np.testing.assert_allclose(without.sci - with_dark.sci, dark_adu * gain / flat, rtol=1e-4)
    # VAR: the pixel's charge (signal + dark) + read noise + bias and dark master noise, through the flat
    expected = (signal_e + dark_adu * gain + rn**2 + gain**2 / 12 + gain**2 * (0.04 + dark_var)) / flat**2
    np.testing.assert_allclose(with_dark.var, expected, rtol=1e-4)
    np.testing.assert_allclose(without.var, (signal_e + dark_adu * gain + rn**2 + gain**2 / 12 + gain**2 * 0.04)
                               / flat**2, rtol=1e-4)
    assert not with_dark.dq.any()
    with pytest.raises(ValueError, match="dark has shape"):
        reduce_frame(raw, **kw, dark=dark_adu[:5])  # type: ignore[arg-type]
