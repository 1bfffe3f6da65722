"""Pure science of the calib stage: numpy arrays in, arrays out (no I/O, no database, no bus).

* :mod:`.overscan` – per-row overscan level, subtraction and trimming (ADU).
* :mod:`.combine` / :mod:`.screen` – band-wise, bounded-memory stacking with frame rejection.
* :mod:`.masters` – master bias (ADU) and master flat (normalised, with its ADU level).
* :mod:`.reduce` – raw science chip -> SCI (e-), VAR (e-^2), DQ (bits and weights: :mod:`wisp.dq`).
* :mod:`.nights` – FITS section strings.
* :mod:`.kernels` – the compiled (numba) per-pixel kernels behind combine and reduce; imported on first use,
  so importing this package does not import numba.
"""

from services.calib.science.combine import CombineResult, combine
from services.calib.science.masters import (
    BIAS_SCREENING,
    FLAT_SCREENING,
    MasterBias,
    MasterFlat,
    make_master_bias,
    make_master_flat,
)
from services.calib.science.nights import parse_section
from services.calib.science.overscan import overscan_correct, overscan_level, overscan_trimmed
from services.calib.science.reduce import Reduced, reduce_frame
from services.calib.science.screen import FrameStats, RejectedFrame, Screening
from services.calib.science.sources import RowFunction, RowSource, Transformed, Trimmed
from wisp.dq import (
    BAD,
    COSMIC_RAY,
    INTERPOLATED,
    NO_DATA,
    SATURATED,
    TRAIL,
    WEIGHT_BAD_BITS,
    dq_names,
    weight,
)

__all__ = [
    "BAD", "BIAS_SCREENING", "COSMIC_RAY", "FLAT_SCREENING", "INTERPOLATED", "NO_DATA", "SATURATED", "TRAIL",
    "WEIGHT_BAD_BITS", "CombineResult", "FrameStats", "MasterBias", "MasterFlat", "Reduced", "RejectedFrame",
    "RowFunction", "RowSource", "Screening", "Transformed", "Trimmed", "combine", "dq_names", "make_master_bias",
    "make_master_flat", "overscan_correct", "overscan_level", "overscan_trimmed", "parse_section",
    "reduce_frame", "weight",
]
