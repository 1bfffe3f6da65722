"""Reference catalogues: reading (:func:`read_table`), proper motions, and HEALPix partitions.

A partitioned catalogue is one FITS table per HEALPix pixel (nested scheme, ``nside`` 32 by default:
pixels of ~1.8 deg) plus a JSON-safe manifest; a cone is loaded by reading only the pixels that overlap
it. Positions in a partition are at the manifest's ``epoch`` (Julian year); move them to an observation
with :func:`apply_proper_motion`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy_healpix import lonlat_to_healpix
from astropy_healpix.high_level import healpix_cone_search

from services.astrometry.science.columns import bands_of, read_table
from wisp.errors import InvalidInput
from wisp.sphere import separation

MANIFEST_FORMAT = "wisp-refcat-healpix/1"
MAS_PER_DEG = 3.6e6

__all__ = ["apply_proper_motion", "load_region", "make_manifest", "partition", "pixels_for_cone", "read_table",
           "write_partition"]


def _epoch_of(table: Table) -> float | None:
    value = table.meta.get("EPOCH")
    return None if value is None else float(value)


def apply_proper_motion(table: Table, epoch_to: float, *, epoch_from: float | None = None) -> Table:
    """A copy with positions moved from ``epoch_from`` (default ``meta['EPOCH']``) to ``epoch_to`` (Julian
    years) along the tangent plane: east ``pmra * dt``, north ``pmdec * dt`` (mas). Position errors (mas)
    grow by the proper-motion errors times ``dt``. Without ``pmra``/``pmdec`` the positions are kept."""
    start = epoch_from if epoch_from is not None else _epoch_of(table)
    if start is None:
        raise InvalidInput("the catalogue epoch is unknown: give epoch_from", code="refcat.no_epoch")
    out = table.copy(copy_data=True)
    dt = float(epoch_to) - start
    out.meta["EPOCH"] = float(epoch_to)
    if dt == 0.0 or "pmra" not in out.colnames or "pmdec" not in out.colnames or len(out) == 0:
        return out
    ra, dec = np.asarray(out["ra"], float), np.asarray(out["dec"], float)
    xi = np.asarray(out["pmra"], float) * dt / MAS_PER_DEG
    eta = np.asarray(out["pmdec"], float) * dt / MAS_PER_DEG
    a, d = np.radians(ra), np.radians(dec)
    x, y = np.radians(xi), np.radians(eta)
    den = np.cos(d) - y * np.sin(d)  # tan_deproject with every star as its own tangent point
    new_ra = np.degrees(a + np.arctan2(x, den)) % 360.0
    new_dec = np.degrees(np.arctan2(np.sin(d) + y * np.cos(d), np.hypot(x, den)))
    out["ra"] = new_ra
    out["dec"] = new_dec
    for pos, pm in (("ra_err", "pmra_err"), ("dec_err", "pmdec_err")):
        if pos in out.colnames and pm in out.colnames:
            out[pos] = np.hypot(np.asarray(out[pos], float), np.asarray(out[pm], float) * dt)
    for std in ("ra", "dec"):
        out[std].unit = u.deg
    return out


def partition(table: Table, nside: int = 32, epoch: float | None = None) -> dict[int, Table]:
    """Split a standard table by nested HEALPix pixel (astropy-healpix) at ``nside``.

    ``epoch``: the Julian year the partitions hold. If the table knows its own epoch (``meta['EPOCH']``)
    and it differs, positions are moved there by proper motion; if the table does not know it, ``epoch``
    states it. Rows keep their input order within a pixel. Every part carries ``meta`` NSIDE, HPXORDER,
    HPXPIX, EPOCH and BANDS.
    """
    if nside < 1 or nside & (nside - 1):
        raise InvalidInput(f"nside={nside} must be a power of two", code="refcat.bad_nside")
    own = _epoch_of(table)
    if own is None and epoch is None:
        raise InvalidInput("the catalogue epoch is unknown: give epoch", code="refcat.no_epoch")
    if own is not None and epoch is not None and own != epoch:
        table = apply_proper_motion(table, epoch)
    final = float(epoch if epoch is not None else own)  # type: ignore[arg-type]
    pix = np.asarray(lonlat_to_healpix(np.asarray(table["ra"], float) * u.deg,
                                       np.asarray(table["dec"], float) * u.deg, nside, order="nested"))
    order = np.argsort(pix, kind="stable")
    bounds = np.flatnonzero(np.diff(pix[order])) + 1
    bands = ",".join(bands_of(table))
    parts: dict[int, Table] = {}
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        part = table[rows]
        part.meta = {"NSIDE": nside, "HPXORDER": "NESTED", "HPXPIX": int(pix[rows[0]]), "EPOCH": final,
                     "BANDS": bands}
        parts[int(pix[rows[0]])] = part
    return parts


def _to_bytes(part: Table) -> bytes:
    hdu = fits.table_to_hdu(part)
    hdu.name = "REFCAT"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def make_manifest(tables: Mapping[int, Table]) -> dict[str, Any]:
    """JSON-safe description of a partitioned catalogue: format, nside, order, epoch (Julian year),
    columns with units and dtypes, bands, ``counts`` per pixel (keys are decimal strings) and the total."""
    if not tables:
        raise InvalidInput("cannot describe an empty partitioned catalogue", code="refcat.empty")
    first = tables[min(tables)]
    return {
        "format": MANIFEST_FORMAT, "nside": int(first.meta["NSIDE"]), "order": "nested",
        "epoch": float(first.meta["EPOCH"]), "columns": list(first.colnames),
        "units": {c: str(first[c].unit) for c in first.colnames if first[c].unit is not None},
        "dtypes": {c: first[c].dtype.str for c in first.colnames},
        "bands": bands_of(first), "counts": {str(p): len(tables[p]) for p in sorted(tables)},
        "n_sources": int(sum(len(t) for t in tables.values())),
    }


def write_partition(tables: Mapping[int, Table]) -> tuple[dict[int, bytes], dict[str, Any]]:
    """FITS bytes per pixel (an empty primary HDU + a 'REFCAT' table; no DATE/CHECKSUM, so the same tables
    always give the same bytes) and the manifest (:func:`make_manifest`)."""
    return {p: _to_bytes(tables[p]) for p in sorted(tables)}, make_manifest(tables)


def pixels_for_cone(ra: float, dec: float, radius_deg: float, nside: int) -> list[int]:
    """Nested HEALPix pixels at ``nside`` overlapping (even partly) the cone of ``radius_deg`` around
    (ra, dec) deg, sorted."""
    pix = healpix_cone_search(ra * u.deg, dec * u.deg, radius_deg * u.deg, nside, order="nested")
    return sorted(int(p) for p in np.asarray(pix))


def load_region(get_bytes: Callable[[int], bytes | None], manifest: Mapping[str, Any], ra: float, dec: float,
                radius: float) -> Table:
    """The catalogue rows within ``radius`` deg of (ra, dec) deg, reading only the pixels that overlap the
    cone and exist in the manifest (``get_bytes(pixel)`` returns a partition's FITS bytes). Rows come in
    pixel order, then file order; ``meta`` holds EPOCH, BANDS and NSIDE."""
    nside = int(manifest["nside"])
    counts = {int(k): int(v) for k, v in manifest["counts"].items()}
    parts = []
    for pix in pixels_for_cone(ra, dec, radius, nside):
        if counts.get(pix, 0) == 0:
            continue
        data = get_bytes(pix)
        if data is None:
            raise InvalidInput(f"reference catalogue partition {pix} (nside {nside}) is listed in the manifest "
                               "but missing", code="refcat.missing_partition", pixel=pix)
        part = Table.read(io.BytesIO(data), format="fits")
        part = part[separation(np.asarray(part["ra"], float), np.asarray(part["dec"], float), ra, dec) <= radius]
        parts.append(part)
    if parts:
        out = vstack(parts, join_type="exact", metadata_conflicts="silent")
    else:
        out = Table({c: np.zeros(0, dtype=np.dtype(manifest["dtypes"][c])) for c in manifest["columns"]})
        for c, unit in manifest.get("units", {}).items():
            out[c].unit = unit
    out.meta = {"EPOCH": float(manifest["epoch"]), "BANDS": ",".join(manifest.get("bands", [])), "NSIDE": nside}
    return out

