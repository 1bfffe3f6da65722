"""FITS input: strict structural verification of untrusted files (:func:`scan_fits`).

Error codes (stable, all :class:`~wisp.errors.InvalidInput`; ``fits.too_large`` is
:class:`~wisp.errors.PayloadTooLarge`): ``fits.not_fits``, ``fits.empty``, ``fits.bad_header``,
``fits.missing_keyword``, ``fits.bad_keyword``, ``fits.truncated``, ``fits.trailing_garbage``,
``fits.too_large``, ``fits.checksum``, ``fits.no_image``, ``fits.gzip``.
"""

from wisp.fitsio.layout import FitsLayout, HduInfo, HduKind
from wisp.fitsio.names import FITS_SUFFIXES, fits_files
from wisp.fitsio.verify import scan_fits

__all__ = ["FITS_SUFFIXES", "FitsLayout", "HduInfo", "HduKind", "fits_files", "scan_fits"]
