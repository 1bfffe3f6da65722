"""Header normalisation: one exposure's canonical metadata from its raw headers and its description."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from astropy.io import fits

from wisp.errors import InvalidInput
from wisp.fitsio.layout import FitsLayout
from wisp.instruments.chips import ChipFrame, locate_chips, read_chip
from wisp.instruments.dates import resolve_date
from wisp.instruments.problems import Problems
from wisp.instruments.schema import EXPOSURE_FIELDS, OBSTYPES, InstrumentDescription, KeywordRule, norm_token
from wisp.instruments.values import (
    Found,
    find,
    header_json,
    mjd_of,
    parse_angle,
    to_float,
)

ALWAYS_REQUIRED = ("obstype", "exptime", "date_obs")
_EXPTIME_MAX = 10 * 86400.0  # s
_AIRMASS = (0.95, 100.0)


@dataclass
class NormalisedExposure:
    """Canonical exposure metadata. ``obstype`` is bias|dark|flat|science|other; ``exptime_s`` in
    seconds; ``date_obs`` an aware UTC datetime (exposure start) and ``mjd_obs`` the same instant as
    MJD; ``ra_deg``/``dec_deg`` the pointing (from header keywords, else the mean chip WCS centre);
    ``camera_id`` separates cameras that share a description (the generic one); ``notes`` lists every
    assumed default and ignored value; ``sources`` says which keyword each field came from;
    ``primary_header`` is the primary header as a JSON-safe dict."""

    instrument: str
    camera_id: str
    telescope: str | None
    obstype: str
    filter: str | None
    band: str | None
    exptime_s: float
    date_obs: datetime
    mjd_obs: float
    ra_deg: float | None
    dec_deg: float | None
    airmass: float | None
    object: str | None
    exposure_id: str | None
    pixel_scale_arcsec: float | None
    chips: list[ChipFrame]
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    primary_header: dict[str, Any] = field(repr=False, default_factory=dict)


def exposure_headers(layout: FitsLayout) -> list[tuple[int, fits.Header]]:
    """Where exposure-level keywords are looked up: the primary header, then (for files whose image is
    in an extension, e.g. fpack'ed ones) the first image HDU's header."""
    out = [(0, layout.primary.header)]
    images = layout.image_hdus()
    if images and images[0].index != 0:
        out.append((images[0].index, images[0].header))
    return out


def normalise(layout: FitsLayout, desc: InstrumentDescription, filename: str) -> NormalisedExposure:
    """Resolve every canonical field of ``desc`` for the file; raise InvalidInput (``header.*``,
    ``instrument.*``) listing every problem found, never another exception for bad headers."""
    p = Problems(filename)
    headers = exposure_headers(layout)
    obstype = _obstype(desc, headers, p) or "other"
    required = set(ALWAYS_REQUIRED) | set(desc.required.get("all", ())) | set(desc.required.get(obstype, ()))
    filt, band = _filter(desc, headers, "filter" in required, obstype, p)
    exptime = _number_field("exptime", desc, headers, True, p, low=0.0, high=_EXPTIME_MAX)
    date = resolve_date(desc, headers, p)
    ra = _angle("ra", desc, headers, "ra" in required, p)
    dec = _angle("dec", desc, headers, "dec" in required, p)
    airmass = _number_field("airmass", desc, headers, "airmass" in required, p, *_AIRMASS)
    obj = _text("object", desc, headers, "object" in required, p)
    expid = _text("exposure_id", desc, headers, "exposure_id" in required, p)
    try:
        located = locate_chips(layout, desc, filename)
    except InvalidInput as exc:
        p.fail(exc)  # after the header problems, which are listed first
        p.raise_if_any()
    chip_required = desc.required.get("chip", ())
    chips = [read_chip(n, h, c, layout, desc, chip_required, p) for n, h, c in located]
    p.raise_if_any()
    assert exptime is not None and date is not None
    if (ra is None or dec is None) and any(c.ra_deg is not None for c in chips):
        ra, dec = _mean_position(chips)
        p.note("pointing: no RA/DEC keywords; taken as the mean WCS centre of the chips")
        p.sources["ra"] = p.sources["dec"] = "chip WCS"
    telescope = desc.telescope or _plain(find(headers, ("TELESCOP",)))
    return NormalisedExposure(
        instrument=desc.name, camera_id=_camera_id(desc, headers), telescope=telescope, obstype=obstype,
        filter=filt, band=band, exptime_s=exptime, date_obs=date, mjd_obs=mjd_of(date), ra_deg=ra,
        dec_deg=dec, airmass=airmass, object=obj, exposure_id=expid, pixel_scale_arcsec=desc.pixel_scale,
        chips=chips, notes=p.notes, sources=p.sources,
        primary_header=header_json(layout.primary.header))


def _lookup(fname: str, desc: InstrumentDescription, headers: list[tuple[int, fits.Header]],
            required: bool, p: Problems) -> tuple[KeywordRule | None, Found | None, Any]:
    """(rule, found value or None, default or None); records 'missing' if required and nothing."""
    rule = desc.keywords.get(fname)
    found = find(headers, rule.keys) if rule is not None and rule.keys else None
    if found is not None:
        p.sources[fname] = f"{found.key}={found.value!r} (HDU {found.hdu})"
        return rule, found, None
    if rule is not None and rule.default is not None:
        looked = "/".join(rule.keys) if rule.keys else "no"
        p.note(f"{fname}: no {looked} keyword; assumed {rule.default!r}")
        p.sources[fname] = "assumed default"
        return rule, None, rule.default
    if required:
        p.missing(fname, EXPOSURE_FIELDS[fname], rule.keys if rule else (), 0)
    return rule, None, None


def _obstype(desc: InstrumentDescription, headers: list[tuple[int, fits.Header]], p: Problems) -> str | None:
    rule, found, default = _lookup("obstype", desc, headers, True, p)
    if found is None or rule is None:
        return str(default) if default is not None else None
    token = norm_token(found.value)
    if token in rule.map:
        return rule.map[token]
    if not rule.map and token.lower() in OBSTYPES:
        return token.lower()
    p.note(f"obstype: {found.key}={found.value!r} is not a known frame type of {desc.name}; "
           "treated as 'other'")
    return "other"


def _filter(desc: InstrumentDescription, headers: list[tuple[int, fits.Header]], required: bool,
            obstype: str, p: Problems) -> tuple[str | None, str | None]:
    rule, found, default = _lookup("filter", desc, headers, required, p)
    if found is None or rule is None:
        return (str(default), None) if default is not None else (None, None)
    token = norm_token(found.value)
    name: str | None = str(found.value).strip()
    if token in rule.map:
        name = rule.map[token]
        if name is None:
            if required:
                p.bad("filter", "filter", found.key, found.value, "a filter name", found.hdu,
                      reason=f"it means 'no filter', but a {obstype} frame needs one")
            return None, None
    for f in desc.filters:
        if norm_token(name) in {norm_token(s) for s in (f.name, *f.aliases)}:
            return f.name, f.band
    if desc.filters:
        p.note(f"filter: {found.key}={found.value!r} is not in {desc.name}'s filter list; kept as {name!r}")
    return name, None


def _number_field(fname: str, desc: InstrumentDescription, headers: list[tuple[int, fits.Header]],
                  required: bool, p: Problems, low: float, high: float) -> float | None:
    rule, found, default = _lookup(fname, desc, headers, required, p)
    if found is None:
        return float(default) if default is not None else None
    value = to_float(found.value)
    if value is not None and rule is not None and rule.unit == "ms":
        value /= 1000.0
    if value is not None and low <= value <= high:
        return value
    _invalid(fname, found, f"a number in [{low:g}, {high:g}]", required, p)
    return None


def _angle(fname: str, desc: InstrumentDescription, headers: list[tuple[int, fits.Header]], required: bool,
           p: Problems) -> float | None:
    rule, found, default = _lookup(fname, desc, headers, required, p)
    if found is None or rule is None:
        return float(default) if default is not None else None
    unit = rule.unit or "auto"
    hours = fname == "ra" and (unit == "hourangle" or (
        unit == "auto" and isinstance(found.value, str) and to_float(found.value) is None))
    value = parse_angle(found.value, hours=hours)
    if fname == "ra" and value is not None and 0 <= value <= 360:
        return value % 360.0
    if fname == "dec" and value is not None and -90 <= value <= 90:
        return value
    expected = "degrees in [0, 360) or 'hh:mm:ss'" if fname == "ra" else "degrees in [-90, 90] or '±dd:mm:ss'"
    _invalid(fname, found, expected, required, p)
    return None


def _invalid(fname: str, found: Found, expected: str, required: bool, p: Problems) -> None:
    """A value of the wrong form: an error if the field is required, else ignored with a note."""
    human = EXPOSURE_FIELDS[fname]
    if required:
        p.bad(fname, human, found.key, found.value, expected, found.hdu)
    else:
        p.note(f"{fname}: {found.key}={found.value!r} is not a valid {human} (expected {expected}); ignored")
        p.sources.pop(fname, None)


def _text(fname: str, desc: InstrumentDescription, headers: list[tuple[int, fits.Header]], required: bool,
          p: Problems) -> str | None:
    _, found, default = _lookup(fname, desc, headers, required, p)
    value = found.value if found is not None else default
    return None if value is None else str(value).strip() or None


def _mean_position(chips: list[ChipFrame]) -> tuple[float, float]:
    """Mean of the chip centres (unit vectors, so RA wraps correctly), in degrees."""
    xs = ys = zs = 0.0
    for c in chips:
        if c.ra_deg is None or c.dec_deg is None:
            continue
        ra, dec = math.radians(c.ra_deg), math.radians(c.dec_deg)
        xs += math.cos(dec) * math.cos(ra)
        ys += math.cos(dec) * math.sin(ra)
        zs += math.sin(dec)
    return math.degrees(math.atan2(ys, xs)) % 360.0, math.degrees(math.atan2(zs, math.hypot(xs, ys)))


def _camera_id(desc: InstrumentDescription, headers: list[tuple[int, fits.Header]]) -> str:
    parts = [str(f.value) for k in desc.camera_id_from if (f := find(headers, (k,))) is not None]
    slug = "/".join(re.sub(r"[^a-z0-9.]+", "-", part.lower()).strip("-") for part in parts)
    return f"{desc.name}:{slug}" if slug else desc.name


def _plain(found: Found | None) -> str | None:
    return str(found.value).strip() if found is not None else None
