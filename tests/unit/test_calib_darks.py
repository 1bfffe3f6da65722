"""Master dark against the simulator's truth dark-current map (wisp/sim/README.md, ``truth/dark.fits``).

Expected noise of the master dark (ADU/s) for N darks of t s, dark current d (e-/s), gain g, read noise r:
``var = [(d t / g^2 + r^2 / g^2 + 1/12) / N + var(master bias)] / t^2``; cosmic rays (many in 300 s darks at
the raised rate used here) must be clipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from services.calib.science import make_master_bias, overscan_trimmed, parse_section
from services.calib.science.darks import MasterDark, dark_for_exposure, make_master_dark
from wisp.errors import InvalidInput
from wisp.sim import SimConfig, simulate_night

CONFIG = SimConfig(seed=5, n_chips=1, chip_nx=256, chip_ny=256, filters=("r",), n_bias=7, n_flats_per_filter=0,
                   n_dither_per_field_filter=0, n_dark=5, dark_exptime=300.0, dark_rate=0.05, cr_rate=20.0,
                   hot_pixel_fraction=5e-4)
K = 1


@dataclass
class Darks:
    root: Path
    chip: dict[str, Any]
    frames: list[Any]
    exptimes: list[float]
    truth: np.ndarray  # e-/s
    bpm: np.ndarray
    bias_var: float
    master: MasterDark


@pytest.fixture(scope="module")
def darks(tmp_path_factory: pytest.TempPathFactory) -> Darks:
    root = tmp_path_factory.mktemp("darks")
    res = simulate_night(CONFIG, root)
    chip = json.loads((root / "truth" / "night.json").read_text())["camera"]["chips"][0]
    h = fits.getheader(res.raw_files[0], K)
    ds, bs = parse_section(h["DATASEC"]), parse_section(h["BIASSEC"])
    biases = [overscan_trimmed(fits.getdata(p, K), ds, bs) for p in res.raw_files if "_bias" in p.name]
    dark_paths = [p for p in res.raw_files if "_dark" in p.name]
    frames = [overscan_trimmed(fits.getdata(p, K), ds, bs) for p in dark_paths]
    exptimes = [float(fits.getval(p, "EXPTIME")) for p in dark_paths]
    mb = make_master_bias(biases)
    master = make_master_dark(frames, mb, exptimes=exptimes)
    truth = fits.getdata(root / "truth" / "dark.fits", f"CCD{K}").astype(np.float64)
    bpm = fits.getdata(root / "truth" / "bpm.fits", f"CCD{K}")
    g, rn = chip["gain"], chip["read_noise"]
    return Darks(root, chip, frames, exptimes, truth, bpm, ((rn / g) ** 2 + 1 / 12) / CONFIG.n_bias, master)


def test_master_dark_matches_truth(darks: Darks) -> None:
    m, g, rn = darks.master, darks.chip["gain"], darks.chip["read_noise"]
    t, n = CONFIG.dark_exptime, CONFIG.n_dark
    assert m.n_frames == n and not m.rejected and m.exptime == t
    assert m.rate.dtype == np.float32 and m.var is not None
    normal = darks.bpm == 0
    resid = m.rate_electrons(g).astype(np.float64) - darks.truth  # e-/s
    per_frame = CONFIG.dark_rate * t / g**2 + (rn / g) ** 2 + 1 / 12
    sigma_adu = np.sqrt(per_frame / n + darks.bias_var) / t
    ratio = resid[normal].std() / (sigma_adu * g)
    print(f"master dark: level {m.level * g:.5f} e-/s (true {CONFIG.dark_rate}), residual mean "
          f"{resid[normal].mean():+.2e} e-/s, rms / expected {ratio:.3f}, max |z| "
          f"{np.abs(resid[normal]).max() / (sigma_adu * g):.2f}")
    assert m.level * g == pytest.approx(CONFIG.dark_rate, abs=3 * sigma_adu * g)
    assert abs(resid[normal].mean()) < 5 * sigma_adu * g / np.sqrt(normal.sum()) + 2e-4
    assert 0.95 < ratio < 1.15  # measured ~1.02: 3-sigma clipping of 5 frames costs a few % in rms
    assert np.abs(resid[normal]).max() < 6.5 * sigma_adu * g  # every cosmic ray was clipped
    # the stated variance agrees with the residuals
    assert np.sqrt(np.mean(m.var[normal])) == pytest.approx(sigma_adu, rel=0.1)


def test_hot_pixels_are_measured(darks: Darks) -> None:
    g, t, n = darks.chip["gain"], CONFIG.dark_exptime, CONFIG.n_dark
    hot = fits.getdata(darks.root / "truth" / "defects.fits", "HOTPIX")
    true = darks.truth[hot["y"], hot["x"]]
    got = darks.master.rate_electrons(g)[hot["y"], hot["x"]].astype(np.float64)
    poisson = np.sqrt(true * t) / t / np.sqrt(n)  # e-/s, the mean of n frames
    z = (got - true) / np.hypot(poisson, 0.01)
    print(f"{hot.size} hot pixels: dark {true.min():.1f}-{true.max():.1f} e-/s, |z| max {np.abs(z).max():.2f}, "
          f"rms {z.std():.2f} (clipping against the frame noise falls back to the median: > 1 expected)")
    assert np.abs(got / true - 1)[true > 20].max() < 0.02
    assert np.abs(z).max() < 8


def test_dark_for_exposure_scales_linearly(darks: Darks) -> None:
    g = darks.chip["gain"]
    adu, var = dark_for_exposure(darks.master, 120.0)
    e, var_e = dark_for_exposure(darks.master, 120.0, gain=g)
    np.testing.assert_allclose(adu, darks.master.rate * 120.0, rtol=1e-6)
    np.testing.assert_allclose(e, adu * g, rtol=1e-6)
    assert var is not None and var_e is not None and darks.master.var is not None
    np.testing.assert_allclose(var, darks.master.var * 120.0**2, rtol=1e-6)
    assert float(np.median(e)) == pytest.approx(CONFIG.dark_rate * 120.0, rel=0.05)
    assert not dark_for_exposure(darks.master, 0.0)[0].any()
    with pytest.raises(ValueError):
        dark_for_exposure(darks.master, -1.0)


def test_bad_inputs(darks: Darks) -> None:
    mb = make_master_bias(darks.frames[:1])
    with pytest.raises(InvalidInput) as err:
        make_master_dark(darks.frames, mb, exptimes=[300.0, 300.0, 0.0, 300.0, 300.0])
    assert err.value.code == "calib.bad_exptime"
    with pytest.raises(ValueError):
        make_master_dark(darks.frames, mb, exptimes=[300.0])
