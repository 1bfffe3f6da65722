"""The validated, immutable form of an instrument description (see docs/instruments.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wisp.instruments.qc import qc_to_dict
from wisp.quality import Bounds, thresholds_for

OBSTYPES = ("bias", "dark", "flat", "science", "other")

# Exposure-level canonical fields and what they mean (used in messages).
EXPOSURE_FIELDS: dict[str, str] = {
    "obstype": "frame type",
    "filter": "filter",
    "exptime": "exposure time",
    "date_obs": "observation date",
    "ra": "right ascension",
    "dec": "declination",
    "airmass": "airmass",
    "object": "object name",
    "exposure_id": "exposure id",
}
# Chip-level canonical fields.
CHIP_FIELDS: dict[str, str] = {
    "gain": "gain",
    "read_noise": "read noise",
    "saturation": "saturation level",
    "datasec": "data section",
    "biassec": "overscan section",
}
FROM_BITPIX = "from_bitpix"


@dataclass(frozen=True)
class KeywordRule:
    """Where to find one canonical field: header ``keys`` tried in order (first present and non-blank
    wins), an optional value ``map`` (keys normalised with :func:`norm_token`; a ``None`` target means
    "no value", e.g. FILTER='NONE'), a ``default`` used when no key is present, a ``unit``, and for
    ``date_obs`` the keys holding the time of day for date-only values. ``derive: eso_outputs`` (sections
    only) computes the section from ESO ``DET OUTi`` keywords when no key is present."""

    keys: tuple[str, ...]
    map: dict[str, str | None] = field(default_factory=dict)
    default: Any = None
    unit: str | None = None
    time_keys: tuple[str, ...] = ()
    time_seconds_keys: tuple[str, ...] = ()
    derive: str | None = None


@dataclass(frozen=True)
class FilterDef:
    """A filter: canonical ``name``, photometric ``band`` and the header spellings that mean it."""

    name: str
    band: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class CalibrationRule:
    """When a calibration block is complete and how long its master is valid: at least ``min_frames``
    usable frames of a chip (and filter) in a night; valid ``validity_days`` days either side of them."""

    min_frames: int = 3
    validity_days: float = 3.0


@dataclass(frozen=True)
class IlluminationRule(CalibrationRule):
    """A night-sky flat (illumination correction, "super-flat") and, for ``fringe_filters``, a fringe frame
    per chip, filter and night, made from the night's science frames of each of ``filters`` once at least
    ``min_frames`` of them are taken and a later frame of the chip exists; valid ``validity_days`` days
    either side of them. Only cameras whose description has this rule get the stage."""

    min_frames: int = 4
    filters: tuple[str, ...] = ()
    fringe_filters: tuple[str, ...] = ()


#: Calibration kinds a description may configure, with the defaults used when it does not
#: (``illumination`` has no default: a camera without it gets no night-sky flat).
CALIBRATION_KINDS = ("bias", "flat", "dark", "illumination")


@dataclass(frozen=True)
class ChipDef:
    """One chip of a fixed mosaic: located by ``extname`` and/or ``hdu`` index. Values given here win
    over header keywords (gain in e-/ADU, read_noise in e-, saturation in ADU, FITS-style sections)."""

    name: str
    extname: str | None = None
    hdu: int | None = None
    gain: float | None = None
    read_noise: float | None = None
    saturation: float | None = None
    datasec: str | None = None
    biassec: str | None = None


@dataclass(frozen=True)
class ChipDiscovery:
    """Chips found from the file: every 2-D image HDU (whose EXTNAME fully matches ``extname_pattern``,
    case-insensitive, if given); the chip name is the first of ``name_from`` present in the chip header,
    else ``name_default`` (``{index}`` and ``{extname}`` are substituted)."""

    extname_pattern: re.Pattern[str] | None = None
    name_from: tuple[str, ...] = ("EXTNAME",)
    name_default: str = "hdu{index}"


@dataclass(frozen=True)
class MatchValue:
    """One accepted value of a match keyword: literal (case-insensitive, stripped) or ``re:`` regex."""

    text: str
    regex: re.Pattern[str] | None = None

    def accepts(self, value: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return norm_token(value) == norm_token(self.text)


@dataclass(frozen=True)
class InstrumentDescription:
    """A camera: how to recognise its files and how to read their headers."""

    name: str
    source: Path
    telescope: str | None
    description: str | None
    priority: int
    match: dict[str, tuple[MatchValue, ...]]
    image_hdus: tuple[int, int] | None
    pixel_scale: float | None
    keywords: dict[str, KeywordRule]
    required: dict[str, tuple[str, ...]]
    filters: tuple[FilterDef, ...]
    chips: tuple[ChipDef, ...]
    chip_discovery: ChipDiscovery | None
    chip_keywords: dict[str, KeywordRule]
    camera_id_from: tuple[str, ...] = ()
    qc: dict[str, dict[str, Bounds | None]] = field(default_factory=dict)
    calibration: dict[str, CalibrationRule] = field(default_factory=dict)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> parameter defaults

    def qc_thresholds(self, kind: str, filter_name: str | None = None) -> dict[str, Bounds]:
        """QC thresholds for a product of ``kind`` in ``filter_name``: defaults overridden by ``qc``."""
        return thresholds_for(kind, self.qc, filter_name)

    def band_of(self, filter_name: str) -> str | None:
        """The photometric band of a filter (by name or alias), or None if the filter is not listed."""
        token = norm_token(filter_name)
        for f in self.filters:
            if token in {norm_token(s) for s in (f.name, *f.aliases)}:
                return f.band
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form of the description (for storing which definition was used)."""
        def rule(r: KeywordRule) -> dict[str, Any]:
            out: dict[str, Any] = {"keys": list(r.keys)}
            for key in ("map", "default", "unit", "derive"):
                if getattr(r, key):
                    out[key] = getattr(r, key)
            for key in ("time_keys", "time_seconds_keys"):
                if getattr(r, key):
                    out[key] = list(getattr(r, key))
            return out
        disc = self.chip_discovery
        return {
            "name": self.name, "source": str(self.source), "telescope": self.telescope,
            "description": self.description, "priority": self.priority,
            "match": {k: [v.text for v in vals] for k, vals in self.match.items()},
            "image_hdus": list(self.image_hdus) if self.image_hdus else None, "pixel_scale": self.pixel_scale,
            "keywords": {k: rule(r) for k, r in self.keywords.items()},
            "required": {k: list(v) for k, v in self.required.items()},
            "filters": [{"name": f.name, "band": f.band, "aliases": list(f.aliases)} for f in self.filters],
            "chips": [{k: v for k, v in vars(c).items() if v is not None} for c in self.chips],
            "chip_discovery": None if disc is None else {
                "extname_pattern": disc.extname_pattern.pattern if disc.extname_pattern else None,
                "name_from": list(disc.name_from), "name_default": disc.name_default},
            "chip_keywords": {k: rule(r) for k, r in self.chip_keywords.items()},
            "camera_id_from": list(self.camera_id_from),
            "qc": qc_to_dict(self.qc),
            "calibration": {k: {f: list(x) if isinstance(x, tuple) else x for f, x in vars(v).items()}
                            for k, v in self.calibration.items()},
            "parameters": self.parameters,
        }

    def summary(self) -> str:
        """``eso-wfi (INSTRUME=WFI)`` style one-liner for messages."""
        parts = [f"{k}={'|'.join(v.text for v in vals)}" for k, vals in self.match.items()]
        if self.image_hdus is not None:
            lo, hi = self.image_hdus
            parts.append(f"{lo} image HDU{'s' if lo != 1 else ''}" if lo == hi else f"{lo}-{hi} image HDUs")
        return f"{self.name} ({', '.join(parts) or 'any file'})"


def norm_token(value: object) -> str:
    """Normalised form for comparing header values: upper case, '_' as space, single spaces."""
    return " ".join(str(value).replace("_", " ").upper().split())
