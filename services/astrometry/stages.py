"""The astrometry adapters: solve a reduced chip against a reference catalogue; import a catalogue."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.astrometry.science.columns import read_table
from services.astrometry.science.refcat import load_region, partition, write_partition
from services.astrometry.science.solve import solve_chip
from wisp import quality
from wisp.db import session_scope, table
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.pipeline.files import provenance, write_fits
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Output, Task
from wisp.pipeline.record import record_product
from wisp.pipeline.rules.sky import ASTROMETRY, REFCAT
from wisp.store import ObjectStore, sha256_file

SEARCH_MARGIN_DEG = 10.0 / 60.0  # pointing errors of several arcmin: read references this far around the chip
REFCAT_NAMESPACE = "refcat"
NSIDE = 32


def julian_year(mjd: float) -> float:
    return 2000.0 + (mjd - 51544.5) / 365.25


def footprint(wcs: WCS, shape: tuple[int, int]) -> tuple[float, float, float]:
    """Centre (ra, dec) and radius (deg) of a chip's footprint, from its corners."""
    ny, nx = shape
    xs, ys = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2]), np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
    ra, dec = wcs.wcs_pix2world(xs, ys, 0)
    c = np.radians([ra[-1], dec[-1]])
    r = np.radians([ra[:-1], dec[:-1]])
    cos_d = np.sin(c[1]) * np.sin(r[1]) + np.cos(c[1]) * np.cos(r[1]) * np.cos(r[0] - c[0])
    return float(ra[-1]), float(dec[-1]), float(np.degrees(np.arccos(np.clip(cos_d, -1, 1))).max())


class AstrometryRunner:
    spec = ASTROMETRY

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        reduced = inputs.product(task.inputs_with("reduced")[0].id)
        refcat = inputs.product(task.inputs_with("refcat")[0].id)
        manifest = json.loads(refcat.path.read_text())
        with fits.open(reduced.path, memmap=False) as h:
            header = h[0].header
            sci, var, dq = h["SCI"].data, h["VAR"].data, h["DQ"].data
        wcs = WCS(header)
        ra, dec, radius = footprint(wcs, sci.shape)
        keys = {int(k): v for k, v in manifest["objects"].items()}
        region = load_region(lambda p: inputs.store.get_bytes(keys[p]) if p in keys else None, manifest,
                             ra, dec, radius + SEARCH_MARGIN_DEG)
        mjd = float(reduced.row["mjd_obs"] or header["MJD-OBS"])
        columns = {k: task.group[k] for k in ("instrument", "chip", "filter", "night", "field", "frame_id",
                                              "exposure_id") if task.group.get(k) is not None}
        out = fits.Header()
        for key, value, comment in provenance(self.spec, task):
            out[key] = (value, comment)
        try:
            solved = solve_chip(sci, var, dq, header, region, epoch=julian_year(mjd),
                                exptime=float(header["EXPTIME"]), airmass=header.get("AIRMASS"),
                                band=header.get("FILTER"), saturation=header.get("SATURATE"))
        except InvalidInput as exc:
            if not exc.code.startswith("astrometry."):
                raise
            # A frame that cannot be solved is a result too: recorded, flagged, and left out downstream.
            out["ASTFAIL"] = (exc.code, "no solution: see the product's metrics")
            columns.update(mjd_obs=mjd, ra_deg=ra, dec_deg=dec, quality_flags=quality.ASTROMETRY,
                           metrics={"failed": exc.code, "reason": exc.message})
            return Output(write_fits(workdir / "astrometry.fits", out, []), columns)
        out.update(solved.header)
        path = write_fits(workdir / "astrometry.fits", out, [])
        centre = solved.wcs.wcs_pix2world([[(sci.shape[1] - 1) / 2, (sci.shape[0] - 1) / 2]], 0)[0]
        sol, zp = solved.solution, solved.zeropoint
        metrics: dict[str, Any] = {
            "astrom_rms_mas": sol.rms_mas, "n_ref": sol.n_ref, "n_detected": solved.n_detected,
            "mean_dra_mas": sol.mean_dra_mas, "mean_ddec_mas": sol.mean_ddec_mas,
            "sigma_dra_mas": sol.sigma_dra_mas, "sigma_ddec_mas": sol.sigma_ddec_mas,
            "warnings": list(solved.warnings)}
        if zp is not None:
            metrics.update(zeropoint_mag=zp.zp, zeropoint_err_mag=zp.zp_err, zeropoint_n=zp.n)
        columns.update(mjd_obs=mjd, ra_deg=float(centre[0]), dec_deg=float(centre[1]),
                       metrics=metrics)
        return Output(path, columns)


def _centre_radius(stars: Table) -> tuple[float, float, float]:
    ra, dec = np.radians(np.asarray(stars["ra"], float)), np.radians(np.asarray(stars["dec"], float))
    v = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=1)
    norm = np.linalg.norm(v)
    if norm < 1e-9:
        return 0.0, 90.0, 180.0
    c = v / norm
    cra, cdec = math.degrees(math.atan2(c[1], c[0])) % 360, math.degrees(math.asin(c[2]))
    cos_d = np.clip(np.cos(dec) * np.cos(ra) * c[0] + np.cos(dec) * np.sin(ra) * c[1] + np.sin(dec) * c[2], -1, 1)
    return cra, cdec, float(np.degrees(np.arccos(cos_d)).max())


def import_refcat(engine: Engine, store: ObjectStore, path: Path, filename: str, workdir: Path
                  ) -> tuple[str, bool, dict[str, Any]]:
    """Import a FITS/CSV/Parquet table as a ``refcat`` product; (product id, created?, manifest)."""
    sha = sha256_file(path)
    task = REFCAT.task([], {}, {"sha256": sha})
    products = table("products")
    with session_scope(engine) as s:
        existing = s.scalar(select(products.c.object_key).where(products.c.id == task.product_id))
    if existing is not None:
        return task.product_id, False, json.loads(store.get_bytes(existing))
    fmt = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(Path(filename).suffix.lower())
    stars = read_table(path, fmt=fmt)
    parts, manifest = write_partition(partition(stars, nside=NSIDE))
    manifest["objects"] = {str(p): store.put_bytes(data, namespace=REFCAT_NAMESPACE).key for p, data in parts.items()}
    manifest.update(source={"filename": filename, "sha256": sha})
    ra, dec, radius = _centre_radius(stars)
    manifest_path = workdir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, sort_keys=True, indent=1))
    ref = store.put_file(manifest_path, namespace=REFCAT_NAMESPACE, content_type="application/json")
    output = Output(manifest_path, {"ra_deg": ra, "dec_deg": dec, "metrics": {
        "radius_deg": radius, "n_stars": len(stars), "nside": NSIDE, "bands": manifest["bands"],
        "epoch": manifest["epoch"], "filename": filename}})
    with session_scope(engine) as s:
        created = record_product(s, REFCAT, task, output, ref, utcnow())
    return task.product_id, created, manifest
