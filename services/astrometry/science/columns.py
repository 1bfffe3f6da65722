"""Reading reference catalogues (FITS, CSV, Parquet) into one standard table, whatever the column names.

Standard columns (units converted): ``ra``, ``dec`` (deg, ICRS, float64); optional ``pmra`` (mu_alpha
cos(dec)), ``pmdec`` (mas/yr), ``ra_err`` (on RA cos(dec)), ``dec_err`` (mas), ``pmra_err``, ``pmdec_err``
(mas/yr), ``id``; one column per photometric band named by the band (``g``, ``r``, ``G``, ``BP``...) with
``<band>_err`` (mag) where present. ``meta['EPOCH']`` (Julian year of the positions) when the file says it,
``meta['BANDS']`` the comma-separated band names. Null/NaN proper motions become 0.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle
from astropy.table import MaskedColumn, Table

from wisp.errors import InvalidInput

#: candidate names per standard column, compared after lower-casing and dropping non-alphanumerics
ALIASES: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "radeg", "raicrs", "raj2000", "alphaj2000", "alpha", "alphaicrs", "rightascension", "ra2000"),
    "dec": ("dec", "decdeg", "deicrs", "decicrs", "dej2000", "decj2000", "deltaj2000", "delta", "decl",
            "declination", "dec2000"),
    "pmra": ("pmra", "pmracosdec", "pmracosde", "pmalpha", "pmrac", "pmx"),
    "pmdec": ("pmdec", "pmde", "pmdelta", "pmy"),
    "ra_err": ("raerr", "raerror", "era", "eraicrs", "erra", "sigra", "raerrmas", "sigmara"),
    "dec_err": ("decerr", "decerror", "edec", "edeicrs", "edecicrs", "errdec", "sigdec", "deerror", "sigmadec"),
    "pmra_err": ("pmraerr", "pmraerror", "epmra", "sigpmra"),
    "pmdec_err": ("pmdecerr", "pmdecerror", "epmdec", "epmde", "sigpmdec"),
    "id": ("id", "sourceid", "source", "objid", "objectid", "sourcename"),
}
DEFAULT_UNITS: dict[str, u.UnitBase] = {
    "ra": u.deg, "dec": u.deg, "pmra": u.mas / u.yr, "pmdec": u.mas / u.yr, "ra_err": u.mas, "dec_err": u.mas,
    "pmra_err": u.mas / u.yr, "pmdec_err": u.mas / u.yr,
}
BANDS = ("u", "g", "r", "i", "z", "y", "U", "B", "V", "R", "I", "J", "H", "K", "Ks", "G", "BP", "RP")
_BAND = "|".join(sorted(BANDS, key=len, reverse=True))
_MAG = re.compile(rf"^(?i:mag_?)?(?P<b>{_BAND})(?i:_?(?:mean_?)?(?:psf_?)?mag)?$")
_GAIA = re.compile(r"^phot_(?P<b>g|bp|rp)_mean_mag$", re.IGNORECASE)
_ERR_PREFIX = re.compile(r"^(?:e_|err_?|sig_?)(?P<rest>.+)$")
_ERR_SUFFIX = re.compile(r"^(?P<rest>.+?)_?(?:err|error|sigma)$", re.IGNORECASE)
_EPOCH_KEYS = ("EPOCH", "REFEPOCH", "REF_EPOCH", "EQUINOX_EPOCH")


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def band_of(name: str) -> str | None:
    """The band a magnitude column name stands for (``gmag`` -> ``g``, ``phot_bp_mean_mag`` -> ``BP``)."""
    gaia = _GAIA.match(name)
    if gaia:
        return gaia["b"].upper()
    m = _MAG.match(name)
    return m["b"] if m else None


def _band_err_of(name: str) -> str | None:
    for pattern in (_ERR_PREFIX, _ERR_SUFFIX):
        m = pattern.match(name)
        if m and (band := band_of(m["rest"])):
            return band
    return None


def detect_columns(names: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(standard -> source name, band -> magnitude column, band -> error column); first match wins."""
    found: dict[str, str] = {}
    normed = [(_norm(n), n) for n in names]
    for std, aliases in ALIASES.items():
        for alias in aliases:
            hit = next((n for k, n in normed if k == alias and n not in found.values()), None)
            if hit is not None:
                found[std] = hit
                break
    used = set(found.values())
    mags: dict[str, str] = {}
    errs: dict[str, str] = {}
    for n in names:
        if n in used:
            continue
        if (b := band_of(n)) is not None and b not in mags:
            mags[b] = n
        elif (b := _band_err_of(n)) is not None and b not in errs:
            errs[b] = n
    return found, mags, {b: n for b, n in errs.items() if b in mags}


def _values(col: Any, std: str) -> np.ndarray:
    """Column values as float64 in the standard unit of ``std`` (sexagesimal strings allowed for ra/dec)."""
    if col.dtype.kind in "US":
        if std not in ("ra", "dec"):
            raise InvalidInput(f"column '{col.name}' holds text, expected numbers", code="refcat.bad_column",
                               column=col.name)
        strings = [s.strip() for s in np.asarray(col, dtype=str)]
        sexa = any(c in s for s in strings[:10] for c in ": hdm")
        unit = u.hourangle if std == "ra" and sexa else u.deg
        return np.asarray(Angle(strings, unit=unit).deg, dtype=float)
    data = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if isinstance(col, MaskedColumn) \
        else np.asarray(col, dtype=float)
    unit = getattr(col, "unit", None)
    if std in DEFAULT_UNITS and unit is not None and str(unit) not in ("", "None"):
        try:
            return np.asarray((data * u.Unit(unit)).to_value(DEFAULT_UNITS[std]), dtype=float)
        except (u.UnitConversionError, ValueError, TypeError) as exc:
            raise InvalidInput(f"column '{col.name}' has unit '{unit}', not convertible to "
                               f"{DEFAULT_UNITS[std]}", code="refcat.bad_unit", column=col.name) from exc
    if std in ("ra", "dec") and _norm(col.name).endswith("rad"):
        return np.degrees(data)
    return data


def _read_parquet(source: str | Path | bytes) -> Table:
    """A Parquet file as a Table with pyarrow alone (astropy's reader wants pandas): nulls become masked
    values; units and table meta come from astropy's ``table_meta_yaml`` schema metadata when present."""
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    arrow = pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else str(source))
    raw_meta = arrow.schema.metadata or {}
    header: dict[str, Any] = {}
    if b"table_meta_yaml" in raw_meta:
        header = get_header_from_yaml(raw_meta[b"table_meta_yaml"].decode().split("\n"))
    units = {d["name"]: d.get("unit") for d in header.get("datatype", [])}
    out = Table(meta=dict(header.get("meta", {}) or {}))
    for name in arrow.column_names:
        column = arrow.column(name)
        values = np.asarray(column.to_numpy(zero_copy_only=False))
        if column.null_count:
            values = np.ma.masked_array(values, mask=np.asarray(column.is_null().to_numpy(zero_copy_only=False)))
        out[name] = values
        if units.get(name):
            out[name].unit = units[name]
    return out


def _load(source: str | Path | bytes, fmt: str | None) -> Table:
    """The raw table; ``fmt`` one of fits, csv, parquet, ecsv (else from the suffix or the first bytes)."""
    if isinstance(source, bytes):
        head, name = source[:9], "<bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidInput(f"reference catalogue {path} does not exist", code="refcat.not_found", path=str(path))
        with path.open("rb") as fh:
            head = fh.read(9)
        name = path.name.lower()
    if fmt is None:
        if head.startswith(b"SIMPLE  =") or name.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            fmt = "fits"
        elif head.startswith(b"PAR1") or name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif name.endswith(".ecsv") or head.startswith(b"# %ECSV"):
            fmt = "ecsv"
        else:
            fmt = "csv"
    readers = {"fits": "fits", "parquet": "parquet", "csv": "ascii.csv", "ecsv": "ascii.ecsv"}
    if fmt not in readers:
        raise InvalidInput(f"unknown catalogue format '{fmt}' (use one of {sorted(readers)})",
                           code="refcat.bad_format")
    try:
        if fmt == "parquet":
            return _read_parquet(source)
        if isinstance(source, bytes):
            text_fmt = fmt in ("csv", "ecsv")
            return Table.read(source.decode() if text_fmt else io.BytesIO(source), format=readers[fmt])
        return Table.read(source, format=readers[fmt])
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError, ImportError) as exc:
        raise InvalidInput(f"cannot read reference catalogue {name} as {fmt}: {exc}",
                           code="refcat.unreadable") from exc


def _epoch(raw: Table, names: list[str]) -> float | None:
    for key in _EPOCH_KEYS:
        if key in raw.meta:
            return float(raw.meta[key])
    col = next((n for n in names if _norm(n) in ("refepoch", "epoch")), None)
    if col is not None:
        values = np.unique(np.asarray(raw[col], dtype=float))
        if values.size == 1:
            return float(values[0])
        raise InvalidInput(f"catalogue column '{col}' has several epochs ({values.size}); propagate to one first",
                           code="refcat.mixed_epoch")
    return None


def read_table(source: str | Path | bytes, *, fmt: str | None = None, columns: dict[str, str] | None = None,
               epoch: float | None = None) -> Table:
    """Read a reference catalogue into the standard columns (see the module docstring).

    ``columns`` overrides detection (standard or band name -> source name, e.g. ``{"g": "gmag_psf"}``);
    ``epoch`` (Julian year) overrides the file's epoch. Rows without a finite position are dropped
    (``meta['NDROPPED']``). Raises ``InvalidInput`` (``refcat.missing_column``) naming the column it could
    not find and the columns present; ``refcat.bad_position`` for RA/Dec out of range.
    """
    raw = _load(source, fmt)
    names = list(raw.colnames)
    found, mags, errs = detect_columns(names)
    for key, src in (columns or {}).items():
        if src not in names:
            raise InvalidInput(f"column '{src}' (given for '{key}') not in the catalogue; columns found: "
                               f"{', '.join(names)}", code="refcat.missing_column", column=src, found=names)
        (found if key in ALIASES else mags)[key] = src
    for std in ("ra", "dec"):
        if std not in found:
            raise InvalidInput(
                f"reference catalogue has no {std.upper()} column (looked for {', '.join(ALIASES[std][:6])}, ...); "
                f"columns found: {', '.join(names)}", code="refcat.missing_column", column=std, found=names)
    out = Table()
    for std, src in found.items():
        out[std] = np.asarray(raw[src]) if std == "id" else _values(raw[src], std)
    for band, src in mags.items():
        out[band] = np.asarray(raw[src], dtype=float)
        if band in errs:
            out[band + "_err"] = np.asarray(raw[errs[band]], dtype=float)
    for pm in ("pmra", "pmdec"):
        if pm in out.colnames:
            out[pm] = np.nan_to_num(out[pm], nan=0.0)
    ok = np.isfinite(out["ra"]) & np.isfinite(out["dec"])
    if not ok.all():
        out = out[ok]
    if np.any(np.abs(out["dec"]) > 90.0) or np.any(out["ra"] < -360.0) or np.any(out["ra"] > 720.0):
        raise InvalidInput("reference catalogue positions out of range (RA/Dec must be degrees)",
                           code="refcat.bad_position", ra_column=found["ra"], dec_column=found["dec"])
    out["ra"] = np.mod(out["ra"], 360.0)
    out.meta["EPOCH"] = epoch if epoch is not None else _epoch(raw, names)
    if out.meta["EPOCH"] is None:
        del out.meta["EPOCH"]
    out.meta["BANDS"] = ",".join(mags)
    out.meta["NDROPPED"] = int((~ok).sum())
    for std, unit in DEFAULT_UNITS.items():
        if std in out.colnames:
            out[std].unit = unit
    return out


def bands_of(table: Table) -> list[str]:
    """The photometric bands of a standard table (``meta['BANDS']``, else detected from the names)."""
    text = str(table.meta.get("BANDS", "") or "")
    if text:
        return [b for b in text.split(",") if b in table.colnames]
    return list(detect_columns(list(table.colnames))[1])
