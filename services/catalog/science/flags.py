"""The FLAGS bits of a Wisp catalogue: SExtractor's meanings where they coincide, Wisp's own above.

| bit | name | set when |
|---|---|---|
| 1 | CROWDED | pixels of other detections cover >= 10 % of the AUTO aperture |
| 2 | BLENDED | the source was deblended from a common footprint (sep OBJ_MERGED) |
| 4 | SATURATED | a pixel with a DQ saturated bit lies in the AUTO aperture |
| 8 | TRUNCATED | the footprint or the AUTO aperture reaches the image edge |
| 16 | BADPIX | a masked pixel (DQ bad/cosmic ray/trail/no data, NaN, var <= 0) lies in the AUTO aperture: it was
  interpolated from its neighbours (or, far from valid pixels, the flux was scaled by the unmasked area) |
| 32 | KRON_FAILED | the Kron radius was undefined (non-positive sum): the AUTO aperture is the minimum one |
| 64 | WIN_FAILED | the windowed centroid was not finite or moved > max(1 px, window sigma): X, Y are the
  isophotal barycentre |
| 128 | SINGULAR | the isophotal moments were singular (sep OBJ_SINGU): A, B, THETA are rough |
"""

from __future__ import annotations

CROWDED = 1
BLENDED = 2
SATURATED = 4
TRUNCATED = 8
BADPIX = 16
KRON_FAILED = 32
WIN_FAILED = 64
SINGULAR = 128

NAMES: dict[int, str] = {CROWDED: "CROWDED", BLENDED: "BLENDED", SATURATED: "SATURATED", TRUNCATED: "TRUNCATED",
                         BADPIX: "BADPIX", KRON_FAILED: "KRON_FAILED", WIN_FAILED: "WIN_FAILED",
                         SINGULAR: "SINGULAR"}

# a source with none of these is a clean photometric/astrometric reference
UNRELIABLE = CROWDED | BLENDED | SATURATED | TRUNCATED | BADPIX | KRON_FAILED | WIN_FAILED


def describe(flags: int) -> list[str]:
    """The names of the bits set in ``flags``."""
    return [name for bit, name in NAMES.items() if flags & bit]
