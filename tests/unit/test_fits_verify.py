"""Strict FITS verification: valid files of every kind pass, every kind of breakage gets its own code."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from wisp.errors import InvalidInput, PayloadTooLarge
from wisp.fitsio import FitsLayout, scan_fits

LIMIT = 10_000_000
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def scan(path: Path, **kw: object) -> FitsLayout:
    return scan_fits(path, max_pixels_per_hdu=kw.pop("max_pixels_per_hdu", LIMIT), **kw)  # type: ignore[arg-type]


def fail(path: Path, code: str, **kw: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        scan(path, **kw)
    assert info.value.code == code, info.value.to_dict()
    assert info.value.details["file"] == kw.get("filename", path.name)
    return info.value


def raw_fits(*cards: str, data: bytes = b"") -> bytes:
    """A FITS file from literal cards (END added) and raw data bytes, each padded to 2880."""
    text = "".join(c.ljust(80) for c in (*cards, "END")).encode("ascii")
    text += b" " * (-len(text) % 2880)
    return text + data + b"\0" * (-len(data) % 2880)


def image(tmp_path: Path, name: str = "img.fits", **kw: object) -> Path:
    data = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    hdu = fits.PrimaryHDU(data)
    hdu.header["OBJECT"] = "test"
    path = tmp_path / name
    fits.HDUList([hdu]).writeto(path, **kw)
    return path


def mef(tmp_path: Path, name: str = "mef.fits") -> Path:
    data = np.arange(20 * 30, dtype=np.int16).reshape(20, 30)
    hdul = fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(data, name="CCD1"),
        fits.CompImageHDU(data, name="CCD2"),
        fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(4.0))], name="CAT"),
        fits.TableHDU.from_columns([fits.Column(name="y", format="F8.2", array=np.arange(3.0))], name="ASC"),
    ])
    path = tmp_path / name
    hdul.writeto(path)
    return path


def patched(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    raw = src.read_bytes()
    assert raw.count(old) >= 1 and len(old) == len(new)
    dst.write_bytes(raw.replace(old, new, 1))
    return dst


# --- valid files --------------------------------------------------------------------------------------

def test_single_image(tmp_path: Path) -> None:
    layout = scan(image(tmp_path))
    assert layout.size == 2880 * 2
    (hdu,) = layout.hdus
    assert (hdu.kind, hdu.shape, hdu.bitpix, hdu.header["BZERO"]) == ("image", (30, 40), 16, 32768)
    assert (hdu.header_offset, hdu.data_offset, hdu.data_size) == (0, 2880, 2400)
    assert layout.image_hdus() == [hdu]


def test_mef_with_compressed_image_and_tables(tmp_path: Path) -> None:
    layout = scan(mef(tmp_path))
    kinds = [(h.index, h.kind, h.extname, h.shape) for h in layout.hdus]
    assert kinds == [(0, "empty", None, ()), (1, "image", "CCD1", (20, 30)),
                     (2, "compressed_image", "CCD2", (20, 30)), (3, "bintable", "CAT", (4, 4)),
                     (4, "table", "ASC", (3, 8))]
    assert [h.index for h in layout.image_hdus()] == [1, 2]
    comp = layout.hdus[2]
    assert comp.bitpix == 16 and comp.xtension == "BINTABLE"
    img = comp.image_header()
    assert (img["XTENSION"], img["NAXIS"], img["NAXIS1"], img["NAXIS2"], img["EXTNAME"]) == \
        ("IMAGE", 2, 30, 20, "CCD2")
    assert "TFORM1" not in img and "ZIMAGE" not in img
    # the offsets are right: astropy reads the same data from them
    with fits.open(layout.path) as hdul:
        assert hdul[3].header["EXTNAME"] == "CAT"
        for h in layout.hdus:
            assert hdul[h.index]._header_offset == h.header_offset
            assert hdul[h.index]._data_offset == h.data_offset


def test_valid_checksums_pass(tmp_path: Path) -> None:
    layout = scan(image(tmp_path, checksum=True))
    assert "CHECKSUM" in layout.primary.header and "DATASUM" in layout.primary.header


def test_non_standard_cards_are_kept_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "eso.fits"
    path.write_bytes(raw_fits("SIMPLE  =                    T", "BITPIX  =                    8",
                              "NAXIS   =                    0",
                              "ESO-LOG 03:04:08>-START EXPO EMMI RED          / Start exp.",
                              "DATE-OBS= 2013-05-05T04:09:39", "OBJECT  = 'M13'"))
    hdu = scan(path).primary
    assert hdu.header["OBJECT"] == "M13"
    assert hdu.header["DATE-OBS"] == "2013-05-05T04:09:39"  # unquoted string kept as text
    assert any("ESO-LOG" in w for w in hdu.warnings)
    assert any("DATE-OBS" in w and "kept as text" in w for w in hdu.warnings)


def test_zero_padding_after_last_hdu_is_accepted(tmp_path: Path) -> None:
    path = image(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0" * 5000)
    layout = scan(path)
    assert len(layout.hdus) == 1 and "5000 bytes of zero padding" in layout.warnings[0]


def test_unpadded_last_hdu_is_accepted_with_a_warning(tmp_path: Path) -> None:
    path = image(tmp_path)
    path.write_bytes(path.read_bytes()[: 2880 + 2400])
    layout = scan(path)
    assert layout.hdus[0].data_size == 2400 and "not padded" in layout.warnings[0]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared real data not present at {DATA}")
@pytest.mark.parametrize("name", ["m13-raw/M13_blue_0001.fits", "sep-ntt/image.fits", "sep-ntt/back.fits",
                                  "wcs/sip-wcs.fit", "wcs/gc_2mass_j.fits"])
def test_real_files_pass(name: str) -> None:
    layout = scan(DATA / name)
    assert len(layout.image_hdus()) == 1


# --- broken files -------------------------------------------------------------------------------------

def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.fits").write_bytes(b"")
    assert fail(tmp_path / "e.fits", "fits.empty").details["found"] == 0


@pytest.mark.parametrize(("content", "words"), [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "PNG image"),
    (b"hello, this is a text file\nnot FITS\n", "text starting 'hello, this is a text file"),
    (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", "bytes 00 01 02"),
    (raw_fits("XTENSION= 'IMAGE   '", "BITPIX  =                    8"), "extension without a primary"),
])
def test_not_fits_says_what_it_looks_like(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / "x.fits").write_bytes(content)
    err = fail(tmp_path / "x.fits", "fits.not_fits", filename="upload-17.fits")
    assert words in err.message and err.message.startswith("upload-17.fits is not a FITS file")


def test_truncated_mid_header(tmp_path: Path) -> None:
    path = image(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    err = fail(path, "fits.truncated")
    assert (err.details["hdu"], err.details["expected"], err.details["found"]) == (0, 2880, 1000)


def test_truncated_mid_data_names_hdu_and_sizes(tmp_path: Path) -> None:
    path = mef(tmp_path)
    layout = scan(path)
    cut = layout.hdus[1].data_offset + 1000
    path.write_bytes(path.read_bytes()[:cut])
    err = fail(path, "fits.truncated")
    assert (err.details["hdu"], err.details["extname"]) == (1, "CCD1")
    assert (err.details["expected"], err.details["found"]) == (1200, 1000)
    assert "HDU 1 (CCD1)" in err.message and "1200 bytes" in err.message


def test_missing_end_before_data(tmp_path: Path) -> None:
    path = patched(image(tmp_path), tmp_path / "noend.fits", b"END" + b" " * 77, b" " * 80)
    err = fail(path, "fits.bad_header")
    assert "missing END" in err.message and err.details["hdu"] == 0


def test_missing_end_at_end_of_file(tmp_path: Path) -> None:
    raw = raw_fits("SIMPLE  =                    T", "BITPIX  =                    8",
                   "NAXIS   =                    0")
    path = tmp_path / "noend.fits"
    path.write_bytes(raw.replace(b"END" + b" " * 77, b" " * 80))
    err = fail(path, "fits.bad_header")
    assert err.details["keyword"] == "END" and "no END card" in err.message


def test_non_ascii_byte_in_header(tmp_path: Path) -> None:
    path = patched(image(tmp_path), tmp_path / "bin.fits", b"'test    '", b"'te\xe9t    '")
    err = fail(path, "fits.bad_header")
    assert err.details["found"] == "0xe9" and "non-printable" in err.message


@pytest.mark.parametrize(("old", "new", "keyword", "found"), [
    (b"BITPIX  =                   16", b"BITPIX  =                   12", "BITPIX", 12),
    (b"NAXIS1  =                   40", b"NAXIS1  =                  -40", "NAXIS1", -40),
    (b"NAXIS   =                    2", b"NAXIS   =                 1000", "NAXIS", 1000),
    (b"NAXIS1  =                   40", b"NAXIS1  =                 40.0", "NAXIS1", "40.0"),
    (b"SIMPLE  =                    T", b"SIMPLE  =                    F", "SIMPLE", None),
])
def test_bad_structural_values(tmp_path: Path, old: bytes, new: bytes, keyword: str, found: object) -> None:
    err = fail(patched(image(tmp_path), tmp_path / "bad.fits", old, new), "fits.bad_keyword")
    assert err.details["keyword"] == keyword and err.details["hdu"] == 0
    if found is not None:
        assert err.details["found"] == found


def test_mandatory_keyword_out_of_order(tmp_path: Path) -> None:
    path = patched(image(tmp_path), tmp_path / "order.fits", b"NAXIS2  =                   30",
                   b"NAXIS3  =                   30")
    err = fail(path, "fits.missing_keyword")
    assert (err.details["keyword"], err.details["found"]) == ("NAXIS2", "NAXIS3")


def test_extension_without_pcount(tmp_path: Path) -> None:
    path = patched(mef(tmp_path), tmp_path / "nopc.fits", b"PCOUNT  =                    0",
                   b"PCOUNX  =                    0")
    err = fail(path, "fits.missing_keyword")
    assert (err.details["hdu"], err.details["keyword"], err.details["extname"]) == (1, "PCOUNT", "CCD1")


def test_absurd_naxis_refused_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.fits"
    path.write_bytes(raw_fits("SIMPLE  =                    T", "BITPIX  =                  -64",
                              "NAXIS   =                    2", "NAXIS1  =              1000000",
                              "NAXIS2  =              1000000"))
    assert path.stat().st_size == 2880
    tracemalloc.start()
    with pytest.raises(PayloadTooLarge) as info:
        scan_fits(path, max_pixels_per_hdu=400_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000  # 8 TB declared; nothing of that size was allocated
    assert info.value.code == "fits.too_large" and info.value.details["found"] == 10**12
    assert "1000000 x 1000000" in info.value.message


def test_declared_size_beyond_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "big.fits"
    path.write_bytes(raw_fits("SIMPLE  =                    T", "BITPIX  =                   16",
                              "NAXIS   =                    2", "NAXIS1  =                 1000",
                              "NAXIS2  =                 1000"))
    err = fail(path, "fits.truncated")
    assert (err.details["expected"], err.details["found"]) == (2_000_000, 0)


def test_compressed_image_real_size_counts_against_the_limit(tmp_path: Path) -> None:
    path = patched(mef(tmp_path), tmp_path / "zbomb.fits", b"ZNAXIS1 =                   30",
                   b"ZNAXIS1 =             30000000")
    with pytest.raises(PayloadTooLarge) as info:
        scan(path)
    assert info.value.details["hdu"] == 2 and info.value.details["found"] == 600_000_000


def test_too_many_hdus(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        scan(mef(tmp_path), max_hdus=3)
    assert info.value.code == "fits.too_large"


def test_garbage_after_last_hdu(tmp_path: Path) -> None:
    path = image(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0\0\0hello garbage")
    err = fail(path, "fits.trailing_garbage")
    assert err.details["offset"] == 5760 and "text starting 'hello garbage'" in err.message


@pytest.mark.parametrize("where", ["data", "header"])
def test_checksum_mismatch(tmp_path: Path, where: str) -> None:
    path = image(tmp_path, checksum=True)
    raw = bytearray(path.read_bytes())
    if where == "data":
        raw[2880 + 100] ^= 0x04
    else:
        at = raw.index(b"'test    '")
        raw[at + 1] = ord("T")
    path.write_bytes(bytes(raw))
    err = fail(path, "fits.checksum")
    assert err.details["keyword"] == ("DATASUM" if where == "data" else "CHECKSUM")
    assert err.details["expected"] != err.details["found"]


def test_gzip_is_decompressed_to_a_temporary_file(tmp_path: Path) -> None:
    plain = mef(tmp_path)
    gz = tmp_path / "mef.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with scan(gz, tmp_dir=tmp_path) as layout:
        assert layout.compression == "gzip" and layout.source == gz and layout.path != gz
        assert [h.kind for h in layout.hdus] == [h.kind for h in scan(plain).hdus]
        assert layout.path.read_bytes() == plain.read_bytes()
        temp = layout.path
    assert not temp.exists()


def test_gzip_bomb_is_cut_off(tmp_path: Path) -> None:
    gz = tmp_path / "bomb.fits.gz"
    gz.write_bytes(gzip.compress(b"\0" * 20_000_000, compresslevel=9))
    assert gz.stat().st_size < 100_000
    with pytest.raises(PayloadTooLarge) as info:
        scan(gz, max_decompressed_bytes=1_000_000, tmp_dir=tmp_path)
    assert info.value.code == "fits.too_large"
    assert list(tmp_path.iterdir()) == [gz]  # the partial output was removed


def test_corrupt_gzip(tmp_path: Path) -> None:
    gz = tmp_path / "cut.fits.gz"
    gz.write_bytes(gzip.compress(image(tmp_path).read_bytes())[:200])
    err = fail(gz, "fits.gzip", tmp_dir=tmp_path)
    assert "truncated" in err.message


def test_gzip_of_non_fits(tmp_path: Path) -> None:
    gz = tmp_path / "notes.txt.gz"
    gz.write_bytes(gzip.compress(b"just some notes"))
    fail(gz, "fits.not_fits", tmp_dir=tmp_path)
    assert list(tmp_path.iterdir()) == [gz]


def test_blank_checksum_placeholder_is_not_verified(tmp_path: Path) -> None:
    path = tmp_path / "blank.fits"
    path.write_bytes(raw_fits("SIMPLE  =                    T", "BITPIX  =                    8",
                              "NAXIS   =                    0", "CHECKSUM= '                '",
                              "DATASUM = '          '"))
    assert scan(path).primary.kind == "empty"
