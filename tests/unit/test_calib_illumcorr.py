"""The illumination-correction product (night-sky flat + fringe frame, :func:`make_illumination`, what the
``illumination`` stage writes) applied to the reduced frames (:func:`apply_illumination`, what a reduction
does with it), against the simulator's truth.

Night of :mod:`tests.unit.test_calib_superflat`: one 256 px chip, dome-flat gradient 5 % per r_corner
(+-3.5 % across the chip), i-band fringes of 2 % of the sky at their peak, 7 dithered exposures per filter.
Measured (seed 21): sky flatness (rms of 64 px cell medians of SCI / true sky, over the frames) r 2.0 % ->
0.18 %, i 2.0 % -> 0.23 %; fringe rms 0.86 % of the sky measured vs 0.81 % true; the true pattern's
amplitude left in the i frames -3.4 ... +1.1 % of what was there (~2 % of the sky at the peak before);
fitted amplitudes vs the true per-exposure FRNGAMP: correlation 0.99.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from services.calib.science.illumcorr import Illumination, apply_illumination, make_illumination
from services.calib.science.illumination import fit_fringe
from tests.unit.test_calib_superflat import (
    CONFIG,
    Night,
    _expected_correction,
    _flatness,
    _true_pattern,
    night,  # noqa: F401 (the simulated night, a module fixture)
)
from wisp.dq import NO_DATA
from wisp.errors import InvalidInput


@pytest.fixture(scope="module")
def products(night: Night) -> dict[str, Illumination]:  # noqa: F811
    """What the stage makes: r without fringes, i with (the description's ``fringe_filters``)."""
    return {f: make_illumination(fr.sci, fr.dq, fr.var, fringe=f in CONFIG.fringe_filters)
            for f, fr in night.frames.items()}


def _applied(night: Night, product: Illumination, f: str) -> tuple[list[np.ndarray], list[dict]]:  # noqa: F811
    fr = night.frames[f]
    out, metrics = [], []
    for sci, var, dq in zip(fr.sci, fr.var, fr.dq, strict=True):
        s, v, m = apply_illumination(sci, var, dq, product.superflat, product.fringe)
        assert s.dtype == np.float32 and v.dtype == np.float32
        assert np.allclose(v, var / product.superflat**2, rtol=1e-5, equal_nan=True)
        out.append(s)
        metrics.append(m)
    return out, metrics


def test_product_contents(night: Night, products: dict[str, Illumination]) -> None:  # noqa: F811
    for f, prod in products.items():
        print(f"{f}: metrics {prod.metrics}")
        assert prod.superflat.dtype == np.float32 and float(np.median(prod.superflat)) == pytest.approx(1, abs=1e-6)
        assert prod.metrics["n_frames"] == CONFIG.n_dither_per_field_filter
        assert float(np.std(prod.superflat - _expected_correction(night))) < 0.004
    assert products["r"].fringe is None and "fringe_rms_rel" not in products["r"].metrics
    fringe = products["i"].fringe
    assert fringe is not None and fringe.dtype == np.float32
    # the truth pattern has max |value| 1 and is scaled by FRNGAMP ~ 0.02: its rms in the frames is ~ 0.009
    good = (night.bpm == 0) & (fringe != 0)
    truth_rms = float(np.std(_true_pattern(night)[good])) * float(np.median(night.frames["i"].fringe_amp))
    print(f"fringe rms / sky: {products['i'].metrics['fringe_rms_rel']:.5f} measured, {truth_rms:.5f} true")
    assert products["i"].metrics["fringe_rms_rel"] == pytest.approx(truth_rms, rel=0.15)
    assert products["i"].metrics["fringe_snr"] > 3


def test_night_sky_flat_removes_the_dome_flat_gradient(night: Night, products: dict[str, Illumination]) -> None:  # noqa: F811
    rows = []
    for f in ("r", "i"):
        fr = night.frames[f]
        corrected, _ = _applied(night, products[f], f)
        before = _flatness(fr, None)
        after = _flatness(replace(fr, sci=corrected), None)
        rows.append((f, before, after))
        print(f"{f}: sky flatness (rms of 64 px cells of SCI / true sky) {before:.4f} before, {after:.4f} after")
    for f, before, after in rows:
        assert before > 0.015  # the dome flat's illumination error is there ...
        assert after < (0.004 if f == "r" else 0.005)  # ... and gone (measured 0.18 % r, 0.30 % i)


def test_fringes_are_removed(night: Night, products: dict[str, Illumination]) -> None:  # noqa: F811
    fr, truth = night.frames["i"], _true_pattern(night)
    corrected, metrics = _applied(night, products["i"], "i")
    rows = []
    for name, sci, var, dq, clean, m, amp in zip(fr.names, fr.sci, fr.var, fr.dq, corrected, metrics,
                                                 fr.fringe_amp, strict=True):
        flat_only = sci / products["i"].superflat
        before = fit_fringe(flat_only, var / products["i"].superflat ** 2, dq, truth).amplitude
        after = fit_fringe(clean, var / products["i"].superflat ** 2, dq, truth)
        rows.append((amp, m["fringe_amplitude"], before, after.amplitude))
        print(f"{name}: FRNGAMP {amp:.5f}; fitted {m['fringe_amplitude']:.3f} x pattern ({m['fringe_rms_e']:.1f} e- "
              f"rms at sky {m['fringe_level_e']:.0f} e-); true-pattern amplitude {before:.5f} before, "
              f"{after.amplitude:+.5f} +- {after.error:.5f} after ({after.amplitude / before:+.3f})")
    assert all(abs(b / a - 1) < 0.1 for a, _, b, _ in rows)  # the truth fit measures the fringes put in
    assert all(abs(c / b) < 0.1 for _, _, b, c in rows)  # < 10 % of them left (measured -3.4 ... +1.1 %)
    amps, fitted = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    print(f"fitted amplitude vs FRNGAMP: correlation {np.corrcoef(amps, fitted)[0, 1]:.4f}")
    assert np.corrcoef(amps, fitted)[0, 1] > 0.95
    # r has no fringes: its product has no FRINGE and applying it only divides
    s, _, m = apply_illumination(night.frames["r"].sci[0], night.frames["r"].var[0], night.frames["r"].dq[0],
                                 products["r"].superflat)
    assert m == {"illumination_applied": True}
    assert np.allclose(s, night.frames["r"].sci[0] / products["r"].superflat, equal_nan=True)


def test_apply_checks_its_inputs(night: Night, products: dict[str, Illumination]) -> None:  # noqa: F811
    fr, prod = night.frames["i"], products["i"]
    with pytest.raises(InvalidInput, match="super-flat has shape"):
        apply_illumination(fr.sci[0], fr.var[0], fr.dq[0], prod.superflat[:10])
    all_bad = np.full_like(fr.dq[0], NO_DATA)
    s, _, m = apply_illumination(fr.sci[0], fr.var[0], all_bad, prod.superflat, prod.fringe)
    assert "usable pixels" in m["fringe_skipped"]
    assert np.allclose(s, fr.sci[0] / prod.superflat, equal_nan=True)
    with pytest.raises(InvalidInput):  # a sky stack needs >= 3 frames
        make_illumination(fr.sci[:2], fr.dq[:2], fr.var[:2], fringe=True)
