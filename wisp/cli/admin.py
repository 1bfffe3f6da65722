"""Operator commands: ``wisp migrate`` applies the SQL migrations (a Kubernetes Job runs it)."""

from __future__ import annotations

import argparse
from typing import Any

from wisp.config import load_settings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("migrate", help="apply the database migrations ($WISP_DB_URL)")
    p.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from wisp.db import migrate

    settings = load_settings()
    migrate(settings.db_url)
    print("database schema is up to date")
    return 0
