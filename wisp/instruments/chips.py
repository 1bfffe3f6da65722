"""Finding an exposure's chips in the file and reading their detector properties."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from wisp.errors import InvalidInput
from wisp.fitsio.layout import FitsLayout, HduInfo
from wisp.instruments.eso import eso_section
from wisp.instruments.problems import Problems, hdu_label
from wisp.instruments.schema import CHIP_FIELDS, FROM_BITPIX, ChipDef, InstrumentDescription
from wisp.instruments.values import Found, find, header_json, header_value, parse_section, to_float

# Plausible ranges: outside them a header value is ignored (or rejected if no default exists).
_RANGES = {"gain": (0.0, 100.0), "read_noise": (0.0, 1000.0), "saturation": (0.0, 1e12)}
_UNITS = {"gain": "e-/ADU", "read_noise": "e-", "saturation": "ADU"}


@dataclass
class ChipFrame:
    """One chip of an exposure: where it is, its detector properties and its sky position.

    ``gain`` is in e-/ADU, ``read_noise`` in e-, ``saturation`` in ADU (None only if unknown and
    not required). ``datasec``/``biassec`` are 0-based numpy slices ``(rows, columns)`` of the
    ``naxis2 x naxis1`` array, with the FITS text they came from. ``ra_deg``/``dec_deg`` are the centre
    of the data section from the header WCS, if it has a celestial one. ``assumed`` lists the fields
    whose values are defaults of the description, not read from the file.
    """

    name: str
    hdu_index: int
    extname: str | None
    naxis1: int
    naxis2: int
    bitpix: int
    compressed: bool
    gain: float | None
    read_noise: float | None
    saturation: float | None
    datasec: tuple[slice, slice]
    datasec_fits: str
    biassec: tuple[slice, slice] | None
    biassec_fits: str | None
    ra_deg: float | None
    dec_deg: float | None
    header: dict[str, Any] = field(repr=False, default_factory=dict)
    assumed: tuple[str, ...] = ()


def locate_chips(layout: FitsLayout, desc: InstrumentDescription, filename: str
                 ) -> list[tuple[str, HduInfo, ChipDef | None]]:
    """The (name, HDU, explicit definition) of every chip; raises ``instrument.chip_missing`` or
    ``instrument.unexpected_hdu`` when the file and the description disagree."""
    images = layout.image_hdus()
    found: list[tuple[str, HduInfo, ChipDef | None]] = []
    if desc.chips:
        by_ext = {(h.extname or "").upper(): h for h in images}
        for chip in desc.chips:
            hdu = _explicit(layout, chip, by_ext)
            if hdu is None:
                want = " and ".join(p for p in (f"EXTNAME {chip.extname!r}" if chip.extname else "",
                                                f"HDU {chip.hdu}" if chip.hdu is not None else "") if p)
                raise InvalidInput(
                    f"{filename}: {desc.name} expects chip {chip.name} ({want}, a 2-D image) but the file "
                    f"has no such HDU; its image HDUs are {_listing(images)}", code="instrument.chip_missing",
                    file=filename, hdu=chip.hdu, extname=chip.extname, expected=chip.name,
                    found=[h.label() for h in images])
            found.append((chip.name, hdu, chip))
    else:
        assert desc.chip_discovery is not None
        disc = desc.chip_discovery
        for hdu in images:
            if disc.extname_pattern is not None and not disc.extname_pattern.fullmatch(hdu.extname or ""):
                continue
            key = next((k for k in disc.name_from if header_value(hdu.header, k) is not None), None)
            name = str(header_value(hdu.header, key)) if key else disc.name_default.format(
                index=hdu.index, extname=hdu.extname or "")
            found.append((name, hdu, None))
        if not found:
            pattern = disc.extname_pattern.pattern if disc.extname_pattern else "any"
            raise InvalidInput(f"{filename}: no chip found for {desc.name}: no 2-D image HDU has an EXTNAME "
                               f"matching {pattern!r}; image HDUs: {_listing(images)}",
                               code="instrument.chip_missing", file=filename, expected=pattern,
                               found=[h.label() for h in images])
    used = {h.index for _, h, _ in found}
    extra = [h for h in images if h.index not in used]
    if extra:
        h = extra[0]
        raise InvalidInput(
            f"{hdu_label(filename, h.index, h.extname)}: 2-D image {h.shape[1]}x{h.shape[0]} is not one of "
            f"{desc.name}'s chips ({', '.join(n for n, _, _ in found)})", code="instrument.unexpected_hdu",
            file=filename, hdu=h.index, extname=h.extname, expected=[n for n, _, _ in found],
            found=[x.label() for x in extra])
    names = [n for n, _, _ in found]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InvalidInput(f"{filename}: two image HDUs give the same chip name {dup!r}",
                           code="instrument.duplicate_chip", file=filename, found=dup)
    return found


def _explicit(layout: FitsLayout, chip: ChipDef, by_ext: dict[str, HduInfo]) -> HduInfo | None:
    if chip.hdu is not None:
        hdu = layout.hdus[chip.hdu] if chip.hdu < len(layout.hdus) else None
        if hdu is None or not hdu.is_2d_image:
            return None
        if chip.extname is not None and (hdu.extname or "").upper() != chip.extname.upper():
            return None
        return hdu
    return by_ext.get((chip.extname or "").upper())


def _listing(images: list[HduInfo]) -> str:
    return ", ".join(h.label() for h in images) or "none"


def read_chip(name: str, hdu: HduInfo, chip: ChipDef | None, layout: FitsLayout,
              desc: InstrumentDescription, required: tuple[str, ...], p: Problems) -> ChipFrame:
    """Detector properties of one chip: explicit values of the description, else header keywords
    (chip header first, then the primary header), else the description's defaults."""
    headers = [(hdu.index, hdu.header)] + ([(0, layout.primary.header)] if hdu.index else [])
    ny, nx = hdu.shape
    assumed: list[str] = []
    values: dict[str, float | None] = {}
    for fname in ("gain", "read_noise", "saturation"):
        values[fname] = _number(fname, name, hdu, chip, headers, desc, fname in required, assumed, p)
    sections: dict[str, tuple[tuple[slice, slice], str] | None] = {}
    for fname in ("datasec", "biassec"):
        sections[fname] = _section(fname, name, hdu, chip, headers, desc, fname in required, nx, ny,
                                   assumed, p)
    data = sections["datasec"] or ((slice(0, ny), slice(0, nx)), f"[1:{nx},1:{ny}]")
    image_header = hdu.image_header()
    ra, dec = _centre(image_header, data[0], name, p)
    bias = sections["biassec"]
    return ChipFrame(name=name, hdu_index=hdu.index, extname=hdu.extname, naxis1=nx, naxis2=ny,
                     bitpix=hdu.bitpix, compressed=hdu.kind == "compressed_image", gain=values["gain"],
                     read_noise=values["read_noise"], saturation=values["saturation"],
                     datasec=data[0], datasec_fits=data[1], biassec=bias[0] if bias else None,
                     biassec_fits=bias[1] if bias else None, ra_deg=ra, dec_deg=dec,
                     header=header_json(image_header), assumed=tuple(assumed))


def _number(fname: str, name: str, hdu: HduInfo, chip: ChipDef | None, headers: list[tuple[int, Any]],
            desc: InstrumentDescription, required: bool, assumed: list[str], p: Problems) -> float | None:
    human, unit = CHIP_FIELDS[fname], _UNITS[fname]
    explicit = getattr(chip, fname) if chip is not None else None
    if explicit is not None:
        p.sources[f"{name}.{fname}"] = f"{desc.name} description"
        return float(explicit)
    rule = desc.chip_keywords.get(fname)
    keys = rule.keys if rule else ()
    found: Found | None = find(headers, keys) if keys else None
    low, high = _RANGES[fname]
    if found is not None:
        value = to_float(found.value)
        if value is not None and low < value <= high:
            p.sources[f"{name}.{fname}"] = f"{found.key}={found.value!r} (HDU {found.hdu})"
            return value
        if rule is None or rule.default is None:
            p.bad(fname, human, found.key, found.value, f"a number in ({low:g}, {high:g}] {unit}",
                  found.hdu, hdu.extname if found.hdu == hdu.index else None)
            return None
        reason = f"{found.key}={found.value!r} is not a plausible {human} in {unit}"
    else:
        reason = f"no {'/'.join(keys) or human} keyword"
    if rule is not None and rule.default is not None:
        if rule.default == FROM_BITPIX:
            value = _saturation_from_bitpix(hdu)
            if value is None:
                p.note(f"chip {name}: {reason}, and floating-point data (BITPIX={hdu.bitpix}) has no natural "
                       "saturation level; saturation unknown")
                return None
            p.note(f"chip {name}: {reason}; saturation assumed {value:g} ADU from BITPIX/BZERO/BSCALE")
        else:
            value = float(rule.default)
            p.note(f"chip {name}: {reason}; {human} assumed {value:g} {unit}")
        assumed.append(fname)
        p.sources[f"{name}.{fname}"] = "assumed default"
        return value
    if required:
        p.missing(fname, human, keys, hdu.index, hdu.extname,
                  also=" in this HDU and the primary header" if hdu.index else "")
    return None


def _saturation_from_bitpix(hdu: HduInfo) -> float | None:
    """Largest physical value an integer image can hold (BZERO + BSCALE x max raw value), in ADU."""
    if hdu.bitpix < 0:
        return None
    raw_max = 255 if hdu.bitpix == 8 else 2 ** (hdu.bitpix - 1) - 1
    bzero = to_float(header_value(hdu.header, "BZERO")) or 0.0
    bscale = to_float(header_value(hdu.header, "BSCALE")) or 1.0
    return bzero + bscale * raw_max if bscale > 0 else bzero


def _section(fname: str, chip_name: str, hdu: HduInfo, chip: ChipDef | None, headers: list[tuple[int, Any]],
             desc: InstrumentDescription, required: bool, nx: int, ny: int, assumed: list[str], p: Problems
             ) -> tuple[tuple[slice, slice], str] | None:
    human = CHIP_FIELDS[fname]
    rule = desc.chip_keywords.get(fname)
    explicit = getattr(chip, fname) if chip is not None else None
    found = find(headers, rule.keys) if rule is not None and rule.keys and explicit is None else None
    if explicit is not None:
        text, key, where = str(explicit), f"{fname} of {desc.name}", hdu.index
    elif found is not None:
        text, key, where = str(found.value), found.key, found.hdu
    elif rule is not None and rule.derive == "eso_outputs" and (derived := eso_section(hdu.header, fname)):
        text, key, where = derived, f"{fname} from ESO DET OUTi keywords", hdu.index
        p.sources[f"{chip_name}.{fname}"] = key
    elif rule is not None and rule.default is not None:
        text, key, where = str(rule.default), f"default {fname}", hdu.index
        looked = "/".join(rule.keys) or "no"
        p.note(f"chip {chip_name}: no {looked} keyword; {human} assumed {text}")
        assumed.append(fname)
    else:
        if required:
            p.missing(fname, human, rule.keys if rule else (), hdu.index, hdu.extname)
        return None
    p.sources.setdefault(f"{chip_name}.{fname}", key if found is None else f"{key}={text!r} (HDU {where})")
    ext = hdu.extname if where == hdu.index else None
    box = parse_section(text)
    if box is None:
        p.bad(fname, human, key, text, "a FITS section '[x1:x2,y1:y2]'", where, ext)
        return None
    x1, x2, y1, y2 = box
    if x1 < 1 or y1 < 1 or x2 > nx or y2 > ny:
        p.bad(fname, human, key, text, f"inside [1:{nx},1:{ny}]", where, ext,
              reason=f"it reaches outside the {nx}x{ny} image")
        return None
    return (slice(y1 - 1, y2), slice(x1 - 1, x2)), text


def _centre(header: Any, data: tuple[slice, slice], name: str, p: Problems
            ) -> tuple[float | None, float | None]:
    """RA/Dec (deg) of the centre of the data section from the header's celestial WCS, if any."""
    from astropy.wcs import WCS

    y = (data[0].start + data[0].stop - 1) / 2.0
    x = (data[1].start + data[1].stop - 1) / 2.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
            if not wcs.has_celestial:
                return None, None
            ra, dec = wcs.celestial.pixel_to_world_values(x, y)
    except Exception as exc:
        p.note(f"chip {name}: the header WCS cannot be used ({type(exc).__name__}); no chip position")
        return None, None
    ra, dec = float(ra), float(dec)
    if not (math.isfinite(ra) and math.isfinite(dec) and -90 <= dec <= 90):
        p.note(f"chip {name}: the header WCS gives no valid position at the chip centre")
        return None, None
    return ra % 360.0, dec
