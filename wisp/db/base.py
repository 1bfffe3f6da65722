"""Declarative base, constraint naming, vocabularies and the column groups many tables share."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    CheckConstraint,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

from wisp.db.types import JSONType, UTCDateTime, utcnow

if TYPE_CHECKING:
    from wisp.db.models.access import Project, User

#: Stable constraint names on every dialect (Alembic needs names to alter or drop constraints).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Access (DESIGN.md §9, Astro-WISE privileges): who may see a row.
PRIVILEGE_PRIVATE = 1  #: only the owner (MyDB)
PRIVILEGE_PROJECT = 2  #: members of the row's project
PRIVILEGE_USERS = 3  #: every authenticated user
PRIVILEGE_WORLD = 4  #: anybody
#: The project and user seeded by the first migration (ids 1): the owner of system-made rows.
DEFAULT_PROJECT_ID = 1
DEFAULT_PROJECT = "default"
SYSTEM_USER = "wisp"

# User validity of a frame or product (DESIGN.md §6).
IS_VALID_BAD = 0
IS_VALID_OK = 1
IS_VALID_QUALIFIED = 2

# Vocabularies enforced by CHECK constraints. Adding a value needs a migration.
OBSTYPES = ("bias", "dark", "flat", "domeflat", "skyflat", "science", "standard", "focus", "other")
FILE_SOURCES = ("upload", "watch", "command")
PRODUCT_STATUSES = ("ok", "outdated")
ACTIVITY_STATUSES = ("running", "succeeded", "failed")
ENTITY_KINDS = ("exposure", "raw_frame", "product")
RELATIONS = ("used", "wasGeneratedBy")
DEAD_LETTER_KINDS = ("invalid", "bug", "exhausted")
MEMBER_ROLES = ("member", "admin")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def one_of(column: str, values: Iterable[str]) -> str:
    """SQL for a CHECK that ``column`` is one of ``values`` (NULL passes, as for every CHECK)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Base of every Wisp table; ``Base.metadata`` is what Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - read by SQLAlchemy at class creation
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        float: Double(),
        bytes: LargeBinary(),
        str: String(),
    }


def created_at_column(comment: str = "When the row was written (UTC)") -> Mapped[datetime]:
    """A non-null creation time, set by Python (aware UTC) or by the database if inserted raw."""
    return mapped_column(UTCDateTime(), default=utcnow, server_default=func.current_timestamp(),
                         comment=comment)


class AccessMixin:
    """Astro-WISE access columns: project, owner and privilege level (see :func:`access_checks`)."""

    project_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("projects.id"), default=DEFAULT_PROJECT_ID, server_default=text("1"),
        comment="Project the row belongs to (projects.id); default: the seeded 'default' project")
    owner_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id"),
        comment="User who owns the row (users.id); NULL for rows made by the system")
    privilege: Mapped[int] = mapped_column(
        Integer, default=PRIVILEGE_PROJECT, server_default=text("2"),
        comment="Visibility: 1 private to owner, 2 project, 3 all users, 4 world")

    # Relationships also tell the ORM to insert projects/users before the rows that refer to them.
    @declared_attr
    def project(cls) -> Mapped[Project | None]:
        return relationship("Project")

    @declared_attr
    def owner(cls) -> Mapped[User | None]:
        return relationship("User")


def access_checks() -> list[CheckConstraint]:
    """CHECKs for :class:`AccessMixin`: level 1..4, a private row has an owner, a project row a project."""
    return [
        CheckConstraint("privilege BETWEEN 1 AND 4", name="privilege"),
        CheckConstraint(
            "(privilege <> 1 OR owner_id IS NOT NULL) AND (privilege <> 2 OR project_id IS NOT NULL)",
            name="privilege_scope"),
    ]


class QualityMixin:
    """System quality flags and the user's validity verdict (DESIGN.md §6)."""

    quality_flags: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"),
        comment="Bitmask of system quality flags set by QC; 0 = nothing flagged")
    is_valid: Mapped[int] = mapped_column(
        Integer, default=IS_VALID_OK, server_default=text("1"),
        comment="User verdict: 0 bad, 1 ok, 2 qualified (usable with care)")


def quality_checks() -> list[CheckConstraint]:
    """CHECKs for :class:`QualityMixin`."""
    return [
        CheckConstraint("is_valid IN (0, 1, 2)", name="is_valid"),
        CheckConstraint("quality_flags >= 0", name="quality_flags"),
    ]
