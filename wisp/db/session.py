"""Sessions with commit/rollback, and idempotent inserts (insert-or-ignore, DESIGN.md §5)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.orm import Session, sessionmaker

from wisp.db.base import Base
from wisp.db.engine import is_transient, transient_error


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(bind: Engine | sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises.

    "Database unavailable or busy" errors (connection lost, SQLite locked, PostgreSQL serialization
    failure, ...) are re-raised as :class:`wisp.errors.Transient`; every other error passes unchanged.
    """
    session = bind() if isinstance(bind, sessionmaker) else Session(bind=bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except Exception as error:
        with suppress(Exception):  # the connection may be gone; the original error is what matters
            session.rollback()
        if is_transient(error):
            engine = session.get_bind()
            raise transient_error(error, engine.engine.url) from error
        raise
    finally:
        session.close()


def _table(model: type[Base] | Table) -> Table:
    table = model if isinstance(model, Table) else model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model!r} is not mapped to a table")
    return table


def _insert_for(session: Session) -> Any:
    """The dialect's INSERT construct (the one with ``on_conflict_do_*``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise NotImplementedError(f"no insert-or-ignore for {dialect}")  # make_engine accepts only these two


def insert_ignore(session: Session, model: type[Base] | Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert ``rows`` (dicts keyed by column name), skipping any that would violate a unique key.

    Returns how many rows were inserted; rows already present (same primary key or any unique
    column) are left untouched. NOT NULL, CHECK and foreign-key violations still raise. Pending ORM
    objects in ``session`` are flushed first. Runs in the session's transaction (no commit).
    """
    if not rows:
        return 0
    table = _table(model)
    insert = _insert_for(session)
    session.flush()
    # An executemany needs the same keys in every row: group rows by their key set, keeping order.
    groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    stmt = insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
    inserted = 0
    for group in groups.values():
        inserted += len(session.execute(stmt, list(group)).all())
    return inserted


def upsert(session: Session, model: type[Base] | Table, row: Mapping[str, Any], key: Sequence[str],
           update: Mapping[str, Any]) -> None:
    """Insert ``row``, or if a row with the same ``key`` columns exists, apply ``update`` to it instead.

    ``update`` maps column names to values or SQL expressions on the existing row, e.g. for a file seen
    again: ``{"seen_count": Quarantine.seen_count + 1, "last_seen": utcnow()}``. ``key`` must be the
    primary key or a unique constraint. One statement, atomic on both dialects.
    """
    table = _table(model)
    session.flush()
    stmt = _insert_for(session)(table).values(dict(row))
    session.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update)))


def table(name: str) -> Table:
    """A Wisp table by name (for Core queries)."""
    return Base.metadata.tables[name]
