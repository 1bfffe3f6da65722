"""The schema on real SQLite and PostgreSQL: migrations, drift, constraints, idempotent writes, time zones."""

from __future__ import annotations

import multiprocessing
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, exc, inspect, select, text

from tests.fixtures.sql import free_port
from wisp.db import (
    Base,
    CalibSelection,
    Chip,
    Exposure,
    Filter,
    Instrument,
    Job,
    LineageEdge,
    OutboxMessage,
    Product,
    Quarantine,
    RawFrame,
    Source,
    check,
    current_revision,
    downgrade,
    head_revision,
    insert_ignore,
    make_engine,
    migrate,
    session_scope,
    upsert,
)
from wisp.errors import Transient

SHA = "ab" * 32


def _reference(engine: Engine) -> None:
    """An instrument with two chips and one filter."""
    with session_scope(engine) as s:
        s.add(Instrument(name="CAM", telescope="T1", definition={"chips": 2}))
        s.add_all([Chip(instrument="CAM", name=f"ccd{i}", gain=1.5, read_noise=4.0) for i in (1, 2)])
        s.add(Filter(instrument="CAM", name="r_SDSS", band="r"))


def _exposure(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(id="exp-1", instrument="CAM", sha256=SHA, object_key=f"raw/{SHA}",
                               filename="a.fits", size_bytes=2880, obstype="science", filter="r_SDSS",
                               n_chips=2, date_obs=datetime(2024, 1, 1, tzinfo=UTC))
    row.update(over)
    return row


def _raw(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(id="raw-1", exposure_id="exp-1", instrument="CAM", chip="ccd1", hdu_index=1,
                               obstype="science", filter="r_SDSS")
    row.update(over)
    return row


def test_migrate_up_down_up(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    migrate(empty_db_url)  # already at head: nothing to do
    downgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()


def test_models_match_migrations(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "target_metadata": Base.metadata})
        assert compare_metadata(ctx, Base.metadata) == []
        # Alembic does not compare CHECK constraints: compare their names here.
        insp = inspect(conn)
        for table in Base.metadata.sorted_tables:
            expected = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            assert {c["name"] for c in insp.get_check_constraints(table.name)} == expected, table.name


def test_seeded_project_and_user(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT id, name FROM projects")).all() == [(1, "default")]
        assert conn.execute(text("SELECT id, name FROM users")).all() == [(1, "wisp")]


def test_insert_ignore_is_idempotent(db_engine: Engine) -> None:
    _reference(db_engine)
    with session_scope(db_engine) as s:
        assert insert_ignore(s, Exposure, [_exposure()]) == 1
        no_filter = {k: v for k, v in _raw(id="raw-2", chip="ccd2", hdu_index=2).items() if k != "filter"}
        frames = [_raw(), no_filter]  # rows with different key sets
        assert insert_ignore(s, RawFrame, frames) == 2
    with session_scope(db_engine) as s:
        assert insert_ignore(s, Exposure, [_exposure()]) == 0
        assert insert_ignore(s, Exposure, [_exposure(id="exp-2")]) == 0  # same checksum: unique sha256
        assert insert_ignore(s, RawFrame, [*frames, _raw(id="raw-0", chip="ccd2", hdu_index=0)]) == 0
        assert insert_ignore(s, RawFrame, []) == 0
        other = _exposure(id="exp-3", sha256="cd" * 32, object_key="raw/cd")
        assert insert_ignore(s, Exposure, [_exposure(), other, other]) == 1
    with session_scope(db_engine) as s:
        assert s.scalar(select(RawFrame.privilege).where(RawFrame.id == "raw-1")) == 2
        assert s.scalar(select(RawFrame.project_id).where(RawFrame.id == "raw-1")) == 1
        assert s.get(Exposure, "exp-1") is not None
        assert s.scalar(select(RawFrame.filter).where(RawFrame.id == "raw-2")) is None


def test_upsert_counts_a_file_seen_again(db_engine: Engine) -> None:
    first, later = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    for seen in (first, later):
        row = dict(sha256=SHA, filename="bad.fits", source="upload", error_code="input.invalid",
                   message="no SIMPLE card", details={"hdu": 0}, first_seen=seen, last_seen=seen)
        with session_scope(db_engine) as s:
            upsert(s, Quarantine, row, key=["sha256"],
                   update={"seen_count": Quarantine.seen_count + 1, "last_seen": seen})
    with session_scope(db_engine) as s:
        q = s.scalars(select(Quarantine)).one()
        assert (q.seen_count, q.first_seen, q.last_seen, q.details) == (2, first, later, {"hdu": 0})


def test_session_scope_commits_or_rolls_back(db_engine: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(db_engine) as s:
        s.add(Instrument(name="CAM", telescope="T"))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(db_engine) as s:
        assert s.get(Instrument, "CAM") is None
        s.add(Instrument(name="CAM", telescope="T"))
    with session_scope(db_engine) as s:
        cam = s.get(Instrument, "CAM")
        assert cam is not None and cam.definition == {} and cam.created_at.tzinfo is not None


BAD_ROWS: list[tuple[str, Any, dict[str, Any]]] = [
    ("privilege 5", Exposure, _exposure(privilege=5)),
    ("private without owner", Exposure, _exposure(privilege=1)),
    ("obstype banana", Exposure, _exposure(obstype="banana")),
    ("unknown instrument", Exposure, _exposure(instrument="NOPE", filter=None)),
    ("unknown filter", Exposure, _exposure(filter="z_NOPE")),
    ("unknown exposure", RawFrame, _raw(exposure_id="exp-missing")),
    ("unknown chip", RawFrame, _raw(chip="ccd9")),
    ("is_valid 3", RawFrame, _raw(is_valid=3)),
    ("relation", LineageEdge, dict(activity_id="act-1", entity_id="x", entity_kind="product",
                                   relation="derivedFrom", role="")),
    ("status", Product, dict(id="prd-1", kind="master_bias", status="stale")),
    ("validity", Product, dict(id="prd-1", kind="master_bias", valid_from=datetime(2024, 2, 1, tzinfo=UTC),
                               valid_to=datetime(2024, 1, 1, tzinfo=UTC))),
    ("product of unknown frame", Product, dict(id="prd-1", kind="reduced", frame_id="raw-missing")),
    ("product of unknown exposure", Product, dict(id="prd-1", kind="reduced", exposure_id="exp-missing")),
    ("source of unknown product", Source, dict(product_id="prd-missing", number=1, ra_deg=1.0, dec_deg=2.0,
                                               x=0.0, y=0.0)),
    ("selection for unknown frame", CalibSelection, dict(frame_id="raw-missing", kind="bias", candidates=[],
                                                         reason="none")),
    ("job status", Job, dict(id="job-1", kind="reduce", target={}, status="paused")),
    ("job progress", Job, dict(id="job-1", kind="reduce", target={}, progress=1.5)),
]


@pytest.mark.parametrize(("case", "model", "row"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_constraints_are_enforced(db_engine: Engine, case: str, model: Any, row: dict[str, Any]) -> None:
    _reference(db_engine)
    with db_engine.begin() as conn:
        conn.execute(text("INSERT INTO activities (id, stage, code_version, params, started_at) "
                          "VALUES ('act-1', 'calib', '1', '{}', CURRENT_TIMESTAMP)"))
    if model is RawFrame:
        with session_scope(db_engine) as s:
            insert_ignore(s, Exposure, [_exposure()])
    with pytest.raises(exc.IntegrityError), session_scope(db_engine) as s:
        insert_ignore(s, model, [row])


def test_pipeline_tables_round_trip(db_engine: Engine) -> None:
    _reference(db_engine)
    with session_scope(db_engine) as s:
        insert_ignore(s, Exposure, [_exposure()])
        insert_ignore(s, RawFrame, [_raw(night="2024-01-01")])
        s.add(Product(id="prd-bias", kind="master_bias", instrument="CAM", chip="ccd1", stage="master_bias",
                      night="2024-01-01"))
        s.add(Product(id="prd-cat", kind="catalog", instrument="CAM", chip="ccd1", filter="r_SDSS",
                      stage="catalog", night="2024-01-01", field="F1", exposure_id="exp-1", frame_id="raw-1",
                      mjd_obs=60310.1, ra_deg=150.1, dec_deg=2.2, metrics={"fwhm_arcsec": 1.1}))
    with session_scope(db_engine) as s:
        # Ids from the sequence (BIGSERIAL) or INTEGER PRIMARY KEY (SQLite).
        s.add_all([Source(product_id="prd-cat", number=n, ra_deg=150.1, dec_deg=2.2, x=1.5, y=2.5,
                          mag=18.0 + n) for n in (1, 2)])
        s.add(CalibSelection(frame_id="raw-1", kind="bias", chosen_id="prd-bias", reason="Newest valid bias.",
                             candidates=[{"id": "prd-bias", "verdict": "chosen", "reason": "valid"}]))
        s.add(Job(id="job-1", kind="reduce", target={"night": "2024-01-01"}))
    with session_scope(db_engine) as s:
        assert [(r.id, r.flags) for r in s.scalars(select(Source).order_by(Source.id))] == [(1, 0), (2, 0)]
        cat = s.get(Product, "prd-cat")
        bias = s.get(Product, "prd-bias")
        assert cat is not None and bias is not None
        assert cat.frame is not None and cat.frame.night == "2024-01-01" and cat.exposure is not None
        assert (cat.metrics, bias.metrics, bias.frame_id) == ({"fwhm_arcsec": 1.1}, {}, None)
        sel = s.scalars(select(CalibSelection)).one()
        assert sel.chosen is bias and sel.candidates[0]["verdict"] == "chosen"
        assert sel.decided_at.tzinfo is not None
        job = s.get(Job, "job-1")
        assert job is not None and (job.status, job.progress, job.message) == ("queued", 0.0, "")
        first = job.updated_at
        job.status, job.progress = "running", 0.5
    with session_scope(db_engine) as s:
        job = s.get(Job, "job-1")
        assert job is not None and job.updated_at >= first and job.updated_at.tzinfo is not None
        s.delete(s.get(Product, "prd-cat"))  # its sources go with it (ON DELETE CASCADE)
    with session_scope(db_engine) as s:
        assert s.scalars(select(Source)).all() == []


def test_upgrade_keeps_existing_rows(empty_db_url: str) -> None:
    """0001 -> head on a database with data: SQLite copies products, which must keep rows and CHECKs."""
    migrate(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    try:
        _reference(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO products (id, kind, instrument, chip, params, status) "
                              "VALUES ('prd-1', 'master_bias', 'CAM', 'ccd1', '{\"n\": 5}', 'ok')"))
        migrate(empty_db_url)
        with session_scope(engine) as s:
            p = s.get(Product, "prd-1")
            assert p is not None
            assert (p.kind, p.chip, p.params, p.metrics, p.night, p.frame_id) == (
                "master_bias", "ccd1", {"n": 5}, {}, None, None)
        with pytest.raises(exc.IntegrityError), session_scope(engine) as s:
            insert_ignore(s, Product, [dict(id="prd-2", kind="master_bias", status="stale")])
        with pytest.raises(exc.IntegrityError), session_scope(engine) as s:
            insert_ignore(s, Product, [dict(id="prd-2", kind="reduced", frame_id="raw-missing")])
    finally:
        engine.dispose()
    downgrade(empty_db_url, "0001")
    assert current_revision(empty_db_url) == "0001"
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, params FROM products")).one()[0] == "prd-1"
            assert "night" not in {c["name"] for c in inspect(conn).get_columns("raw_frames")}
    finally:
        engine.dispose()


def test_timestamps_are_aware_utc(db_engine: Engine) -> None:
    _reference(db_engine)
    cet = timezone(timedelta(hours=1))
    start = datetime(2024, 1, 1, 0, 30, tzinfo=cet)  # 2023-12-31 23:30 UTC
    with session_scope(db_engine) as s:
        s.add(Product(id="prd-1", kind="master_bias", instrument="CAM", chip="ccd1", valid_from=start,
                      valid_to=start + timedelta(days=1)))
    with session_scope(db_engine) as s:
        p = s.get(Product, "prd-1")
        assert p is not None and p.valid_from is not None
        assert p.valid_from == start and p.valid_from.utcoffset() == timedelta(0)
        assert p.created_at.tzinfo is not None
        assert abs(datetime.now(UTC) - p.created_at) < timedelta(minutes=5)
        # Comparison happens in UTC on both dialects, whatever offset the parameter has.
        at = datetime(2023, 12, 31, 23, 45, tzinfo=UTC).astimezone(timezone(timedelta(hours=-8)))
        hit = select(Product.id).where(Product.valid_from <= at, Product.valid_to > at)
        assert s.scalars(hit).all() == ["prd-1"]
        raw = s.execute(text("SELECT created_at FROM instruments")).scalar_one()
        assert raw is not None  # server default filled it
    with pytest.raises(exc.StatementError, match="naive"), session_scope(db_engine) as s:
        s.add(OutboxMessage(subject="x", msg_id="m1", payload=b"", published_at=datetime(2024, 1, 1)))


def test_json_refuses_nan_on_both(db_engine: Engine) -> None:
    # SQLAlchemy wraps the serializer's ValueError on SQLite; psycopg raises it as it is.
    with pytest.raises((exc.StatementError, ValueError), match="JSON"), session_scope(db_engine) as s:
        s.add(Instrument(name="CAM", telescope="T", definition={"gain": float("nan")}))


def test_sqlite_engine_settings(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_lost_connection_is_transient(pg_url: str, pg_admin_url: str) -> None:
    engine = make_engine(pg_url)
    admin = make_engine(pg_admin_url)
    try:
        with pytest.raises(Transient, match="PostgreSQL database"), session_scope(engine) as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with admin.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            s.execute(text("SELECT 1"))
    finally:
        engine.dispose()
        admin.dispose()


def _migrate_in_child(url: str, cwd: str, start: Any, results: Any) -> None:
    os.chdir(cwd)  # the package finds its migrations from any working directory
    start.wait(30)
    try:
        migrate(url)
        results.put("ok")
    except Exception as error:  # report to the parent instead of dying silently
        results.put(f"{type(error).__name__}: {error}")


def test_concurrent_migrate(empty_db_url: str, tmp_path: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_child, args=(empty_db_url, str(tmp_path), start, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes == ["ok", "ok"]
    assert current_revision(empty_db_url) == head_revision()
    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() == 1
    finally:
        engine.dispose()


def test_check(db_url: str) -> None:
    check(db_url)


def test_check_unreachable_postgres_is_transient_and_quiet() -> None:
    url = f"postgresql://wisp:pa55-w0rd-xyz@127.0.0.1:{free_port()}/surveydb"
    t0 = time.monotonic()
    with pytest.raises(Transient) as caught:
        check(url)
    assert time.monotonic() - t0 < 5
    error = caught.value
    assert "127.0.0.1" in error.message and "surveydb" in error.message
    assert "pa55-w0rd-xyz" not in str(error) and "pa55-w0rd-xyz" not in repr(error.to_dict())
    assert error.__cause__ is None and error.__suppress_context__
