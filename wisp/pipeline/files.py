"""Product files: FITS with provenance keywords, written byte-deterministically (no wall clock)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from astropy.io import fits

from wisp import __version__
from wisp.pipeline.model import StageSpec, Task

# Cards never copied from an input header into a product header (structure and per-file checksums).
STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION", "PCOUNT",
              "GCOUNT", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "EXTNAME", "EXTVER", "BLANK", "TFIELDS",
              "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZCMPTYPE", "ZTILE1", "ZTILE2"}


def provenance(spec: StageSpec, task: Task) -> list[tuple[str, Any, str]]:
    """Cards saying what this file is and what made it; the full lineage is in the database."""
    cards: list[tuple[str, Any, str]] = [
        ("WISPID", task.product_id, "Wisp product id"),
        ("WISPKIND", spec.kind, "product kind"),
        ("WISPSTG", f"{spec.name}-{spec.version}", "stage and its science version"),
        ("WISPVER", __version__, "Wisp version"),
    ]
    for i, ref in enumerate(task.inputs[:99], 1):
        cards.append((f"WISPIN{i:02d}"[:8], f"{ref.role}:{ref.id}", "input (role:id)"))
    return cards


def copy_cards(target: fits.Header, source: fits.Header, skip: Iterable[str] = ()) -> None:
    """Copy non-structural cards from ``source`` (later cards win; COMMENT/HISTORY dropped)."""
    excluded = STRUCTURAL | set(skip)
    for card in source.cards:
        key = card.keyword
        if not key or key in excluded or key in ("COMMENT", "HISTORY", ""):
            continue
        try:
            target[key] = (card.value, card.comment)
        except (ValueError, KeyError):
            continue  # a card astropy cannot re-write as it was: not worth failing a product for


def write_fits(path: Path, primary: fits.Header, extensions: list[fits.ImageHDU | fits.BinTableHDU]) -> Path:
    """Write primary + extensions; same inputs give the same bytes."""
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary), *extensions])
    hdul.writeto(path, overwrite=True, output_verify="silentfix")
    return path
