"""Reference catalogues: reading FITS/CSV/Parquet with any column names, HEALPix partitions and cone loads,
proper motions (against the simulator's truth)."""

from __future__ import annotations

import io

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from services.astrometry.science.refcat import (
    apply_proper_motion,
    load_region,
    make_manifest,
    partition,
    pixels_for_cone,
    read_table,
    write_partition,
)
from wisp.errors import InvalidInput
from wisp.sim import SimResult
from wisp.sphere import separation

STANDARD = ["ra", "dec", "pmra", "pmdec", "ra_err", "dec_err", "pmra_err", "pmdec_err", "id", "g", "g_err", "r",
            "r_err"]


@pytest.fixture(scope="module")
def refcat(small_night: SimResult) -> Table:
    return read_table(small_night.refcat)


def _renamed(table: Table, names: dict[str, str]) -> Table:
    out = Table()
    for std, new in names.items():
        out[new] = np.asarray(table[std])
    return out


def test_fits_reader_standardises_the_sim_refcat(refcat: Table) -> None:
    assert refcat.colnames == STANDARD
    assert refcat.meta["EPOCH"] == 2016.0 and refcat.meta["BANDS"] == "g,r"
    assert refcat["ra"].unit == u.deg and refcat["pmra"].unit == u.mas / u.yr and refcat["ra_err"].unit == u.mas
    assert refcat["ra"].dtype == np.float64 and len(refcat) > 10


def test_csv_round_trip_with_vizier_names(refcat: Table, tmp_path: object) -> None:
    names = {"id": "Source", "ra": "RA_ICRS", "dec": "DE_ICRS", "pmra": "pmRA", "pmdec": "pmDE",
             "ra_err": "e_RA_ICRS", "dec_err": "e_DE_ICRS", "g": "gmag", "g_err": "e_gmag", "r": "rmag",
             "r_err": "e_rmag"}
    path = f"{tmp_path}/cat.csv"
    _renamed(refcat, names).write(path, format="ascii.csv")
    back = read_table(path, epoch=2016.0)
    for std in names:
        np.testing.assert_array_equal(np.asarray(back[std]), np.asarray(refcat[std]), err_msg=std)
    assert back.meta["EPOCH"] == 2016.0 and back.meta["BANDS"] == "g,r"


def test_parquet_round_trip_with_gaia_names_and_units(refcat: Table, tmp_path: object) -> None:
    names = {"id": "source_id", "ra": "ra", "dec": "dec", "pmra": "pmra", "pmdec": "pmdec", "ra_err": "ra_error",
             "dec_err": "dec_error", "g": "phot_g_mean_mag", "r": "phot_rp_mean_mag"}
    table = _renamed(refcat, names)
    table["ra"] = np.radians(np.asarray(refcat["ra"])) * u.rad  # units travel in the Parquet metadata
    table["pmdec"] = np.asarray(refcat["pmdec"]) / 1000.0 * u.arcsec / u.yr
    table["ref_epoch"] = np.full(len(table), 2016.0)
    path = f"{tmp_path}/cat.parquet"
    table.write(path, format="parquet")
    back = read_table(path)
    np.testing.assert_allclose(back["ra"], refcat["ra"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(back["pmdec"], refcat["pmdec"], rtol=1e-12)
    np.testing.assert_array_equal(back["G"], refcat["g"])
    np.testing.assert_array_equal(back["RP"], refcat["r"])
    assert back.meta["EPOCH"] == 2016.0 and back.meta["BANDS"] == "G,RP"


def test_reading_bytes_and_explicit_columns(refcat: Table) -> None:
    table = _renamed(refcat, {"ra": "alpha_deg_x", "dec": "DEJ2000", "r": "rpsf"})
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(buffer)
    back = read_table(buffer.getvalue(), columns={"ra": "alpha_deg_x", "r": "rpsf"}, epoch=2016.0)
    np.testing.assert_array_equal(back["ra"], refcat["ra"])
    np.testing.assert_array_equal(back["r"], refcat["r"])


def test_missing_column_names_it_and_the_columns_found(refcat: Table, tmp_path: object) -> None:
    path = f"{tmp_path}/nodec.csv"
    _renamed(refcat, {"ra": "RA", "g": "gmag"}).write(path, format="ascii.csv")
    with pytest.raises(InvalidInput) as err:
        read_table(path)
    assert err.value.code == "refcat.missing_column"
    assert "DEC" in err.value.message and "RA, gmag" in err.value.message
    assert err.value.details["found"] == ["RA", "gmag"]
    with pytest.raises(InvalidInput, match="out of range"):
        bad = _renamed(refcat, {"ra": "ra", "dec": "dec"})
        bad["dec"] = np.asarray(bad["dec"]) * 100.0
        bad.write(f"{tmp_path}/bad.csv", format="ascii.csv")
        read_table(f"{tmp_path}/bad.csv")


def test_proper_motion_reproduces_the_true_positions(small_night: SimResult) -> None:
    stars = read_table(small_night.truth_dir / "stars.fits")  # the truth at 2016.0, no noise
    truth = fits.open(next(small_night.truth_dir.glob("*_object_*_truth.fits")))
    epoch = truth[0].header["EPOCH"]
    src = Table.read(truth["SOURCES"])
    src = src[src["type"] == "star"]
    moved = apply_proper_motion(stars, epoch)
    assert moved.meta["EPOCH"] == epoch
    row = {int(i): k for k, i in enumerate(np.asarray(stars["id"]))}
    k = np.array([row[int(i)] for i in src["id"]])
    dra = (np.asarray(moved["ra"])[k] - src["ra"]) * np.cos(np.radians(src["dec"])) * 3.6e6
    ddec = (np.asarray(moved["dec"])[k] - src["dec"]) * 3.6e6
    assert np.max(np.hypot(dra, ddec)) < 0.01  # mas
    motion = np.hypot(*[(np.asarray(moved[c]) - np.asarray(stars[c]))[k] for c in ("ra", "dec")]) * 3.6e6
    assert np.median(motion) > 10.0  # mas: the stars really moved
    back = apply_proper_motion(moved, 2016.0)  # tangent-plane motion is reversible to second order
    np.testing.assert_allclose(back["dec"], stars["dec"], rtol=0, atol=1e-9)


def test_proper_motion_errors_grow(refcat: Table) -> None:
    moved = apply_proper_motion(refcat, 2026.0)
    expect = np.hypot(refcat["ra_err"], 10.0 * np.asarray(refcat["pmra_err"]))
    np.testing.assert_allclose(moved["ra_err"], expect)
    with pytest.raises(InvalidInput, match="epoch"):
        apply_proper_motion(Table({"ra": [1.0], "dec": [2.0]}), 2020.0)


def _sky(n: int, seed: int) -> Table:
    """Random stars over a cap near the pole and across RA = 0 (the awkward places)."""
    rng = np.random.default_rng(seed)
    ra = np.concatenate([rng.uniform(0, 360, n // 2), rng.uniform(-15, 15, n - n // 2) % 360])
    dec = np.concatenate([rng.uniform(75, 90, n // 2), rng.uniform(-15, 15, n - n // 2)])
    table = Table({"ra": ra, "dec": dec, "pmra": rng.normal(0, 5, n), "pmdec": rng.normal(0, 5, n),
                   "id": np.arange(n), "r": rng.uniform(12, 21, n)}, meta={"EPOCH": 2016.0, "BANDS": "r"})
    return table


def test_partition_and_cone_load_read_only_what_is_needed() -> None:
    sky = _sky(20000, 1)
    parts = partition(sky, nside=16)
    assert sum(len(t) for t in parts.values()) == len(sky)
    blobs, manifest = write_partition(parts)
    assert manifest == make_manifest(parts)
    assert manifest["nside"] == 16 and manifest["epoch"] == 2016.0 and manifest["bands"] == ["r"]
    assert manifest["n_sources"] == len(sky) and set(manifest["counts"]) == {str(p) for p in parts}
    for ra, dec, radius in [(0.2, 0.1, 1.5), (359.9, -3.0, 0.7), (123.0, 89.5, 2.0), (10.0, 80.0, 0.3),
                            (200.0, 50.0, 1.0)]:
        asked: list[int] = []

        def get(pix: int, asked: list[int] = asked) -> bytes | None:
            asked.append(pix)
            return blobs.get(pix)

        region = load_region(get, manifest, ra, dec, radius)
        inside = separation(np.asarray(sky["ra"]), np.asarray(sky["dec"]), ra, dec) <= radius
        assert sorted(region["id"]) == sorted(sky["id"][inside])
        assert set(asked) <= set(pixels_for_cone(ra, dec, radius, 16)) and len(asked) < len(parts) / 10
        assert region.meta["EPOCH"] == 2016.0


def test_partitions_are_deterministic_bytes(refcat: Table) -> None:
    first, _ = write_partition(partition(refcat, nside=1024))
    second, manifest = write_partition(partition(refcat.copy(), nside=1024))
    assert first == second and len(first) > 1
    for blob in first.values():
        header = fits.open(io.BytesIO(blob))[1].header
        assert "DATE" not in header and "CHECKSUM" not in header
    region = load_region(first.get, manifest, float(np.median(refcat["ra"])), float(np.median(refcat["dec"])), 1.0)
    assert sorted(region["id"]) == sorted(refcat["id"])
    np.testing.assert_array_equal(np.sort(np.asarray(region["ra"])), np.sort(np.asarray(refcat["ra"])))


def test_partition_moves_positions_to_the_requested_epoch(refcat: Table) -> None:
    parts = partition(refcat, nside=32, epoch=2026.0)
    merged = Table(np.concatenate([np.asarray(t.as_array()) for t in parts.values()]))
    moved = apply_proper_motion(refcat, 2026.0)
    order = np.argsort(merged["id"])
    np.testing.assert_allclose(merged["ra"][order], moved["ra"][np.argsort(moved["id"])], rtol=0, atol=1e-12)
    assert all(t.meta["EPOCH"] == 2026.0 for t in parts.values())
    with pytest.raises(InvalidInput, match="power of two"):
        partition(refcat, nside=30)


def test_missing_partition_is_an_error(refcat: Table) -> None:
    blobs, manifest = write_partition(partition(refcat, nside=32))
    with pytest.raises(InvalidInput) as err:
        load_region(lambda pix: None, manifest, float(refcat["ra"][0]), float(refcat["dec"][0]), 0.1)
    assert err.value.code == "refcat.missing_partition"
    empty = load_region(blobs.get, manifest, 10.0, -40.0, 0.5)
    assert len(empty) == 0 and empty.colnames == manifest["columns"]


def test_sexagesimal_text_positions(tmp_path: object) -> None:
    path = f"{tmp_path}/sexa.csv"
    with open(path, "w") as fh:
        fh.write("name,RAJ2000,DEJ2000,Vmag\nA,10:00:24.0,+02:12:00.0,12.5\nB,00 00 00.0,-89 30 00,13.0\n")
    table = read_table(path, epoch=2000.0)
    np.testing.assert_allclose(table["ra"], [150.1, 0.0], atol=1e-9)
    np.testing.assert_allclose(table["dec"], [2.2, -89.5], atol=1e-9)
    assert table.meta["BANDS"] == "V" and table.meta["EPOCH"] == 2000.0
