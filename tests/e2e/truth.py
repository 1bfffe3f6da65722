"""Checks of the pipeline's products against the simulator's truth (used by the end-to-end tests).

Every function reads products from a stack's filesystem store and the truth files of the simulated
night, and returns numbers; the tests hold the tolerances.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

MAS = 3.6e6  # mas per degree


@dataclass
class Product:
    id: str
    kind: str
    chip: str | None
    filter: str | None
    path: Path
    exposure_file: str | None


def products(data_dir: Path, kind: str) -> list[Product]:
    with sqlite3.connect(data_dir / "wisp.sqlite") as con:
        rows = con.execute(
            "SELECT p.id, p.kind, p.chip, p.filter, p.object_key, e.filename FROM products p "
            "LEFT JOIN exposures e ON e.id = p.exposure_id WHERE p.kind = ? ORDER BY p.id", (kind,)).fetchall()
    return [Product(r[0], r[1], r[2], r[3], data_dir / "objects" / r[4], r[5]) for r in rows]


def truth_of(sim_dir: Path, product: Product) -> fits.HDUList:
    assert product.exposure_file is not None
    return fits.open(sim_dir / "truth" / product.exposure_file.replace(".fits", "_truth.fits"))


def truth_stars(truth: fits.HDUList, chip: str) -> np.ndarray:
    src = truth["SOURCES"].data
    chip_no = int(chip.replace("CCD", ""))
    return src[(src["chip"] == chip_no) & (src["type"] == "star")]


def star_snr(stars: np.ndarray, truth: fits.HDUList, pixscale: float, read_noise_e: float) -> np.ndarray:
    """S/N of each star in an optimal (Gaussian-equivalent) aperture: flux / sqrt(flux + npix (sky + rn²))."""
    sigma_px = stars["psf_fwhm"] / 2.3548 / pixscale
    npix = 4 * np.pi * sigma_px**2
    sky = float(truth[0].header["SKY"])
    return stars["flux"] / np.sqrt(stars["flux"] + npix * (sky + read_noise_e**2))


def _match(x: np.ndarray, y: np.ndarray, tx: np.ndarray, ty: np.ndarray,
           radius: float) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0 or len(tx) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d, j = cKDTree(np.column_stack([x, y])).query(np.column_stack([tx, ty]), distance_upper_bound=radius)
    ok = np.isfinite(d)
    return np.nonzero(ok)[0], j[ok]


def catalogue_vs_truth(data_dir: Path, sim_dir: Path, read_noise_e: float, pixscale: float = 0.26
                       ) -> tuple[float, float, int, int]:
    """(astrometric RMS of bright isolated matched stars in mas, completeness at S/N >= 20, n matched bright,
    n stars at S/N >= 20) over every frame catalogue."""
    seps: list[np.ndarray] = []
    found = total = 0
    for cat in products(data_dir, "catalog"):
        table = fits.getdata(cat.path, "CATALOG")
        with truth_of(sim_dir, cat) as truth:
            stars = truth_stars(truth, cat.chip or "")
            snr = star_snr(stars, truth, pixscale, read_noise_e)
        good = (snr >= 20) & ~stars["saturated"]
        ti, ci = _match(table["X"], table["Y"], stars["x"][good], stars["y"][good], 1.5)
        found += len(ti)
        total += int(good.sum())
        bright = (snr >= 50) & ~stars["saturated"]
        ti, ci = _match(table["X"], table["Y"], stars["x"][bright], stars["y"][bright], 1.0)
        clean = table["FLAGS"][ci] == 0
        ti, ci = ti[clean], ci[clean]
        sel = stars[bright][ti]
        dra = (table["RA"][ci] - sel["ra"]) * np.cos(np.radians(sel["dec"])) * MAS
        ddec = (table["DEC"][ci] - sel["dec"]) * MAS
        seps.append(np.hypot(dra, ddec))
    all_seps = np.concatenate(seps) if seps else np.zeros(0)
    rms = float(np.sqrt(np.mean(all_seps**2))) if all_seps.size else float("nan")
    return rms, found / max(total, 1), int(all_seps.size), total


def zeropoint_errors(data_dir: Path, sim_dir: Path) -> np.ndarray:
    """Solved MAGZP (mag for 1 e-/s at the airmass) minus the truth, per solved chip.

    The truth for a reduced chip is ZP − k·airmass + 2.5 log10(m), m the median over the mosaic's chips of
    the median of each chip's true flat: reduction divides by a master flat normalised to median 1 and by
    the chip's mosaic flat factor (its flat level in e-/s over the chips' median), so every chip keeps the
    mosaic's median response in its counts — one photometric scale.
    """
    out = []
    for sol in products(data_dir, "astrometry"):
        header = fits.getheader(sol.path)
        if "MAGZP" not in header:
            continue
        with fits.open(sim_dir / "truth" / f"flat_{sol.filter}.fits") as flats:
            m = np.median([np.median(h.data) for h in flats if h.data is not None])
        with truth_of(sim_dir, sol) as truth:
            t = truth[0].header
            expected = t["ZP"] - t["EXTCOEF"] * t["AIRMASS"] + 2.5 * np.log10(m)
        out.append(float(header["MAGZP"]) - expected)
    return np.array(out)


def coadd_flux_ratios(data_dir: Path, sim_dir: Path, min_flux_e: float = 3e4, radius_fwhm: float = 5.0,
                      annulus: bool = False) -> np.ndarray:
    """Coadd aperture flux / expected flux of isolated, unsaturated bright stars.

    Expected: the star's true magnitude on the coadd's zeropoint, 10^(-0.4 (m_true − MAGZP_coadd)) e-/s — so
    this checks the photometric calibration and the resampling and stacking together.

    The coadd is background-subtracted by the pipeline, so the aperture sum is the star's flux (``annulus``
    subtracts a local median as well, which in crowded fields is biased by faint neighbours).

    """
    ratios: list[float] = []
    for coadd in products(data_dir, "coadd"):
        with fits.open(coadd.path) as h:
            sci, weight, header = h["SCI"].data.astype(float), h["WEIGHT"].data, h[0].header
        wcs, zp_coadd = WCS(header), float(header["MAGZP"])
        scale_as = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600)
        with sqlite3.connect(data_dir / "wisp.sqlite") as con:
            inputs = [r[0] for r in con.execute(
                "SELECT e.entity_id FROM lineage_edges e JOIN activities a ON a.id = e.activity_id "
                "JOIN lineage_edges g ON g.activity_id = a.id AND g.relation = 'wasGeneratedBy' "
                "WHERE g.entity_id = ? AND e.relation = 'used' AND e.role = 'solution'", (coadd.id,))]
        expected: dict[int, list[float]] = {}
        pos: dict[int, tuple[float, float]] = {}
        meta: dict[int, tuple[float, float, float]] = {}
        for sol in [p for p in products(data_dir, "astrometry") if p.id in inputs]:
            with truth_of(sim_dir, sol) as truth:
                src = truth["SOURCES"].data
            chip_no = int((sol.chip or "").replace("CCD", ""))
            on = src[src["chip"] == chip_no]
            for s in on:
                pos[int(s["id"])] = (float(s["ra"]), float(s["dec"]))
                expected.setdefault(int(s["id"]), []).append(10 ** (-0.4 * (s["mag"] - zp_coadd)))
                if s["type"].strip() == "star" and not s["saturated"]:
                    meta[int(s["id"])] = (float(s["ra"]), float(s["dec"]), float(s["psf_fwhm"]))
        every = {sid: float(np.mean(v)) for sid, v in expected.items()}
        ids = np.array(sorted(every))
        coords = np.array([pos[i] for i in ids])
        tree = cKDTree(np.column_stack([coords[:, 0] * np.cos(np.radians(coords[:, 1])), coords[:, 1]]))
        for sid, (ra, dec, fwhm) in meta.items():
            flux = every[sid]
            if flux * 120 < min_flux_e or len(expected[sid]) < 3:
                continue
            r_px = radius_fwhm * fwhm / scale_as
            near = tree.query_ball_point([ra * np.cos(np.radians(dec)), dec], 2.5 * r_px * scale_as / 3600)
            neighbours = [ids[k] for k in near if ids[k] != sid]
            if any(every.get(n, 0) > 0.01 * flux for n in neighbours):
                continue
            x, y = wcs.wcs_world2pix([[ra, dec]], 0)[0]
            yy, xx = np.mgrid[0:sci.shape[0], 0:sci.shape[1]]
            d = np.hypot(xx - x, yy - y)
            ap, ann = d <= r_px, (d > 1.5 * r_px) & (d <= 2.5 * r_px)
            if not (weight[ap] > 0).all() or not (weight[ann] > 0).all():
                continue
            measured = sci[ap].sum() - (np.median(sci[ann]) * ap.sum() if annulus else 0.0)
            ratios.append(measured / flux)
    return np.array(ratios)
