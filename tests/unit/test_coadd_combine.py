"""The common grid, the photometric scaling and the weighted (clipped) combination."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.coadd.science import Resampled, combine, local_pixel_scale, photometric_scale, resample, target_grid
from tests.unit.test_coadd_resample import sip_wcs
from wisp.errors import InvalidInput


def test_target_grid_covers_the_union_north_up() -> None:
    shapes = [(200, 300), (200, 300), (150, 150)]
    wcs = [sip_wcs(shapes[0], rot=0.5, ra=150.00, dec=2.00, k=3e-8),
           sip_wcs(shapes[1], rot=-0.8, ra=150.02, dec=2.01, k=3e-8),
           sip_wcs(shapes[2], rot=40.0, ra=149.99, dec=1.99, scale=0.30, k=0.0)]
    grid, shape = target_grid(wcs, shapes)
    assert shape[0] % 2 == 1 and shape[1] % 2 == 1
    assert grid.wcs.ctype[0] == "RA---TAN" and grid.wcs.ctype[1] == "DEC--TAN"
    cd = grid.pixel_scale_matrix
    assert cd[0, 0] < 0 < cd[1, 1] and cd[0, 1] == 0 == cd[1, 0]  # east left, north up
    assert tuple(grid.wcs.crpix) == ((shape[1] + 1) / 2, (shape[0] + 1) / 2)
    assert abs(cd[1, 1]) * 3600 == pytest.approx(float(np.median([local_pixel_scale(w, s) for w, s in
                                                                 zip(wcs, shapes, strict=True)])))
    assert local_pixel_scale(wcs[2], shapes[2]) == pytest.approx(0.30, rel=1e-6)
    xs, ys = [], []
    for w, (ny, nx) in zip(wcs, shapes, strict=True):
        cx, cy = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
        x, y = grid.all_world2pix(*w.all_pix2world(cx, cy, 0), 0)  # the four outer corners
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.min() >= 9.5 and y.min() >= 9.5 and x.max() <= shape[1] - 10.5 and y.max() <= shape[0] - 10.5
    assert min(x.min(), shape[1] - 1 - x.max()) < 11.5 and min(y.min(), shape[0] - 1 - y.max()) < 11.5
    assert (x.min() + x.max()) / 2 == pytest.approx((shape[1] - 1) / 2, abs=1.0)  # centred on the union
    assert (y.min() + y.max()) / 2 == pytest.approx((shape[0] - 1) / 2, abs=1.0)
    grid2, shape2 = target_grid(wcs, shapes, pixel_scale_arcsec=0.5, margin_px=0)
    assert abs(grid2.pixel_scale_matrix[1, 1]) * 3600 == pytest.approx(0.5)
    assert shape2[1] < shape[1] * 0.6
    with pytest.raises(InvalidInput):
        target_grid([], [])


def test_target_grid_across_ra_zero() -> None:
    shapes = [(100, 100), (100, 100)]
    grid, shape = target_grid([sip_wcs(shapes[0], ra=359.995, k=0.0), sip_wcs(shapes[1], ra=0.005, k=0.0)], shapes)
    assert grid.wcs.crval[0] == pytest.approx(0.0, abs=1e-6) or grid.wcs.crval[0] == pytest.approx(360.0, abs=1e-6)
    assert shape[1] < 400


def test_photometric_scale_convention() -> None:
    """Counts c_in with zp_in become c_in * s with m = zp_target - 2.5 log10(c_in * s)."""
    assert photometric_scale(25.0, 25.0) == 1.0
    assert photometric_scale(26.0, 25.0) == pytest.approx(10 ** -0.4)
    counts, zp_in, zp_target = 1234.5, 30.27, 25.1
    mag = zp_in - 2.5 * math.log10(counts)
    assert zp_target - 2.5 * math.log10(counts * photometric_scale(zp_in, zp_target)) == pytest.approx(mag)


def _box(image: np.ndarray, var: np.ndarray, weight: np.ndarray, origin: tuple[int, int],
         shape: tuple[int, int]) -> Resampled:
    return Resampled(image.astype(np.float32), var.astype(np.float32), weight.astype(np.float32), origin, shape)


def test_weighted_mean_formulas_and_boxes() -> None:
    shape = (20, 30)
    a = _box(np.full((10, 10), 2.0), np.full((10, 10), 4.0), np.full((10, 10), 1.0), (0, 0), shape)
    b = _box(np.full((10, 20), 5.0), np.full((10, 20), 1.0), np.full((10, 20), 3.0), (5, 5), shape)
    coadd, var, weight = combine([a, b])
    assert coadd[0, 0] == 2.0 and var[0, 0] == 4.0 and weight[0, 0] == 1.0
    assert coadd[7, 7] == pytest.approx((2 + 15) / 4)
    assert var[7, 7] == pytest.approx((1 * 4 + 9 * 1) / 16)
    assert weight[7, 7] == 4.0
    assert coadd[19, 29] == 0 and weight[19, 29] == 0 and np.isinf(var[19, 29])
    full = combine([a.full(), b.full()])  # whole-grid tuples give the same answer
    small = combine([a, b], memory_mb=0.001)  # one row per strip
    for x, y, z in zip((coadd, var, weight), full, small, strict=True):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    with pytest.raises(InvalidInput):
        combine([a, _box(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), (0, 0), (5, 5))])
    with pytest.raises(InvalidInput):
        combine([a], method="median")


def test_clipping_removes_a_cosmic_ray_but_keeps_star_cores() -> None:
    """Five noisy inputs; one carries an unmasked cosmic ray, and the star's peak differs by 15 % between
    inputs (seeing): the clipped mean drops the ray and keeps every star pixel."""
    rng = np.random.default_rng(2)
    shape = (40, 40)
    yy, xx = np.mgrid[:40, :40]
    items, star = [], []
    for i in range(5):
        sigma = 2.0 * (1 + 0.04 * i)
        s = 5000 * np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        img = s + rng.normal(0, 1.0, shape)
        if i == 2:
            img[5, 7] += 80.0
        star.append(s)
        items.append(_box(img, np.ones(shape) + s, np.ones(shape), (0, 0), shape))
    plain = combine(items)[0]
    clipped, clipped_var, weight = combine(items, method="clipped_weighted_mean")
    assert plain[5, 7] > 10 and abs(clipped[5, 7]) < 3
    assert weight[5, 7] == 4.0 and weight[20, 20] == 5.0
    core = np.hypot(xx - 20, yy - 20) < 6
    assert np.all(weight[core] == 5.0)
    assert clipped[core].sum() == pytest.approx(np.mean(star, axis=0)[core].sum(), rel=2e-3)
    tiled = combine(items, method="clipped_weighted_mean", memory_mb=0.01)  # 16 x 16 tiles
    assert all(np.array_equal(x, y) for x, y in zip(tiled, (clipped, clipped_var, weight), strict=True))
    two = combine(items[:2], method="clipped_weighted_mean")  # < min_inputs: no clipping
    assert np.array_equal(two[0], combine(items[:2])[0])


def test_resample_and_combine_end_to_end() -> None:
    """Three dithered inputs on different zeropoints: the coadd keeps a star's flux on the target
    zeropoint, and its weight map adds up the inputs' weights in output units."""
    shape = (120, 140)
    wcs = [sip_wcs(shape, rot=r, ra=150.0 + dra, k=3e-8) for r, dra in ((0.3, 0.0), (-0.4, 0.001), (1.0, -0.001))]
    grid, gshape = target_grid(wcs, [shape] * 3)
    ra_star, dec_star = 150.0002, 2.0001
    items = []
    for i, w in enumerate(wcs):
        x, y = w.all_world2pix(ra_star, dec_star, 0)
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        img = 1e4 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) / (8.0 * np.pi)
        zp = 25.0 + 0.1 * i
        items.append(resample(img * 10 ** (0.4 * (zp - 25.0)), np.ones(shape), np.ones(shape), w, grid, gshape,
                              photometric_scale=photometric_scale(zp, 25.0)))
    coadd, _, weight = combine(items)
    gx, gy = grid.all_world2pix(ra_star, dec_star, 0)
    yy, xx = np.mgrid[:gshape[0], :gshape[1]]
    ap = np.hypot(xx - gx, yy - gy) < 12
    assert coadd[ap].sum() == pytest.approx(1e4, rel=1e-3)
    expected = sum(photometric_scale(25.0 + 0.1 * i, 25.0) ** -2 for i in range(3))  # weight: 1 / counts^2
    assert weight.max() == pytest.approx(expected, rel=0.01)
