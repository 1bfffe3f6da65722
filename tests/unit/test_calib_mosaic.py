"""Gain harmonisation of per-chip master flats against the simulator's truth: after multiplying each chip's
normalised master flat by its factor, flat / true flat (truth/flat_<f>.fits, the true relative response
including QE, vignetting and dust) is the same constant on every chip; the QE step measured at the chip
borders matches the chips' QE in truth/night.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from services.calib.science import MasterFlat, make_master_bias, make_master_flat, overscan_trimmed, parse_section
from services.calib.science.badpix import find_bad_pixels
from services.calib.science.mosaic import exposure_factors, gain_factors, harmonise_mosaic, sampled_level
from wisp.sim import SimConfig, simulate_night

CONFIG = SimConfig(seed=8, n_chips=4, chip_nx=256, chip_ny=256, n_bias=5, n_flats_per_filter=5,
                   n_dither_per_field_filter=0, vignetting=0.15, dust_per_chip=4)


@dataclass
class Mosaic:
    chips: list[dict[str, Any]]
    flats: dict[str, dict[int, MasterFlat]]
    true_flats: dict[str, dict[int, np.ndarray]]
    masks: dict[int, np.ndarray]
    truth_bpm: dict[int, np.ndarray]
    files: dict[str, list[Path]]
    sections: dict[int, tuple[tuple[slice, slice], tuple[slice, slice]]]


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> Mosaic:
    root = tmp_path_factory.mktemp("mosaic")
    res = simulate_night(CONFIG, root)
    files: dict[str, list[Path]] = {}
    for p in res.raw_files:
        h = fits.getheader(p)
        files.setdefault(h["IMAGETYP"] if h["IMAGETYP"] == "BIAS" else f"{h['IMAGETYP']} {h['FILTER']}", []).append(p)
    chips = json.loads((root / "truth" / "night.json").read_text())["camera"]["chips"]
    flats: dict[str, dict[int, MasterFlat]] = {f: {} for f in CONFIG.filters}
    true_flats: dict[str, dict[int, np.ndarray]] = {f: {} for f in CONFIG.filters}
    masks, truth_bpm, sections = {}, {}, {}
    for c in chips:
        k = c["chip_id"]
        h = fits.getheader(files["BIAS"][0], k)
        ds, bs = parse_section(h["DATASEC"]), parse_section(h["BIASSEC"])
        sections[k] = (ds, bs)
        mb = make_master_bias([overscan_trimmed(fits.getdata(p, k), ds, bs) for p in files["BIAS"]])
        for f in CONFIG.filters:
            flats[f][k] = make_master_flat(
                [overscan_trimmed(fits.getdata(p, k), ds, bs) for p in files[f"FLAT {f}"]], mb,
                exptimes=[fits.getheader(p)["EXPTIME"] for p in files[f"FLAT {f}"]])
            true_flats[f][k] = fits.getdata(root / "truth" / f"flat_{f}.fits", f"CCD{k}").astype(np.float64)
        masks[k] = find_bad_pixels(mb, {f: flats[f][k] for f in CONFIG.filters}).mask
        truth_bpm[k] = fits.getdata(root / "truth" / "bpm.fits", f"CCD{k}")
    return Mosaic(chips, flats, true_flats, masks, truth_bpm, files, sections)


def _scale_spread(m: Mosaic, f: str, factors: dict[int, float]) -> np.ndarray:
    """median over good pixels of (harmonised flat / true flat) per chip, relative to their median."""
    s = np.array([np.median((m.flats[f][k].image * factors[k] / m.true_flats[f][k])[m.truth_bpm[k] == 0])
                  for k in factors])
    return s / np.median(s)


@pytest.mark.parametrize("f", CONFIG.filters)
def test_harmonised_flats_share_one_scale(mosaic: Mosaic, f: str) -> None:
    gains = {c["chip_id"]: c["gain"] for c in mosaic.chips}
    res = harmonise_mosaic(mosaic.flats[f], gains)
    after = _scale_spread(mosaic, f, res.factors)
    before = _scale_spread(mosaic, f, dict.fromkeys(res.factors, 1.0))
    print(f"{f}: factors {[round(v, 5) for v in res.factors.values()]}; flat x g / truth per chip "
          f"{np.round(after, 5)} (without harmonisation {np.round(before, 4)})")
    assert np.ptp(before) > 0.02  # per-chip normalisation loses several % (QE rms 3 %, vignetting)
    assert np.abs(after - 1).max() < 0.005  # measured < 3e-5
    assert float(np.median(list(res.factors.values()))) == pytest.approx(1.0)
    ref = harmonise_mosaic(mosaic.flats[f], gains, reference=3)
    assert ref.factors[3] == 1.0 and ref.reference == 3
    for k in res.factors:
        assert ref.factors[k] / res.factors[k] == pytest.approx(1 / res.factors[3], rel=1e-12)
        assert res.rates_e[k] == pytest.approx(mosaic.flats[f][k].level_rate * gains[k])


@pytest.mark.parametrize("f", CONFIG.filters)
def test_factors_from_raw_exposures_share_one_scale(mosaic: Mosaic, f: str) -> None:
    """What the master-flat stage does: each chip's factor from every chip's raw flat exposures, sampled."""
    gains = {c["chip_id"]: c["gain"] for c in mosaic.chips}
    levels = [{k: sampled_level(overscan_trimmed(fits.getdata(p, k), *mosaic.sections[k])) for k in gains}
              for p in mosaic.files[f"FLAT {f}"]]
    factors = exposure_factors(levels, gains)
    after = _scale_spread(mosaic, f, factors)
    print(f"{f}: exposure factors {[round(v, 5) for v in factors.values()]}; flat x g / truth per chip "
          f"{np.round(after, 5)}")
    assert np.abs(after - 1).max() < 0.003  # sampled levels (~128 rows) vs the whole chip


@pytest.mark.parametrize("f", CONFIG.filters)
def test_border_qe_matches_truth(mosaic: Mosaic, f: str) -> None:
    gains = {c["chip_id"]: c["gain"] for c in mosaic.chips}
    origins = {c["chip_id"]: (c["x0"], c["y0"]) for c in mosaic.chips}  # DETSEC, nominal positions
    res = harmonise_mosaic(mosaic.flats[f], gains, origins=origins, masks=mosaic.masks)
    qe = np.array([c["qe"][f] for c in mosaic.chips])
    qe /= np.median(qe)
    got = np.array([res.qe[c["chip_id"]] for c in mosaic.chips])
    print(f"{f}: border QE {np.round(got, 5)}, truth {np.round(qe, 5)}, diff {np.round(got / qe - 1, 5)}, "
          f"closure rms {res.qe_rms:.5f}; borders",
          [(b.a, b.b, b.axis, round(b.ratio, 4), round(b.error, 4), b.n) for b in res.borders])
    assert len(res.borders) == 4 and {(b.a, b.b) for b in res.borders} == {(1, 2), (3, 4), (1, 3), (2, 4)}
    assert np.abs(got / qe - 1).max() < 0.005  # measured <= 0.2 %
    assert res.qe_rms < 0.003
    assert res.factors == harmonise_mosaic(mosaic.flats[f], gains).factors  # the factors do not use the borders


def test_dome_illumination_error_stays_continuous(tmp_path: Path) -> None:
    """A dome lamp with a 5 % gradient across the focal plane (not in the true response): the factors put
    the chips on one scale *including* that smooth illumination error D = 1 + 0.05 u / r_corner, i.e.
    flat x g / (truth x D) is the same on every chip (the error is left, continuous over the mosaic, for a
    focal-plane illumination correction); the border QE is unaffected."""
    cfg = SimConfig(seed=8, n_chips=4, chip_nx=256, chip_ny=256, filters=("r",), n_bias=3, n_flats_per_filter=3,
                    n_dither_per_field_filter=0, vignetting=0.15, dome_flat_gradient=0.05)
    res = simulate_night(cfg, tmp_path)
    meta = json.loads((tmp_path / "truth" / "night.json").read_text())
    chips, r_corner = meta["camera"]["chips"], meta["camera"]["r_corner_px"]
    bias_files = [p for p in res.raw_files if fits.getheader(p)["IMAGETYP"] == "BIAS"]
    flat_files = [p for p in res.raw_files if fits.getheader(p)["IMAGETYP"] == "FLAT"]
    flats, ratio_d, ratio_t = {}, [], []
    for c in chips:
        k = c["chip_id"]
        h = fits.getheader(bias_files[0], k)
        ds, bs = parse_section(h["DATASEC"]), parse_section(h["BIASSEC"])
        mb = make_master_bias([overscan_trimmed(fits.getdata(p, k), ds, bs) for p in bias_files])
        flats[k] = make_master_flat([overscan_trimmed(fits.getdata(p, k), ds, bs) for p in flat_files], mb,
                                    exptimes=[fits.getheader(p)["EXPTIME"] for p in flat_files])
    out = harmonise_mosaic(flats, {c["chip_id"]: c["gain"] for c in chips},
                           origins={c["chip_id"]: (c["x0"], c["y0"]) for c in chips})
    for c in chips:
        k = c["chip_id"]
        truth = fits.getdata(tmp_path / "truth" / "flat_r.fits", f"CCD{k}").astype(np.float64)
        good = fits.getdata(tmp_path / "truth" / "bpm.fits", f"CCD{k}") == 0
        u = np.arange(cfg.chip_nx, dtype=float)[None, :] - c["axis_x"]
        dome = 1.0 + cfg.dome_flat_gradient * u / r_corner
        harmonised = flats[k].image * out.factors[k]
        ratio_d.append(np.median((harmonised / (truth * dome))[good]))
        ratio_t.append(np.median((harmonised / truth)[good]))
    rd, rt = np.array(ratio_d) / np.median(ratio_d), np.array(ratio_t) / np.median(ratio_t)
    qe = np.array([c["qe"]["r"] for c in chips])
    qe_err = np.array([out.qe[c["chip_id"]] for c in chips]) / (qe / np.median(qe)) - 1
    print(f"flat x g / (truth x dome) {np.round(rd, 5)}; / truth {np.round(rt, 4)}; "
          f"border QE error {np.round(qe_err, 5)}")
    assert np.abs(rd - 1).max() < 0.005  # measured < 1e-4
    assert np.ptp(rt) > 0.02  # the dome gradient itself: +-1.7 % between the left and right chips
    assert np.abs(qe_err).max() < 0.005


def test_wrong_header_gain_is_absorbed() -> None:
    """A chip whose gain is 5 % wrong: g changes by the same 5 %, so ADU x gain / (flat x g) is unchanged."""
    rates, gains = {1: 1000.0, 2: 1100.0}, {1: 2.0, 2: 1.8}
    g, _ = gain_factors(rates, gains, reference=1)
    g_bad, _ = gain_factors(rates, {1: 2.0, 2: 1.8 * 1.05}, reference=1)
    assert g_bad[2] / g[2] == pytest.approx(1.05)
    assert 1.8 * 1.05 / g_bad[2] == pytest.approx(1.8 / g[2])
    with pytest.raises(ValueError):
        gain_factors({1: 1.0}, {2: 1.0})
    with pytest.raises(ValueError):
        gain_factors({1: 0.0}, {1: 1.0})
    with pytest.raises(ValueError):
        gain_factors({1: 1.0}, {1: 1.0}, reference=5)


def test_exposure_factors_leave_out_dead_chips_and_missing_gains() -> None:
    levels = [{"a": 1000.0, "b": 2000.0, "c": 0.0, "d": 1500.0}, {"a": 1100.0, "b": 2200.0, "c": -3.0, "d": 1650.0}]
    factors = exposure_factors(levels, {"a": 2.0, "b": 1.0, "c": 1.0})  # d: no gain
    assert set(factors) == {"a", "b"} and factors == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert exposure_factors([{"a": 1000.0, "c": 0.0}], {"a": 1.0, "c": 1.0}) == {}  # nothing to compare with
