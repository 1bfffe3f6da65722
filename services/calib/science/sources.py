"""Row-band access to 2-D frames, so that stacks are built band by band with bounded memory.

A *frame source* is anything with a 2-D ``shape`` that returns rows on ``src[r0:r1]`` (and a sub-array on
``src[rows, cols]``): numpy arrays, ``np.memmap``, astropy ``hdu.section`` (reads only what is sliced),
h5py datasets, or a :class:`RowFunction` wrapping a ``read(r0, r1)`` callable. The wrappers below apply
per-frame corrections lazily, band by band, so nothing ever holds a whole stack in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class RowSource(Protocol):
    """A lazily readable 2-D frame: ``shape == (ny, nx)`` and ``src[r0:r1]`` -> rows ``r0..r1-1``."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any, /) -> Any: ...


def _split(key: Any) -> tuple[Any, Any]:
    """(rows, cols) parts of a numpy-style 2-D index."""
    if isinstance(key, tuple):
        return key[0], key[1] if len(key) > 1 else slice(None)
    return key, slice(None)


@dataclass(frozen=True)
class RowFunction:
    """A frame given as ``read(r0, r1) -> ndarray (r1 - r0, nx)`` and its ``shape`` (ny, nx)."""

    read: Callable[[int, int], np.ndarray]
    shape: tuple[int, int]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = _split(key)
        if isinstance(rows, (int, np.integer)):
            return np.asarray(self.read(int(rows), int(rows) + 1))[0, cols]
        r0, r1, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("RowFunction supports contiguous row ranges only")
        return np.asarray(self.read(r0, max(r0, r1)))[:, cols]


def read_rows(src: RowSource, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0..r1-1`` of a frame as float64, non-finite values replaced by NaN."""
    band = np.array(src[r0:r1], dtype=np.float64)
    if band.ndim != 2 or band.shape[0] != r1 - r0:
        raise ValueError(f"frame source returned shape {band.shape} for rows {r0}:{r1}")
    band[~np.isfinite(band)] = np.nan
    return band


def read_band_into(dst: np.ndarray, src: RowSource, r0: int, r1: int, scale: float = 1.0) -> None:
    """Rows ``r0..r1-1`` of a frame times ``scale``, computed in float64 and stored into ``dst`` (a 2-D view of
    shape ``(r1 - r0, nx)``, e.g. float32, possibly strided). Non-finite values stay non-finite (the stacking
    kernel treats them as missing); no float64 copy of the band is made for float32 sources."""
    band = np.asarray(src[r0:r1])
    if band.shape != dst.shape:
        raise ValueError(f"frame source returned shape {band.shape} for rows {r0}:{r1}, expected {dst.shape}")
    if scale == 1.0:
        np.copyto(dst, band, casting="unsafe")
    else:
        np.multiply(band, np.float64(scale), out=dst, casting="unsafe")


@dataclass(frozen=True)
class Transformed:
    """``(src - subtract) * factor`` computed on demand, row band by row band (input units x factor).

    ``subtract`` is a full-frame array (e.g. a master bias, ADU) or None; ``factor`` e.g. 1/exptime.
    """

    src: RowSource
    subtract: np.ndarray | None = None
    factor: float = 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.src.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = _split(key)
        out = np.array(self.src[rows, cols], dtype=np.float64)
        if self.subtract is not None:
            out -= self.subtract[rows, cols]
        if self.factor != 1.0:
            out *= self.factor
        return out


@dataclass(frozen=True)
class Trimmed:
    """The data section of a raw frame minus a per-row overscan level, computed on demand (ADU float64).

    ``level`` has one value per row of ``datasec`` (see :func:`~.overscan.overscan_level`).
    """

    raw: RowSource
    datasec: tuple[slice, slice]
    level: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        rows, cols = self.datasec
        ny, nx = self.raw.shape[:2]
        return (len(range(*rows.indices(ny))), len(range(*cols.indices(nx))))

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = _split(key)
        r = self.datasec[0]
        r0, r1, _ = rows.indices(self.shape[0]) if isinstance(rows, slice) else (rows, rows + 1, 1)
        base = r.start or 0
        band = np.array(self.raw[base + r0:base + r1, self.datasec[1]], dtype=np.float64)
        band -= self.level[r0:r1, None]
        return band[:, cols] if isinstance(rows, slice) else band[0, cols]
