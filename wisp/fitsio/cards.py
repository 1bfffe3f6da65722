"""Reading header blocks and the mandatory (structural) keywords, byte by byte, without astropy.

Everything here is strict: the structural keywords decide where every later byte of the file is,
so they are parsed from the raw 80-character cards and checked against the FITS 4.0 standard
before anything is allocated or handed to astropy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import BinaryIO

from wisp.errors import InvalidInput

BLOCK = 2880
CARD = 80
_NON_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
_NON_FILL = re.compile(rb"[^\x20-\x7e\x00]")
_INT = re.compile(r"[+-]?\d+")
_STRING = re.compile(r"'((?:[^']|'')*)'")
SIMPLE_CARD = b"SIMPLE  =                    T"
BITPIX_VALUES = (8, 16, 32, 64, -32, -64)


def fits_error(code: str, message: str, **details: object) -> InvalidInput:
    """An :class:`InvalidInput` with a ``fits.*`` code (details with ``None`` values are dropped)."""
    return InvalidInput(message, code=code, **details)


@dataclass
class Where:
    """Context for messages: the file name and the HDU being read."""

    file: str
    hdu: int
    extname: str | None = None

    def label(self) -> str:
        return f"{self.file} HDU {self.hdu}" + (f" ({self.extname})" if self.extname else "")

    def error(self, code: str, problem: str, **details: object) -> InvalidInput:
        return fits_error(code, f"{self.label()}: {problem}", file=self.file, hdu=self.hdu,
                          extname=self.extname, **details)


@dataclass
class RawHeader:
    """The cards of one header up to and including END, and how many 2880-byte blocks it occupies."""

    cards: list[str]
    blocks: int
    text: str = field(repr=False, default="")


def read_header(f: BinaryIO, offset: int, file_size: int, where: Where, max_blocks: int) -> RawHeader:
    """Read the header starting at ``offset``: printable-ASCII cards ending with END within
    ``max_blocks`` blocks. Raises ``fits.truncated`` / ``fits.bad_header``."""
    cards: list[str] = []
    for n in range(max_blocks):
        start = offset + n * BLOCK
        f.seek(start)
        block = f.read(BLOCK)
        if len(block) < BLOCK:
            if not block and n > 0:
                raise where.error(
                    "fits.bad_header",
                    f"header has no END card: the file ends after {n} header block(s) at byte {start} "
                    "(END card missing, or the file is truncated)",
                    keyword="END", expected="an END card", found="end of file", offset=start)
            raise where.error(
                "fits.truncated",
                f"header block at byte {start} is cut short: expected {BLOCK} bytes, found {len(block)}",
                expected=BLOCK, found=len(block), offset=start)
        for i in range(0, BLOCK, CARD):
            raw = block[i:i + CARD]
            if raw[:8] == b"END     ":
                tail = _NON_FILL.search(block, i + 3)
                if tail is not None:
                    pos = start + tail.start()
                    raise where.error(
                        "fits.bad_header",
                        f"byte {pos} after the END card is not ASCII text or zero fill "
                        f"(found byte 0x{block[tail.start()]:02x})",
                        offset=pos, found=f"0x{block[tail.start()]:02x}")
                cards.append("END")
                return RawHeader(cards=cards, blocks=n + 1, text="".join(cards[:-1]) + "END".ljust(CARD))
            bad = _NON_PRINTABLE.search(raw)
            if bad is not None:
                pos = start + i + bad.start()
                card_no = len(cards) + 1
                hint = " (missing END card?)" if n > 0 or card_no > 1 else ""
                raise where.error(
                    "fits.bad_header",
                    f"card {card_no} (byte {pos}) contains a non-printable byte 0x{raw[bad.start()]:02x}; "
                    f"header cards must be printable ASCII{hint}",
                    offset=pos, expected="printable ASCII (0x20-0x7E)", found=f"0x{raw[bad.start()]:02x}")
            cards.append(raw.decode("ascii"))
    raise where.error(
        "fits.bad_header",
        f"no END card within {max_blocks} header blocks ({max_blocks * BLOCK} bytes)",
        keyword="END", expected=f"END within {max_blocks} blocks", found="no END")


def _keyword(card: str) -> str:
    return card[:8].rstrip()


def _value_text(card: str) -> str | None:
    """The value field of a ``KEY     = value / comment`` card, without the comment; None if the card
    has no value indicator."""
    if card[8:10] != "= ":
        return None
    text = card[10:]
    m = _STRING.match(text.lstrip())
    if m:
        return "'" + m.group(1) + "'"
    return text.split("/", 1)[0].strip()


def card_int(cards: list[str], pos: int, key: str, where: Where, *, low: int | None = None,
             high: int | None = None, allowed: tuple[int, ...] | None = None) -> int:
    """The integer value of mandatory keyword ``key``, which must be card number ``pos`` (0-based)."""
    found = _keyword(cards[pos]) if pos < len(cards) else "END"
    if found != key:
        raise where.error(
            "fits.missing_keyword",
            f"mandatory keyword {key} missing: card {pos + 1} should be {key} but is "
            f"{found or 'a blank card'}",
            keyword=key, expected=key, found=found or "(blank)")
    text = _value_text(cards[pos])
    if text is None or not _INT.fullmatch(text):
        shown = text if text is not None else cards[pos][8:].strip()
        raise where.error("fits.bad_keyword", f"{key} must be an integer, found {shown!r}",
                          keyword=key, expected="an integer", found=shown)
    value = int(text)
    if allowed is not None and value not in allowed:
        raise where.error(
            "fits.bad_keyword", f"{key} = {value} is not allowed (expected one of {list(allowed)})",
            keyword=key, expected=list(allowed), found=value)
    if (low is not None and value < low) or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise where.error("fits.bad_keyword", f"{key} = {value} is out of range (expected {rng})",
                          keyword=key, expected=rng, found=value)
    return value


def card_string(cards: list[str], pos: int, key: str, where: Where) -> str:
    """The string value of mandatory keyword ``key`` at card ``pos`` (e.g. XTENSION)."""
    found = _keyword(cards[pos]) if pos < len(cards) else "END"
    if found != key:
        raise where.error("fits.missing_keyword",
                          f"card {pos + 1} should be {key} but is {found or 'a blank card'}",
                          keyword=key, expected=key, found=found or "(blank)")
    text = _value_text(cards[pos])
    if text is None or not (text.startswith("'") and text.endswith("'") and len(text) >= 2):
        shown = text if text is not None else cards[pos][8:].strip()
        raise where.error("fits.bad_keyword", f"{key} must be a quoted string, found {shown!r}",
                          keyword=key, expected="a quoted string", found=shown)
    return text[1:-1].replace("''", "'").rstrip()


def find_value(cards: list[str], key: str) -> str | None:
    """The raw value text of the first card named ``key`` anywhere in the header, or None."""
    for card in cards:
        if _keyword(card) == key:
            return _value_text(card)
    return None


def find_int(cards: list[str], key: str, where: Where, *, low: int = 0, high: int | None = None,
             required: bool = True) -> int | None:
    """A structural integer that may appear anywhere in the header (ZNAXISn, random-groups PCOUNT)."""
    text = find_value(cards, key)
    if text is None:
        if required:
            raise where.error("fits.missing_keyword", f"mandatory keyword {key} is missing",
                              keyword=key, expected=key, found=None)
        return None
    if not _INT.fullmatch(text):
        raise where.error("fits.bad_keyword", f"{key} must be an integer, found {text!r}",
                          keyword=key, expected="an integer", found=text)
    value = int(text)
    if value < low or (high is not None and value > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise where.error("fits.bad_keyword", f"{key} = {value} is out of range (expected {rng})",
                          keyword=key, expected=rng, found=value)
    return value


def is_true(cards: list[str], key: str) -> bool:
    """Whether logical keyword ``key`` is present with value T."""
    return find_value(cards, key) == "T"
