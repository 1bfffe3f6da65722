"""Validation of the chip sections of an instrument description: ``chips`` (a fixed mosaic) or
``chip_discovery`` (chips found in the file); part of :mod:`wisp.instruments.loader`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wisp.instruments.schema import CHIP_FIELDS, ChipDef, ChipDiscovery

if TYPE_CHECKING:
    from wisp.instruments.loader import _Checker


def parse_chips(c: _Checker, d: dict[str, Any]) -> tuple[tuple[ChipDef, ...], ChipDiscovery | None]:
    """The fixed chips, or the discovery rule (exactly one of ``chips`` and ``chip_discovery``)."""
    if ("chips" in d) == ("chip_discovery" in d):
        c.fail("chips", "give exactly one of 'chips' (a fixed list) or 'chip_discovery'")
    if "chip_discovery" in d:
        cd = c.mapping(d["chip_discovery"] or {}, "chip_discovery", ("extname_pattern", "name_from",
                                                                       "name_default"))
        pattern = c.regex(cd["extname_pattern"], "chip_discovery.extname_pattern") \
            if cd.get("extname_pattern") else None
        name_from = c.keys(cd["name_from"], "chip_discovery.name_from") if cd.get("name_from") else ()
        default = c.text(cd.get("name_default", "hdu{index}"), "chip_discovery.name_default")
        return (), ChipDiscovery(extname_pattern=pattern, name_from=name_from if "name_from" in cd
                                 else ("EXTNAME",), name_default=default)
    if not isinstance(d["chips"], list) or not d["chips"]:
        c.fail("chips", "expected a non-empty list of chips", found=d["chips"])
    chips: list[ChipDef] = []
    for i, item in enumerate(d["chips"]):
        f = f"chips[{i}]"
        cd = c.mapping(item, f, ("name", "extname", "hdu", *CHIP_FIELDS))
        if "extname" not in cd and "hdu" not in cd:
            c.fail(f, "a chip needs 'extname' or 'hdu' (index) to be found in the file")

        def num(k: str, cd: dict[str, Any] = cd, f: str = f) -> float | None:
            return c.number(cd[k], f"{f}.{k}", positive=True) if k in cd else None

        chips.append(ChipDef(
            name=c.text(cd.get("name"), f"{f}.name"),
            extname=c.text(cd["extname"], f"{f}.extname") if "extname" in cd else None,
            hdu=c.integer(cd["hdu"], f"{f}.hdu", 0) if "hdu" in cd else None,
            gain=num("gain"), read_noise=num("read_noise"), saturation=num("saturation"),
            datasec=c.section(cd["datasec"], f"{f}.datasec") if "datasec" in cd else None,
            biassec=c.section(cd["biassec"], f"{f}.biassec") if "biassec" in cd else None))
    names = [ch.name for ch in chips]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        c.fail("chips", f"chip name {dup!r} is used twice", found=dup)
    return tuple(chips), None
