"""Schema migrations with Alembic, run programmatically and safely from several processes at once."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, exc, text
from sqlalchemy.pool import NullPool

from wisp.db.engine import describe, is_memory_url, make_engine, transient_error
from wisp.errors import Transient

_HERE = Path(__file__).resolve().parent  # holds alembic.ini and migrations/ (package data)
#: Key of the PostgreSQL advisory lock that serialises migrations ("wisp" in ASCII, then "mig").
PG_LOCK_KEY = 0x7769_7370_6D69_67
LOCK_TIMEOUT_S = 600.0  #: how long a process waits for another one's migration, in s


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration shipped inside the package (works from any cwd or an installed wheel)."""
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE / "migrations").replace("%", "%%"))
    if url is not None:
        cfg.attributes["wisp_url"] = url
    return cfg


def head_revision() -> str:
    """The newest revision id in the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None`` for an empty database)."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head", timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest).

    Safe to call from several processes at start-up: PostgreSQL serialises on an advisory lock, SQLite
    on a lock file next to the database (``<file>.migrate-lock``); the later callers find the schema
    current and do nothing. Raises :class:`Transient` if the database is unreachable or the lock is
    not obtained within ``timeout_s`` seconds.
    """
    _run(url, lambda cfg: command.upgrade(cfg, revision), timeout_s)


def downgrade(url: str, revision: str = "base", timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Downgrade to ``revision`` (default: empty schema). For tests and operators, never automatic."""
    _run(url, lambda cfg: command.downgrade(cfg, revision), timeout_s)


def _run(url: str, action: Callable[[Config], None], timeout_s: float) -> None:
    engine = make_engine(url, poolclass=NullPool)  # closing a connection really ends its session
    try:
        with _sqlite_file_lock(engine, timeout_s), engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                _pg_lock(conn, engine, timeout_s)
            try:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                action(cfg)
                conn.commit()
            finally:
                if postgres:
                    _pg_unlock(conn)
    except (exc.OperationalError, exc.InterfaceError) as error:
        raise transient_error(error, engine.url, "could not be migrated") from error
    finally:
        engine.dispose()


def _pg_lock(conn: Connection, engine: Engine, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
        conn.commit()  # hold no snapshot while waiting; the session-level lock outlives the transaction
        if got:
            return
        if time.monotonic() > deadline:
            raise Transient(f"{describe(engine.url)}: another process has been migrating it for "
                            f"more than {timeout_s:.0f} s", database=describe(engine.url))
        time.sleep(0.1)


def _pg_unlock(conn: Connection) -> None:
    try:
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        conn.commit()
    except exc.SQLAlchemyError:
        pass  # the connection is closed next, which releases the lock as well


@contextmanager
def _sqlite_file_lock(engine: Engine, timeout_s: float) -> Iterator[None]:
    url = engine.url
    if not url.drivername.startswith("sqlite") or is_memory_url(url) or not url.database:
        yield
        return
    path = Path(url.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Transient(f"{describe(url)}: another process has been migrating it for "
                                    f"more than {timeout_s:.0f} s", database=describe(url)) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
