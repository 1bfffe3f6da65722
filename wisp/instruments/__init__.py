"""Instrument descriptions (YAML data files) and header normalisation.

* :func:`load_registry` reads the bundled descriptions (``wisp/instruments/data/*.yaml``) plus any
  user directories, validating them strictly (:class:`~wisp.errors.ConfigError` naming file and field).
* :meth:`InstrumentRegistry.identify` picks the description a verified file belongs to.
* :func:`normalise` turns the file's headers into a :class:`NormalisedExposure` with one
  :class:`ChipFrame` per chip.

Error codes (InvalidInput): ``instrument.unknown``, ``instrument.ambiguous``, ``instrument.chip_missing``,
``instrument.unexpected_hdu``, ``instrument.duplicate_chip``, ``header.missing_keyword``,
``header.bad_value``, ``fits.no_image``. Schema and examples: docs/instruments.md.
"""

from wisp.instruments.chips import ChipFrame
from wisp.instruments.loader import load_description
from wisp.instruments.normalise import NormalisedExposure, normalise
from wisp.instruments.registry import InstrumentRegistry, load_registry
from wisp.instruments.schema import InstrumentDescription

__all__ = [
    "ChipFrame", "InstrumentDescription", "InstrumentRegistry", "NormalisedExposure", "load_description",
    "load_registry", "normalise",
]
