"""The compiled calib kernels (services.calib.science.kernels) against straightforward numpy references.

The references are the numpy formulations the kernels replaced: the same dtypes, the same order of
operations. Agreement is exact (n_used, DQ, NaN positions) or within one float32 ulp (values, variances)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from services.calib.science import MasterBias, MasterFlat, combine, kernels, reduce_frame
from services.calib.science.combine import nanmedian_last
from services.calib.science.overscan import MAD_TO_SIGMA, data_rows_level
from wisp.dq import BAD, NO_DATA, SATURATED

# ---------------------------------------------------------------- numpy references


def ref_clip(x: np.ndarray, sigma: float, maxiters: int, frame_sigma: np.ndarray | None) -> None:
    """Iterative clipping of ``x`` (pixels x frames, float32, NaN = missing) in place: clipped -> NaN."""
    active: np.ndarray | None = None
    for _ in range(maxiters):
        xa = x if active is None else x[active]
        n = np.count_nonzero(~np.isnan(xa), axis=-1)
        centre = nanmedian_last(xa, n).astype(np.float64)
        dev = np.abs(xa - centre[:, None])
        scale = frame_sigma[None, :] if frame_sigma is not None else MAD_TO_SIGMA * nanmedian_last(dev, n)[:, None]
        bad = dev > sigma * scale
        bad &= ((n - bad.sum(axis=-1)) > 0)[:, None]
        changed = bad.any(axis=-1)
        if not changed.any():
            return
        idx = np.flatnonzero(changed) if active is None else active[changed]
        rows = xa[changed]
        rows[bad[changed]] = np.nan
        x[idx] = rows
        active = idx


def ref_combine_band(x: np.ndarray, method: str, sigma: float, maxiters: int, frame_sigma: np.ndarray | None,
                     noise2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = x.copy()
    x[~np.isfinite(x)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "median":
            value = nanmedian_last(x).astype(np.float64)
            var_factor = np.pi / 2.0
        else:
            ref_clip(x, sigma, maxiters, frame_sigma)
            value = np.nansum(x, axis=-1, dtype=np.float64)
            var_factor = 1.0
    n = np.zeros(x.shape[0], dtype=np.int64)
    var = np.zeros(x.shape[0], dtype=np.float64)
    for k in range(x.shape[1]):
        kept = ~np.isnan(x[:, k])
        n += kept
        var[kept] += noise2[k]
    if method != "median":
        value /= np.maximum(n, 1)
    var *= var_factor / np.maximum(n, 1) ** 2
    value[n == 0] = np.nan
    var[n == 0] = np.nan
    return value.astype(np.float32), n.astype(np.uint16), var.astype(np.float32)


def run_kernel(x: np.ndarray, method: str, sigma: float, maxiters: int, frame_sigma: np.ndarray | None,
               noise2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    npix, nf = x.shape
    results = []
    for presorted in (True, False):  # numpy's sort outside or insertion sort inside: the same result
        out = (np.empty(npix, np.float32), np.empty(npix, np.uint16), np.empty(npix, np.float32))
        s = np.sort(x, axis=1) if presorted else np.full_like(x, np.nan)
        kernels.combine_band(x, s, presorted, kernels.MEDIAN if method == "median" else kernels.SIGCLIP_MEAN,
                             sigma, maxiters, np.zeros(nf) if frame_sigma is None else frame_sigma,
                             frame_sigma is not None, noise2, np.pi / 2.0 if method == "median" else 1.0,
                             *out, np.empty(nf, np.float32), np.empty(nf, np.bool_))
        results.append(out)
    for a, b in zip(results[0], results[1], strict=True):
        assert a.tobytes() == b.tobytes()
    return results[0]


def assert_same(got: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...]) -> None:
    value, n, var = got
    rvalue, rn, rvar = ref
    np.testing.assert_array_equal(n, rn)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(rvalue))
    np.testing.assert_array_equal(np.isnan(var), np.isnan(rvar))
    ok = ~np.isnan(rvalue)
    np.testing.assert_array_max_ulp(value[ok], rvalue[ok], maxulp=1)
    np.testing.assert_array_max_ulp(var[ok], rvar[ok], maxulp=1)


def _stack(rng: np.random.Generator, npix: int, nf: int, integer: bool) -> np.ndarray:
    """Noisy values with per-frame noise, outliers, missing values (NaN, +-inf), all-missing pixels and, if
    ``integer``, many ties (integer ADU: MAD can be 0, clipped values tie with kept ones)."""
    sig = rng.uniform(1.0, 3.0, nf)
    x = 100.0 + rng.normal(0.0, 1.0, (npix, nf)) * sig
    hits = rng.random(x.shape) < 0.03
    x[hits] += rng.choice([-1.0, 1.0], hits.sum()) * rng.uniform(5.0, 500.0, hits.sum())
    if integer:
        x = np.round(x)
    x = x.astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.005] = np.inf
    x[rng.random(x.shape) < 0.005] = -np.inf
    x[:3] = np.nan
    x[3, 1:] = np.nan  # a single value
    return x


@pytest.mark.parametrize("nf", [1, 2, 3, 5, 8, 20, 51])
@pytest.mark.parametrize("integer", [False, True])
def test_combine_band_matches_numpy(nf: int, integer: bool) -> None:
    rng = np.random.default_rng(nf + 100 * integer)
    x = _stack(rng, 3000, nf, integer)
    frame_sigma = rng.uniform(1.0, 3.0, nf)
    noise2 = rng.uniform(0.5, 9.0, nf)
    for method, fs in (("sigclip_mean", frame_sigma), ("sigclip_mean", None), ("median", None)):
        for sigma, maxiters in ((3.0, 5), (1.0, 1), (0.5, 10)):
            got = run_kernel(x, method, sigma, maxiters, fs, noise2)
            assert_same(got, ref_combine_band(x, method, sigma, maxiters, fs, noise2))


def test_combine_band_clipping_details() -> None:
    x = np.array([[10.0, 10.0, 10.0, 10.0, 13.0],        # MAD 0: the 13 goes, the ties stay
                  [1.0, 2.0, np.nan, np.nan, np.nan],     # two values: nothing to clip
                  [0.0, 0.0, 100.0, 100.0, np.nan],       # even count, symmetric: nothing dropped
                  [5.0, np.inf, -np.inf, np.nan, 5.0]], np.float32)
    value, n, var = run_kernel(x, "sigclip_mean", 3.0, 5, None, np.ones(5))
    assert n.tolist() == [4, 2, 4, 2]
    assert value.tolist() == [10.0, 1.5, 50.0, 5.0]
    assert var.tolist() == [0.25, 0.5, 0.25, 0.5]
    # per-frame noise: the same deviation is clipped in a quiet frame and kept in a noisy one
    x = np.array([[0.0, 0.0, 0.0, 4.0, 4.0]], np.float32)
    value, n, _ = run_kernel(x, "sigclip_mean", 3.0, 5, np.array([1.0, 1.0, 1.0, 1.0, 2.0]), np.ones(5))
    assert n.tolist() == [4] and value[0] == 1.0


def test_combine_end_to_end_matches_numpy_bands() -> None:
    rng = np.random.default_rng(5)
    frames = [(50.0 + rng.normal(0.0, 2.0, (37, 23))).astype(np.float32) for _ in range(7)]
    frames[2][5, 5] = np.nan
    frames[4][9, 3] += 300.0
    res = combine(frames, screening=None, band_rows=8)
    x = np.stack(frames, axis=-1).reshape(-1, 7)
    fs = np.array([s.noise for s in res.stats])
    ref = ref_combine_band(x, "sigclip_mean", 3.0, 5, fs, fs**2)
    assert_same((res.image.ravel(), res.n_used.ravel(), res.var.ravel()), ref)
    res = combine(frames, screening=None, clip_noise="pixel", band_rows=5)
    assert_same((res.image.ravel(), res.n_used.ravel(), res.var.ravel()),
                ref_combine_band(x, "sigclip_mean", 3.0, 5, None, fs**2))


def test_row_medians_match_nanmedian() -> None:
    rng = np.random.default_rng(1)
    for ncols in (1, 2, 5, 32):
        a = np.round(rng.normal(0.0, 3.0, (200, ncols)), 1)
        a[rng.random(a.shape) < 0.2] = np.nan
        a[0] = np.nan
        out = np.empty(200)
        kernels.row_medians(a, out, np.empty(ncols))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_array_equal(out, np.nanmedian(a, axis=1))


# ---------------------------------------------------------------- reduction


def ref_reduce(full: np.ndarray, datasec: tuple[slice, slice], biassec: tuple[slice, slice], mb: MasterBias,
               mf: MasterFlat, gain: float, read_noise: float, saturation: float, bpm: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numpy formulation of reduce_frame."""
    level = data_rows_level(full, datasec, biassec)
    data = (np.asarray(full[datasec], np.float64) - level[:, None]).astype(np.float32)
    dq = np.zeros(data.shape, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        dq[full[datasec] >= saturation] |= SATURATED
    if bpm is not None:
        dq[bpm != 0] |= BAD
    g = np.float32(gain)
    flat = mf.image
    e = (data - mb.image) * g
    with np.errstate(divide="ignore", invalid="ignore"):
        sci = e / flat
        var_e = np.maximum(e, 0.0) + np.float32(read_noise**2 + gain**2 / 12.0)
        if mb.var is not None:
            var_e += mb.var * (g * g)
        var = var_e / (flat * flat)
        if mf.var is not None:
            var += sci * sci * mf.var / (flat * flat)
    no_data = ~(np.isfinite(sci) & np.isfinite(var) & np.isfinite(flat) & (flat > 0))
    dq[no_data] |= NO_DATA
    sci[no_data] = np.nan
    var[no_data] = np.nan
    return sci, var, dq


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4", np.uint16])
@pytest.mark.parametrize("with_var", [True, False])
def test_reduce_matches_numpy(dtype: str, with_var: bool) -> None:
    rng = np.random.default_rng(7)
    ny, nx, nos = 60, 40, 8
    full = np.round(1000.0 + rng.normal(0.0, 5.0, (ny + 2, nx + nos)) + rng.exponential(300.0, (ny + 2, nx + nos)))
    full[10, 10] = 65535.0
    full[11, 12] = 70000.0 if dtype != np.uint16 else 65535.0
    if np.dtype(dtype).kind == "f":
        full[12, 14] = np.nan
    full = full.astype(dtype)
    datasec, biassec = (slice(1, ny + 1), slice(0, nx)), (slice(0, ny + 2), slice(nx, nx + nos))
    image = rng.normal(0.0, 2.0, (ny, nx)).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, (ny, nx)).astype(np.float32)
    flat[3, 3], flat[4, 4], flat[5, 5] = 0.0, -1.0, np.nan
    bvar = rng.uniform(0.1, 1.0, (ny, nx)).astype(np.float32) if with_var else None
    fvar = rng.uniform(1e-6, 1e-4, (ny, nx)).astype(np.float32) if with_var else None
    mb = MasterBias(image=image, var=bvar, n_used=None, noise=(), n_frames=5, rejected=())
    mf = MasterFlat(image=flat, var=fvar, n_used=None, level=1.0, level_rate=1.0, levels=(), n_frames=3, rejected=())
    bpm = (rng.random((ny, nx)) < 0.01).astype(np.uint8)
    for mask in (bpm, None):
        red = reduce_frame(full, datasec=datasec, biassec=biassec, master_bias=mb, master_flat=mf, gain=1.7,
                           read_noise=4.5, saturation=65535.0, bad_pixel_mask=mask)
        sci, var, dq = ref_reduce(full, datasec, biassec, mb, mf, 1.7, 4.5, 65535.0, mask)
        np.testing.assert_array_equal(red.dq, dq)
        np.testing.assert_array_max_ulp(np.nan_to_num(red.sci), np.nan_to_num(sci), maxulp=1)
        np.testing.assert_array_max_ulp(np.nan_to_num(red.var), np.nan_to_num(var), maxulp=1)
        assert red.sci.dtype == np.float32 and red.var.dtype == np.float32 and red.dq.dtype == np.uint16
        assert (red.dq[9, 10] & SATURATED) and (red.dq[3, 3] & NO_DATA) and (red.dq[4, 4] & NO_DATA)


def test_warm_compiles_every_kernel() -> None:
    kernels.warm()
    for kernel in (kernels.combine_band, kernels.row_medians, kernels.reduce_pixels):
        assert kernel.signatures
