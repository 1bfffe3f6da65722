"""Instrument descriptions: validation, identification and header normalisation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from wisp.errors import ConfigError, InvalidInput
from wisp.fitsio import FitsLayout, scan_fits
from wisp.instruments import (
    InstrumentRegistry,
    NormalisedExposure,
    load_description,
    load_registry,
    normalise,
)
from wisp.instruments.registry import BUNDLED_DIR

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared real data not present at {DATA}")


@pytest.fixture(scope="module")
def registry() -> InstrumentRegistry:
    return load_registry()


def scan(path: Path) -> FitsLayout:
    return scan_fits(path, max_pixels_per_hdu=50_000_000)


def ingest(registry: InstrumentRegistry, path: Path) -> NormalisedExposure:
    layout = scan(path)
    return normalise(layout, registry.identify(layout, path.name), path.name)


def rejected(registry: InstrumentRegistry, path: Path, code: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        ingest(registry, path)
    assert info.value.code == code, info.value.to_dict()
    return info.value


# --- builders of synthetic raw files ------------------------------------------------------------------

def simcam_file(path: Path, *, n: int = 2, imagetyp: str = "OBJECT", filt: str = "r", nx: int = 64,
                ny: int = 48, chip_extra: dict[str, Any] | None = None, drop: str | None = None,
                extra_hdu: fits.ImageHDU | None = None) -> Path:
    primary = fits.PrimaryHDU()
    primary.header.update({
        "INSTRUME": "WISPSIM", "TELESCOP": "WISP-1M", "IMAGETYP": imagetyp, "FILTER": filt, "EXPTIME": 30.0,
        "DATE-OBS": "2024-03-01T03:04:05.250", "MJD-OBS": Time("2024-03-01T03:04:05.250").mjd,
        "RA": 150.25, "DEC": 2.5, "AIRMASS": 1.21, "OBJECT": "field-7", "EXPID": 4711})
    hdus: list[Any] = [primary]
    for i in range(1, n + 1):
        ext = fits.ImageHDU(np.full((ny, nx + 32), 1000, dtype=np.uint16), name=f"CCD{i}")
        ext.header.update({
            "CHIPID": i, "CCDNAME": f"sim-{i:02d}", "GAIN": 1.5 + 0.1 * i, "RDNOISE": 4.0 + i,
            "SATURATE": 60000.0, "DATASEC": f"[1:{nx},1:{ny}]", "BIASSEC": f"[{nx + 1}:{nx + 32},1:{ny}]",
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.25, "CRVAL2": 2.5,
            "CRPIX1": (nx + 1) / 2 - (i - 1) * nx, "CRPIX2": (ny + 1) / 2,
            "CD1_1": -0.26 / 3600, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.26 / 3600})
        ext.header.update(chip_extra or {})
        if drop:
            del ext.header[drop]
        hdus.append(ext)
    if extra_hdu is not None:
        hdus.append(extra_hdu)
    fits.HDUList(hdus).writeto(path)
    return path


def wfi_file(path: Path, *, n: int = 8, dpr: str = "FLAT,SKY", filt: str = "BB#Rc/162_ESO844") -> Path:
    primary = fits.PrimaryHDU()
    h = primary.header
    h.update({"INSTRUME": "WFI", "TELESCOP": "MPI-2.2", "EXPTIME": 12.5,
              "DATE-OBS": "2000-12-26T07:30:37.238",
              "MJD-OBS": 51904.31293, "RA": 170.66, "DEC": -21.71, "OBJECT": "SKYFLAT",
              "ARCFILE": "WFI.2000-12-26T07:30:37.238.fits"})
    h["HIERARCH ESO DPR TYPE"] = dpr
    h["HIERARCH ESO INS FILT1 NAME"] = filt
    h["HIERARCH ESO TEL AIRM START"] = 1.1
    hdus: list[Any] = [primary]
    for i in range(1, n + 1):
        ext = fits.ImageHDU(np.zeros((40, 60), dtype=np.uint16))
        for key, value in {"CONAD": 2.0 + i / 10, "RON": 4.0 + i / 10, "PRSCX": 5, "OVSCX": 6, "PRSCY": 0,
                           "NX": 49, "NY": 40, "X": 1, "Y": 1}.items():
            ext.header[f"HIERARCH ESO DET OUT{i} {key}"] = value
        hdus.append(ext)
    fits.HDUList(hdus).writeto(path)
    return path


def single_file(path: Path, header: dict[str, Any], *, compressed: bool = False, bitpix_float: bool = False
                ) -> Path:
    data = np.zeros((20, 30), dtype=np.float32 if bitpix_float else np.uint16)
    if compressed:
        ext = fits.CompImageHDU(data, name="SCI")
        ext.header.update(header)
        fits.HDUList([fits.PrimaryHDU(), ext]).writeto(path)
    else:
        hdu = fits.PrimaryHDU(data)
        hdu.header.update(header)
        hdu.writeto(path)
    return path


LIGHT = {"IMAGETYP": "Light Frame", "EXPTIME": 5.0, "DATE-OBS": "2013-05-05T04:09:39", "INSTRUME": "Cam X"}


# --- descriptions ------------------------------------------------------------------------------------

def test_bundled_descriptions_validate(registry: InstrumentRegistry) -> None:
    assert sorted(registry.descriptions) == ["eso-wfi", "generic", "simcam"]
    wfi = registry.get("eso-wfi")
    assert wfi.pixel_scale == 0.238 and len(wfi.chips) == 8 and wfi.priority == 10
    assert registry.get("generic").priority == 0 and registry.get("generic").image_hdus == (1, 1)
    assert registry.get("simcam").chip_discovery is not None
    bundled = sorted(p.name for p in BUNDLED_DIR.glob("*.yaml"))
    assert bundled == ["eso-wfi.yaml", "generic.yaml", "simcam.yaml"]


def test_user_directory_is_picked_up_and_can_replace(tmp_path: Path) -> None:
    text = (BUNDLED_DIR / "simcam.yaml").read_text()
    (tmp_path / "mycam.yaml").write_text(text.replace("name: simcam", "name: mycam")
                                         .replace("INSTRUME: WISPSIM", "INSTRUME: MYCAM"))
    (tmp_path / "simcam.yml").write_text(text.replace("pixel_scale: 0.26", "pixel_scale: 0.27"))
    (tmp_path / "README.txt").write_text("not a description")
    reg = load_registry([tmp_path])
    assert "mycam" in reg.descriptions and reg.get("simcam").pixel_scale == 0.27
    assert reg.replaced == ("simcam",)


def test_missing_instrument_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_registry([tmp_path / "nope"])
    assert "does not exist" in info.value.message


def write_desc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cam.yaml"
    path.write_text(text)
    return path


GOOD = """
name: cam
match: {INSTRUME: CAM}
keywords:
  obstype: {keys: [IMAGETYP], map: {OBJECT: science}}
  exptime: {keys: [EXPTIME]}
  date_obs: {keys: [DATE-OBS]}
chip_discovery: {}
"""


@pytest.mark.parametrize(("old", "new", "field", "words"), [
    ("keywords:", "keywrds:", "keywrds", "did you mean 'keywords'"),
    ("exptime: {keys", "exptme: {keys", "keywords.exptme", "did you mean 'exptime'"),
    ("{keys: [EXPTIME]}", "{keyz: [EXPTIME]}", "keywords.exptime.keyz", "did you mean 'keys'"),
    ("map: {OBJECT: science}", "map: {OBJECT: sciense}", "keywords.obstype.map.OBJECT", "not a frame type"),
    ("name: cam", "name: My Cam", "name", "lower case"),
    ("chip_discovery: {}", "chip_discovery: {extname_pattern: 'CCD[0-9'}", "chip_discovery.extname_pattern",
     "invalid regular expression"),
    ("chip_discovery: {}", "chip_discovery: {}\nchips: [{name: a, hdu: 1}]", "chips", "exactly one"),
    ("match: {INSTRUME: CAM}", "match: {}", "match", "needs 'match'"),
    ("chip_discovery: {}", "chip_discovery: {}\nrequired: {science: [filtre]}", "required.science[0]",
     "did you mean 'filter'"),
])
def test_invalid_description_names_file_and_field(tmp_path: Path, old: str, new: str, field: str,
                                                  words: str) -> None:
    assert old in GOOD
    path = write_desc(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_description(path)
    assert info.value.details["file"] == str(path) and info.value.details.get("field") == field
    assert words in info.value.message and str(path) in info.value.message


def test_yaml_no_and_off_stay_text(tmp_path: Path) -> None:
    text = GOOD.replace("{OBJECT: science}", "{OBJECT: science, NO: other}")
    desc = load_description(write_desc(tmp_path, text + "filters: [{name: 'NO'}, {name: OFF}]\n"))
    assert desc.keywords["obstype"].map["NO"] == "other"
    assert [f.name for f in desc.filters] == ["NO", "OFF"]


def test_invalid_yaml_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_description(write_desc(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="empty"):
        load_description(write_desc(tmp_path, ""))


def test_duplicate_user_descriptions(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "cam.yaml").write_text(GOOD)
    with pytest.raises(ConfigError, match="two instrument descriptions are named 'cam'"):
        load_registry([tmp_path / "a", tmp_path / "b"])


# --- simcam -------------------------------------------------------------------------------------------

def test_simcam_science_exposure(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, simcam_file(tmp_path / "sim.fits", n=3))
    assert (exp.instrument, exp.camera_id, exp.telescope) == ("simcam", "simcam", "WISP-1M")
    assert (exp.obstype, exp.filter, exp.band, exp.exptime_s) == ("science", "r", "r", 30.0)
    assert exp.date_obs == datetime(2024, 3, 1, 3, 4, 5, 250000, tzinfo=UTC)
    assert exp.mjd_obs == pytest.approx(Time("2024-03-01T03:04:05.250").mjd, abs=1e-9)
    assert (exp.ra_deg, exp.dec_deg, exp.airmass, exp.object, exp.exposure_id) == \
        (150.25, 2.5, 1.21, "field-7", "4711")
    assert exp.pixel_scale_arcsec == 0.26 and exp.notes == []
    assert [c.name for c in exp.chips] == ["CCD1", "CCD2", "CCD3"]
    c1, c2 = exp.chips[:2]
    assert (c1.hdu_index, c1.extname, c1.naxis1, c1.naxis2, c1.bitpix) == (1, "CCD1", 96, 48, 16)
    assert (c1.gain, c1.read_noise, c1.saturation) == (pytest.approx(1.6), 5.0, 60000.0)
    assert c1.datasec == (slice(0, 48), slice(0, 64)) and c1.datasec_fits == "[1:64,1:48]"
    assert c1.biassec == (slice(0, 48), slice(64, 96)) and c1.biassec_fits == "[65:96,1:48]"
    assert np.zeros((48, 96))[c1.biassec].shape == (48, 32)
    assert c1.ra_deg == pytest.approx(150.25, abs=1e-6) and c1.dec_deg == pytest.approx(2.5, abs=1e-6)
    step = 64 * 0.26 / 3600 / np.cos(np.radians(2.5))  # the next chip is 64 px further west
    assert c2.ra_deg == pytest.approx(150.25 - step, abs=1e-6)
    assert c1.header["GAIN"] == pytest.approx(1.6) and c1.assumed == ()
    assert exp.sources["filter"] == "FILTER='r' (HDU 0)"


def test_simcam_bias_has_no_filter(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, simcam_file(tmp_path / "bias.fits", imagetyp="BIAS", filt="NONE"))
    assert (exp.obstype, exp.filter) == ("bias", None)


def test_simcam_science_without_filter_is_rejected(registry: InstrumentRegistry, tmp_path: Path) -> None:
    err = rejected(registry, simcam_file(tmp_path / "s.fits", filt="NONE"), "header.bad_value")
    assert err.details["keyword"] == "FILTER" and "science frame needs one" in err.message


def test_simcam_missing_chip_keyword(registry: InstrumentRegistry, tmp_path: Path) -> None:
    err = rejected(registry, simcam_file(tmp_path / "s.fits", drop="GAIN"), "header.missing_keyword")
    assert (err.details["hdu"], err.details["extname"], err.details["keyword"]) == (1, "CCD1", ["GAIN"])
    assert err.message.startswith("s.fits HDU 1 (CCD1): no gain keyword (looked for GAIN")
    assert len(err.details["other_problems"]) == 1  # CCD2 lacks it too, reported in the same error


def test_simcam_bad_section(registry: InstrumentRegistry, tmp_path: Path) -> None:
    err = rejected(registry, simcam_file(tmp_path / "s.fits", n=1, chip_extra={"BIASSEC": "[65:200,1:48]"}),
                   "header.bad_value")
    assert err.details["keyword"] == "BIASSEC" and "outside the 96x48 image" in err.message


def test_simcam_unexpected_hdu(registry: InstrumentRegistry, tmp_path: Path) -> None:
    guider = fits.ImageHDU(np.zeros((10, 10), dtype=np.int16), name="GUIDER")
    err = rejected(registry, simcam_file(tmp_path / "s.fits", extra_hdu=guider), "instrument.unexpected_hdu")
    assert (err.details["hdu"], err.details["extname"]) == (3, "GUIDER")


def test_sixteen_chips(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, simcam_file(tmp_path / "s16.fits", n=16, nx=8, ny=8))
    assert len(exp.chips) == 16 and exp.chips[-1].name == "CCD16"


# --- WFI ----------------------------------------------------------------------------------------------

def test_wfi_flat(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, wfi_file(tmp_path / "WFI.2000-12-26T07:30:37.238.fits"))
    assert (exp.instrument, exp.obstype, exp.filter, exp.band) == ("eso-wfi", "flat", "Rc162", "R")
    assert (exp.exptime_s, exp.airmass, exp.exposure_id) == (12.5, 1.1, "WFI.2000-12-26T07:30:37.238.fits")
    assert exp.date_obs == datetime(2000, 12, 26, 7, 30, 37, 238000, tzinfo=UTC)
    assert [c.name for c in exp.chips] == [f"ccd{n}" for n in range(50, 58)]
    c = exp.chips[2]
    assert (c.hdu_index, c.saturation) == (3, 60000)
    assert (c.gain, c.read_noise) == (pytest.approx(2.3), pytest.approx(4.3))
    assert (c.datasec_fits, c.biassec_fits) == ("[6:54,1:40]", "[55:60,1:40]")
    assert c.assumed == ("saturation",) and any("saturation level assumed 60000 ADU" in n for n in exp.notes)


def test_wfi_unknown_filter_is_kept_with_a_note(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, wfi_file(tmp_path / "w.fits", dpr="OBJECT", filt="MB#516/16_ESO871"))
    assert (exp.obstype, exp.filter, exp.band) == ("science", "MB#516/16_ESO871", None)
    assert any("not in eso-wfi's filter list" in n for n in exp.notes)


def test_wfi_missing_chip(registry: InstrumentRegistry, tmp_path: Path) -> None:
    err = rejected(registry, wfi_file(tmp_path / "w.fits", n=7), "instrument.chip_missing")
    assert err.details["expected"] == "ccd57" and err.details["hdu"] == 8


# --- generic and identification ------------------------------------------------------------------------

def test_generic_single_image(registry: InstrumentRegistry, tmp_path: Path) -> None:
    header = {**LIGHT, "FILTER": "V  ", "EGAIN": 1.3, "OBJCTRA": "16 41 41.2", "OBJCTDEC": "+36 27 41"}
    exp = ingest(registry, single_file(tmp_path / "g.fits", header))
    assert (exp.instrument, exp.camera_id) == ("generic", "generic:cam-x")
    assert (exp.obstype, exp.filter) == ("science", "V")
    assert exp.ra_deg == pytest.approx(250.42167, abs=1e-4)
    assert exp.dec_deg == pytest.approx(36.46139, abs=1e-4)
    (chip,) = exp.chips
    assert (chip.name, chip.gain, chip.read_noise, chip.saturation) == ("ccd", 1.3, 10.0, 65535.0)
    assert chip.assumed == ("read_noise", "saturation")


def test_generic_compressed_image_reads_extension_header(registry: InstrumentRegistry,
                                                         tmp_path: Path) -> None:
    exp = ingest(registry, single_file(tmp_path / "g.fits.fz", {**LIGHT, "FILTER": "R"}, compressed=True))
    assert (exp.instrument, exp.filter, exp.exptime_s) == ("generic", "R", 5.0)
    assert exp.chips[0].compressed and exp.chips[0].hdu_index == 1 and exp.chips[0].header["NAXIS1"] == 30


@pytest.mark.parametrize(("header", "check"), [
    ({"DATE-OBS": "26/10/92", "TIME-OBS": "03:04:08.5"},
     lambda e: e.date_obs == datetime(1992, 10, 26, 3, 4, 8, 500000, tzinfo=UTC)),
    ({"DATE-OBS": None, "JD": 2455805.589641204},
     lambda e: abs(e.mjd_obs - 55805.089641204) < 1e-8),
    ({"DATE-OBS": "2011-09-01"}, lambda e: "00:00:00 UTC assumed" in " ".join(e.notes)),
    ({"GAIN": 120}, lambda e: e.chips[0].gain == 1.0 and "not a plausible gain" in " ".join(e.notes)),
    ({"AIRMASS": 0.0},
     lambda e: e.airmass is None and "AIRMASS=0.0 is not a valid airmass" in " ".join(e.notes)),
    ({"DEC": 95.0, "RA": 10.0}, lambda e: e.dec_deg is None and e.ra_deg == 10.0),
    ({"IMAGETYP": "Focus"}, lambda e: e.obstype == "other"),
    ({"IMAGETYP": "Sky pointing"},
     lambda e: e.obstype == "other" and "not a known frame type" in " ".join(e.notes)),
    ({"IMAGETYP": "FLAT,DOME", "FILTER": "Ha"}, lambda e: (e.obstype, e.filter) == ("flat", "Ha")),
    ({"IMAGETYP": "zero"}, lambda e: e.obstype == "bias"),
    ({"SATURATE": 50000}, lambda e: e.chips[0].saturation == 50000.0),
])
def test_generic_conventions(registry: InstrumentRegistry, tmp_path: Path, header: dict[str, Any],
                             check: Any) -> None:
    merged = {k: v for k, v in {**LIGHT, **header}.items() if v is not None}
    exp = ingest(registry, single_file(tmp_path / "g.fits", merged))
    assert check(exp), (exp.notes, exp.sources)


def test_generic_float_data_has_unknown_saturation(registry: InstrumentRegistry, tmp_path: Path) -> None:
    exp = ingest(registry, single_file(tmp_path / "f.fits", LIGHT, bitpix_float=True))
    assert exp.chips[0].saturation is None and "no natural saturation level" in " ".join(exp.notes)


@pytest.mark.parametrize(("header", "code", "keyword"), [
    ({"EXPTIME": -1.0}, "header.bad_value", "EXPTIME"),
    ({"DATE-OBS": "1850-01-01T00:00:00"}, "header.bad_value", "DATE-OBS"),
    ({"DATE-OBS": "yesterday"}, "header.bad_value", "DATE-OBS"),
    ({"IMAGETYP": None}, "header.missing_keyword", ["IMAGETYP", "OBSTYPE", "IMGTYPE", "FRAMETYP", "FRAME",
                                                    "EXPTYPE", "HIERARCH ESO DPR TYPE"]),
    ({"EXPTIME": None}, "header.missing_keyword", ["EXPTIME", "EXPOSURE", "ITIME", "EXP_TIME", "EXPOSED",
                                                   "EXPOS"]),
])
def test_generic_rejections(registry: InstrumentRegistry, tmp_path: Path, header: dict[str, Any], code: str,
                            keyword: object) -> None:
    merged = {k: v for k, v in {**LIGHT, **header}.items() if v is not None}
    err = rejected(registry, single_file(tmp_path / "g.fits", merged), code)
    assert err.details["keyword"] == keyword and err.details["hdu"] == 0


def test_unknown_instrument(registry: InstrumentRegistry, tmp_path: Path) -> None:
    path = tmp_path / "two.fits"
    img = np.zeros((5, 5), dtype=np.int16)
    fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(img)]).writeto(path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["INSTRUME"] = "FOO"
    layout = scan(path)
    with pytest.raises(InvalidInput) as info:
        registry.identify(layout, "two.fits")
    err = info.value
    assert err.code == "instrument.unknown"
    assert "INSTRUME='FOO'" in err.message and "no TELESCOP" in err.message and "2 image HDUs" in err.message
    assert "simcam (INSTRUME=WISPSIM)" in err.message and "generic (1 image HDU)" in err.message
    assert err.details["found"] == {"INSTRUME": "FOO", "TELESCOP": None, "image_hdus": 2}


def test_no_image(registry: InstrumentRegistry, tmp_path: Path) -> None:
    path = tmp_path / "cat.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="J", array=np.arange(3))])]).writeto(path)
    with pytest.raises(InvalidInput) as info:
        registry.identify(scan(path), "cat.fits")
    assert info.value.code == "fits.no_image" and "HDU 1: bintable" in info.value.message


def test_ambiguous(tmp_path: Path) -> None:
    text = (BUNDLED_DIR / "simcam.yaml").read_text().replace("name: simcam", "name: simcam-copy")
    (tmp_path / "copy.yaml").write_text(text)
    reg = load_registry([tmp_path])
    path = simcam_file(tmp_path / "s.fits")
    with pytest.raises(InvalidInput) as info:
        reg.identify(scan(path), "s.fits")
    assert info.value.code == "instrument.ambiguous"
    assert info.value.details["found"] == ["simcam", "simcam-copy"]


def test_higher_priority_wins(tmp_path: Path) -> None:
    text = (BUNDLED_DIR / "simcam.yaml").read_text().replace("name: simcam", "name: simcam-new") \
        .replace("priority: 10", "priority: 20")
    (tmp_path / "new.yaml").write_text(text)
    reg = load_registry([tmp_path])
    assert reg.identify(scan(simcam_file(tmp_path / "s.fits")), "s.fits").name == "simcam-new"


# --- real data ----------------------------------------------------------------------------------------
# Decisions (docs/instruments.md): the M13 frames and sip-wcs.fit are ingested through generic.yaml with
# documented defaults; sep-ntt/image.fits (a processed sum of 3 frames written by MIDAS) has no frame-type
# keyword, which generic never guesses, so it is rejected with a message naming the keywords looked for.

@needs_data
@pytest.mark.parametrize("n", range(1, 6))
def test_real_m13_frames_are_ingested_with_defaults(registry: InstrumentRegistry, n: int) -> None:
    exp = ingest(registry, DATA / "m13-raw" / f"M13_blue_000{n}.fits")
    assert (exp.instrument, exp.camera_id, exp.obstype, exp.filter) == \
        ("generic", "generic:orion-ssdsi", "science", "unknown")
    assert exp.exptime_s == 5.0 and exp.date_obs.date().isoformat() == "2013-05-05"
    assert (exp.ra_deg, exp.dec_deg, exp.airmass) == (None, None, None)
    (chip,) = exp.chips
    assert (chip.naxis1, chip.naxis2) == (1392, 1040)
    assert (chip.gain, chip.read_noise, chip.saturation) == (1.0, 10.0, 65535)
    assert chip.assumed == ("gain", "read_noise", "saturation")
    notes = " ".join(exp.notes)
    assert "assumed 'unknown'" in notes and "gain assumed 1 e-/ADU" in notes


@needs_data
def test_real_sep_ntt_is_rejected_naming_the_keyword(registry: InstrumentRegistry) -> None:
    err = rejected(registry, DATA / "sep-ntt" / "image.fits", "header.missing_keyword")
    assert err.message.startswith("image.fits HDU 0: no frame type keyword (looked for IMAGETYP, OBSTYPE")
    assert "IMAGETYP" in err.details["keyword"]


@needs_data
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_real_sep_ntt_dates_with_a_frame_type(registry: InstrumentRegistry, tmp_path: Path) -> None:
    """Its old 'DD/MM/YY' date + TM-START seconds give the start; MIDAS's MJD-OBS (12 h off) is noted."""
    with fits.open(DATA / "sep-ntt" / "image.fits") as hdul:
        header = hdul[0].header.copy()
    header["IMAGETYP"] = "OBJECT"
    path = tmp_path / "ntt.fits"
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.int16), header=header).writeto(path, output_verify="silentfix")
    exp = ingest(registry, path)
    assert exp.date_obs == datetime(1992, 10, 26, 3, 4, 8, tzinfo=UTC)
    assert any("MJD-OBS" in n and "+12.00 h" in n for n in exp.notes)
    assert exp.ra_deg == pytest.approx(5.64817) and exp.airmass == pytest.approx(1.06835)


@needs_data
def test_real_sip_wcs_is_ingested(registry: InstrumentRegistry) -> None:
    exp = ingest(registry, DATA / "wcs" / "sip-wcs.fit")
    assert (exp.camera_id, exp.obstype) == ("generic:apogee-alta", "science")
    assert (exp.filter, exp.exptime_s) == ("B", 120.0)
    assert exp.date_obs == datetime(2011, 9, 1, 2, 9, 5, tzinfo=UTC)
    assert exp.ra_deg == pytest.approx(280.546, abs=1e-3) and exp.dec_deg == pytest.approx(0.1126, abs=1e-3)
    assert exp.sources["ra"] == "chip WCS"


@needs_data
@pytest.mark.parametrize("name", ["m13-raw/M13_blue_0003.fits", "sep-ntt/image.fits", "wcs/sip-wcs.fit"])
def test_real_files_never_raise_anything_but_invalid_input(registry: InstrumentRegistry, name: str) -> None:
    try:
        ingest(registry, DATA / name)
    except InvalidInput as exc:
        assert exc.code.startswith("header.") and exc.details.get("keyword")


def test_description_helpers_for_the_ingest(registry: InstrumentRegistry, tmp_path: Path) -> None:
    import json

    wfi = registry.get("eso-wfi")
    assert wfi.band_of("BB#Rc/162_ESO844") == "R" and wfi.band_of("Rc162") == "R" and wfi.band_of("x") is None
    for desc in registry.descriptions.values():
        data = json.loads(json.dumps(desc.to_dict()))
        assert data["name"] == desc.name
    exp = ingest(registry, simcam_file(tmp_path / "s.fits", n=1))
    assert exp.primary_header["INSTRUME"] == "WISPSIM"
    json.dumps(exp.primary_header)
    json.dumps(exp.chips[0].header)


def test_documented_example_is_a_valid_description(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "instruments.md").read_text()
    yaml_text = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.yaml").write_text(yaml_text)
    reg = load_registry([tmp_path])
    assert reg.get("obsx-mosaic").summary().startswith("obsx-mosaic (INSTRUME=MOSAIC4")
