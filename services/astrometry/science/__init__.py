"""Pure science of the astrometry stage: reference catalogues, detection, matching, TAN-SIP fitting,
photometric zeropoints and the per-chip solve that puts them together. No I/O beyond bytes/paths given.

Conventions: pixel coordinates in tables and arrays are 0-based (numpy ``data[y, x]``, pixel centres at
integers); FITS WCS headers (and ``crpix`` arguments) are 1-based. Positions in degrees (ICRS), proper
motions in mas/yr (``pmra`` = mu_alpha cos(dec)), position errors and residuals in mas, epochs in Julian
years, fluxes in electrons (e-).
"""

from services.astrometry.science.detect import detect_stars
from services.astrometry.science.fit import Solution, fit_tan_sip
from services.astrometry.science.match import Match, match_stars
from services.astrometry.science.params import AstrometryParams
from services.astrometry.science.photometry import ZeroPoint, aperture_flux, fit_zeropoint
from services.astrometry.science.refcat import (
    apply_proper_motion,
    load_region,
    make_manifest,
    partition,
    pixels_for_cone,
    read_table,
    write_partition,
)
from services.astrometry.science.solve import ChipSolution, solve_chip

__all__ = [
    "AstrometryParams", "ChipSolution", "Match", "Solution", "ZeroPoint", "aperture_flux", "apply_proper_motion",
    "detect_stars", "fit_tan_sip", "fit_zeropoint", "load_region", "make_manifest", "match_stars", "partition",
    "pixels_for_cone", "read_table", "solve_chip", "write_partition",
]
