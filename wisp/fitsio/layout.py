"""What :func:`wisp.fitsio.scan_fits` found in a file: its HDUs, where they are, and what they hold."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from astropy.io import fits

HduKind = Literal["image", "compressed_image", "bintable", "table", "empty", "other"]

# Keywords of a tile-compressed image's BINTABLE that describe the table, not the image.
_TABLE_ONLY = {
    "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "THEAP", "ZIMAGE", "ZCMPTYPE",
    "ZBITPIX", "ZNAXIS", "ZSIMPLE", "ZEXTEND", "ZBLOCKED", "ZTENSION", "ZPCOUNT", "ZGCOUNT",
    "ZHECKSUM", "ZDATASUM", "ZQUANTIZ", "ZDITHER0", "CHECKSUM", "DATASUM", "EXTEND",
}
_TABLE_PREFIXES = ("NAXIS", "TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "TDISP",
                   "ZNAXIS", "ZTILE", "ZNAME", "ZVAL")


@dataclass
class HduInfo:
    """One header-data unit.

    ``shape`` is in numpy order (slowest axis first), e.g. ``(NAXIS2, NAXIS1)``; for a tile-compressed
    image it is the uncompressed image's shape (``ZNAXISn``) and ``bitpix`` is ``ZBITPIX``.
    Offsets and sizes are in bytes from the start of :attr:`FitsLayout.path`; ``data_size`` is the
    declared data size without the padding to 2880 bytes. ``warnings`` lists non-fatal oddities of
    the header (non-standard cards kept as commentary, unparsable values kept as text).
    """

    index: int
    extname: str | None
    kind: HduKind
    header: fits.Header
    bitpix: int
    shape: tuple[int, ...]
    header_offset: int
    data_offset: int
    data_size: int
    xtension: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def is_2d_image(self) -> bool:
        """True for an (optionally tile-compressed) image with exactly two non-empty axes."""
        return self.kind in ("image", "compressed_image") and len(self.shape) == 2 and min(self.shape) > 0

    def label(self) -> str:
        """``HDU 3 (CCD2)`` style label for messages."""
        return f"HDU {self.index}" + (f" ({self.extname})" if self.extname else "")

    def image_header(self) -> fits.Header:
        """The header as an image header: for a tile-compressed image, the table keywords are replaced
        by ``XTENSION='IMAGE'``, ``BITPIX=ZBITPIX`` and ``NAXISn=ZNAXISn``; other HDUs are returned as is
        (a copy)."""
        if self.kind != "compressed_image":
            return self.header.copy()
        out = fits.Header()
        out["XTENSION"] = "IMAGE"
        out["BITPIX"] = self.bitpix
        out["NAXIS"] = len(self.shape)
        for i, n in enumerate(reversed(self.shape), start=1):
            out[f"NAXIS{i}"] = n
        out["PCOUNT"] = 0
        out["GCOUNT"] = 1
        for card in self.header.cards:
            key = card.keyword
            if key in _TABLE_ONLY or (key.startswith(_TABLE_PREFIXES) and key[-1:].isdigit()):
                continue
            out.append(card, end=True)
        return out


@dataclass
class FitsLayout:
    """The verified structure of a FITS file.

    ``path`` is the file the offsets refer to: the file itself, or for a gzip-compressed input a
    decompressed temporary copy (``source`` is then the original and ``compression`` is ``'gzip'``).
    Call :meth:`close` (or use ``with``) to remove such a temporary copy. ``size`` is the size in
    bytes of ``path``. ``warnings`` lists accepted oddities of the file as a whole (e.g. zero padding
    after the last HDU).
    """

    path: Path
    hdus: list[HduInfo]
    size: int
    source: Path | None = None
    compression: str | None = None
    warnings: list[str] = field(default_factory=list)
    _temporary: bool = False

    @property
    def primary(self) -> HduInfo:
        """HDU 0."""
        return self.hdus[0]

    def image_hdus(self) -> list[HduInfo]:
        """The HDUs holding a 2-D image (plain or tile-compressed), in file order."""
        return [h for h in self.hdus if h.is_2d_image]

    def close(self) -> None:
        """Remove the decompressed temporary copy, if one was made. Safe to call twice."""
        if self._temporary:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._temporary = False

    def __enter__(self) -> FitsLayout:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
