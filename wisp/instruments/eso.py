"""Sections from ESO detector keywords (``HIERARCH ESO DET OUTi PRSCX/OVSCX/PRSCY/NX/NY``).

ESO raw frames (WFI, FORS, EFOSC2, OmegaCAM, ...) give each readout port's geometry instead of
DATASEC/BIASSEC. This handles the common single-port chip read out at the lower-left corner
(``OUTi X = 1``, ``OUTi Y = 1``); other layouts return None and the description's default applies.
"""

from __future__ import annotations

from astropy.io import fits

from wisp.instruments.values import header_value, to_float


def _port(header: fits.Header) -> int | None:
    for i in range(1, 33):
        if header_value(header, f"HIERARCH ESO DET OUT{i} NX") is not None:
            return i
    return None


def eso_section(header: fits.Header, which: str) -> str | None:
    """``'[x1:x2,y1:y2]'`` of the data (``which='datasec'``) or the x overscan (``'biassec'``, the
    prescan if there is no overscan) of the first readout port described in ``header``."""
    port = _port(header)
    if port is None:
        return None

    def get(name: str, default: float | None = 0.0) -> int | None:
        value = to_float(header_value(header, f"HIERARCH ESO DET OUT{port} {name}"))
        value = default if value is None else value
        return None if value is None or value < 0 else int(value)

    nx, ny = get("NX", None), get("NY", None)
    prscx, ovscx, prscy = get("PRSCX"), get("OVSCX"), get("PRSCY")
    x, y = get("X", 1.0), get("Y", 1.0)
    if not nx or not ny or prscx is None or ovscx is None or prscy is None or x != 1 or y != 1:
        return None
    rows = f"{prscy + 1}:{prscy + ny}"
    if which == "datasec":
        return f"[{prscx + 1}:{prscx + nx},{rows}]"
    if ovscx > 0:
        return f"[{prscx + nx + 1}:{prscx + nx + ovscx},{rows}]"
    return f"[1:{prscx},{rows}]" if prscx > 0 else None
