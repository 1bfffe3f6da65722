"""Trail detection (services.calib.science.trails) against the simulator's truth.

Chips are simulated (4 chips of 512², a trail in every science exposure, so that each trail crosses some
chips fully, clips others at a corner and misses the rest), reduced with the calib science, and searched.
The truth mask bit 2 flags pixels where the trail added > 5 e- (wisp.sim.artifacts.MASK_THRESHOLD_E), i.e.
out to 0.25-0.4 sigma of the sky noise (12-21 e-) for the simulator's peaks of 150-1500 e-; the detector
masks out to where the fitted profile drops below 0.2 sigma of the sky noise, so it covers that set outright.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from services.calib.science import BAD, SATURATED, TRAIL
from services.calib.science.trails import TrailLine, Trails, find_trails
from tests.fixtures.calib import calibrate_chip, raw_night
from wisp.sim import SimConfig
from wisp.sim.artifacts import Trail

pytestmark = pytest.mark.unit

BRIGHT = SimConfig(seed=1, n_chips=4, chip_nx=512, chip_ny=512, n_bias=3, n_flats_per_filter=3,
                   n_dither_per_field_filter=2, trail_every=1)
FAINT = SimConfig(seed=6, n_chips=4, chip_nx=512, chip_ny=512, n_bias=3, n_flats_per_filter=3,
                  n_dither_per_field_filter=1, trail_every=1)
FAINT_PEAK = (20.0, 40.0)  # e-/px on the ridge: 1-3 sigma of the sky noise per pixel
MIN_TRUTH_PX = 300  # chips where the trail only grazes a corner (a few px) are not scored


@dataclass
class Chip:
    name: str
    sci: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    truth: np.ndarray  # bool: truth mask bit 2
    trail: dict[str, float]  # TRAILANG, TRAILSIG, TRAILPK (empty without a trail)
    found: Trails


def _reduce_night(config: SimConfig, root: Path) -> list[Chip]:
    raw = raw_night(config, root)
    chips = []
    for k in range(1, config.n_chips + 1):
        cal = calibrate_chip(raw, k)
        for f in config.filters:
            for p in raw.files[f"OBJECT {f}"]:
                red = cal.reduce(p, f)
                with fits.open(raw.truth_file(p)) as tru:
                    th = tru[0].header
                    truth = (tru[f"CCD{k}"].data & 2) != 0
                    trail = {key: float(th[key]) for key in ("TRAILANG", "TRAILSIG", "TRAILPK") if key in th}
                chips.append(Chip(f"{p.stem}/CCD{k}", red.sci, red.var, red.dq, truth, trail,
                                  find_trails(red.sci, red.var, red.dq)))
    return chips


@pytest.fixture(scope="module")
def bright(tmp_path_factory: pytest.TempPathFactory) -> list[Chip]:
    return _reduce_night(BRIGHT, tmp_path_factory.mktemp("trails_bright"))


@pytest.fixture(scope="module")
def faint(tmp_path_factory: pytest.TempPathFactory) -> list[Chip]:
    import wisp.sim.night as sim_night

    make_trail = sim_night.make_trail

    def faint_trail(rng: np.random.Generator, r_corner: float) -> Trail:
        t = make_trail(rng, r_corner)
        return Trail(t.u0, t.v0, t.angle, t.sigma, round(float(rng.uniform(*FAINT_PEAK)), 2))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim_night, "make_trail", faint_trail)
        return _reduce_night(FAINT, tmp_path_factory.mktemp("trails_faint"))


def _angle_error(line: TrailLine, truth_deg: float) -> float:
    return abs((line.angle - truth_deg + 90.0) % 180.0 - 90.0)


def _report(chips: list[Chip]) -> None:
    for c in chips:
        n = int(c.truth.sum())
        got = int((c.found.mask & c.truth).sum())
        extra = int((c.found.mask & ~c.truth).sum())
        lines = [(round(x.angle, 3), round(x.length), round(x.sigma, 2), round(x.peak)) for x in c.found.lines]
        print(f"{c.name}: truth {n} px, flagged {got} ({got / max(n, 1):.2%}), extra {extra}, "
              f"truth {c.trail.get('TRAILANG')} deg sigma {c.trail.get('TRAILSIG')} peak {c.trail.get('TRAILPK')}; "
              f"lines (angle, length, sigma, peak) {lines}")


def _check_trail_chips(chips: list[Chip], peak_tol: float) -> list[Chip]:
    scored = [c for c in chips if c.truth.sum() >= MIN_TRUTH_PX]
    for c in scored:
        n = int(c.truth.sum())
        completeness = (c.found.mask & c.truth).sum() / n
        assert completeness >= 0.95, c.name
        assert len(c.found.lines) == 1, c.name
        line = c.found.lines[0]
        assert _angle_error(line, c.trail["TRAILANG"]) < 1.0, c.name
        assert line.sigma == pytest.approx(c.trail["TRAILSIG"], rel=0.2), c.name
        # SCI is e- / master flat; the simulator's peak is before the flat (~1 at the chips' centres)
        assert line.peak == pytest.approx(c.trail["TRAILPK"], rel=peak_tol), c.name
        assert c.found.mask.sum() == line.n_pixels
    return scored


def test_bright_trails_masked(bright: list[Chip]) -> None:
    _report(bright)
    scored = _check_trail_chips(bright, peak_tol=0.15)
    assert len(scored) >= 6
    sizes = sorted(int(c.truth.sum()) for c in scored)
    assert sizes[0] < 0.4 * sizes[-1]  # a trail clipping a corner as well as full crossings
    for c in scored:
        line = c.found.lines[0]
        assert line.angle == pytest.approx(c.trail["TRAILANG"], abs=0.1)  # measured <= 0.03 deg
        assert (c.found.mask & ~c.truth).sum() < 0.3 * c.truth.sum()  # measured 15-19 % wider than truth
        ny, nx = c.sci.shape
        # the trail crosses the chip: the stretch found runs from edge to edge
        for x, y in ((line.x0, line.y0), (line.x1, line.y1)):
            assert min(x, y, nx - 1 - x, ny - 1 - y) < 1.0, c.name


def test_no_trails_where_none(bright: list[Chip], faint: list[Chip]) -> None:
    free = [c for c in bright + faint if not c.truth.any()]
    assert len(free) >= 6
    assert any((c.dq & SATURATED).any() for c in free)  # saturated stars with bleed columns are there
    assert all((c.dq & BAD).any() for c in free)  # and bad columns / pixels (flagged)
    for c in free:
        assert c.found.lines == [], c.name
        assert c.found.mask.mean() < 1e-4


def test_faint_trails_masked(faint: list[Chip]) -> None:
    _report(faint)
    scored = _check_trail_chips(faint, peak_tol=0.25)
    assert len(scored) >= 3
    assert max(c.trail["TRAILPK"] for c in scored) <= FAINT_PEAK[1]


def _inject(chip: Chip, x0: float, y0: float, angle: float, length: float, sigma: float, peak: float,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A trail segment from (x0, y0) along ``angle`` deg for ``length`` px, with Poisson noise; returns sci, var,
    the along-track coordinate and the truth (> 5 e-)."""
    ny, nx = chip.sci.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    a = math.radians(angle)
    along = (xx - x0) * math.cos(a) + (yy - y0) * math.sin(a)
    d = (xx - x0) * math.sin(a) - (yy - y0) * math.cos(a)
    light = peak * np.exp(-0.5 * (d / sigma) ** 2) * ((along >= 0) & (along <= length))
    sci = chip.sci + np.random.default_rng(seed).poisson(light).astype(np.float32)
    return sci, chip.var + light.astype(np.float32), along, light > 5.0


def test_trail_ending_inside_the_chip(bright: list[Chip]) -> None:
    free = [c for c in bright if not c.truth.any()]
    cases = ((130.0, 140.0, 17.0, 30.0), (130.0, 140.0, 92.0, 60.0), (300.0, 140.0, 141.0, 400.0))  # x0, y0, deg, e-
    assert len(free) >= len(cases)
    for i, (c, (x0, y0, angle, peak)) in enumerate(zip(free, cases, strict=False)):
        sci, var, along, truth = _inject(c, x0, y0, angle, 230.0, 1.2, peak, seed=i)
        found = find_trails(sci, var, c.dq)
        assert len(found.lines) == 1
        line = found.lines[0]
        flagged = (found.mask & truth).sum() / truth.sum()
        beyond = float(np.max(np.where(found.mask, np.maximum(-along, along - 230.0), -np.inf)))
        print(f"{c.name}: injected {angle} deg, peak {peak}: flagged {flagged:.2%}, mask reaches {beyond:.1f} px "
              f"beyond the ends, length {line.length:.1f} px, angle {line.angle:.3f}")
        assert flagged >= 0.95
        assert beyond < 16.0  # half a segment
        assert line.length == pytest.approx(230.0, abs=16.0)
        assert _angle_error(line, angle) < 0.2


def test_unflagged_hot_column_is_not_a_trail(bright: list[Chip]) -> None:
    c = next(c for c in bright if not c.truth.any())
    for level in (30.0, 3000.0):
        sci, var = c.sci.copy(), c.var + np.float32(level)
        sci[100:, 200] += level  # a hot column from row 100 up, not in DQ
        sci[:, 350] += level / 3
        found = find_trails(sci, var, c.dq)
        assert found.lines == [] and not found.mask.any()


def test_result_is_usable_as_dq_bit(bright: list[Chip]) -> None:
    c = next(c for c in bright if c.truth.sum() >= MIN_TRUTH_PX)
    assert c.found.mask.dtype == bool and c.found.mask.shape == c.sci.shape
    dq = c.dq | np.where(c.found.mask, np.uint16(TRAIL), np.uint16(0))
    assert dq.dtype == np.uint16 and ((dq & TRAIL) != 0).sum() == c.found.mask.sum()
    line = c.found.lines[0]
    # the line's normal form: x sin(angle) - y cos(angle) = rho for its end points
    a = math.radians(line.angle)
    for x, y in ((line.x0, line.y0), (line.x1, line.y1)):
        assert x * math.sin(a) - y * math.cos(a) == pytest.approx(line.rho, abs=1.0)
    assert line.flux_per_px == pytest.approx(line.peak * line.sigma * math.sqrt(2 * math.pi))
    assert line.width > 4 * line.sigma


def test_bad_input() -> None:
    z = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError):
        find_trails(z, z[:32], np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError):
        find_trails(np.full((64, 64), np.nan, np.float32), z + 1, np.zeros((64, 64), np.uint16))
    empty: Any = find_trails(np.random.default_rng(0).normal(100.0, 10.0, (128, 128)).astype(np.float32),
                             np.full((128, 128), 100.0, np.float32), np.zeros((128, 128), np.uint16))
    assert empty.lines == [] and not empty.mask.any()
