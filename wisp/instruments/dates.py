"""Observation dates from real headers: ISO, old 'DD/MM/YY' + time keywords, MJD/JD, cross-checked."""

from __future__ import annotations

from datetime import datetime, timedelta

from astropy.io import fits

from wisp.instruments.problems import Problems
from wisp.instruments.schema import EXPOSURE_FIELDS, InstrumentDescription, KeywordRule
from wisp.instruments.values import (
    Found,
    datetime_of_mjd,
    find,
    mjd_of,
    parse_date,
    parse_time_of_day,
    to_float,
)

_YEARS = (1900, 2100)


def _mjd_value(found: Found) -> float | None:
    """MJD from a numeric MJD or JD keyword (by name; values above 2.4e6 are JDs)."""
    value = to_float(found.value)
    if value is None:
        return None
    is_jd = ("JD" in found.key.upper() and "MJD" not in found.key.upper()) or value > 2_400_000
    return value - 2_400_000.5 if is_jd else value


def resolve_date(desc: InstrumentDescription, headers: list[tuple[int, fits.Header]], p: Problems
                 ) -> datetime | None:
    """The exposure start (aware UTC) from the ``date_obs`` rule; problems and notes go to ``p``."""
    rule = desc.keywords.get("date_obs")
    keys = rule.keys if rule else ()
    present = [f for f in (find(headers, (k,)) for k in keys) if f is not None]
    if not present:
        p.missing("date_obs", EXPOSURE_FIELDS["date_obs"], keys, 0)
        return None
    numeric = [(f, m) for f in present if not isinstance(f.value, str) and (m := _mjd_value(f)) is not None]
    chosen: datetime | None = None
    source = ""
    rejected: list[Found] = []
    for f in present:
        if isinstance(f.value, str):
            parsed = parse_date(f.value)
            if parsed is None:
                rejected.append(f)
                continue
            chosen, has_time = parsed
            source = f"{f.key}={f.value!r}"
            if not has_time:
                chosen, source = _time_of_day(chosen, source, rule, headers, numeric, p)
        else:
            mjd = _mjd_value(f)
            if mjd is None:
                rejected.append(f)
                continue
            chosen, source = datetime_of_mjd(mjd), f"{f.key}={f.value!r}"
        break
    for f in rejected:
        p.note(f"date_obs: {f.key}={f.value!r} is not a date; ignored")
    if chosen is None:
        f = rejected[0]
        p.bad("date_obs", "observation date", f.key, f.value, "ISO 'YYYY-MM-DDThh:mm:ss', 'DD/MM/YY' or MJD",
              f.hdu)
        return None
    p.sources["date_obs"] = source
    if not _YEARS[0] <= chosen.year < _YEARS[1]:
        p.bad("date_obs", "observation date", source.split("=", 1)[0], chosen.isoformat(),
              f"a date in {_YEARS[0]}-{_YEARS[1]}", 0, reason=f"{chosen.date()} is not a plausible date")
        return None
    for f, mjd in numeric:
        diff = (mjd - mjd_of(chosen)) * 86400.0
        if abs(diff) > 60 and not source.startswith(f"{f.key}="):
            p.note(f"date_obs: {f.key}={f.value!r} differs from {source} by {diff / 3600:+.2f} h; "
                   f"{source.split('=', 1)[0]} used")
    return chosen


def _time_of_day(day: datetime, source: str, rule: KeywordRule | None, headers: list[tuple[int, fits.Header]],
                 numeric: list[tuple[Found, float]], p: Problems) -> tuple[datetime, str]:
    """Complete a date-only value: a time keyword, else a same-day MJD/JD, else midnight (noted)."""
    if rule is not None:
        t = find(headers, rule.time_keys) if rule.time_keys else None
        if t is not None and (secs := parse_time_of_day(t.value)) is not None:
            return day + timedelta(seconds=secs), f"{source} + {t.key}={t.value!r}"
        t = find(headers, rule.time_seconds_keys) if rule.time_seconds_keys else None
        if t is not None and (secs := to_float(t.value)) is not None and 0 <= secs < 86401:
            return day + timedelta(seconds=secs), f"{source} + {t.key}={t.value!r} s"
    for f, mjd in numeric:
        at = datetime_of_mjd(mjd)
        if at.date() == day.date():
            return at, f"{f.key}={f.value!r}"
    p.note(f"date_obs: {source} has no time of day and no time keyword; 00:00:00 UTC assumed")
    return day, source
