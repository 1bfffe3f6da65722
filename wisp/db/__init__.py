"""Wisp's SQL database: models, engines, sessions, idempotent writes and migrations.

The database is the system of record (DESIGN.md §2): SQLite for one host, PostgreSQL at scale, the same
schema on both, created and upgraded only by :func:`migrate`.
"""

from sqlalchemy.orm import Session

from wisp.db.base import (
    DEFAULT_PROJECT,
    DEFAULT_PROJECT_ID,
    IS_VALID_BAD,
    IS_VALID_OK,
    IS_VALID_QUALIFIED,
    OBSTYPES,
    PRIVILEGE_PRIVATE,
    PRIVILEGE_PROJECT,
    PRIVILEGE_USERS,
    PRIVILEGE_WORLD,
    SYSTEM_USER,
    Base,
)
from wisp.db.engine import check, describe, is_transient, make_engine, normalise_url
from wisp.db.migrate import alembic_config, current_revision, downgrade, head_revision, migrate
from wisp.db.models import (
    Activity,
    CalibSelection,
    Chip,
    DeadLetter,
    Exposure,
    Filter,
    IngestedFile,
    Instrument,
    Job,
    LineageEdge,
    Membership,
    OutboxMessage,
    Product,
    Project,
    Quarantine,
    RawFrame,
    Source,
    User,
)
from wisp.db.session import insert_ignore, session_factory, session_scope, table, upsert
from wisp.db.types import JSONType, UTCDateTime, utcnow

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_PROJECT_ID",
    "IS_VALID_BAD",
    "IS_VALID_OK",
    "IS_VALID_QUALIFIED",
    "OBSTYPES",
    "PRIVILEGE_PRIVATE",
    "PRIVILEGE_PROJECT",
    "PRIVILEGE_USERS",
    "PRIVILEGE_WORLD",
    "SYSTEM_USER",
    "Activity",
    "Base",
    "CalibSelection",
    "Chip",
    "DeadLetter",
    "Exposure",
    "Filter",
    "IngestedFile",
    "Instrument",
    "JSONType",
    "Job",
    "LineageEdge",
    "Membership",
    "OutboxMessage",
    "Product",
    "Project",
    "Quarantine",
    "RawFrame",
    "Session",
    "Source",
    "UTCDateTime",
    "User",
    "alembic_config",
    "check",
    "current_revision",
    "describe",
    "downgrade",
    "head_revision",
    "insert_ignore",
    "is_transient",
    "make_engine",
    "migrate",
    "normalise_url",
    "session_factory",
    "session_scope",
    "table",
    "upsert",
    "utcnow",
]
