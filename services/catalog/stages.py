"""The catalog adapters: sources of a solved frame and of a coadd, stored as a FITS table and indexed in SQL
for cone searches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.catalog.science import extract, summary
from wisp.db import table
from wisp.dq import NO_DATA
from wisp.pipeline.files import provenance, write_fits
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Output, StageSpec, Task
from wisp.pipeline.rules.sky import CATALOG, COADD_CATALOG

INDEX_COLUMNS = {"number": "NUMBER", "ra_deg": "RA", "dec_deg": "DEC", "x": "X", "y": "Y", "mag": "MAG_AUTO",
                 "mag_err": "MAGERR_AUTO", "flux": "FLUX_AUTO", "flux_err": "FLUXERR_AUTO", "fwhm_arcsec": "FWHM",
                 "ellipticity": "ELLIPTICITY", "flags": "FLAGS"}


def _native(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _value(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v) if np.isfinite(v) else None
    return v


def index_rows(catalogue: Table) -> list[dict[str, Any]]:
    """Rows for the ``sources`` table (cone-search index); sources without a sky position are left out."""
    ok = np.isfinite(np.asarray(catalogue["RA"], float)) & np.isfinite(np.asarray(catalogue["DEC"], float))
    return [{k: _value(row[c]) for k, c in INDEX_COLUMNS.items()} for row in catalogue[ok]]


def catalogue_output(spec: StageSpec, task: Task, catalogue: Table, workdir: Path, zeropoint: float,
                     columns: dict[str, Any]) -> Output:
    """Write the table and describe it; the sources are indexed in the same transaction as the product."""
    header = fits.Header()
    for key, value, comment in provenance(spec, task):
        header[key] = (value, comment)
    header["MAGZP"] = (zeropoint, "m = MAGZP - 2.5 log10(FLUX [e-] / EXPTIME)")
    hdu = fits.BinTableHDU(catalogue, name="CATALOG")
    for key in ("DATE", "DATE-HDU"):
        hdu.header.remove(key, ignore_missing=True)
    path = write_fits(workdir / "catalog.fits", header, [hdu])
    stats = summary(catalogue)
    columns["metrics"] = {k: _value(v) for k, v in stats.items()} if isinstance(stats, dict) else {}
    rows = index_rows(catalogue)

    def index(session: Session, product_id: str) -> None:
        if rows:
            session.execute(insert(table("sources")), [dict(r, product_id=product_id) for r in rows])

    return Output(path, columns, extra=index)


class CatalogRunner:
    spec = CATALOG

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        reduced = inputs.product(task.inputs_with("reduced")[0].id)
        solution = inputs.product(task.inputs_with("solution")[0].id)
        sol_header = fits.getheader(solution.path)
        with fits.open(reduced.path, memmap=False) as h:
            header = h[0].header
            sci, var, dq = _native(h["SCI"].data), _native(h["VAR"].data), np.asarray(h["DQ"].data, np.uint16)
        zp = float(sol_header.get("MAGZP", np.nan))
        catalogue = extract(sci, var, dq, wcs=WCS(sol_header), zeropoint=zp if np.isfinite(zp) else None,
                        exptime_s=float(header["EXPTIME"]), pixel_scale_arcsec=float(header.get("PIXSCALE") or 0.26))
        columns = {k: task.group[k] for k in ("instrument", "chip", "filter", "night", "field", "frame_id",
                                              "exposure_id") if task.group.get(k) is not None}
        columns.update(mjd_obs=solution.row["mjd_obs"], ra_deg=solution.row["ra_deg"], dec_deg=solution.row["dec_deg"])
        return catalogue_output(self.spec, task, catalogue, workdir, zp, columns)


class CoaddCatalogRunner:
    spec = COADD_CATALOG

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        coadd = inputs.product(task.inputs_with("coadd")[0].id)
        with fits.open(coadd.path, memmap=False) as h:
            header = h[0].header
            sci, weight = _native(h["SCI"].data), _native(h["WEIGHT"].data)
        with np.errstate(divide="ignore"):
            var = np.where(weight > 0, 1.0 / weight, np.nan).astype(np.float32)
        dq = np.where(weight > 0, 0, NO_DATA).astype(np.uint16)
        wcs = WCS(header)
        zp = float(header["MAGZP"])
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)
        catalogue = extract(sci, var, dq, wcs=wcs, zeropoint=zp, exptime_s=1.0, pixel_scale_arcsec=scale)
        columns = {k: task.group[k] for k in ("instrument", "filter", "night", "field") if task.group.get(k)}
        columns.update(ra_deg=coadd.row["ra_deg"], dec_deg=coadd.row["dec_deg"], mjd_obs=coadd.row["mjd_obs"])
        return catalogue_output(self.spec, task, catalogue, workdir, zp, columns)
