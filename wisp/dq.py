"""Data-quality (DQ) bits of every pixel product (DESIGN §8) and the derived weight map: one definition.

DQ planes are ``uint16``; a pixel may carry several bits. These values are part of the product format:
never renumber them.
"""

from __future__ import annotations

import numpy as np

BAD = 1  #: hot/cold pixel or bad column (from a bad-pixel mask)
SATURATED = 2  #: raw value reached the chip's saturation level
COSMIC_RAY = 4  #: cosmic-ray hit
TRAIL = 8  #: satellite/aircraft trail
NO_DATA = 16  #: no usable value (non-finite input or calibration); SCI and VAR are NaN
INTERPOLATED = 32  #: value interpolated from neighbours

DQ_BITS: dict[str, int] = {
    "BAD": BAD, "SATURATED": SATURATED, "COSMIC_RAY": COSMIC_RAY, "TRAIL": TRAIL, "NO_DATA": NO_DATA,
    "INTERPOLATED": INTERPOLATED,
}

#: bits that make a pixel unusable: weight 0 (INTERPOLATED pixels keep their weight)
WEIGHT_BAD_BITS = BAD | SATURATED | COSMIC_RAY | TRAIL | NO_DATA


def dq_names(bits: int) -> list[str]:
    """Names of the bits set in ``bits`` (e.g. ``['BAD', 'SATURATED']``), in bit order."""
    return [name for name, bit in DQ_BITS.items() if bits & bit]


def weight(var: np.ndarray, dq: np.ndarray, bad_bits: int = WEIGHT_BAD_BITS) -> np.ndarray:
    """Inverse-variance weight (float32, 1/VAR in VAR's inverse units, e.g. e-^-2): 0 where ``dq`` has any
    of ``bad_bits`` or VAR is not finite and positive."""
    var = np.asarray(var, dtype=np.float32)
    ok = np.isfinite(var) & (var > 0) & ((np.asarray(dq) & bad_bits) == 0)
    out = np.zeros(var.shape, dtype=np.float32)
    np.divide(np.float32(1.0), var, out=out, where=ok)
    return out
