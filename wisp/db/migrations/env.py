"""Alembic environment for Wisp: migrations run against ``Base.metadata`` on SQLite and PostgreSQL.

Called by :func:`wisp.db.migrate` (which passes an open connection in ``config.attributes``) or by the
``alembic`` command (URL from ``-x url=...`` or ``WISP_DB_URL``).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

import wisp.db.models  # noqa: F401 - registers every table on Base.metadata
from wisp.db.base import Base
from wisp.db.engine import make_engine, normalise_url
from wisp.db.types import UTCDateTime
from wisp.errors import ConfigError

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (config.attributes.get("wisp_url") or context.get_x_argument(as_dictionary=True).get("url")
           or os.environ.get("WISP_DB_URL") or config.get_main_option("sqlalchemy.url"))
    if not url:
        raise ConfigError("no database URL: set WISP_DB_URL or pass -x url=...", variable="WISP_DB_URL")
    return str(url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render Wisp's own types as plain SQLAlchemy types, so migrations never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying the table
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=normalise_url(_url()), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against the connection given by :func:`wisp.db.migrate`, or a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
