"""QC metrics on synthetic products with known truth (pixel-integrated Moffat stars on Gaussian noise)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from services.qc.science.metrics import FILE_KINDS, compute_metrics, refcat_metrics
from wisp.quality import KIND_METRICS
from wisp.sim import SimConfig, simulate_night
from wisp.sim.psf import star_radius, star_stamp

SCALE = 0.26  # arcsec/px


def add_source(img: np.ndarray, x: float, y: float, flux: float, fwhm: float, e: float, theta: float,
               beta: float) -> None:
    """Add a pixel-integrated elliptical Moffat (the simulator's renderer) to ``img`` in place."""
    ny, nx = img.shape
    x0, y0, stamp = star_stamp(x, y, flux, fwhm, e, theta, beta, star_radius(flux, fwhm, e, beta))
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + stamp.shape[1], nx), min(y0 + stamp.shape[0], ny)
    img[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def sky_image(n: int = 1024, *, fwhm: float = 3.5, beta: float = 3.0, e: float = 0.0, n_stars: int = 80,
              n_galaxies: int = 0, sky: float = 400.0, noise: float = 20.0, seed: int = 1) -> np.ndarray:
    """Stars (fluxes 1e4-1e6 e-) and optional broad, elongated galaxies on a flat sky with Gaussian noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n))
    for _ in range(n_stars):
        x, y = rng.uniform(30, n - 30, 2)
        add_source(img, x, y, 10 ** rng.uniform(4, 6), fwhm, e, 30.0, beta)
    for _ in range(n_galaxies):
        x, y = rng.uniform(30, n - 30, 2)
        add_source(img, x, y, 10 ** rng.uniform(4, 5.5), fwhm * rng.uniform(2, 4), 0.3, rng.uniform(0, 180), 1.5)
    return img + sky + rng.normal(0.0, noise, img.shape)


def reduced_hdul(sci: np.ndarray, noise: float = 20.0, *, var: bool = True, dq: bool = True,
                 header: dict[str, Any] | None = None) -> fits.HDUList:
    primary = fits.PrimaryHDU()
    primary.header.update({"EXPTIME": 100.0, "FILTER": "r", "PIXSCALE": SCALE, **(header or {})})
    hdus: list[Any] = [primary, fits.ImageHDU(sci.astype(np.float32), name="SCI")]
    if var:
        hdus.append(fits.ImageHDU(np.full(sci.shape, noise**2, np.float32), name="VAR"))
    if dq:
        bits = np.zeros(sci.shape, np.uint16)
        bits[:, 100] = 1  # a bad column: 1/1024 of the pixels
        bits[500:510, 500:510] |= 4
        hdus.append(fits.ImageHDU(bits, name="DQ"))
    return fits.HDUList(hdus)


@pytest.mark.parametrize(("fwhm", "beta", "galaxies"), [
    (3.5, 3.0, 0), (2.5, 3.0, 0), (6.0, 3.0, 0), (3.5, 2.5, 0), (3.5, 4.765, 0), (4.0, 3.0, 150)])
def test_seeing_and_noise_of_a_reduced_frame(fwhm: float, beta: float, galaxies: int) -> None:
    m = compute_metrics("reduced", reduced_hdul(sky_image(fwhm=fwhm, beta=beta, n_galaxies=galaxies)))
    assert m["seeing_px"] == pytest.approx(fwhm, rel=0.05)
    assert m["seeing_arcsec"] == pytest.approx(fwhm * SCALE, rel=0.05)
    assert m["noise_e"] == pytest.approx(20.0, rel=0.03)
    assert m["noise_ratio"] == pytest.approx(1.0, rel=0.03)
    diffuse = 0.02 if galaxies else 0.01  # galaxy wings add real diffuse light
    assert m["background_e"] == pytest.approx(400.0, rel=diffuse)
    assert m["background_rate_e_s"] == pytest.approx(m["background_e"] / 100.0, rel=1e-5)
    assert m["ellipticity"] < 0.03
    assert m["n_stars"] >= 20 and m["n_sources"] >= 70
    assert m["dq_badpix_fraction"] == pytest.approx(1 / 1024)
    assert m["dq_cosmic_fraction"] == pytest.approx(100 / 1024**2)
    assert m["dq_bad_fraction"] == pytest.approx((1024 + 100) / 1024**2)
    assert m["dq_trail_fraction"] == 0.0


def test_ellipticity_of_elongated_stars() -> None:
    m = compute_metrics("reduced", reduced_hdul(sky_image(e=0.15)))
    assert m["ellipticity"] == pytest.approx(0.15, abs=0.02)
    assert m["seeing_px"] == pytest.approx(3.5, rel=0.05)  # geometric mean of the axes


def reduce_simulated(raw: Path, truth: Path) -> fits.HDUList:
    """What the calib stage makes of a simcam frame, with the simulator's true flat and bad-pixel map."""
    with fits.open(raw) as h:
        hd, data = h[1].header, h[1].data.astype(float)
        nx = data.shape[1] - 32  # default overscan
        sci = (data[:, :nx] - np.median(data[:, nx:], axis=1)[:, None]) * hd["GAIN"]
        saturated = data[:, :nx] >= hd["SATURATE"]
        exptime = h[0].header["EXPTIME"]
    flat = fits.getdata(truth / "flat_r.fits", "CCD1")
    dq = np.where(fits.getdata(truth / "bpm.fits", "CCD1") > 0, 1, 0) | np.where(saturated, 2, 0)
    var = np.maximum(sci, 0.0) + hd["RDNOISE"] ** 2
    return fits.HDUList([fits.PrimaryHDU(header=fits.Header({"EXPTIME": exptime, "PIXSCALE": SCALE})),
                         fits.ImageHDU((sci / flat).astype(np.float32), name="SCI"),
                         fits.ImageHDU((var / flat**2).astype(np.float32), name="VAR"),
                         fits.ImageHDU(dq.astype(np.uint16), name="DQ")])


def test_seeing_of_a_simulated_night(tmp_path: Path) -> None:
    """The simulator's frames (Moffat PSF varying over the field, galaxies, Poisson noise, cosmics)."""
    config = SimConfig(seed=12, n_chips=1, filters=("r",), n_bias=1, n_flats_per_filter=1,
                       n_dither_per_field_filter=1, trail_every=0)
    night = simulate_night(config, tmp_path)
    raw = night.raw_files[-1]
    m = compute_metrics("reduced", reduce_simulated(raw, night.truth_dir))
    sources = fits.getdata(night.truth_dir / raw.name.replace(".fits", "_truth.fits"), "SOURCES")
    stars = sources["type"] == "star"
    assert m["seeing_arcsec"] == pytest.approx(float(np.median(sources["psf_fwhm"][stars])), rel=0.05)
    assert m["noise_ratio"] == pytest.approx(1.0, abs=0.05)
    assert m["ellipticity"] < 0.1 and m["n_stars"] >= 8


def test_pixel_scale_fallbacks() -> None:
    sci = sky_image(n=512, n_stars=30)
    no_scale = reduced_hdul(sci, header={"PIXSCALE": None})
    del no_scale[0].header["PIXSCALE"]
    m = compute_metrics("reduced", no_scale)
    assert "seeing_px" in m and "seeing_arcsec" not in m
    m = compute_metrics("reduced", no_scale, pixel_scale_arcsec=0.5)
    assert m["seeing_arcsec"] == pytest.approx(m["seeing_px"] * 0.5, rel=1e-5)
    wcs = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0, "CRPIX1": 256.0,
           "CRPIX2": 256.0, "CD1_1": -0.3 / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.3 / 3600}
    with_wcs = reduced_hdul(sci, header=wcs)
    del with_wcs[0].header["PIXSCALE"]
    m = compute_metrics("reduced", with_wcs, pixel_scale_arcsec=0.5)
    assert m["seeing_arcsec"] == pytest.approx(m["seeing_px"] * 0.3, rel=1e-4)


def test_optional_extensions_and_keywords_are_omitted_not_fatal() -> None:
    hdul = reduced_hdul(sky_image(n=256, n_stars=15), var=False, dq=False)
    del hdul[0].header["EXPTIME"]
    m = compute_metrics("reduced", hdul)
    assert "noise_e" in m and "noise_ratio" not in m and "background_rate_e_s" not in m
    assert not any(k.startswith("dq_") for k in m)


def test_empty_sky_and_fully_masked_frames() -> None:
    rng = np.random.default_rng(3)
    m = compute_metrics("reduced", reduced_hdul(100.0 + rng.normal(0, 5.0, (256, 256))))
    assert m["n_sources"] == 0 and m["n_stars"] == 0 and "seeing_px" not in m
    assert m["noise_e"] == pytest.approx(5.0, rel=0.03)
    m = compute_metrics("reduced", reduced_hdul(np.full((256, 256), np.nan)))
    assert m and all(k.startswith("dq_") for k in m)  # nothing to measure but the DQ plane


def test_a_file_without_sci_is_a_contract_violation() -> None:
    with pytest.raises(ValueError, match="no SCI extension"):
        compute_metrics("reduced", fits.HDUList([fits.PrimaryHDU()]))
    with pytest.raises(ValueError, match="no CATALOG extension"):
        compute_metrics("catalog", fits.HDUList([fits.PrimaryHDU()]))
    with pytest.raises(ValueError, match="no file metrics"):
        compute_metrics("refcat", fits.HDUList([fits.PrimaryHDU()]))


def test_reduced_1024_frame_is_fast() -> None:
    hdul = reduced_hdul(sky_image(n_galaxies=150))
    spent = []
    for _ in range(3):
        start = time.process_time()
        compute_metrics("reduced", hdul)
        spent.append(time.process_time() - start)
    assert min(spent) < 0.5, spent


def master(data: np.ndarray, **header: Any) -> fits.HDUList:
    primary = fits.PrimaryHDU()
    primary.header.update({"INSTRUME": "WISPSIM", "CHIP": "ccd1", "NIGHT": "2026-03-14", **header})
    return fits.HDUList([primary, fits.ImageHDU(data.astype(np.float32), name="SCI")])


def test_master_bias_and_flat_statistics() -> None:
    rng = np.random.default_rng(5)
    bias = 1000.0 + rng.normal(0, 2.0, (512, 512))
    bias[:, 7] += 500.0  # a hot column: clipped out of mean/std
    m = compute_metrics("master_bias", master(bias, NCOMBINE=5))
    assert m["mean_adu"] == pytest.approx(1000.0, abs=0.05)
    assert m["std_adu"] == pytest.approx(2.0, rel=0.03)
    assert m["pixel_noise_adu"] == pytest.approx(2.0, rel=0.03)
    assert m["n_combine"] == 5 and isinstance(m["n_combine"], int)
    xx = np.mgrid[0:512, 0:512][1]
    flat = 1.0 + 0.05 * (xx / 511.0 - 0.5) + rng.normal(0, 0.004, (512, 512))
    flat[:2, :] = 0.1  # two dead rows
    m = compute_metrics("master_flat", master(flat, FILTER="r"))
    assert m["mean_rel"] == pytest.approx(1.0, abs=0.002)
    assert m["pixel_noise_rel"] == pytest.approx(0.004, rel=0.05)
    assert m["std_rel"] > m["pixel_noise_rel"]  # includes the gradient
    assert m["low_fraction"] == pytest.approx(2 / 512)
    assert "n_combine" not in m


def test_astrometry_keywords() -> None:
    header = fits.Header({"CTYPE1": "RA---TAN-SIP", "CTYPE2": "DEC--TAN-SIP", "CRVAL1": 150.0, "CRVAL2": 2.0,
                          "CRPIX1": 512.0, "CRPIX2": 512.0, "CD1_1": -0.26 / 3600, "CD1_2": 0.0,
                          "CD2_1": 0.0, "CD2_2": 0.26 / 3600, "A_ORDER": 2, "B_ORDER": 2, "A_2_0": 1e-7,
                          "B_0_2": 1e-7, "ASTRMS": 42.5, "ASTNREF": 137, "ASTDRA": -3.0, "ASTDDEC": 2.0,
                          "ASTSRA": 30.0, "ASTSDEC": 31.0, "MAGZP": 25.07, "MAGZPERR": 0.012, "MAGZPN": 88})
    m = compute_metrics("astrometry", fits.HDUList([fits.PrimaryHDU(header=header)]))
    assert m == {"astrom_rms_mas": 42.5, "n_ref": 137, "astrom_dra_mas": -3.0, "astrom_ddec_mas": 2.0,
                 "astrom_rms_ra_mas": 30.0, "astrom_rms_dec_mas": 31.0, "zeropoint_mag": 25.07,
                 "zeropoint_err_mag": 0.012, "n_zeropoint": 88, "pixel_scale_arcsec": pytest.approx(0.26)}
    partial = compute_metrics("astrometry", fits.HDUList([fits.PrimaryHDU(header=fits.Header({"ASTRMS": 80.0}))]))
    assert partial == {"astrom_rms_mas": 80.0}


def catalog_hdul(n_stars: int = 60, n_galaxies: int = 120, seed: int = 2, fwhm: bool = True) -> fits.HDUList:
    rng = np.random.default_rng(seed)
    n = n_stars + n_galaxies
    table = Table({
        "RA": rng.uniform(150, 150.1, n), "DEC": rng.uniform(2, 2.1, n), "MAG_AUTO": rng.uniform(16, 23, n),
        "FLUX_AUTO": rng.uniform(1e3, 1e6, n),
        "SNR": np.r_[rng.uniform(25, 500, n_stars), rng.uniform(3, 300, n_galaxies)],
        "ELLIPTICITY": np.r_[rng.normal(0.05, 0.01, n_stars), rng.uniform(0.1, 0.6, n_galaxies)],
        "FLAGS": np.r_[np.zeros(max(n_stars - 5, 0), int), np.full(min(n_stars, 5), 4), np.zeros(n_galaxies, int)],
    })
    if fwhm:
        table["FWHM"] = np.r_[rng.normal(0.9, 0.02, n_stars), rng.uniform(1.3, 3.0, n_galaxies)]
    hdu = fits.BinTableHDU(table, name="CATALOG")
    hdu.header["MAGZP"] = 25.1
    return fits.HDUList([fits.PrimaryHDU(), hdu])


def test_catalog_metrics() -> None:
    m = compute_metrics("catalog", catalog_hdul())
    assert m["n_sources"] == 180 and m["zeropoint_mag"] == 25.1
    assert m["flagged_fraction"] == pytest.approx(5 / 180)
    assert m["median_fwhm_arcsec"] == pytest.approx(0.9, abs=0.02)
    assert 50 <= m["n_stars"] <= 60
    assert m["ellipticity"] == pytest.approx(0.05, abs=0.01)
    assert compute_metrics("coadd_catalog", catalog_hdul(fwhm=False)).keys() == {"n_sources", "zeropoint_mag",
                                                                                 "flagged_fraction"}
    empty = catalog_hdul(0, 0)
    assert compute_metrics("catalog", empty) == {"n_sources": 0, "zeropoint_mag": 25.1}


def test_coadd_coverage_and_depth() -> None:
    fwhm, noise, zp = 3.5, 20.0, 30.0
    sci = sky_image(fwhm=fwhm, noise=noise, sky=0.0)
    weight = np.full(sci.shape, 1.0 / noise**2, np.float32)
    weight[:, :256] = 0.0
    sci[:, :256] = 0.0
    primary = fits.PrimaryHDU()
    primary.header["MAGZP"] = zp
    sci_hdu = fits.ImageHDU(sci.astype(np.float32), name="SCI")
    sci_hdu.header["PIXSCALE"] = SCALE
    m = compute_metrics("coadd", fits.HDUList([primary, sci_hdu, fits.ImageHDU(weight, name="WEIGHT")]))
    assert m["coverage_fraction"] == pytest.approx(0.75)
    assert m["noise_ratio"] == pytest.approx(1.0, rel=0.03)
    assert m["seeing_arcsec"] == pytest.approx(fwhm * SCALE, rel=0.05)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / 3.0) - 1.0))
    nea = math.pi * alpha**2 * 5.0 / 4.0  # Moffat beta = 3: pi alpha^2 (2 beta - 1) / (beta - 1)^2
    assert m["depth_5sigma_mag"] == pytest.approx(zp - 2.5 * math.log10(5 * noise * math.sqrt(nea)), abs=0.05)
    assert m["zeropoint_mag"] == zp


def test_refcat_counts_come_from_the_stage_metrics() -> None:
    assert refcat_metrics({"n_sources": 1234, "radius_deg": 1.0}) == {"n_sources": 1234}
    assert refcat_metrics({"counts": {"12": 3, "13": 4}}) == {"n_sources": 7}
    assert refcat_metrics({}) == {}


def test_every_metric_is_declared_for_its_kind() -> None:
    made = {
        "reduced": compute_metrics("reduced", reduced_hdul(sky_image(n=256, n_stars=20))),
        "master_bias": compute_metrics("master_bias", master(np.ones((32, 32)), NCOMBINE=3)),
        "master_flat": compute_metrics("master_flat", master(np.ones((32, 32)), NCOMBINE=3)),
        "catalog": compute_metrics("catalog", catalog_hdul()),
        "refcat": refcat_metrics({"n_sources": 5}),
    }
    assert set(FILE_KINDS) | {"refcat"} == set(KIND_METRICS)
    for kind, metrics in made.items():
        assert set(metrics) <= set(KIND_METRICS[kind]), kind
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in metrics.values())
