"""Engines for SQLite (embedded default) and PostgreSQL (at scale), readiness and error translation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from wisp.errors import ConfigError, Transient

SQLITE_BUSY_TIMEOUT_S = 30.0  #: how long SQLite waits for another writer before "database is locked"
PG_CONNECT_TIMEOUT_S = 5  #: TCP/authentication timeout for a new PostgreSQL connection


def normalise_url(url: str | URL) -> URL:
    """Parse ``url``; ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3)."""
    try:
        u = make_url(url)
    except exc.ArgumentError:
        raise ConfigError("database URL cannot be parsed (expected sqlite:///PATH or postgresql://...)",
                          code="config.invalid") from None
    backend = u.drivername.split("+")[0]
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+psycopg")
    if backend != "sqlite":
        raise ConfigError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...",
                          code="config.invalid")
    return u


def describe(url: str | URL) -> str:
    """Where a URL points, for messages: never the user's password."""
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername.startswith("sqlite"):
        return f"SQLite database {u.database or ':memory:'}"
    port = f":{u.port}" if u.port else ""
    return f"PostgreSQL database {u.database or '(default)'} on {u.host or 'local socket'}{port}"


def _json_dumps(value: Any) -> str:
    # NaN/Infinity are not JSON: PostgreSQL refuses them, so refuse them on SQLite too.
    return json.dumps(value, allow_nan=False)


def is_memory_url(u: URL) -> bool:
    """True for an in-memory SQLite URL."""
    return u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")  # no-op (stays 'memory') for in-memory databases
    finally:
        cur.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with Wisp's settings; extra ``kwargs`` go to :func:`sqlalchemy.create_engine`.

    SQLite: WAL journal, 30 s busy timeout, foreign keys ON, usable from several threads; the parent
    directory of the file is created. PostgreSQL: psycopg 3, pre-ping, 5 s connect timeout.
    pysqlite's default transaction handling is kept on purpose: a transaction begins at the first
    write, so readers never hold a snapshot that would later block their upgrade to a writer.
    """
    u = normalise_url(url)
    kwargs.setdefault("json_serializer", _json_dumps)
    if u.drivername.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        connect_args.update(kwargs.pop("connect_args", {}))
        if is_memory_url(u):
            kwargs.setdefault("poolclass", StaticPool)  # one shared in-memory database
        elif u.database:
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    connect_args = {} if "connect_timeout" in u.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    connect_args.update(kwargs.pop("connect_args", {}))
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(u, connect_args=connect_args, **kwargs)


def _reason(error: BaseException, url: URL) -> str:
    orig = error.orig if isinstance(error, exc.DBAPIError) and error.orig is not None else error
    lines = str(orig).strip().splitlines()
    reason = lines[0] if lines else type(orig).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


def is_transient(error: BaseException) -> bool:
    """True when ``error`` means "the database is unavailable or busy now": retry later."""
    if isinstance(error, exc.DisconnectionError | exc.TimeoutError):
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    if isinstance(orig, sqlite3.OperationalError):
        msg = str(orig).lower()
        return any(s in msg for s in ("locked", "busy", "unable to open", "disk i/o"))
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    # Connection loss, admin shutdown, serialization failure, deadlock, lock/statement timeout.
    return isinstance(orig, psycopg.OperationalError)


def transient_error(error: BaseException, url: URL, action: str = "is unavailable") -> Transient:
    """A :class:`Transient` naming the database (never the password) and the driver's reason."""
    where = describe(url)
    return Transient(f"{where} {action}: {_reason(error, url)}", database=where)


def check(engine: Engine | str) -> None:
    """Readiness: ``SELECT 1``; raise :class:`Transient` naming host and database if it fails."""
    own = isinstance(engine, str)
    eng = make_engine(engine) if isinstance(engine, str) else engine
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (exc.SQLAlchemyError, OSError) as error:
        raise transient_error(error, eng.url, "is unreachable") from None
    finally:
        if own:
            eng.dispose()
