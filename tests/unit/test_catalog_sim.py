"""The catalogue of a simulated reduced chip against the simulator's truth: completeness, positions,
photometry, spurious detections, PSF size and speed."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from services.catalog.science import ExtractParams, extract, psf_fwhm, summary
from services.catalog.science import flags as F
from wisp import dq
from wisp.sim import SimConfig, simulate_night
from wisp.sim.expose import MASK_BLEED, MASK_CR, MASK_SATURATED, MASK_TRAIL

# one r-band exposure of one 1024² chip, with more stars than the real sky for statistics (~3 s)
CONFIG = SimConfig(n_chips=1, chip_nx=1024, chip_ny=1024, n_bias=0, n_flats_per_filter=0, filters=("r",),
                   n_dither_per_field_filter=1, star_density=60000.0)


@dataclass(frozen=True)
class Reduced:
    sci: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    wcs: WCS
    zeropoint: float      # mag for 1 e-/s: the true ZPEXP less 2.5 log10(EXPTIME)
    exptime: float
    beta: float           # Moffat beta of the PSF
    truth: Table          # SOURCES of this chip
    snr: np.ndarray       # truth S/N of every source (2×FWHM aperture, sky + read noise)


def _reduce(outdir: Any) -> Reduced:
    """Raw chip − (truth bias + DRIFT), × gain, ÷ truth flat → e-; variance from the noise model; DQ from the
    truth bad-pixel map and the exposure's mask."""
    truth_dir = outdir / "truth"
    raw = next((outdir / "raw").glob("sim_*_object_r.fits"))
    chip = json.loads((truth_dir / "night.json").read_text())["camera"]["chips"][0]
    with fits.open(truth_dir / raw.name.replace(".fits", "_truth.fits")) as tr:
        h0, hk = tr[0].header, tr["CCD1"].header
        mask, sources = tr["CCD1"].data.astype(np.uint8), Table(tr["SOURCES"].data)
    flat = fits.getdata(truth_dir / "flat_r.fits", "CCD1").astype(float)
    ny, nx = flat.shape
    bias = fits.getdata(truth_dir / "bias.fits", "CCD1").astype(float) + hk["DRIFT"]
    e = (fits.getdata(raw, "CCD1").astype(float) - bias)[:, :nx] * chip["gain"]
    sci, var = e / flat, (np.clip(e, 0, None) + chip["read_noise"] ** 2) / flat**2
    bits = np.zeros((ny, nx), np.uint16)
    bits[fits.getdata(truth_dir / "bpm.fits", "CCD1") > 0] |= dq.BAD
    bits[(mask & (MASK_SATURATED | MASK_BLEED)) > 0] |= dq.SATURATED
    bits[(mask & MASK_CR) > 0] |= dq.COSMIC_RAY
    bits[(mask & MASK_TRAIL) > 0] |= dq.TRAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SIP keywords with a -SIP ctype: fine
        wcs = WCS(hk)
    # truth S/N in an aperture of radius FWHM: Moffat enclosed fraction, sky + read noise per pixel
    beta = float(h0["PSFBETA"])
    fwhm = sources["psf_fwhm"] / CONFIG.pixel_scale
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    f = (1.0 - (1.0 + (fwhm / alpha) ** 2) ** (1.0 - beta)) * sources["flux_model"]
    sky = hk["SKYC"] + hk["SKYDX"] * (sources["x"] - (nx - 1) / 2) + hk["SKYDY"] * (sources["y"] - (ny - 1) / 2)
    snr = f / np.sqrt(f + math.pi * fwhm**2 * (sky + chip["read_noise"] ** 2))
    return Reduced(sci.astype(np.float32), var.astype(np.float32), bits, wcs,
                   h0["ZPEXP"] - 2.5 * math.log10(h0["EXPTIME"]), float(h0["EXPTIME"]), beta, sources,
                   np.asarray(snr))


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> Reduced:
    return _reduce(simulate_night(CONFIG, tmp_path_factory.mktemp("catalog")).outdir)


@pytest.fixture(scope="module")
def catalogue(chip: Reduced) -> Table:
    return extract(chip.sci, chip.var, chip.dq, wcs=chip.wcs, zeropoint=chip.zeropoint, exptime_s=chip.exptime,
                   pixel_scale_arcsec=CONFIG.pixel_scale, params=ExtractParams())


def _match(cat: Table, chip: Reduced) -> tuple[np.ndarray, np.ndarray]:
    """For every truth source: distance (px) to the nearest detection and its row."""
    d, i = cKDTree(np.c_[cat["X"], cat["Y"]]).query(np.c_[chip.truth["x"], chip.truth["y"]])
    return d, i


def _inside(chip: Reduced, margin: float = 2.0) -> np.ndarray:
    ny, nx = chip.sci.shape
    t = chip.truth
    return (t["x"] >= margin) & (t["x"] <= nx - 1 - margin) & (t["y"] >= margin) & (t["y"] <= ny - 1 - margin)


def _bright_isolated(chip: Reduced, cat: Table, d: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Unsaturated stars of truth S/N >= 100 with no other source brighter than 1 % of theirs within 15 px,
    detected within 1 px with no unreliable flag."""
    t = chip.truth
    tree = cKDTree(np.c_[t["x"], t["y"]])
    alone = np.array([np.count_nonzero(t["flux_model"][tree.query_ball_point([t["x"][j], t["y"][j]], 15.0)]
                                       > 0.01 * t["flux_model"][j]) == 1 for j in range(len(t))])
    sel = (t["type"] == "star") & ~t["saturated"] & (chip.snr >= 100) & alone & _inside(chip, 20) & (d < 1)
    return sel & ((np.asarray(cat["FLAGS"])[i] & F.UNRELIABLE) == 0)


def test_completeness_of_stars_above_snr_20(chip: Reduced, catalogue: Table) -> None:
    d, _ = _match(catalogue, chip)
    stars = (chip.truth["type"] == "star") & _inside(chip) & (chip.snr >= 20)
    found = d[stars] < 1.0
    print(f"completeness S/N>=20: {found.mean():.3f} ({found.sum()}/{stars.sum()})")
    assert stars.sum() >= 50 and found.mean() >= 0.90


def test_positions_of_bright_stars(chip: Reduced, catalogue: Table) -> None:
    d, i = _match(catalogue, chip)
    sel = _bright_isolated(chip, catalogue, d, i)
    dx = np.asarray(catalogue["X"])[i[sel]] - chip.truth["x"][sel]
    dy = np.asarray(catalogue["Y"])[i[sel]] - chip.truth["y"][sel]
    rms = math.sqrt(np.mean(dx**2 + dy**2) / 2)
    print(f"bright isolated stars: {sel.sum()}, rms per axis {rms:.4f} px, mean ({dx.mean():+.4f}, {dy.mean():+.4f})")
    assert sel.sum() >= 10 and rms < 0.1
    # through the true WCS (TAN-SIP, 0-based pixels) RA/Dec land on the true sky positions as accurately
    ra, dec = chip.truth["ra"][sel], chip.truth["dec"][sel]
    sep_arcsec = np.hypot((np.asarray(catalogue["RA"])[i[sel]] - ra) * np.cos(np.radians(dec)),
                          np.asarray(catalogue["DEC"])[i[sel]] - dec) * 3600
    print(f"RA/Dec vs truth: rms {np.sqrt(np.mean(sep_arcsec**2)):.4f} arcsec")
    assert np.sqrt(np.mean(sep_arcsec**2)) < 0.1 * CONFIG.pixel_scale * math.sqrt(2)


def test_mag_auto_of_bright_isolated_stars(chip: Reduced, catalogue: Table) -> None:
    d, i = _match(catalogue, chip)
    sel = _bright_isolated(chip, catalogue, d, i)
    rows = catalogue[i[sel]]
    dm = np.asarray(rows["MAG_AUTO"]) - chip.truth["mag"][sel]
    # what the Kron aperture should hold of this Moffat PSF (and what the simulator's stamp held)
    t = chip.truth[sel]
    alpha = t["psf_fwhm"] / CONFIG.pixel_scale / (2 * np.sqrt(2 ** (1 / chip.beta) - 1))
    radius = np.asarray(rows["KRON_RADIUS"]) * np.sqrt(np.asarray(rows["A"]) * np.asarray(rows["B"]))
    held = (1 - (1 + (radius / alpha) ** 2) ** (1 - chip.beta)) * t["flux"] / t["flux_model"]
    loss = -2.5 * np.log10(held)
    print(f"MAG_AUTO - true: median {np.median(dm):+.4f} (n={sel.sum()}, scatter {np.std(dm):.4f}); "
          f"expected aperture loss {np.median(loss):+.4f}; residual {np.median(dm - loss):+.4f}")
    assert abs(np.median(dm)) < 0.03
    assert abs(np.median(dm - loss)) < 0.01  # the rest of the flux is measured right
    assert np.all(np.abs(dm - np.median(dm)) < 5 * np.asarray(rows["MAGERR_AUTO"]) + 0.02)


def test_few_spurious_detections_above_snr_10(chip: Reduced, catalogue: Table) -> None:
    d, _ = cKDTree(np.c_[chip.truth["x"], chip.truth["y"]]).query(np.c_[catalogue["X"], catalogue["Y"]])
    bright = np.asarray(catalogue["SNR"]) >= 10
    spurious = d[bright] > 2.0
    print(f"spurious at S/N>=10: {spurious.mean():.3f} ({spurious.sum()}/{bright.sum()})")
    assert spurious.mean() < 0.05


def test_psf_size_classes_and_summary(chip: Reduced, catalogue: Table) -> None:
    stars = chip.truth[(chip.truth["type"] == "star") & _inside(chip)]
    fwhm = psf_fwhm(catalogue)
    true_fwhm = float(np.median(stars["psf_fwhm"]))
    s = summary(catalogue)
    print(f"PSF FWHM {fwhm:.3f}\" (truth {true_fwhm:.3f}\"), summary {s}")
    assert fwhm == pytest.approx(true_fwhm, rel=0.05) and s["psf_fwhm_arcsec"] == fwhm
    assert s["n_psf_stars"] >= 10 and s["median_ellipticity"] < 0.1 and s["n_saturated"] >= 1
    d, i = _match(catalogue, chip)
    cls = np.asarray(catalogue["CLASS"])
    sel = (d < 1) & _inside(chip) & (chip.snr >= 20)
    star = chip.truth["type"] == "star"
    assert np.mean(cls[i[sel & star]] == 1.0) > 0.9
    assert np.mean(cls[i[sel & ~star]] == 0.0) > 0.5  # small galaxies are unresolved: half at least
    saturated = star & chip.truth["saturated"] & (d < 2)
    assert np.all(np.asarray(catalogue["FLAGS"])[i[saturated]] & F.SATURATED)


def test_a_1024_chip_in_under_a_second(chip: Reduced, catalogue: Table) -> None:
    best_cpu = best_wall = math.inf
    for _ in range(3):  # the best of three, in CPU time: the machine may be busy with other work
        t0, c0 = time.perf_counter(), time.process_time()
        again = extract(chip.sci, chip.var, chip.dq, wcs=chip.wcs, zeropoint=chip.zeropoint, exptime_s=chip.exptime,
                        pixel_scale_arcsec=CONFIG.pixel_scale, params=ExtractParams())
        best_cpu, best_wall = min(best_cpu, time.process_time() - c0), min(best_wall, time.perf_counter() - t0)
    print(f"extract: {best_cpu:.3f} s CPU ({best_wall:.3f} s wall) for {len(again)} sources on {chip.sci.shape}")
    assert len(again) >= 100 and best_cpu < 1.0
    assert all(np.array_equal(again[c], catalogue[c], equal_nan=True) for c in catalogue.colnames)
