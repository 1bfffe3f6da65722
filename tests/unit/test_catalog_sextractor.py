"""The catalogue of a real image (ESO NTT/EMMI, from the sep project) against SExtractor 2.5's own catalogue,
background map and configuration (../shared/data/sep-ntt)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from astropy.io import ascii, fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning
from scipy.spatial import cKDTree

from services.catalog.science import ExtractParams, extract
from services.catalog.science import flags as F
from services.catalog.science.detect import prepare

# default.sex: DETECT_THRESH 1.5, DETECT_MINAREA 5, FILTER default.conv, DEBLEND_NTHRESH 32, DEBLEND_MINCONT 1.0,
# CLEAN Y 1.0, MASK_TYPE NONE, PHOT_APERTURES 10 (px, PIXEL_SCALE 1.0), PHOT_AUTOPARAMS 2.5, 0.0, SATUR_LEVEL
# 50000, GAIN 0 (no shot noise in the errors), BACK_SIZE 64, BACK_FILTERSIZE 3; no weight map.
PARAMS = ExtractParams(detect_thresh=1.5, minarea=5, filter_kernel="pyramid3", deblend_nthresh=32, deblend_cont=1.0,
                       clean=True, clean_param=1.0, mask_neighbours=False, apertures_arcsec=(10.0,),
                       kron_factor=2.5, kron_min_radius=0.0, saturation_e=50000.0, source_poisson=False,
                       back_size=64, back_filter_size=3)
BRIGHT_SNR = 30.0      # "bright": SExtractor's FLUX_AUTO / FLUXERR_AUTO >= 30
APER_TOL = 0.01        # FLUX_APER within 1 % for bright sources
AUTO_TOL = 0.03        # FLUX_AUTO within 3 % for bright sources ...
MIN_AUTO_RADIUS = 2.0  # ... whose AUTO aperture is at least 2 px (circularised)


class Ntt(NamedTuple):
    image: np.ndarray
    ref: Table   # SExtractor's catalogue
    cat: Table   # ours
    back: np.ndarray  # SExtractor's background map


@pytest.fixture(scope="module")
def ntt(shared_data: Path) -> Ntt:
    folder = shared_data / "sep-ntt"
    if not (folder / "image.fits").is_file():
        pytest.skip(f"the SExtractor comparison image is missing: {folder / 'image.fits'}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # the ESO-LOG cards of a 1992 header
        image = fits.getdata(folder / "image.fits").astype(np.float32)
        back = fits.getdata(folder / "back.fits")
    ref = ascii.read(folder / "image.cat", format="sextractor")  # FLUX_RADIUS(3) → FLUX_RADIUS, _1, _2
    cat = extract(image, None, None, wcs=None, zeropoint=None, exptime_s=1200.0, pixel_scale_arcsec=1.0,
                  params=PARAMS)
    return Ntt(image, ref, cat, back)


def _matched(ntt: Ntt) -> tuple[Table, Table, np.ndarray]:
    """SExtractor's rows, our nearest rows, and the distances (px) from their X_IMAGE/Y_IMAGE (1-based)."""
    ref, cat = ntt.ref, ntt.cat
    d, i = cKDTree(np.c_[cat["X"], cat["Y"]]).query(np.c_[ref["X_IMAGE"] - 1, ref["Y_IMAGE"] - 1])
    return ref, cat[i], d


def test_sources_found_where_sextractor_found_them(ntt: Ntt) -> None:
    ref, mine, d = _matched(ntt)
    found = d < 1.0
    dwin = np.hypot(mine["X"] - (ref["XWIN_IMAGE"] - 1), mine["Y"] - (ref["YWIN_IMAGE"] - 1))
    clean = (mine["FLAGS"] & F.WIN_FAILED) == 0
    print(f"{found.sum()}/{len(ref)} within 1 px of X_IMAGE (we: {len(ntt.cat)}); vs XWIN_IMAGE: median "
          f"{np.median(dwin):.4f} px, 90 % {np.percentile(dwin[clean], 90):.3f} px where our window converged")
    assert found.mean() >= 0.95 and abs(len(ntt.cat) - len(ref)) <= 0.05 * len(ref)
    bright = ref["FLUX_AUTO"] > BRIGHT_SNR * ref["FLUXERR_AUTO"]
    assert np.all(dwin[bright & clean] < 0.1)


def test_aperture_and_auto_fluxes_agree_for_bright_sources(ntt: Ntt) -> None:
    ref, mine, d = _matched(ntt)
    bright = (ref["FLUX_AUTO"] > BRIGHT_SNR * ref["FLUXERR_AUTO"]) & (d < 1.0)
    # PHOT_AUTOPARAMS 2.5, 0.0 (no minimum) shrinks a few AUTO apertures to ~1 px: sampling, not flux
    bright &= mine["KRON_RADIUS"] * np.sqrt(mine["A"] * mine["B"]) >= MIN_AUTO_RADIUS
    aper = mine["FLUX_APER"][:, 0] / ref["FLUX_APER"]
    auto = mine["FLUX_AUTO"] / np.where(ref["FLUX_AUTO"] > 0, ref["FLUX_AUTO"], np.nan)
    print(f"{bright.sum()} bright: FLUX_APER ratio max |1-r| {np.max(np.abs(aper[bright] - 1)):.4f}, "
          f"FLUX_AUTO ratio max |1-r| {np.max(np.abs(auto[bright] - 1)):.4f} (median {np.median(auto[bright]):.4f}), "
          f"KRON_RADIUS max diff {np.max(np.abs(mine['KRON_RADIUS'] - ref['KRON_RADIUS'])[bright]):.3f}")
    assert bright.sum() >= 10
    assert np.all(np.abs(aper[bright] - 1) < APER_TOL) and np.all(np.abs(auto[bright] - 1) < AUTO_TOL)
    # GAIN 0 and no weight map: the errors are the global background RMS alone, as SExtractor's
    assert np.allclose(mine["FLUXERR_APER"][:, 0][bright], ref["FLUXERR_APER"][bright], rtol=0.01)
    # ... scaling with the AUTO aperture's size, whose Kron radius agrees to ~4 %
    assert np.allclose(mine["FLUXERR_AUTO"][bright], ref["FLUXERR_AUTO"][bright], rtol=0.05)
    assert np.allclose(mine["KRON_RADIUS"][bright], ref["KRON_RADIUS"][bright], rtol=0.05)
    assert np.allclose(mine["FLUX_RADIUS"][bright], ref["FLUX_RADIUS_1"][bright], rtol=0.05)  # half-light
    assert np.allclose(mine["A"][bright], ref["A_IMAGE"][bright], rtol=0.01)  # the same isophotes
    # SExtractor's saturated (4) and truncated (8) flags are ours too
    for bit in (F.SATURATED, F.TRUNCATED):
        assert np.array_equal((mine["FLAGS"] & bit) > 0, (ref["FLAGS"] & bit) > 0)


def test_background_matches_sextractors_map(ntt: Ntt) -> None:
    mine = prepare(ntt.image, None, None, PARAMS).back
    rel = np.abs(mine / ntt.back - 1)
    print(f"background: max relative difference {rel.max():.2e} over the map")
    assert rel.max() < 0.01
    at = ntt.back[np.rint(ntt.cat["Y"]).astype(int), np.rint(ntt.cat["X"]).astype(int)]
    assert np.allclose(ntt.cat["BACKGROUND"], at, rtol=0.01)
