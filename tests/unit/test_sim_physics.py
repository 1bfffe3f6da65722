"""Physics of the simulated pixels: every raw pixel is explained by the truth plus the stated noise."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from wisp.sim import SimConfig, SimResult, simulate_night
from wisp.sim.artifacts import Trail, bleed
from wisp.sim.detector import BPM_HOT
from wisp.sim.expose import MASK_BLEED, MASK_CR, MASK_SATURATED, MASK_TRAIL
from wisp.sim.psf import galaxy_stamp, star_radius, star_stamp

# small chips: more stars and cosmic rays than the real sky has, so that every test has enough of them
CONFIG = SimConfig(n_chips=2, chip_nx=256, chip_ny=256, n_bias=2, n_flats_per_filter=1,
                   n_dither_per_field_filter=2, trail_every=2, cr_rate=20.0, star_density=80000.0)
NX = NY = 256


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return simulate_night(CONFIG, tmp_path_factory.mktemp("physics"))


@pytest.fixture(scope="module")
def camera(night: SimResult) -> dict[str, Any]:
    return json.loads((night.truth_dir / "night.json").read_text())["camera"]


def _raw(path: Path, k: int) -> np.ndarray:
    return fits.getdata(path, k).astype(float)


def _truth_of(night: SimResult, raw: Path) -> fits.HDUList:
    return fits.open(night.truth_dir / raw.name.replace(".fits", "_truth.fits"))


def _stamp_box(row: Any, pixel_scale: float, beta: float) -> tuple[int, int, np.ndarray]:
    """Re-render one truth-table source with the documented PSF/galaxy model."""
    fwhm_px = row["psf_fwhm"] / pixel_scale
    if row["type"] == "star":
        radius = star_radius(row["flux_model"], fwhm_px, row["psf_e"], beta)
        return star_stamp(row["x"], row["y"], row["flux_model"], fwhm_px, row["psf_e"], row["psf_theta"], beta,
                          radius)
    return galaxy_stamp(row["x"], row["y"], row["flux_model"], row["gal_re"], row["gal_n"], row["gal_q"],
                        row["gal_theta"], fwhm_px, row["psf_e"], row["psf_theta"], beta)


def _add(image: np.ndarray, x0: int, y0: int, stamp: np.ndarray) -> None:
    ny, nx = image.shape
    s = stamp.shape[0]
    xa, xb, ya, yb = max(x0, 0), min(x0 + s, nx), max(y0, 0), min(y0 + s, ny)
    if xa < xb and ya < yb:
        image[ya:yb, xa:xb] += stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def _model(tr: fits.HDUList, k: int, chip: dict[str, Any], night: SimResult, skip: int = -1) -> dict[str, Any]:
    """Expected raw ADU of chip k from the truth files, and its noise sigma (ADU)."""
    h0, hk = tr[0].header, tr[f"CCD{k}"].header
    src = tr["SOURCES"].data
    src = src[src["chip"] == k]
    light = np.zeros((NY, NX))
    yy, xx = np.mgrid[:NY, :NX]
    light += hk["SKYC"] + hk["SKYDX"] * (xx - (NX - 1) / 2) + hk["SKYDY"] * (yy - (NY - 1) / 2)
    for i, row in enumerate(src):
        if i != skip:
            _add(light, *_stamp_box(row, CONFIG.pixel_scale, h0["PSFBETA"]))
    flat = fits.getdata(night.truth_dir / f"flat_{h0['FILTER']}.fits", f"CCD{k}").astype(float)
    hot = fits.getdata(night.truth_dir / "defects.fits", "HOTPIX")
    hot = hot[hot["chip"] == k]
    dark = np.zeros((NY, NX))
    dark[hot["y"], hot["x"]] = hot["dark"] * h0["EXPTIME"]
    electrons = light * flat + dark
    bias = fits.getdata(night.truth_dir / "bias.fits", f"CCD{k}")[:, :NX] + hk["DRIFT"]
    gain, rn = chip["gain"], chip["read_noise"]
    sigma = np.sqrt(electrons / gain**2 + (rn / gain) ** 2 + 1 / 12)
    return {"adu": bias + electrons / gain, "sigma": sigma, "flat": flat, "src": src, "bias": bias}


def test_object_pixels_are_truth_plus_noise(night: SimResult, camera: dict[str, Any]) -> None:
    """Rebuild every science chip from the truth (sky, every source, flat, dark, bias, drift, gain)."""
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                m = _model(tr, k, camera["chips"][k - 1], night)
                z = (_raw(raw, k)[:, :NX] - m["adu"]) / m["sigma"]
                good = tr[f"CCD{k}"].data == 0
                assert good.sum() > 0.9 * NX * NY
                assert abs(z[good].mean()) < 0.03, raw.name
                assert abs(z[good].std() - 1.0) < 0.03, raw.name
                assert np.abs(z[good]).max() < 6.5, raw.name


def test_star_flux_in_pixels_equals_truth(night: SimResult, camera: dict[str, Any]) -> None:
    """Fit the amplitude of every bright, clean, unsaturated star against the rest of the model: 1.000."""
    fitted = []
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                src = tr["SOURCES"].data
                src = src[src["chip"] == k]
                data = _raw(raw, k)[:, :NX]
                mask = tr[f"CCD{k}"].data
                for i, row in enumerate(src):
                    if row["type"] != "star" or row["saturated"] or row["flux"] < 5000 or \
                            row["flux_onchip"] != row["flux"]:
                        continue
                    m = _model(tr, k, camera["chips"][k - 1], night, skip=i)
                    x0, y0, stamp = _stamp_box(row, CONFIG.pixel_scale, tr[0].header["PSFBETA"])
                    box = (slice(y0, y0 + stamp.shape[0]), slice(x0, x0 + stamp.shape[1]))
                    if mask[box].any():
                        continue
                    template = stamp * m["flat"][box] / camera["chips"][k - 1]["gain"]
                    w = 1.0 / m["sigma"][box] ** 2
                    amp = np.sum(w * template * (data[box] - m["adu"][box])) / np.sum(w * template**2)
                    err = 1.0 / math.sqrt(np.sum(w * template**2))
                    fitted.append((amp, err, row["flux"] / row["flux_model"]))
    assert len(fitted) >= 3
    for amp, err, rendered in fitted:
        assert abs(amp - 1.0) < 5 * err + 1e-3
        assert 0.995 <= rendered <= 1.0 + 1e-9


def test_stamps_conserve_flux_and_position() -> None:
    for fwhm, e, flux in [(3.1, 0.0, 1e3), (4.6, 0.08, 1e4), (3.5, 0.03, 1e7)]:
        radius = star_radius(flux, fwhm, e, 3.0)
        *_, stamp = star_stamp(50.37, 40.81, flux, fwhm, e, 25.0, 3.0, radius)
        assert 0.995 * flux <= stamp.sum() <= flux
        if e == 0.0:
            big = star_stamp(50.37, 40.81, flux, fwhm, 0.0, 0.0, 3.0, 80)
            yy, xx = np.mgrid[:big[2].shape[0], :big[2].shape[1]]
            assert (big[2] * xx).sum() / big[2].sum() + big[0] == pytest.approx(50.37, abs=2e-3)
            assert (big[2] * yy).sum() / big[2].sum() + big[1] == pytest.approx(40.81, abs=2e-3)
    x0, _, gal = galaxy_stamp(30.6, 20.2, 5e3, 3.0, 1.0, 0.5, 40.0, 3.5, 0.05, 10.0, 3.0)
    assert gal.sum() == pytest.approx(5e3, rel=1e-9)
    yy, xx = np.mgrid[:gal.shape[0], :gal.shape[1]]
    assert (gal * xx).sum() / gal.sum() + x0 == pytest.approx(30.6, abs=0.02)


def test_bias_frames_and_overscan(night: SimResult, camera: dict[str, Any]) -> None:
    for raw in [p for p in night.raw_files if "bias" in p.name or "object" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                chip = camera["chips"][k - 1]
                bias = fits.getdata(night.truth_dir / "bias.fits", f"CCD{k}") + tr[f"CCD{k}"].header["DRIFT"]
                data = _raw(raw, k)
                sigma = math.hypot(chip["read_noise"] / chip["gain"], math.sqrt(1 / 12))
                over = (data - bias)[:, NX:]
                assert abs(over.mean()) < 5 * sigma / math.sqrt(over.size)
                assert over.std() == pytest.approx(sigma, rel=0.03)
                if "bias" in raw.name:
                    resid = (data - bias)[:, :NX][tr[f"CCD{k}"].data == 0]
                    assert abs(resid.mean()) < 5 * sigma / math.sqrt(resid.size)
                    assert resid.std() == pytest.approx(sigma, rel=0.03)
                    bpm = fits.getdata(night.truth_dir / "bpm.fits", f"CCD{k}")
                    assert np.all(data[:, :NX][(bpm & BPM_HOT) > 0] > chip["bias_level"] + 3)


def test_dome_flats_are_lamp_times_flat(night: SimResult, camera: dict[str, Any]) -> None:
    for raw in [p for p in night.raw_files if "flat" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                chip = camera["chips"][k - 1]
                h = tr[f"CCD{k}"].header
                flat = fits.getdata(night.truth_dir / f"flat_{tr[0].header['FILTER']}.fits", f"CCD{k}")
                bias = fits.getdata(night.truth_dir / "bias.fits", f"CCD{k}")[:, :NX] + h["DRIFT"]
                electrons = tr[0].header["LAMP"] * flat
                sigma = np.sqrt(electrons / chip["gain"] ** 2 + (chip["read_noise"] / chip["gain"]) ** 2)
                z = (_raw(raw, k)[:, :NX] - bias - electrons / chip["gain"]) / sigma
                good = (tr[f"CCD{k}"].data == 0) & (fits.getdata(night.truth_dir / "bpm.fits", f"CCD{k}") == 0)
                assert abs(z[good].mean()) < 0.03 and abs(z[good].std() - 1) < 0.03


def test_true_flat_structure(night: SimResult, camera: dict[str, Any]) -> None:
    for f in CONFIG.filters:
        for k in (1, 2):
            flat = fits.getdata(night.truth_dir / f"flat_{f}.fits", f"CCD{k}").astype(float)
            bpm = fits.getdata(night.truth_dir / "bpm.fits", f"CCD{k}")
            smooth = flat.reshape(64, 4, 64, 4).mean(axis=(1, 3)).repeat(4, 0).repeat(4, 1)
            prnu = (flat / smooth)[bpm == 0]
            assert 0.009 < 1.4826 * np.median(np.abs(prnu - np.median(prnu))) < 0.013
            assert 0.85 < np.median(flat) < 1.1
            assert np.all(flat[(bpm & 2) > 0] < 0.7)  # cold pixels


def test_saturation_and_bleeding(night: SimResult, camera: dict[str, Any]) -> None:
    seen = 0
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                data, mask = _raw(raw, k)[:, :NX], tr[f"CCD{k}"].data
                sat = camera["chips"][k - 1]["saturate"]
                assert np.array_equal((mask & MASK_SATURATED) > 0, data >= sat)
                assert data.max() <= sat
                src = tr["SOURCES"].data
                for row in src[(src["chip"] == k) & src["saturated"]]:
                    x, y = round(row["x"]), round(row["y"])
                    if 0 <= x < NX and 0 <= y < NY:
                        seen += 1
                        assert data[y, x] == sat
                        bled = np.flatnonzero((mask[:, x] & MASK_BLEED) > 0)
                        assert bled.size > 0 and np.all(np.abs(bled - y) < NY)
    assert seen > 0


def test_bleed_conserves_charge() -> None:
    image = np.full((50, 3), 100.0)
    image[25, 1] = 1000.0
    before = image.sum()
    bled = bleed(image, 300.0)
    assert image.sum() == pytest.approx(before)
    assert image.max() == 300.0 and bled[:, 1].sum() == 4 and not bled[:, [0, 2]].any()


def test_cosmic_rays_and_trail_are_in_the_pixels(night: SimResult, camera: dict[str, Any]) -> None:
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth_of(night, raw) as tr:
            for k in (1, 2):
                chip = camera["chips"][k - 1]
                m = _model(tr, k, chip, night)
                excess = (_raw(raw, k)[:, :NX] - m["adu"]) * chip["gain"]  # e-
                mask = tr[f"CCD{k}"].data
                cr = (mask & MASK_CR) > 0
                if cr.any():
                    assert np.median(excess[cr]) > 5 * np.median(m["sigma"]) * chip["gain"]
                if tr[0].header["TRAIL"] and (mask & MASK_TRAIL).any():
                    h = tr[0].header
                    trail = Trail(h["TRAILU0"], h["TRAILV0"], h["TRAILANG"], h["TRAILSIG"], h["TRAILPK"])
                    c = camera["chips"][k - 1]
                    yy, xx = np.mgrid[:NY, :NX]
                    expected = trail.image(xx - c["axis_x"], yy - c["axis_y"]) * m["flat"]
                    only = mask == MASK_TRAIL
                    sigma = np.sqrt(m["sigma"][only] ** 2 + expected[only] / chip["gain"] ** 2) * chip["gain"]
                    z = (excess[only] - expected[only]) / sigma
                    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1


def test_catalogue_statistics(night: SimResult) -> None:
    stars = fits.getdata(night.truth_dir / "stars.fits")
    r = stars["r"][(stars["r"] > 16) & (stars["r"] < 23)]
    counts, edges = np.histogram(r, bins=np.arange(16, 23.01, 1.0))
    slope = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(counts), 1)[0]
    assert slope == pytest.approx(0.3, abs=0.05)
    gr = stars["g"] - stars["r"]
    assert gr.min() >= 0.2 - 1e-9 and gr.max() <= 1.6 + 1e-9 and 0.3 < np.median(gr) < 1.0
    assert 2 < np.std(stars["pmra"]) < 20
    gal = fits.getdata(night.truth_dir / "galaxies.fits")
    ratio = len(gal) / (len(stars) - CONFIG.bright_stars)
    assert ratio == pytest.approx(CONFIG.galaxy_density / CONFIG.star_density, rel=0.1)
    assert np.all(gal["q"] >= 0.3) and np.all(gal["r_e"] > 0)


def test_photometric_truth_is_consistent(night: SimResult) -> None:
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth_of(night, raw) as tr:
            h = tr[0].header
            assert 1.0 <= h["AIRMASS"] < 2.0
            assert h["ZPEXP"] == pytest.approx(h["ZP"] - h["EXTCOEF"] * h["AIRMASS"] + 2.5 * math.log10(120.0))
            src = tr["SOURCES"].data
            np.testing.assert_allclose(src["flux_model"], 10 ** (-0.4 * (src["mag"] - h["ZPEXP"])), rtol=1e-5)
            fwhm = src["psf_fwhm"]
            assert fwhm.min() > 0.75 and fwhm.max() < 1.3


# the optional extras: darks, a morning flat block, a dome-lamp gradient and fringes (1 chip, 128 px)
EXTRAS = SimConfig(seed=9, n_chips=1, chip_nx=128, chip_ny=128, overscan=16, filters=("i",), n_bias=1,
                   n_flats_per_filter=1, n_dither_per_field_filter=2, n_dark=2, dark_exptime=200.0,
                   dark_rate=0.05, flat_blocks=2, dome_flat_gradient=0.05, fringe_filters=("i",),
                   fringe_amplitude=0.05, star_density=20000.0)


@pytest.fixture(scope="module")
def extras(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return simulate_night(EXTRAS, tmp_path_factory.mktemp("extras"))


def _detector_model(night: SimResult, raw: Path, electrons: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw data section ADU, expected ADU, sigma ADU) of chip 1 for the given expected e-."""
    chip = json.loads((night.truth_dir / "night.json").read_text())["camera"]["chips"][0]
    with _truth_of(night, raw) as tr:
        drift = tr["CCD1"].header["DRIFT"]
    nx = electrons.shape[1]
    bias = fits.getdata(night.truth_dir / "bias.fits", "CCD1")[:, :nx] + drift
    gain, rn = chip["gain"], chip["read_noise"]
    sigma = np.sqrt(electrons / gain**2 + (rn / gain) ** 2 + 1 / 12)
    return _raw(raw, 1)[:, :nx], bias + electrons / gain, sigma


def _z_ok(night: SimResult, raw: Path, electrons: np.ndarray) -> np.ndarray:
    data, model, sigma = _detector_model(night, raw, electrons)
    with _truth_of(night, raw) as tr:
        good = tr["CCD1"].data == 0
    z = ((data - model) / sigma)[good]
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.05, (raw.name, z.mean(), z.std())
    return z


def test_dark_frames_are_dark_current_plus_noise(extras: SimResult) -> None:
    dark = fits.getdata(extras.truth_dir / "dark.fits", "CCD1").astype(float)  # e-/s
    hot = fits.getdata(extras.truth_dir / "defects.fits", "HOTPIX")
    assert np.median(dark) == pytest.approx(EXTRAS.dark_rate, rel=1e-6)
    np.testing.assert_allclose(dark[hot["y"], hot["x"]], EXTRAS.dark_rate + hot["dark"], rtol=1e-6)
    darks = [p for p in extras.raw_files if p.name.endswith("_dark.fits")]
    assert len(darks) == EXTRAS.n_dark
    for raw in darks:
        h = fits.getheader(raw)
        assert (h["IMAGETYP"], h["FILTER"], h["OBJECT"], h["EXPTIME"]) == ("DARK", "NONE", "DARK", 200.0)
        _z_ok(extras, raw, dark * h["EXPTIME"])


def test_flat_blocks_and_dome_lamp_gradient(extras: SimResult) -> None:
    flat = fits.getdata(extras.truth_dir / "flat_i.fits", "CCD1").astype(float)
    dark = fits.getdata(extras.truth_dir / "dark.fits", "CCD1").astype(float)
    chip = json.loads((extras.truth_dir / "night.json").read_text())["camera"]["chips"][0]
    u = np.arange(EXTRAS.chip_nx)[None, :] - chip["axis_x"]
    flats = [p for p in extras.raw_files if "_flat_" in p.name]
    science = [p for p in extras.raw_files if "_object_" in p.name]
    assert len(flats) == 2 * EXTRAS.n_flats_per_filter
    lamps = []
    for raw in flats:
        with _truth_of(extras, raw) as tr:
            h0 = tr[0].header
            lamps.append(h0["LAMP"])
            assert h0["FLATBLK"] == (raw.name > science[-1].name)  # the second block comes after the science
            assert h0["LAMPGRAD"] == EXTRAS.dome_flat_gradient
            rc = h0["RCORNER"]
        _z_ok(extras, raw, h0["LAMP"] * (1 + EXTRAS.dome_flat_gradient * u / rc) * flat + dark * EXTRAS.flat_exptime)
    assert 0.9 * 0.95 / 1.05 <= lamps[1] / lamps[0] <= 0.9 * 1.05 / 0.95
    times = [fits.getval(p, "MJD-OBS") for p in extras.raw_files]
    assert times == sorted(times) and [fits.getval(p, "EXPID") for p in extras.raw_files] == \
        list(range(1, EXTRAS.n_exposures + 1))


def test_fringes_are_additive_and_match_the_truth(extras: SimResult) -> None:
    pattern = fits.getdata(extras.truth_dir / "fringe_i.fits", "CCD1").astype(float)
    assert abs(pattern.mean()) < 1e-6 and np.abs(pattern).max() == pytest.approx(1.0)
    flat = fits.getdata(extras.truth_dir / "flat_i.fits", "CCD1").astype(float)
    dark = fits.getdata(extras.truth_dir / "dark.fits", "CCD1").astype(float)
    ny, nx = pattern.shape
    yy, xx = np.mgrid[:ny, :nx]
    amps = []
    for raw in [p for p in extras.raw_files if "_object_" in p.name]:
        with _truth_of(extras, raw) as tr:
            h0, hk = tr[0].header, tr["CCD1"].header
            assert hk["FRNGAMP"] == h0["FRNGAMP"] and 0.8 * 0.05 <= hk["FRNGAMP"] <= 1.2 * 0.05
            sky = hk["SKYC"] + hk["SKYDX"] * (xx - (nx - 1) / 2) + hk["SKYDY"] * (yy - (ny - 1) / 2)
            light = sky.copy()
            for row in tr["SOURCES"].data:
                _add(light, *_stamp_box(row, EXTRAS.pixel_scale, h0["PSFBETA"]))
            base = light * flat + dark * h0["EXPTIME"]
            fringe = hk["FRNGAMP"] * sky * pattern
            _z_ok(extras, raw, base + fringe)  # the fringe is not flat-fielded
            data, model, sigma = _detector_model(extras, raw, base)
            chip = json.loads((extras.truth_dir / "night.json").read_text())["camera"]["chips"][0]
            t = (sky * pattern / chip["gain"])[tr["CCD1"].data == 0]
            w = 1.0 / sigma[tr["CCD1"].data == 0] ** 2
            amp = np.sum(w * t * (data - model)[tr["CCD1"].data == 0]) / np.sum(w * t * t)
            amps.append((amp, hk["FRNGAMP"], 1.0 / math.sqrt(np.sum(w * t * t))))
    for amp, true, err in amps:
        assert abs(amp - true) < 5 * err, amps
