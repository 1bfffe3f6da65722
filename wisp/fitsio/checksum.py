"""The FITS CHECKSUM/DATASUM convention (32-bit ones' complement sums), streamed from disk."""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

_CHUNK = 8 * 2880 * 256  # 5.9 MB, a multiple of 4 and of 2880


def _fold(total: int) -> int:
    """End-around carry: fold a sum of 32-bit words into a 32-bit ones' complement sum."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def ones_sum(f: BinaryIO, offset: int, length: int) -> int:
    """Ones' complement sum of the big-endian 32-bit words of ``length`` bytes at ``offset``.

    Bytes missing at the end of the file (an unpadded last HDU) count as zeros, as the padding would.
    """
    f.seek(offset)
    total = 0
    remaining = length
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        if len(chunk) % 4:
            chunk += b"\x00" * (4 - len(chunk) % 4)
        total += int(np.frombuffer(chunk, dtype=">u4").sum(dtype=np.uint64))
        total = _fold(total)
    return _fold(total)


def add(a: int, b: int) -> int:
    """Ones' complement addition of two 32-bit sums."""
    return _fold(a + b)
