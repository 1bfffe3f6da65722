"""Pure science of the coadd stage: a common TAN grid, resampling onto it, and the weighted stack.

``target_grid`` -> ``resample`` (one input at a time, within its bounding box) -> ``find_outliers`` (masks
on the inputs' own pixels) -> ``without_masked`` -> ``combine``; ``photometric_scale`` puts every input on
a common zeropoint. Arrays and astropy WCS in, arrays out.
Pixel coordinates are 0-based (numpy ``[y, x]``) everywhere; WCS objects follow FITS conventions.
"""

from services.coadd.science.combine import METHODS, combine, photometric_scale
from services.coadd.science.grid import local_pixel_scale, target_grid
from services.coadd.science.kernels import KERNELS
from services.coadd.science.outliers import find_outliers, without_masked
from services.coadd.science.resample import Resampled, resample

__all__ = ["KERNELS", "METHODS", "Resampled", "combine", "find_outliers", "local_pixel_scale", "photometric_scale",
           "resample", "target_grid", "without_masked"]
