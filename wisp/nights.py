"""Observing nights: the local date at the start of the night, from the time and the site's longitude."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from wisp.instruments.values import to_float

#: Header keywords that give the site's longitude (deg, east positive), in order of preference.
LONGITUDE_KEYS = ("OBS-LONG", "SITELONG", "LONGITUD", "LONG-OBS", "OBSGEO-L", "HIERARCH ESO TEL GEOLON",
                  "ESO TEL GEOLON")


def site_longitude(header: Mapping[str, Any]) -> float:
    """Longitude (deg, east positive) from a primary header; 0 (Greenwich) when none is given.

    Sexagesimal strings ('-96:27:11.8') are read as degrees. The night boundary then falls at local
    noon; with no longitude it falls at 12:00 UT.
    """
    for key in LONGITUDE_KEYS:
        if key in header and header[key] not in (None, ""):
            value = header[key]
            if isinstance(value, str) and ":" in value:
                sign = -1.0 if value.strip().startswith("-") else 1.0
                parts = [abs(float(p)) for p in value.strip().lstrip("+-").split(":")]
                return sign * (parts[0] + sum(p / 60 ** (i + 1) for i, p in enumerate(parts[1:])))
            number = to_float(value)
            if number is not None and -360 <= number <= 360:
                return ((number + 180) % 360) - 180
    return 0.0


def night_of(when: datetime, longitude_deg: float) -> str:
    """'YYYY-MM-DD': the local (mean solar) date at the start of the night containing ``when`` (UTC)."""
    local = when + timedelta(hours=longitude_deg / 15.0)
    return (local - timedelta(hours=12)).date().isoformat()
