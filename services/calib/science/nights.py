"""Which observing night an exposure belongs to, and FITS section strings."""

from __future__ import annotations

import math
import re
from datetime import date, timedelta

_MJD_EPOCH = date(1858, 11, 17)
_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


def night_of(mjd: float, longitude_deg: float) -> str:
    """The night of an exposure as 'YYYY-MM-DD': the local (mean solar) date at the start of the night,
    i.e. the date of ``UT + longitude/15 h - 12 h``. ``mjd`` is UTC MJD; longitude is east-positive degrees.

    Everything from local noon to the next local noon is one night, so an exposure at 02:00 local time
    belongs to the night that started the previous evening.
    """
    if not (math.isfinite(mjd) and math.isfinite(longitude_deg)):
        raise ValueError(f"night_of needs finite MJD and longitude, got {mjd!r}, {longitude_deg!r}")
    days = mjd + longitude_deg / 360.0 - 0.5
    return (_MJD_EPOCH + timedelta(days=math.floor(days))).isoformat()


def parse_section(fits_str: str) -> tuple[slice, slice]:
    """A FITS section '[x1:x2,y1:y2]' (1-based, inclusive; either range may be reversed, meaning a flipped
    readout direction) as 0-based numpy slices ``(rows, cols)`` in ascending order of the array.

    >>> parse_section('[1:256,1:128]')
    (slice(0, 128, None), slice(0, 256, None))
    """
    m = _SECTION.match(fits_str)
    if m is None:
        raise ValueError(f"not a FITS section '[x1:x2,y1:y2]': {fits_str!r}")
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    if min(x1, x2, y1, y2) < 1:
        raise ValueError(f"FITS sections are 1-based: {fits_str!r}")
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))
