"""Bad-pixel maps from master bias and flats against the simulator's truth (truth/bpm.fits, defects.fits).

Truth set: every truth hot pixel (bit 1) has a bias offset of 5-500 ADU (log-uniform, wisp/sim/detector.py)
besides its dark current of 1-300 e-/s, so all of them are detectable in a master bias once its noise is
well below 1 ADU (25 biases here: 0.4-0.75 ADU); cold pixels (bit 2) have 5-60 % response, dead columns
0-30 %, hot columns +20-150 ADU from a row y0 to the top. We score against the whole truth map."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from services.calib.science.badpix import BPM_BADCOL, BPM_COLD, BPM_HOT, BadPixelMap, find_bad_pixels
from tests.fixtures.calib import calibrate_chip, raw_night
from wisp.sim import SimConfig

# many defects for the statistics (131 hot + 131 cold per chip), more dust and vignetting than the default
CONFIG = SimConfig(seed=3, n_chips=4, chip_nx=256, chip_ny=256, n_bias=25, n_flats_per_filter=5,
                   n_dither_per_field_filter=0, hot_pixel_fraction=2e-3, cold_pixel_fraction=2e-3,
                   bad_columns=2, dust_per_chip=4, vignetting=0.15)


@dataclass
class Chip:
    k: int
    truth: np.ndarray
    true_flat: np.ndarray
    hotpix: Any
    badcols: Any
    bias: Any
    flats: dict[str, Any]
    bpm: BadPixelMap


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> list[Chip]:
    raw = raw_night(CONFIG, tmp_path_factory.mktemp("badpix"))
    defects = fits.open(raw.root / "truth" / "defects.fits")
    out = []
    for c in raw.meta["camera"]["chips"]:
        k = c["chip_id"]
        cal = calibrate_chip(raw, k, bpm_in_flats=False)
        hp = defects["HOTPIX"].data
        bc = defects["BADCOLS"].data
        out.append(Chip(k, cal.bpm, fits.getdata(raw.root / "truth" / "flat_g.fits", f"CCD{k}").astype(np.float64),
                        hp[hp["chip"] == k], bc[bc["chip"] == k], cal.bias, cal.flats,
                        find_bad_pixels(cal.bias, cal.flats)))
    return out


def test_hot_and_cold_pixels_found(chips: list[Chip]) -> None:
    n_hot = n_cold = miss_hot = miss_cold = 0
    for c in chips:
        m = c.bpm.mask
        assert m.dtype == np.uint8 and m.shape == c.truth.shape
        hot, cold = (c.truth & BPM_HOT) != 0, (c.truth & BPM_COLD) != 0
        n_hot += int(hot.sum())
        n_cold += int(cold.sum())
        miss_hot += int((hot & ((m & BPM_HOT) == 0)).sum())
        miss_cold += int((cold & ((m & BPM_COLD) == 0)).sum())
        # the weakest truth hot pixels: offset / master-bias noise
        assert c.bias.var is not None
        z = c.hotpix["offset"] / np.sqrt(c.bias.var[c.hotpix["y"], c.hotpix["x"]])
        print(f"CCD{c.k}: bias noise {c.bpm.noise['bias']:.3f} ADU, weakest hot pixel {z.min():.1f} sigma; "
              f"n_hot {c.bpm.n_hot} n_cold {c.bpm.n_cold} n_badcol {c.bpm.n_badcol_pixels}")
    print(f"hot: {n_hot - miss_hot}/{n_hot} found; cold: {n_cold - miss_cold}/{n_cold} found")
    assert n_hot == n_cold == 4 * 131
    assert miss_hot <= 0.01 * n_hot  # measured 0 missed
    assert miss_cold <= 0.01 * n_cold  # measured 0 missed


def test_bad_columns_found(chips: list[Chip]) -> None:
    for c in chips:
        m = c.bpm.mask
        truth_col = (c.truth & BPM_BADCOL) != 0
        found = (m & BPM_BADCOL) != 0
        truth = [(int(r["x"]), int(r["y0"]), r["kind"], round(float(r["value"]), 3)) for r in c.badcols]
        print(f"CCD{c.k}: truth", truth,
              "found", [(d.x, d.y0, d.y1, d.kind, round(d.value, 3), d.source) for d in c.bpm.columns])
        assert int((truth_col & ~found).sum()) <= 0.01 * truth_col.sum()  # measured: every pixel, exact y0
        assert int((found & ~truth_col).sum()) <= 0.01 * truth_col.sum()  # measured: none
        for r in c.badcols:
            kinds = {d.kind for d in c.bpm.columns if d.x == r["x"]}
            assert kinds == ({"hot"} if r["kind"] == "hot" else {"dead"})
            seg = [d for d in c.bpm.columns if d.x == r["x"]]
            assert all(abs(d.y0 - r["y0"]) <= 1 and d.y1 == CONFIG.chip_ny for d in seg)
            if r["kind"] == "hot":
                assert seg[0].value == pytest.approx(r["value"], abs=3.0)  # ADU above the neighbours


def _cubic_fit(image: np.ndarray) -> np.ndarray:
    ny, nx = image.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    u, v = xx.ravel() / nx - 0.5, yy.ravel() / ny - 0.5
    terms = np.stack([u**i * v**j for i in range(4) for j in range(4 - i)], axis=1)
    coef = np.linalg.lstsq(terms, image.ravel(), rcond=None)[0]
    return (terms @ coef).reshape(ny, nx)


def test_few_false_positives_and_no_dust_or_vignetting(chips: list[Chip]) -> None:
    n_fp = n_px = n_dust = 0
    for c in chips:
        fp = (c.bpm.mask != 0) & (c.truth == 0)
        n_fp += int(fp.sum())
        n_px += fp.size
        # dust donuts: where the true flat's 5x5 median is > 1 % below a cubic fit (vignetting, illumination)
        tf = c.true_flat
        dust = ndimage.median_filter(tf, 5) / _cubic_fit(tf) < 0.99
        dust &= ~ndimage.binary_dilation(c.truth != 0, iterations=2)
        n_dust += int(dust.sum())
        assert not (fp & dust).any()
        # the corners (strongest vignetting) are clean too
        corner = np.zeros_like(fp)
        corner[:32, :32] = corner[:32, -32:] = corner[-32:, :32] = corner[-32:, -32:] = True
        assert not (fp & corner).any()
    print(f"false positives: {n_fp} of {n_px} px ({n_fp / n_px:.2e}); {n_dust} dust-donut px, none flagged")
    assert n_dust > 1000
    assert n_fp < 1e-4 * n_px  # measured 4 (1.5e-5): 5-sigma tails of the master bias and of the flats' PRNU


def test_flat_votes_and_grow(chips: list[Chip]) -> None:
    c = chips[0]
    both = find_bad_pixels(c.bias, c.flats, flat_votes=2)
    cold = (c.truth & BPM_COLD) != 0
    assert ((both.mask & BPM_COLD) != 0)[cold].all()  # cold pixels are cold in every filter
    assert both.n_cold <= c.bpm.n_cold
    grown = find_bad_pixels(c.bias, c.flats, grow=1)
    assert grown.n_bad == c.bpm.n_bad and grown.n_grown > 0
    assert grown.n_bad + grown.n_grown == np.count_nonzero(grown.mask)
    assert (grown.mask[c.bpm.mask != 0] & c.bpm.mask[c.bpm.mask != 0] == c.bpm.mask[c.bpm.mask != 0]).all()
    only_bias = find_bad_pixels(c.bias)
    assert only_bias.sources == ("bias",) and only_bias.n_cold == 0
    assert ((only_bias.mask & BPM_HOT) != 0)[(c.truth & BPM_HOT) != 0].all()


def test_dark_finds_hot_pixels_by_dark_current(chips: list[Chip]) -> None:
    """No darks in the simulator: a synthetic master dark (ADU/s) from the truth's dark currents, with an
    amplifier-glow gradient and noise, finds the hot pixels whose dark current is > 5 sigma."""
    c = chips[1]
    gain = 2.0
    ny, nx = c.truth.shape
    xx = np.arange(nx)[None, :]
    rng = np.random.default_rng(1)
    sigma = 0.05  # ADU/s
    dark = 0.02 + 0.3 * np.exp(-xx / 30.0) + rng.normal(0.0, sigma, (ny, nx))
    dark[c.hotpix["y"], c.hotpix["x"]] += c.hotpix["dark"] / gain
    res = find_bad_pixels(master_dark=dark, dark_var=np.full((ny, nx), sigma**2))
    visible = c.hotpix["dark"] / gain > 6 * sigma
    found = (res.mask[c.hotpix["y"], c.hotpix["x"]] & BPM_HOT) != 0
    fp = int(((res.mask != 0) & (c.truth == 0)).sum())
    print(f"dark: {found[visible].sum()}/{visible.sum()} hot pixels above 6 sigma found, {found.sum()} in all, "
          f"{fp} false positives")
    assert found[visible].all() and fp <= 2
    assert res.sources == ("dark",)
    master = SimpleNamespace(image=dark.astype(np.float32), var=np.full((ny, nx), sigma**2, np.float32))
    assert np.array_equal(find_bad_pixels(master_dark=master).mask, res.mask)  # e.g. a MasterDark


def test_synthetic_partial_columns_and_edges() -> None:
    """A column segment in the middle of a chip, a hot column from row 0, a strongly vignetted flat."""
    rng = np.random.default_rng(5)
    ny, nx = 200, 150
    bias = rng.normal(0.0, 0.5, (ny, nx)) + rng.normal(0.0, 1.0, (1, nx))
    bias[60:140, 40] += 10.0
    bias[0:50, 100] += 30.0
    bias[10, 10] += 5.0
    yy, xx = np.mgrid[0:ny, 0:nx]
    rho2 = ((xx - 20) ** 2 + (yy - 30) ** 2) / 250.0**2
    flat = (1 - 0.4 * rho2) * (1 + 0.01 * rng.standard_normal((ny, nx)))
    flat[100:, 70] *= 0.5
    flat[5, 5] *= 0.8
    res = find_bad_pixels(bias, [flat], bias_var=np.full((ny, nx), 0.25))
    segs = {(d.x, d.y0, d.y1, d.kind) for d in res.columns}
    assert segs == {(40, 60, 140, "hot"), (100, 0, 50, "hot"), (70, 100, 200, "dead")}
    assert res.mask[10, 10] & BPM_HOT and res.mask[5, 5] & BPM_COLD
    assert res.n_bad == 1 + 1 + 80 + 50 + 100
    with pytest.raises(ValueError):
        find_bad_pixels()
