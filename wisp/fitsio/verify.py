"""Strict FITS verification: walk a file's HDUs block by block and believe no byte before checking it.

:func:`scan_fits` reads only headers (and, for CHECKSUM/DATASUM, streams the bytes through a
ones' complement sum); it never allocates pixel arrays. Structural keywords are parsed strictly
from the raw cards (:mod:`wisp.fitsio.cards`); the rest of each header is parsed leniently with
astropy (non-standard cards are kept and reported in :attr:`HduInfo.warnings`).

Decisions on real-world irregularities (also in docs/instruments.md):

* bytes after the last HDU: accepted (with a layout warning) only if they are all zero bytes
  (some writers pad with zeros); anything else is ``fits.trailing_garbage``;
* a last HDU whose data is complete but not padded to a multiple of 2880 bytes: accepted with a
  warning (old writers do this; the missing fill would be zeros);
* CHECKSUM/DATASUM are verified when present and not blank (a blank value is a placeholder);
* gzip input (magic ``1f 8b``) is decompressed to a temporary file with a hard cap first.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import BinaryIO

from astropy.io import fits

from wisp.errors import PayloadTooLarge
from wisp.fitsio import checksum
from wisp.fitsio.cards import (
    BITPIX_VALUES,
    BLOCK,
    SIMPLE_CARD,
    Where,
    card_int,
    card_string,
    find_int,
    find_value,
    fits_error,
    is_true,
    read_header,
)
from wisp.fitsio.layout import FitsLayout, HduInfo, HduKind
from wisp.fitsio.sniff import GZIP_MAGIC, describe_bytes, gunzip_capped

_IMAGE_XT = ("IMAGE", "IUEIMAGE")
_BINTABLE_XT = ("BINTABLE", "A3DTABLE")


def scan_fits(path: Path, *, max_pixels_per_hdu: int, max_hdus: int = 1000, max_header_blocks: int = 1000,
              filename: str | None = None, max_decompressed_bytes: int = 2 * 1024**3,
              tmp_dir: Path | None = None, verify_checksums: bool = True) -> FitsLayout:
    """Verify the structure of the FITS file at ``path`` and describe its HDUs.

    ``filename`` is the name used in messages (default: ``path.name``). ``max_pixels_per_hdu`` caps
    the number of values an HDU may declare (for a tile-compressed image: its uncompressed pixels);
    ``max_decompressed_bytes`` caps gzip output. Raises :class:`~wisp.errors.InvalidInput` with a
    ``fits.*`` code, or :class:`~wisp.errors.PayloadTooLarge` (``fits.too_large``). For gzip input the
    returned layout refers to a temporary decompressed copy: close the layout when done.
    """
    path = Path(path)
    name = filename or path.name
    size = path.stat().st_size
    if size == 0:
        raise fits_error("fits.empty", f"{name}: the file is empty (0 bytes)", file=name, found=0)
    with path.open("rb") as f:
        magic = f.read(2)
    if magic != GZIP_MAGIC:
        return _scan(path, name, max_pixels_per_hdu, max_hdus, max_header_blocks, verify_checksums)
    plain = gunzip_capped(path, name, max_decompressed_bytes, tmp_dir)
    try:
        if plain.stat().st_size == 0:
            raise fits_error("fits.empty", f"{name}: the gzip data decompresses to 0 bytes", file=name,
                             found=0)
        layout = _scan(plain, name, max_pixels_per_hdu, max_hdus, max_header_blocks, verify_checksums)
    except BaseException:
        plain.unlink(missing_ok=True)
        raise
    layout.source, layout.compression, layout._temporary = path, "gzip", True
    return layout


def _scan(path: Path, name: str, max_pixels: int, max_hdus: int, max_blocks: int,
          verify_checksums: bool) -> FitsLayout:
    size = path.stat().st_size
    hdus: list[HduInfo] = []
    notes: list[str] = []
    with path.open("rb") as f:
        head = f.read(BLOCK)
        if not head.startswith(b"SIMPLE  ="):
            raise fits_error("fits.not_fits", f"{name} is not a FITS file: it looks like "
                             f"{describe_bytes(head)} (a FITS file starts with 'SIMPLE  =')",
                             file=name, expected="SIMPLE  =                    T",
                             found=describe_bytes(head))
        offset = 0
        while True:
            if len(hdus) >= max_hdus:
                raise PayloadTooLarge(f"{name}: more than {max_hdus} HDUs, the limit", code="fits.too_large",
                                      file=name, expected=f"<= {max_hdus} HDUs", found=f"> {max_hdus}")
            hdu, next_offset = _read_hdu(f, offset, len(hdus), size, name, max_pixels, max_blocks,
                                         verify_checksums)
            hdus.append(hdu)
            if next_offset > size:
                notes.append(f"{hdu.label()}: data not padded to a multiple of 2880 bytes "
                             f"({next_offset - size} fill bytes missing at the end of the file)")
                break
            if next_offset == size:
                break
            f.seek(next_offset)
            if f.read(8) == b"XTENSION":
                offset = next_offset
                continue
            notes.append(_trailing(f, next_offset, size, name))
            break
    return FitsLayout(path=path, hdus=hdus, size=size, warnings=notes)


def _trailing(f: BinaryIO, start: int, size: int, name: str) -> str:
    """Accept all-zero bytes after the last HDU (returning a note); reject anything else."""
    f.seek(start)
    pos = start
    while pos < size:
        chunk = f.read(min(1 << 20, size - pos))
        stripped = chunk.lstrip(b"\x00")
        if stripped:
            at = pos + len(chunk) - len(stripped)
            raise fits_error(
                "fits.trailing_garbage",
                f"{name}: {size - start} bytes after the last HDU (from byte {start}) are neither a FITS "
                f"extension nor zero padding; at byte {at} they look like {describe_bytes(stripped)}",
                file=name, offset=start, expected="XTENSION or zero padding",
                found=f"{size - start} bytes: {describe_bytes(stripped)}")
        pos += len(chunk)
    return f"{size - start} bytes of zero padding after the last HDU ignored"


def _read_hdu(f: BinaryIO, offset: int, index: int, file_size: int, name: str, max_pixels: int,
              max_blocks: int, verify_checksums: bool) -> tuple[HduInfo, int]:
    where = Where(name, index)
    raw = read_header(f, offset, file_size, where, max_blocks)
    cards = raw.cards
    ext = find_value(cards, "EXTNAME")
    where.extname = (ext[1:-1].replace("''", "'").strip() if ext and ext.startswith("'") else ext) or None
    xtension: str | None = None
    if index == 0:
        if not cards[0].encode("ascii").startswith(SIMPLE_CARD):
            raise where.error("fits.bad_keyword", "the first card must be 'SIMPLE  =                    T' "
                              f"(T in column 30), found {cards[0].rstrip()!r}", keyword="SIMPLE",
                              expected="T in column 30", found=cards[0].rstrip())
    else:
        xtension = card_string(cards, 0, "XTENSION", where).upper()
    bitpix = card_int(cards, 1, "BITPIX", where, allowed=BITPIX_VALUES)
    naxis = card_int(cards, 2, "NAXIS", where, low=0, high=999)
    axes = [card_int(cards, 2 + i, f"NAXIS{i}", where, low=0) for i in range(1, naxis + 1)]
    pos = 3 + naxis
    groups = index == 0 and naxis > 0 and axes[0] == 0 and is_true(cards, "GROUPS")
    if index == 0:
        pcount = find_int(cards, "PCOUNT", where) if groups else 0
        gcount = find_int(cards, "GCOUNT", where) if groups else 1
    else:
        pcount = card_int(cards, pos, "PCOUNT", where, low=0)
        gcount = card_int(cards, pos + 1, "GCOUNT", where, low=0)
        _check_extension(cards, pos, xtension or "", bitpix, naxis, pcount, gcount, where)
    assert pcount is not None and gcount is not None
    counted = axes[1:] if groups else axes
    product = math.prod(counted) if naxis else 0
    values = gcount * (pcount + product)
    kind, shape, real_bitpix = _kind(cards, index, xtension, groups, product, axes, bitpix, where)
    pixels = max(values, math.prod(shape)) if kind == "compressed_image" and shape else values
    if pixels > max_pixels:
        dims = " x ".join(str(n) for n in reversed(shape)) if shape else str(values)
        raise PayloadTooLarge(
            f"{where.label()}: declares {pixels} values ({dims}), more than the limit of {max_pixels} "
            "per HDU; refused before reading any data", code="fits.too_large", file=name, hdu=index,
            extname=where.extname, keyword="NAXIS", expected=f"<= {max_pixels}", found=pixels)
    nbytes = abs(bitpix) // 8 * values
    data_offset = offset + raw.blocks * BLOCK
    if data_offset + nbytes > file_size:
        have = max(0, file_size - data_offset)
        raise where.error("fits.truncated", f"data needs {nbytes} bytes from byte {data_offset} but the "
                          f"file has only {have} left (file truncated)", expected=nbytes, found=have,
                          offset=data_offset)
    header, notes = _parse_header(raw.text, where)
    padded = -(-nbytes // BLOCK) * BLOCK
    if verify_checksums and any(str(header.get(k, "")).strip() for k in ("CHECKSUM", "DATASUM")):
        _verify_checksums(f, header, offset, raw.blocks * BLOCK, data_offset, padded, where)
    info = HduInfo(index=index, extname=where.extname, kind=kind, header=header, bitpix=real_bitpix,
                   shape=shape, header_offset=offset, data_offset=data_offset, data_size=nbytes,
                   xtension=xtension, warnings=notes)
    return info, data_offset + padded


def _check_extension(cards: list[str], pos: int, xt: str, bitpix: int, naxis: int, pcount: int,
                     gcount: int, where: Where) -> None:
    """Per-type constraints of the standard extensions (IMAGE, TABLE, BINTABLE)."""
    def bad(key: str, expected: object, found: object) -> None:
        raise where.error("fits.bad_keyword", f"{key} = {found} is not allowed in a {xt} extension "
                          f"(expected {expected})", keyword=key, expected=expected, found=found)
    if (xt in _IMAGE_XT or xt == "TABLE") and pcount != 0:
        bad("PCOUNT", 0, pcount)
    if xt in (*_IMAGE_XT, *_BINTABLE_XT, "TABLE") and gcount != 1:
        bad("GCOUNT", 1, gcount)
    if xt in (*_BINTABLE_XT, "TABLE"):
        if bitpix != 8:
            bad("BITPIX", 8, bitpix)
        if naxis != 2:
            bad("NAXIS", 2, naxis)
        card_int(cards, pos + 2, "TFIELDS", where, low=0, high=999)


def _kind(cards: list[str], index: int, xt: str | None, groups: bool, product: int, axes: list[int],
          bitpix: int, where: Where) -> tuple[HduKind, tuple[int, ...], int]:
    shape = tuple(reversed(axes))
    if index == 0:
        return ("other" if groups else "empty" if product == 0 else "image"), shape, bitpix
    if xt in _IMAGE_XT:
        return ("empty" if product == 0 else "image"), shape, bitpix
    if xt in _BINTABLE_XT and is_true(cards, "ZIMAGE"):
        zbitpix = find_int(cards, "ZBITPIX", where, low=-64, high=64)
        if zbitpix not in BITPIX_VALUES:
            raise where.error("fits.bad_keyword", f"ZBITPIX = {zbitpix} is not allowed (expected one of "
                              f"{list(BITPIX_VALUES)})", keyword="ZBITPIX", expected=list(BITPIX_VALUES),
                              found=zbitpix)
        assert zbitpix is not None
        znaxis = find_int(cards, "ZNAXIS", where, high=999) or 0
        zaxes = [find_int(cards, f"ZNAXIS{i}", where) or 0 for i in range(1, znaxis + 1)]
        return "compressed_image", tuple(reversed(zaxes)), zbitpix
    if xt in _BINTABLE_XT:
        return "bintable", shape, bitpix
    return ("table" if xt == "TABLE" else "other"), shape, bitpix


def _parse_header(text: str, where: Where) -> tuple[fits.Header, list[str]]:
    """Lenient astropy parse; unparsable values are kept as their raw text (and reported)."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            header = fits.Header.fromstring(text)
        except Exception as exc:
            raise where.error("fits.bad_header", f"the header cannot be parsed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        for i, card in enumerate(header.cards):
            try:
                card.value  # noqa: B018 - forces parsing of the value
            except Exception:
                image = str(getattr(card, "_image", "") or "")
                header[i] = (image[10:].split("/", 1)[0].strip(), "unparsable value kept as text")
                notes.append(f"card {card.keyword}: value {image[10:].strip()!r} is not valid FITS; "
                             "kept as text")
    seen: set[str] = set()
    for w in caught:
        msg = str(w.message)
        if "invalid or follows an unrecognized non-standard convention" in msg:
            key = msg.splitlines()[-1].strip()[:8].strip()
            msg = f"non-standard card {key!r} kept as commentary"
        else:
            msg = "astropy: " + msg.splitlines()[0]
        if msg not in seen:
            seen.add(msg)
            notes.append(msg)
    return header, notes


def _verify_checksums(f: BinaryIO, header: fits.Header, offset: int, header_len: int, data_offset: int,
                      padded: int, where: Where) -> None:
    datasum = checksum.ones_sum(f, data_offset, padded)
    if str(header.get("DATASUM", "")).strip():
        found = str(header["DATASUM"]).strip()
        if not found.isdigit() or int(found) != datasum:
            raise where.error("fits.checksum", f"DATASUM mismatch: the header says {found!r}, the data sum "
                              f"to {datasum} (data corrupted or modified)", keyword="DATASUM",
                              expected=found, found=str(datasum))
    if str(header.get("CHECKSUM", "")).strip():  # blank placeholders mean "not computed"
        total = checksum.add(checksum.ones_sum(f, offset, header_len), datasum)
        if total != 0xFFFFFFFF:
            raise where.error("fits.checksum", "CHECKSUM mismatch: header and data do not sum to -0 "
                              f"(found 0x{total:08x}); the HDU was corrupted or modified after "
                              "CHECKSUM was written", keyword="CHECKSUM", expected="0xffffffff (-0)",
                              found=f"0x{total:08x}")
