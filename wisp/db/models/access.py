"""Projects, users and memberships (DESIGN.md §9)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from wisp.db.base import MEMBER_ROLES, Base, created_at_column, one_of


class Project(Base):
    """A group of users sharing privilege-2 data."""

    __tablename__ = "projects"
    __table_args__ = ({"comment": "Projects: the unit of privilege-2 (project) visibility"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="Project number")
    name: Mapped[str] = mapped_column(String, unique=True, comment="Project name, unique")
    description: Mapped[str] = mapped_column(String, default="", server_default="",
                                             comment="Free text")
    created_at: Mapped[datetime] = created_at_column()


class User(Base):
    """Somebody (or a service account) who owns rows and belongs to projects."""

    __tablename__ = "users"
    __table_args__ = ({"comment": "Users: owners of privilege-1 rows and members of projects"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="User number")
    name: Mapped[str] = mapped_column(String, unique=True, comment="Login name, unique")
    created_at: Mapped[datetime] = created_at_column()


class Membership(Base):
    """A user's role in a project."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint(one_of("role", MEMBER_ROLES), name="role"),
        {"comment": "Which users belong to which projects, and as what"},
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
                                         comment="The member (users.id)")
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True,
                                            index=True, comment="The project (projects.id)")
    role: Mapped[str] = mapped_column(String, default="member", server_default="member",
                                      comment="'member' (reads project data) or 'admin' (also manages it)")

    user: Mapped[User] = relationship()
    project: Mapped[Project] = relationship()
