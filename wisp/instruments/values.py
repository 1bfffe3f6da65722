"""Reading values out of real-world headers: lookups, numbers, dates, angles, sections, JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from astropy.io import fits

MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_ISO = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})"
                  r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d*))?)?)?\s*(?:Z|UTC|[+-]00:?00)?", re.I)
_OLD_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2})")  # DD/MM/YY, FITS before 2000: 19YY
_TIME = re.compile(r"(\d{1,2})[:\s](\d{1,2})(?:[:\s](\d{1,2}(?:\.\d*)?))?")
_SEXA = re.compile(r"([+-]?)\s*(\d+(?:\.\d*)?)(?:\s*[:\sdh°]\s*(\d+(?:\.\d*)?)"
                   r"(?:\s*[:\sm']\s*(\d+(?:\.\d*)?)\s*[s\"]?)?)?", re.I)
_SECTION = re.compile(r"\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]")


@dataclass(frozen=True)
class Found:
    """A header value and where it came from."""

    key: str
    value: Any
    hdu: int


def header_value(header: fits.Header, key: str) -> Any:
    """The value of ``key``, or None when absent, undefined or blank (strings come back stripped)."""
    try:
        if key not in header:
            return None
        value = header[key]
    except Exception:
        return None
    if isinstance(value, fits.card.Undefined) or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return value


def find(headers: Sequence[tuple[int, fits.Header]], keys: Sequence[str]) -> Found | None:
    """The first of ``keys`` present (and not blank) in the first header that has one of them."""
    for index, header in headers:
        for key in keys:
            value = header_value(header, key)
            if value is not None:
                return Found(key, value, index)
    return None


def to_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string (Fortran 'D' exponents allowed), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip().replace("D", "E").replace("d", "e"))
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def parse_date(value: Any) -> tuple[datetime, bool] | None:
    """A UTC datetime from an ISO date(-time) or an old 'DD/MM/YY' FITS date; the flag says whether
    the value carried a time of day."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _ISO.fullmatch(text)
    try:
        if m:
            y, mo, d, hh, mm, ss, frac = m.groups()
            base = datetime(int(y), int(mo), int(d), tzinfo=UTC)
            if hh is None:
                return base, False
            secs = int(hh) * 3600 + int(mm) * 60 + int(ss or 0) + float("0." + frac if frac else 0)
            return base + timedelta(seconds=secs), True
        m = _OLD_DATE.fullmatch(text)
        if m:
            d, mo, y = (int(g) for g in m.groups())
            return datetime(1900 + y, mo, d, tzinfo=UTC), False
    except ValueError:
        return None
    return None


def parse_time_of_day(value: Any) -> float | None:
    """Seconds after midnight from 'hh:mm[:ss.s]' (also space-separated); None if not that form."""
    if not isinstance(value, str):
        return None
    m = _TIME.fullmatch(value.strip())
    if not m:
        return None
    hh, mm, ss = int(m.group(1)), int(m.group(2)), float(m.group(3) or 0)
    if hh > 24 or mm > 59 or ss >= 61:
        return None
    return hh * 3600 + mm * 60 + ss


def mjd_of(dt: datetime) -> float:
    """Modified Julian Date (days) of an aware datetime."""
    return (dt - MJD_EPOCH) / timedelta(days=1)


def datetime_of_mjd(mjd: float) -> datetime:
    """Aware UTC datetime of a Modified Julian Date (days)."""
    return MJD_EPOCH + timedelta(days=mjd)


def parse_angle(value: Any, *, hours: bool) -> float | None:
    """Degrees from a number or a sexagesimal/decimal string; ``hours`` means the number or the
    sexagesimal string is in hours (RA). None if the value is not an angle."""
    number = to_float(value)
    if number is not None:
        return number * 15.0 if hours else number
    if not isinstance(value, str):
        return None
    m = _SEXA.fullmatch(value.strip())
    if not m or m.group(3) is None:
        return None
    sign = -1.0 if m.group(1) == "-" else 1.0
    a, b, c = float(m.group(2)), float(m.group(3)), float(m.group(4) or 0)
    if b >= 60 or c >= 60:
        return None
    out = sign * (a + b / 60 + c / 3600)
    return out * 15.0 if hours else out


def parse_section(text: str) -> tuple[int, int, int, int] | None:
    """``(x1, x2, y1, y2)`` (1-based, inclusive, ascending) of a FITS section '[x1:x2,y1:y2]'."""
    m = _SECTION.fullmatch(text.strip())
    if not m:
        return None
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    return min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)


def json_value(value: Any) -> Any:
    """A JSON-safe form of a header value (non-finite floats and other types become text)."""
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, bool | int | str):
        return value if not isinstance(value, str) else value.rstrip()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, complex):
        return [json_value(value.real), json_value(value.imag)]
    if hasattr(value, "item"):
        return json_value(value.item())
    return str(value)


def header_json(header: fits.Header) -> dict[str, Any]:
    """The header as a JSON-safe dict: keyword -> value (first occurrence, as astropy), commentary
    cards (COMMENT, HISTORY, blank, non-standard ones like ESO-LOG) -> list of their texts."""
    out: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        image = card.image
        commentary = key in ("COMMENT", "HISTORY", "") or (
            image[8:10] != "= " and not image.upper().startswith("HIERARCH"))
        if commentary:
            entry = out.setdefault(key, [])
            if isinstance(entry, list):
                entry.append(str(card.value).rstrip())
        elif key not in out:
            out[key] = json_value(card.value)
    return out
