"""Super-flat (illumination correction) and fringe frame against the simulator's truth.

One night, one 256 px chip: the dome lamp has a 5 % per r_corner gradient (``dome_flat_gradient``), so the
master flats carry a known illumination error of ~ +-3.5 % across the chip; the i band has fringes of 2 %
of the sky at their peak (``fringe_filters``). 7 dithered 300 s exposures per filter (r, i).
Measured (seed 21): r-band sky flatness (rms of 64 px cell medians of SCI / true sky, over all frames)
2.0 % -> 0.18 %; super-flat - expected correction rms 0.16 % (i band, with fringes: 0.28 %); fringe frame
vs truth correlation 0.95; residual fringe amplitude after removal -3.4 ... +1.1 % of the input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from services.calib.science.illumination import (
    SourceMasking,
    apply_correction,
    fit_fringe,
    make_fringe_frame,
    make_superflat,
    remove_fringes,
    sky_frames,
)
from tests.fixtures.calib import calibrate_chip, raw_night
from wisp.errors import InvalidInput
from wisp.sim import SimConfig

GRADIENT = 0.05
CONFIG = SimConfig(seed=21, n_chips=1, chip_nx=256, chip_ny=256, filters=("r", "i"), n_bias=5,
                   n_flats_per_filter=3, n_dither_per_field_filter=7, exptime=300.0, trail_every=0,
                   dome_flat_gradient=GRADIENT, fringe_filters=("i",), fringe_amplitude=0.02)
K = 1
N = NX = NY = 256
CELL = 64


@dataclass
class Frames:
    names: list[str]
    sci: list[np.ndarray]
    var: list[np.ndarray]
    dq: list[np.ndarray]
    sky: list[np.ndarray]  # true sky e- (before the flat) = the ideal reduced sky up to the flat normalisation
    fringe_amp: list[float]


@dataclass
class Night:
    root: Path
    chip: dict[str, Any]
    r_corner: float
    bpm: np.ndarray
    frames: dict[str, Frames]

    def truth(self, name: str) -> np.ndarray:
        return fits.getdata(self.root / "truth" / name, f"CCD{K}").astype(np.float64)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    raw = raw_night(CONFIG, tmp_path_factory.mktemp("superflat"))
    cal = calibrate_chip(raw, K)
    yy, xx = np.mgrid[0:NY, 0:NX]
    out = {}
    for f in CONFIG.filters:
        fr = Frames([], [], [], [], [], [])
        for p in raw.files[f"OBJECT {f}"]:
            red = cal.reduce(p, f)
            th = fits.getheader(raw.truth_file(p), f"CCD{K}")
            fr.names.append(p.name)
            fr.sci.append(red.sci)
            fr.var.append(red.var)
            fr.dq.append(red.dq)
            fr.sky.append(th["SKYC"] + th["SKYDX"] * (xx - (NX - 1) / 2) + th["SKYDY"] * (yy - (NY - 1) / 2))
            fr.fringe_amp.append(float(th.get("FRNGAMP", 0.0)))
        out[f] = fr
    camera = raw.meta["camera"]
    return Night(raw.root, camera["chips"][0], camera["r_corner_px"], cal.bpm, out)


def _flatness(fr: Frames, correction: np.ndarray | None) -> float:
    """rms of the 64 px cell medians of SCI / true sky (median over the frames, good pixels), normalised."""
    ratios = []
    for sci, dq, sky in zip(fr.sci, fr.dq, fr.sky, strict=True):
        s = sci if correction is None else sci / correction
        ratios.append(np.where(dq == 0, s / sky, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (bad columns)
        stack = np.nanmedian(np.array(ratios), axis=0)
    cells = stack.reshape(NY // CELL, CELL, NX // CELL, CELL).transpose(0, 2, 1, 3).reshape(-1, CELL * CELL)
    med = np.nanmedian(cells, axis=1)
    return float(np.std(med / np.median(med)))


def _expected_correction(night: Night) -> np.ndarray:
    """The illumination error of the master flats: the reduced sky goes as 1 / (1 + g u / r_corner)."""
    u = np.arange(NX)[None, :] - night.chip["axis_x"]
    c = np.ones((NY, 1)) / (1.0 + GRADIENT * u / night.r_corner)
    return c / np.median(c)


@pytest.fixture(scope="module")
def superflat_r(night: Night) -> Any:
    fr = night.frames["r"]
    return make_superflat(fr.sci, fr.dq, fr.var)


def test_superflat_recovers_the_dome_flat_illumination_error(night: Night, superflat_r: Any) -> None:
    fr, sf = night.frames["r"], superflat_r
    before, after = _flatness(fr, None), _flatness(fr, sf.correction)
    vs_truth = float(np.std(sf.correction - _expected_correction(night)))
    print(f"sky flatness (rms of {CELL} px cells): {before:.4f} before, {after:.4f} after the super-flat; "
          f"super-flat - expected correction rms {vs_truth:.4f}; stats {sf.stats}")
    assert before > 0.015  # the error is there ...
    assert after < 0.005  # ... and corrected to < 0.5 % (measured 0.18 %)
    assert vs_truth < 0.004  # the mean sky gradient of 7 frames (~0.35 % per r_corner) is in it too
    assert sf.correction.dtype == np.float32 and float(np.median(sf.correction)) == pytest.approx(1.0, abs=1e-6)
    assert sf.stats["n_frames"] == CONFIG.n_dither_per_field_filter and 0.0 < sf.stats["masked_fraction"] < 0.5
    assert sf.levels == pytest.approx([float(np.median(s)) for s in fr.sky], rel=0.05)
    # sigma-clipped mean stacking gives the same correction
    sf2 = make_superflat(fr.sci, fr.dq, fr.var, method="sigclip_mean")
    assert float(np.std(sf2.correction - sf.correction)) < 0.001


def test_sky_frames_mask_sources_and_bad_pixels(night: Night) -> None:
    fr = night.frames["r"]
    sky = sky_frames(fr.sci, fr.dq, fr.var, masking=SourceMasking(dilate_px=3))
    table = fits.getdata(night.root / "truth" / fr.names[0].replace(".fits", "_truth.fits"), "SOURCES")
    bright = table[(table["flux_onchip"] > 2000) & (table["x"] > 0) & (table["x"] < NX - 1)
                   & (table["y"] > 0) & (table["y"] < NY - 1)]
    hit = sky.masks[0][np.rint(bright["y"]).astype(int), np.rint(bright["x"]).astype(int)]
    print(f"{bright.size} sources > 2000 e- on frame 0, {int(hit.sum())} masked; "
          f"masked fractions {np.round(sky.masked_fraction, 3)}, detections {sky.n_sources}")
    assert bright.size >= 3 and hit.all()
    assert np.all(sky.masks[0][night.bpm != 0]) and np.all(np.isnan(sky.normalised[0][night.bpm != 0]))
    for norm in sky.normalised:
        assert float(np.nanmedian(norm)) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(InvalidInput):
        sky_frames(fr.sci[:2], fr.dq[:2], fr.var[:2])
    with pytest.raises(InvalidInput):
        sky_frames(fr.sci, fr.dq[:3], fr.var)


@pytest.fixture(scope="module")
def fringes(night: Night) -> tuple[Any, Any]:
    fr = night.frames["i"]
    sf = make_superflat(fr.sci, fr.dq, fr.var)
    return sf, make_fringe_frame(fr.sci, fr.dq, fr.var, superflat=sf.correction)


def _true_pattern(night: Night) -> np.ndarray:
    """The truth pattern as it appears in a reduced frame: fringes are additive, so dividing by the
    (normalised) flat divides them too; per unit of the reduced sky."""
    flat = night.truth("flat_i.fits")
    return night.truth("fringe_i.fits") / (flat / np.median(flat[night.bpm == 0]))


def test_fringe_frame_matches_truth(night: Night, fringes: tuple[Any, Any]) -> None:
    sf, ff = fringes
    good = ff.n_used > 0
    truth = _true_pattern(night)
    corr = float(np.corrcoef(ff.pattern[good], truth[good])[0, 1])
    corr_raw = float(np.corrcoef(ff.pattern[good], night.truth("fringe_i.fits")[good])[0, 1])
    scale = float(np.polyfit(truth[good], ff.pattern[good], 1)[0])
    median_amp = float(np.median(night.frames["i"].fringe_amp))
    print(f"fringe frame: correlation with truth {corr:.4f} (with fringe_i.fits itself {corr_raw:.4f}), "
          f"scale {scale:.5f} vs median FRNGAMP {median_amp:.5f}; i super-flat - expected "
          f"{np.std(sf.correction - _expected_correction(night)):.4f}; stats {ff.stats}")
    assert corr > 0.9 and corr_raw > 0.9  # measured ~0.95
    # smoothing (1.5 px) attenuates 18-40 px fringes by 3-13 %
    assert 0.8 * median_amp < scale < 1.05 * median_amp
    assert float(np.std(sf.correction - _expected_correction(night))) < 0.005  # fringes do not leak into it
    assert ff.pattern.dtype == np.float32 and abs(float(ff.pattern[good].mean(dtype=np.float64))) < 1e-5


def test_fringe_removal(night: Night, fringes: tuple[Any, Any]) -> None:
    sf, ff = fringes
    fr, truth = night.frames["i"], _true_pattern(night)
    rows = []
    for name, sci, var, dq, amp in zip(fr.names, fr.sci, fr.var, fr.dq, fr.fringe_amp, strict=True):
        sci, var_c = apply_correction(sci, var, sf.correction)
        clean, fit = remove_fringes(sci, var_c, dq, ff.pattern)
        before = fit_fringe(sci, var_c, dq, truth)  # the true pattern's amplitude in the frame
        after = fit_fringe(clean, var_c, dq, truth)
        rows.append((name, amp, fit.amplitude, fit.error, before.amplitude, after.amplitude, after.error))
    for name, amp, a, err, b, c, cerr in rows:
        print(f"{name}: FRNGAMP {amp:.5f}, fitted {a:.3f} +- {err:.3f} x pattern; true-pattern amplitude "
              f"{b:.5f} before, {c:+.5f} +- {cerr:.5f} after ({c / b:+.3f})")
    assert all(abs(b / amp - 1) < 0.1 for _, amp, _, _, b, _, _ in rows)  # the truth fit measures FRNGAMP
    assert all(abs(c / b) < 0.1 for _, _, _, _, b, c, _ in rows)  # < 10 % left (measured -3.4 ... +1.1 %)
    # the fitted amplitudes follow the true per-exposure amplitudes (+-20 %)
    amps, fits_ = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    assert np.corrcoef(amps, fits_)[0, 1] > 0.9
    assert np.all(np.abs(fits_ / amps / np.median(fits_ / amps) - 1) < 0.05)
