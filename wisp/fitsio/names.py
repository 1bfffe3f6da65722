"""Which files in a folder are taken for FITS: by name, as a watched folder or ``wisp ingest DIR`` does."""

from __future__ import annotations

from pathlib import Path

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def fits_files(folder: Path) -> list[Path]:
    """FITS-like files below ``folder``, sorted; hidden files and folders are skipped."""
    return [p for p in sorted(folder.rglob("*"))
            if p.name.lower().endswith(FITS_SUFFIXES) and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
