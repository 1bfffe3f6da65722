"""The SQL layer without a server: URLs, the UTC type, error classification, and schema conventions."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import CheckConstraint, exc
from sqlalchemy.dialects import postgresql, sqlite

from wisp.db import Base, UTCDateTime, describe, is_transient, normalise_url
from wisp.db.base import one_of
from wisp.errors import ConfigError


@pytest.mark.parametrize("url", ["postgresql://u:pw@db:5432/wisp", "postgres://u:pw@db/wisp",
                                 "postgresql+psycopg://u:pw@db/wisp"])
def test_postgres_urls_use_psycopg3(url: str) -> None:
    assert normalise_url(url).drivername == "postgresql+psycopg"


def test_sqlite_url_kept_and_others_refused() -> None:
    assert normalise_url("sqlite:////tmp/x.sqlite").database == "/tmp/x.sqlite"
    with pytest.raises(ConfigError):
        normalise_url("mysql://u@h/db")


def test_describe_never_shows_the_password() -> None:
    text = describe(normalise_url("postgresql://wisp:hunter2@db.example:6543/survey"))
    assert "hunter2" not in text
    assert "db.example:6543" in text and "survey" in text


def test_utc_type_stores_utc_and_returns_aware() -> None:
    t = UTCDateTime()
    local = datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    on_sqlite = t.process_bind_param(local, sqlite.dialect())
    assert on_sqlite == datetime(2024, 3, 2, 4, 30) and on_sqlite.tzinfo is None
    assert t.process_bind_param(local, postgresql.dialect()) == local
    back = t.process_result_value(datetime(2024, 3, 2, 4, 30), sqlite.dialect())
    assert back is not None and back.tzinfo is UTC and back == local


def test_utc_type_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2024, 1, 1), sqlite.dialect())


def test_transient_classification() -> None:
    locked = exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    missing = exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))
    assert is_transient(locked)
    assert not is_transient(missing)
    assert not is_transient(ValueError("x"))


def test_one_of_renders_a_quoted_list() -> None:
    assert one_of("kind", ("a", "b")) == "kind IN ('a', 'b')"


def test_every_column_and_table_is_documented() -> None:
    for table in Base.metadata.tables.values():
        assert table.comment, f"table {table.name} has no comment"
        for column in table.columns:
            assert column.comment, f"{table.name}.{column.name} has no comment"


def test_constraint_names_are_explicit_and_fit_postgresql() -> None:
    for table in Base.metadata.tables.values():
        items = [*table.constraints, *table.indexes]
        for item in items:
            name = getattr(item, "name", None)
            assert isinstance(name, str), f"unnamed {type(item).__name__} on {table.name}"
            assert len(name) <= 63, name
            if isinstance(item, CheckConstraint):
                assert name.startswith(f"ck_{table.name}_"), name


def test_access_tables_carry_privilege_checks() -> None:
    for name in ("exposures", "raw_frames", "products"):
        checks = {c.name for c in Base.metadata.tables[name].constraints if isinstance(c, CheckConstraint)}
        assert {f"ck_{name}_privilege", f"ck_{name}_privilege_scope"} <= checks
