"""Calib science on synthetic arrays: sections, nights, overscan, frame screening, banded combine, DQ."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from services.calib.science import (
    BAD,
    NO_DATA,
    SATURATED,
    RowFunction,
    Screening,
    combine,
    dq_names,
    overscan_correct,
    overscan_level,
    parse_section,
    weight,
)
from services.calib.science.combine import nanmedian_last
from wisp.errors import InvalidInput


def test_parse_section_plain_and_reversed() -> None:
    assert parse_section("[1:256,1:128]") == (slice(0, 128), slice(0, 256))
    assert parse_section("[ 257:288 , 1:256 ]") == (slice(0, 256), slice(256, 288))
    assert parse_section("[2048:1,4096:2049]") == (slice(2048, 4096), slice(0, 2048))
    for bad in ("1:2,3:4", "[0:10,1:5]", "[a:b,1:2]"):
        with pytest.raises(ValueError):
            parse_section(bad)


def _raw_frame(rng: np.random.Generator, ny: int = 200, nx: int = 120, nos: int = 24, level: float = 1000.0,
               signal: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rows = level + 6.0 * np.exp(-np.arange(ny) / 30.0) + 2.0 * np.arange(ny) / ny
    raw = rows[:, None] + rng.normal(0.0, 3.0, (ny, nx + nos))
    raw[:, :nx] += signal
    return np.rint(raw), rows


@pytest.mark.parametrize("method", ["median_rows", "mean", "poly"])
def test_overscan_methods(method: str) -> None:
    rng = np.random.default_rng(1)
    raw, rows = _raw_frame(rng, signal=50.0)
    raw[10, 130] += 5000.0  # a cosmic ray in the overscan must not move its row
    ds, bs = parse_section("[1:120,1:200]"), parse_section("[121:144,1:200]")
    data, level = overscan_correct(raw, ds, bs, method=method, order=3)  # type: ignore[arg-type]
    assert data.dtype == np.float32 and data.shape == (200, 120) and level.shape == (200,)
    noise = raw[:, 120:] - rows[:, None]
    noise[10, 10] = 0.0  # the cosmic ray
    err = level - rows - noise.mean()  # the mean read noise of this strip is -0.12 ADU
    if method == "median_rows":  # follows the row structure (noise 3/sqrt(24*15) ~ 0.16 ADU per row)
        assert np.abs(err).max() < 0.6 and abs(err.mean()) < 0.03
    elif method == "mean":
        assert np.ptp(level) == 0 and abs(err.mean()) < 0.03
    else:
        assert abs(err[60:].mean()) < 0.3
    assert abs(float(np.median(data)) - 50.0 - float(np.median(rows - level))) < 0.5


def test_overscan_level_rejects_unknown_method() -> None:
    with pytest.raises(ValueError):
        overscan_level(np.zeros((4, 4)), method="spline")  # type: ignore[arg-type]


def test_nanmedian_last_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(500, 6))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[7] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(a, axis=-1)
    np.testing.assert_array_equal(nanmedian_last(a), ref)


def _stack(n: int = 6, ny: int = 300, nx: int = 64, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0.0, 5.0, (ny, nx))
    frames = [(100.0 + pattern + rng.normal(0.0, 2.0, (ny, nx))).astype(np.float32) for _ in range(n)]
    frames[1][50, 7] += 500.0  # cosmic rays
    frames[-1][ny - 99, 33] += 80.0
    return frames


def test_combine_banding_is_exact_and_deterministic() -> None:
    frames = _stack()
    one = combine(frames, band_rows=10_000)
    for band in (1, 7, 64):
        other = combine(frames, band_rows=band)
        for name in ("image", "n_used", "var"):
            assert getattr(other, name).tobytes() == getattr(one, name).tobytes()
    assert combine(frames).image.tobytes() == one.image.tobytes()
    assert one.image.dtype == np.float32 and one.n_used.dtype == np.uint16
    assert one.n_used[50, 7] == 5 and one.n_used[201, 33] == 5  # the cosmic rays were clipped
    assert 0.99 < one.n_used.mean() / 6 < 1.0  # 3-sigma clipping also drops ~0.4% of good values
    truth = np.mean([f.astype(float) for f in frames], axis=0)
    truth[50, 7] -= 500.0 / 6  # what a clean mean would give
    assert abs(one.image[50, 7] - truth[50, 7]) < 4.0


def test_combine_streams_row_functions_with_bounded_reads() -> None:
    frames = _stack(n=4, ny=100)
    calls: list[tuple[int, int]] = []

    def reader(f: np.ndarray) -> RowFunction:
        def read(r0: int, r1: int) -> np.ndarray:
            calls.append((r0, r1))
            return f[r0:r1]
        return RowFunction(read, (100, 64))

    res = combine([reader(f) for f in frames], band_rows=16)
    assert res.image.tobytes() == combine(frames, band_rows=16).image.tobytes()
    assert max(r1 - r0 for r0, r1 in calls) <= 16


def test_combine_rejects_odd_frames_with_reasons() -> None:
    frames = _stack()
    frames[2] = np.zeros_like(frames[2])  # a frame of zeros
    frames[3] = frames[3] * 2.0  # twice the level
    noisy = frames[5] + np.random.default_rng(9).normal(0.0, 6.0, frames[5].shape).astype(np.float32)
    frames[5] = noisy
    res = combine(frames, screening=Screening(level_ratio=1.5, noise_ratio=1.5))
    codes = {r.index: r.code for r in res.rejected}
    assert codes == {2: "constant", 3: "level", 5: "noise"}
    assert "2x" in next(r.reason for r in res.rejected if r.index == 3)
    assert res.used == (0, 1, 4)
    frames_nan = _stack(n=3)
    frames_nan[0][:100] = np.nan
    res = combine(frames_nan)
    assert [r.code for r in res.rejected] == ["non_finite"]


def test_combine_scale_and_median() -> None:
    frames = _stack(n=5)
    scaled = [f * np.float32(k + 1) for k, f in enumerate(frames)]
    res = combine(scaled, scale="median", method="median", screening=None)
    assert res.scales[1] == 1.0 / res.stats[1].level and res.stats[1].level == pytest.approx(200.0, rel=0.01)
    assert np.nanmedian(res.image) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(InvalidInput) as exc:
        combine([np.zeros((10, 10))] * 3)
    assert exc.value.code == "calib.no_frames"
    with pytest.raises(InvalidInput):
        combine([np.ones((10, 10)), np.ones((10, 11))])


def test_weight_and_dq_names() -> None:
    var = np.array([[4.0, 0.0], [np.nan, 2.0]], dtype=np.float32)
    dq = np.array([[0, 0], [0, SATURATED]], dtype=np.uint16)
    w = weight(var, dq)
    assert w.dtype == np.float32 and w.tolist() == [[0.25, 0.0], [0.0, 0.0]]
    assert weight(var, dq, bad_bits=BAD)[1, 1] == 0.5
    assert dq_names(BAD | NO_DATA) == ["BAD", "NO_DATA"]
