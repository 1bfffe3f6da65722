"""Recognising what a non-FITS file is, and decompressing gzip input with a hard size cap."""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

from wisp.errors import PayloadTooLarge
from wisp.fitsio.cards import fits_error

GZIP_MAGIC = b"\x1f\x8b"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"BZh", "bzip2-compressed data (decompress it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\x1f\x9d", "Unix compress (.Z) data (decompress it first, e.g. with 'gzip -d')"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"#ASDF", "an ASDF file"),
    (b"SIMPLE  =                    F", "a FITS-like file that declares itself non-conforming (SIMPLE = F)"),
    (b"XTENSION=", "a FITS extension without a primary header"),
)
_CHUNK = 1 << 20


def describe_bytes(head: bytes) -> str:
    """A short human description of what ``head`` (the first bytes of a file) looks like."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(GZIP_MAGIC):
        return "gzip-compressed data"
    sample = head[:48]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        shown = " ".join(text.split())
        return f"text starting {shown[:40]!r}"
    return "binary data starting with bytes " + " ".join(f"{b:02x}" for b in head[:8])


def gunzip_capped(path: Path, filename: str, max_bytes: int, tmp_dir: Path | None = None) -> Path:
    """Decompress gzip file ``path`` into a new temporary file and return its path.

    Stops and raises :class:`PayloadTooLarge` (code ``fits.too_large``) as soon as more than
    ``max_bytes`` bytes come out (zip bombs never reach the disk in full); a corrupt or truncated
    stream raises ``fits.gzip``. The caller owns (and must delete) the returned file.
    """
    fd, name = tempfile.mkstemp(prefix="wisp-gunzip-", suffix=".fits", dir=tmp_dir)
    out_path = Path(name)
    total = 0
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge(
                        f"{filename}: gzip data decompresses to more than {max_bytes} bytes, the limit; "
                        "refused (a compression bomb, or raise the limit)",
                        code="fits.too_large", file=filename, expected=f"<= {max_bytes} bytes",
                        found=f"> {max_bytes} bytes")
                out.write(chunk)
    except PayloadTooLarge:
        out_path.unlink(missing_ok=True)
        raise
    except (OSError, EOFError, zlib.error) as exc:
        out_path.unlink(missing_ok=True)
        reason = "the compressed stream ends early (truncated file)" if isinstance(exc, EOFError) \
            else f"the compressed stream is corrupt ({type(exc).__name__}: {exc})"
        raise fits_error("fits.gzip", f"{filename}: cannot decompress gzip data: {reason}",
                         file=filename, found=str(exc)) from None
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return out_path
