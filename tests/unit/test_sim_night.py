"""The simulated night: determinism, the raw-file contract, masks, WCS and reference-catalogue truth."""

from __future__ import annotations

import argparse
import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from wisp.cli.sim import register
from wisp.errors import InvalidInput
from wisp.sim import SimConfig, SimResult, simulate_night
from wisp.sim.camera import grid_shape
from wisp.sim.expose import MASK_CR, MASK_SATURATED, MASK_TRAIL

# small chips catch ~1 cosmic ray per exposure at the real rate: raise it so every mask test has some
SMALL = SimConfig(n_chips=2, chip_nx=256, chip_ny=256, n_bias=2, n_flats_per_filter=1,
                  n_dither_per_field_filter=2, trail_every=2, cr_rate=20.0)
TINY = replace(SMALL, n_chips=1, chip_nx=128, chip_ny=128, n_bias=1, n_dither_per_field_filter=1,
               filters=("r",))


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a header card too long for FITS is a bug here
        return simulate_night(SMALL, tmp_path_factory.mktemp("night"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_config_gives_identical_bytes(night: SimResult, tmp_path: Path) -> None:
    again = simulate_night(SMALL, tmp_path / "again")
    first, second = _files(night.outdir), _files(again.outdir)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_different_seed_gives_different_pixels(tmp_path: Path) -> None:
    a = simulate_night(TINY, tmp_path / "a")
    b = simulate_night(replace(TINY, seed=7), tmp_path / "b")
    for fa, fb in zip(a.raw_files, b.raw_files, strict=True):
        assert fa.name == fb.name
        assert not np.array_equal(fits.getdata(fa, 1), fits.getdata(fb, 1))


def test_counts_and_names(night: SimResult) -> None:
    assert night.counts == {"BIAS": 2, "FLAT g": 1, "FLAT r": 1, "OBJECT g": 2, "OBJECT r": 2}
    names = [p.name for p in night.raw_files]
    assert names == sorted(names) and len(set(names)) == len(names) == SMALL.n_exposures
    assert all(p.parent == night.outdir / "raw" for p in night.raw_files)


PRIMARY = {"INSTRUME": str, "TELESCOP": str, "ORIGIN": str, "IMAGETYP": str, "FILTER": str, "EXPTIME": float,
           "DATE-OBS": str, "MJD-OBS": float, "RA": float, "DEC": float, "AIRMASS": float, "OBJECT": str,
           "EXPID": int, "NCHIPS": int, "OBSERVER": str, "SIMSEED": int}
CHIP = {"EXTNAME": str, "CHIPID": int, "CCDNAME": str, "GAIN": float, "RDNOISE": float, "SATURATE": int,
        "DATASEC": str, "BIASSEC": str, "DETSEC": str, "CTYPE1": str, "CTYPE2": str, "CRVAL1": float,
        "CRVAL2": float, "CRPIX1": float, "CRPIX2": float, "CD1_1": float, "CD1_2": float, "CD2_1": float,
        "CD2_2": float}


def test_raw_header_contract(night: SimResult) -> None:
    expids = set()
    nx, ny, nos = SMALL.chip_nx, SMALL.chip_ny, SMALL.overscan
    for path in night.raw_files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checksum mismatch warns
            hdul = fits.open(path, checksum=True, do_not_scale_image_data=True)
        with hdul:
            h0 = hdul[0].header
            assert hdul[0].data is None
            for key, kind in PRIMARY.items():
                assert isinstance(h0[key], kind), (path.name, key)
            assert (h0["INSTRUME"], h0["TELESCOP"], h0["ORIGIN"]) == ("WISPSIM", "WISP-1M", "wisp sim")
            assert h0["IMAGETYP"] in {"BIAS", "FLAT", "OBJECT"}
            assert (h0["FILTER"] == "NONE") == (h0["IMAGETYP"] == "BIAS")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", h0["DATE-OBS"])
            assert abs(Time(h0["DATE-OBS"], scale="utc").mjd - h0["MJD-OBS"]) < 1e-7
            assert h0["OBJECT"] == {"BIAS": "BIAS", "FLAT": "DOMEFLAT"}.get(h0["IMAGETYP"], "COSMOS-1")
            assert h0["NCHIPS"] == len(hdul) - 1 == SMALL.n_chips
            assert h0["SIMSEED"] == SMALL.seed
            expids.add(h0["EXPID"])
            for k, hdu in enumerate(hdul[1:], start=1):
                h = hdu.header
                for key, kind in CHIP.items():
                    assert isinstance(h[key], kind), (path.name, k, key)
                assert (h["BITPIX"], h["BZERO"], h["EXTNAME"], h["CHIPID"]) == (16, 32768, f"CCD{k}", k)
                assert hdu.data.shape == (ny, nx + nos)
                assert h["DATASEC"] == f"[1:{nx},1:{ny}]" and h["BIASSEC"] == f"[{nx + 1}:{nx + nos},1:{ny}]"
                assert (h["CTYPE1"], h["CTYPE2"]) == ("RA---TAN", "DEC--TAN")
                assert 1.6 <= h["GAIN"] <= 2.4 and h["SATURATE"] <= 65535
    assert len(expids) == len(night.raw_files)
    detsecs = {fits.getheader(night.raw_files[0], k)["DETSEC"] for k in (1, 2)}
    assert detsecs == {f"[1:{nx},1:{ny}]", f"[{nx + 21}:{2 * nx + 20},1:{ny}]"}


def _truth(night: SimResult, raw: Path) -> fits.HDUList:
    return fits.open(night.truth_dir / raw.name.replace(".fits", "_truth.fits"))


def test_night_json_and_truth_files(night: SimResult) -> None:
    doc = json.loads((night.truth_dir / "night.json").read_text())
    assert SimConfig.from_dict(doc["config"]) == SMALL and len(doc["exposures"]) == SMALL.n_exposures
    for chip, path in zip(doc["camera"]["chips"], night.raw_files, strict=False):
        h = fits.getheader(path, chip["chip_id"])
        assert (h["GAIN"], h["RDNOISE"], h["SATURATE"]) == (chip["gain"], chip["read_noise"], chip["saturate"])
        assert 950 <= chip["bias_level"] <= 1100
    for name in ("bias.fits", "flat_g.fits", "flat_r.fits", "bpm.fits", "defects.fits", "stars.fits",
                 "galaxies.fits"):
        assert (night.truth_dir / name).is_file()
    assert fits.getdata(night.truth_dir / "bias.fits", "CCD1").shape == (256, 256 + 32)


def test_bpm_and_artefact_masks(night: SimResult) -> None:
    with fits.open(night.truth_dir / "bpm.fits") as bpm:
        for k in (1, 2):
            bits = np.bitwise_or.reduce(bpm[f"CCD{k}"].data, axis=None)
            assert bits == 1 | 2 | 4
    saturated = 0
    for raw in night.raw_files:
        with _truth(night, raw) as tr:
            masks = [tr[f"CCD{k}"].data for k in (1, 2)]
            cr = sum(int((m & MASK_CR).sum() > 0) for m in masks)
            trail = sum(int((m & MASK_TRAIL).sum()) for m in masks)
            saturated += sum(int((m & MASK_SATURATED).sum()) for m in masks)
            if tr[0].header["IMAGETYP"] == "OBJECT":
                assert cr > 0, raw.name
                assert (trail > 0) == tr[0].header["TRAIL"], raw.name
                assert len(tr["COSMICS"].data) > 0
            else:
                assert trail == 0
    assert saturated > 0


def test_header_wcs_is_off_by_the_pointing_error_and_rotation(night: SimResult) -> None:
    lo, hi = SMALL.pointing_error_arcmin
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth(night, raw) as tr:
            h0 = tr[0].header
            assert lo <= h0["PNTERR"] <= hi and 0.2 <= abs(h0["TRUEROT"]) <= 1.0
            for k in (1, 2):
                header, true = WCS(fits.getheader(raw, k)), WCS(tr[f"CCD{k}"].header)
                sep = header.pixel_to_world(0, 0).separation(true.pixel_to_world(0, 0)).arcmin
                assert abs(sep - h0["PNTERR"]) < 0.1 + 0.02  # + rotation x chip offset and SIP
                centre = true.wcs.crval
                a = header.wcs.cd @ [1.0, 0.0]
                b = true.wcs.cd @ [1.0, 0.0]
                rot = np.degrees(np.arctan2(a[0] * b[1] - a[1] * b[0], a @ b))
                assert abs(abs(rot) - abs(h0["TRUEROT"])) < 1e-6, (rot, h0["TRUEROT"])
                np.testing.assert_allclose(centre, [h0["TRUERA"], h0["TRUEDEC"]])


def test_true_wcs_reproduces_truth_positions(night: SimResult) -> None:
    raw = next(p for p in night.raw_files if "object" in p.name)
    with _truth(night, raw) as tr:
        src = tr["SOURCES"].data
        for k in (1, 2):
            s = src[src["chip"] == k]
            x, y = WCS(tr[f"CCD{k}"].header).all_world2pix(s["ra"], s["dec"], 0, tolerance=1e-10)
            np.testing.assert_allclose(x, s["x"], atol=1e-6)
            np.testing.assert_allclose(y, s["y"], atol=1e-6)
        # the SIP distortion displaces the farthest chip corner by distortion_px
        shifts = []
        for k in (1, 2):
            w = WCS(tr[f"CCD{k}"].header)
            corners = np.array([[-0.5, -0.5], [-0.5, 255.5], [255.5, -0.5], [255.5, 255.5]])
            shifts.append(np.hypot(*(w.wcs_world2pix(w.all_pix2world(corners, 0), 0) - corners).T).max())
        assert max(shifts) == pytest.approx(SMALL.distortion_px, abs=1e-6)


def test_refcat_covers_every_science_footprint(night: SimResult) -> None:
    with fits.open(night.refcat) as hdul:
        ref = hdul["REFCAT"].data
        assert hdul["REFCAT"].header["EPOCH"] == 2016.0
    for col in ("ra", "dec", "pmra", "pmdec", "g", "r", "ra_err", "g_err"):
        assert col in ref.names
    assert ref["r"].max() < SMALL.refcat_mag_limit + 0.1 and 10 <= np.median(ref["ra_err"]) <= 20
    stars = fits.getdata(night.truth_dir / "stars.fits")
    true = stars[np.isin(stars["id"], ref["id"])]
    dra = (ref["ra"] - true["ra"]) * np.cos(np.radians(true["dec"])) * 3.6e6
    assert 5 < np.std(dra) < 25 and 0.003 < np.std(ref["r"] - true["r"]) < 0.02
    for raw in [p for p in night.raw_files if "object" in p.name]:
        with _truth(night, raw) as tr:
            for k in (1, 2):
                corners = WCS(tr[f"CCD{k}"].header).all_pix2world([[0, 0], [0, 255], [255, 0], [255, 255]], 0)
                for ra, dec in corners:
                    d = np.hypot((ref["ra"] - ra) * np.cos(np.radians(dec)), ref["dec"] - dec)
                    assert np.sort(d)[3] < 0.05  # refcat stars all around every corner
                    assert ref["ra"].min() < ra < ref["ra"].max() and ref["dec"].min() < dec < ref["dec"].max()


@pytest.mark.parametrize(("n", "shape"), [(1, (1, 1)), (2, (2, 1)), (4, (2, 2)), (6, (3, 2)), (8, (4, 2)),
                                          (7, (3, 3)), (16, (4, 4))])
def test_grid_shape(n: int, shape: tuple[int, int]) -> None:
    assert grid_shape(n) == shape
    assert shape[0] * shape[1] >= n


def test_config_is_validated() -> None:
    with pytest.raises(InvalidInput, match="n_chips"):
        SimConfig(n_chips=17)
    with pytest.raises(InvalidInput, match="filters"):
        SimConfig(filters=("g", "Q"))
    assert SimConfig().n_exposures == 21


def test_cli_sim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="wisp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sim", str(tmp_path / "out"), "--seed", "3", "--chips", "1", "--chip-size", "96x80",
                              "--exposures", "1", "--filters", "r", "--bias", "1", "--flats", "1"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert "simulated 3 exposures" in out and "BIAS: 1" in out and "[3/3] sim_0003_object_r.fits" in err
    assert fits.getdata(tmp_path / "out" / "raw" / "sim_0003_object_r.fits", 1).shape == (80, 96 + 32)
    assert fits.getval(tmp_path / "out" / "raw" / "sim_0001_bias.fits", "SIMSEED") == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "x", "--chip-size", "big"])


def test_extras_are_validated_and_left_out_of_the_dict_when_off() -> None:
    from wisp.sim.config import OPTIONAL_FIELDS

    assert not set(OPTIONAL_FIELDS) & set(SimConfig().to_dict())
    extra = replace(TINY, n_dark=2, flat_blocks=2, fringe_filters=["r"], dark_rate=0.01)
    assert extra.fringe_filters == ("r",)
    assert SimConfig.from_dict(json.loads(json.dumps(extra.to_dict()))) == extra
    assert extra.n_exposures == TINY.n_exposures + 2 + TINY.n_flats_per_filter
    for bad, word in [({"fringe_filters": ("i",)}, "fringe_filters"), ({"fringe_amplitude": 0.7}, "fringe"),
                      ({"flat_blocks": 3}, "flat_blocks"), ({"n_dark": -1}, "n_dark"),
                      ({"dark_rate": -1.0}, "dark_rate"), ({"dome_flat_gradient": 0.6}, "dome_flat_gradient")]:
        with pytest.raises(InvalidInput, match=word):
            replace(TINY, **bad)


def test_extras_switched_off_change_no_raw_byte(tmp_path: Path) -> None:
    """Settings of extras that are off (no darks, one flat block, no fringe filter) leave the pixels alone."""
    a = simulate_night(TINY, tmp_path / "a")
    b = simulate_night(replace(TINY, dark_exptime=100.0, flat_lamp_ratio=0.5, fringe_amplitude=0.1),
                       tmp_path / "b")
    first, second = _files(a.outdir), _files(b.outdir)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == ["truth/night.json"]  # the config is recorded


def test_extras_night_plan_and_truth(tmp_path: Path) -> None:
    """Darks after the biases, a morning flat block after the science, fringes in i; the camera, the sky and
    the detector truth are those of the same night without extras."""
    base = replace(TINY, filters=("r", "i"))
    cfg = replace(base, n_dark=2, dark_exptime=60.0, flat_blocks=2, fringe_filters=("i",), dark_rate=0.02)
    res = simulate_night(cfg, tmp_path / "x")
    ref = simulate_night(base, tmp_path / "ref")
    assert res.counts == {"BIAS": 1, "DARK": 2, "FLAT r": 2, "FLAT i": 2, "OBJECT r": 1, "OBJECT i": 1}
    kinds = [fits.getval(p, "IMAGETYP") for p in res.raw_files]
    assert kinds == ["BIAS", "DARK", "DARK", "FLAT", "FLAT", "OBJECT", "OBJECT", "FLAT", "FLAT"]
    assert [p.name for p in res.raw_files][1] == "sim_0002_dark.fits"
    assert fits.getval(res.raw_files[1], "OBJECT") == "DARK" and fits.getval(res.raw_files[1], "FILTER") == "NONE"
    starts = [Time(fits.getval(p, "DATE-OBS"), scale="utc").mjd for p in res.raw_files]
    assert starts == sorted(starts)
    for name in ("bias.fits", "flat_r.fits", "flat_i.fits", "bpm.fits", "defects.fits", "stars.fits",
                 "galaxies.fits"):
        assert (res.truth_dir / name).read_bytes() == (ref.truth_dir / name).read_bytes(), name
    assert (res.truth_dir / "dark.fits").is_file() and not (ref.truth_dir / "dark.fits").exists()
    assert (res.truth_dir / "fringe_i.fits").is_file() and not (res.truth_dir / "fringe_r.fits").exists()
    for raw in res.raw_files:
        with _truth(res, raw) as tr:
            fringed = tr[0].header["IMAGETYP"] == "OBJECT" and tr[0].header["FILTER"] == "i"
            assert ("FRNGAMP" in tr["CCD1"].header) == fringed
