"""The science of the catalogue stage: pure functions from a reduced image to a source catalogue.

``extract(sci, var, dq, wcs=..., zeropoint=..., exptime_s=..., pixel_scale_arcsec=..., params=ExtractParams())``
returns an astropy Table (columns in ``COLUMNS``, FLAGS bits in ``flags``); ``psf_fwhm`` and ``summary`` give
its QC numbers. No I/O, no database, no bus: the service adapter does that.
"""

from services.catalog.science import flags
from services.catalog.science.extract import COLUMNS, extract
from services.catalog.science.params import ExtractParams
from services.catalog.science.qc import psf_fwhm, summary

__all__ = ["COLUMNS", "ExtractParams", "extract", "flags", "psf_fwhm", "summary"]
