"""FITS section strings (the observing night is :func:`wisp.nights.night_of`)."""

from __future__ import annotations

import re

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


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
