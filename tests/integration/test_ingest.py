"""The ingestor against real SQL (SQLite and PostgreSQL) and real stores (filesystem and S3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.ingest.ingestor import Ingestor
from tests.fixtures import fitsfiles
from wisp.db import Base, make_engine, session_scope
from wisp.instruments import load_registry
from wisp.sim import SimResult
from wisp.store import FilesystemStore, ObjectStore, open_store

TABLES = ("exposures", "raw_frames", "ingested_files", "activities", "lineage_edges", "outbox", "quarantine")


def counts(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return {t: int(s.scalar(select(func.count()).select_from(Base.metadata.tables[t])) or 0) for t in TABLES}


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "fs":
        return FilesystemStore(tmp_path / "objects")
    settings = request.getfixturevalue("s3_settings")
    return open_store(settings)


@pytest.fixture
def ingestor(db_url: str, store: ObjectStore) -> Ingestor:
    return Ingestor(make_engine(db_url), store, load_registry(), max_pixels_per_hdu=50_000_000)


def test_night_ingests_once_with_rows_objects_and_events(ingestor: Ingestor, small_night: SimResult) -> None:
    first = [ingestor.ingest_path(p, filename=p.name, source="upload") for p in small_night.raw_files]
    assert [o.status for o in first] == ["ingested"] * len(small_night.raw_files)
    n_chips = 2
    assert all(len(o.frame_ids) == n_chips for o in first)
    before = counts(ingestor.engine)
    assert before["exposures"] == len(small_night.raw_files)
    assert before["raw_frames"] == n_chips * len(small_night.raw_files)
    # one FrameIngested per chip + one ExposureIngested per file, committed with the rows
    assert before["outbox"] == (n_chips + 1) * len(small_night.raw_files)
    assert len(list(ingestor.store.list("raw/"))) == len(small_night.raw_files)

    again = [ingestor.ingest_path(p, filename="renamed.fits", source="watch") for p in small_night.raw_files]
    assert [o.status for o in again] == ["duplicate"] * len(again)
    assert [o.frame_ids for o in again] == [o.frame_ids for o in first]  # same file, same ids
    assert counts(ingestor.engine) == before
    assert len(list(ingestor.store.list("raw/"))) == len(small_night.raw_files)


def test_normalised_metadata_of_a_science_frame(ingestor: Ingestor, small_night: SimResult) -> None:
    science = next(p for p in small_night.raw_files if "OBJECT" in p.name.upper() or "sci" in p.name)
    out = ingestor.ingest_path(science, filename=science.name, source="upload")
    table = Base.metadata.tables["raw_frames"]
    with session_scope(ingestor.engine) as s:
        rows = s.execute(select(table).where(table.c.exposure_id == out.exposure_id)
                         .order_by(table.c.hdu_index)).all()
    assert [r.chip for r in rows] == ["CCD1", "CCD2"] or [r.chip.lower() for r in rows] == ["ccd1", "ccd2"]
    assert {r.obstype for r in rows} == {"science"}
    assert {r.filter for r in rows} <= {"g", "r"}
    assert all(r.exptime == pytest.approx(120.0) for r in rows)
    assert all(r.date_obs.tzinfo is not None and r.ra_deg is not None for r in rows)


@pytest.mark.parametrize("breakage", ["truncated", "corrupt_header", "not_fits"])
def test_bad_files_are_rejected_precisely_and_leave_nothing(
        ingestor: Ingestor, small_night: SimResult, tmp_path: Path, breakage: str) -> None:
    src = small_night.raw_files[0]
    bad = tmp_path / f"{breakage}.fits"
    if breakage == "not_fits":
        fitsfiles.not_fits(bad)
    else:
        getattr(fitsfiles, breakage)(src, bad)
    out = ingestor.ingest_path(bad, filename=bad.name, source="upload")
    assert out.status == "rejected"
    assert out.error is not None
    expected = {"truncated": "fits.truncated", "corrupt_header": "fits.bad_keyword", "not_fits": "fits.not_fits"}
    assert out.error.code == expected[breakage], out.error.message
    assert bad.name in out.error.message
    after = counts(ingestor.engine)
    assert {k: v for k, v in after.items() if k != "quarantine"} == dict.fromkeys(TABLES[:-1], 0)
    assert after["quarantine"] == 1
    assert list(ingestor.store.list("raw/")) == []
    # the same bad file again: still one quarantine row, seen twice
    ingestor.ingest_path(bad, filename=bad.name, source="upload")
    q = Base.metadata.tables["quarantine"]
    with session_scope(ingestor.engine) as s:
        assert s.execute(select(q.c.seen_count, q.c.error_code)).one() == (2, expected[breakage])


def test_real_files_through_the_generic_camera(ingestor: Ingestor, shared_data: Path) -> None:
    m13 = sorted((shared_data / "m13-raw").glob("*.fits"))
    outcomes = [ingestor.ingest_path(p, filename=p.name, source="upload") for p in m13]
    assert [o.status for o in outcomes] == ["ingested"] * 5
    assert {o.instrument for o in outcomes} == {"generic:orion-ssdsi"}
    ntt = ingestor.ingest_path(shared_data / "sep-ntt" / "image.fits", filename="image.fits", source="upload")
    assert ntt.status == "rejected" and ntt.error is not None
    assert ntt.error.code == "header.missing_keyword"
    assert "IMAGETYP" in ntt.error.message and "image.fits" in ntt.error.message


def test_a_file_whose_instrument_is_unknown_names_what_it_saw(ingestor: Ingestor, small_night: SimResult,
                                                              tmp_path: Path) -> None:
    from astropy.io import fits

    path = tmp_path / "alien.fits"
    shutil.copy(small_night.raw_files[0], path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["INSTRUME"] = "ALIENCAM"
    out = ingestor.ingest_path(path, filename=path.name, source="upload")
    assert out.status == "rejected" and out.error is not None
    assert out.error.code == "instrument.unknown"
    assert "ALIENCAM" in out.error.message

