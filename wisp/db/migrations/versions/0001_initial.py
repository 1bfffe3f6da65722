"""Initial schema: instruments, access, raw data, products and lineage, operational records.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Written from ``alembic revision --autogenerate`` and reviewed by hand. A migration is a frozen snapshot:
it uses plain SQLAlchemy types and literal SQL, never Wisp's models or constants, so later code changes
cannot change what it does. ``tests/integration/test_db_schema.py`` checks it against the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import SchemaItem

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OBSTYPE_CHECK = ("obstype IN ('bias', 'dark', 'flat', 'domeflat', 'skyflat', 'science', 'standard', "
                 "'focus', 'other')")
SOURCE_CHECK = "source IN ('upload', 'watch', 'command')"
NOW = sa.text("CURRENT_TIMESTAMP")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _col(name: str, type_: sa.types.TypeEngine[Any], comment: str, *, null: bool = False,
         default: str | None = None, pk: bool = False) -> sa.Column[Any]:
    server_default = sa.text(default) if default is not None else None
    return sa.Column(name, type_, primary_key=pk, nullable=null, server_default=server_default,
                     comment=comment)


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=op.f(f"pk_{table}"))


def _fk(table: str, columns: list[str], target: str, target_columns: list[str],
        ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    """A foreign key named like the models' naming convention: fk_<table>_<first column>_<target>."""
    return sa.ForeignKeyConstraint(columns, [f"{target}.{c}" for c in target_columns],
                                   name=op.f(f"fk_{table}_{columns[0]}_{target}"), ondelete=ondelete)


def _created_at(comment: str = "When the row was written (UTC)") -> sa.Column[Any]:
    return sa.Column("created_at", _ts(), server_default=NOW, nullable=False, comment=comment)


def _access(table: str) -> list[SchemaItem]:
    """project_id / owner_id / privilege and their CHECKs (Astro-WISE privileges 1..4)."""
    return [
        sa.Column("project_id", sa.Integer(), server_default=sa.text("1"), nullable=True,
                  comment="Project the row belongs to (projects.id); default: the seeded 'default' project"),
        sa.Column("owner_id", sa.Integer(), nullable=True,
                  comment="User who owns the row (users.id); NULL for rows made by the system"),
        sa.Column("privilege", sa.Integer(), server_default=sa.text("2"), nullable=False,
                  comment="Visibility: 1 private to owner, 2 project, 3 all users, 4 world"),
        sa.CheckConstraint("privilege BETWEEN 1 AND 4", name=op.f(f"ck_{table}_privilege")),
        sa.CheckConstraint(
            "(privilege <> 1 OR owner_id IS NOT NULL) AND (privilege <> 2 OR project_id IS NOT NULL)",
            name=op.f(f"ck_{table}_privilege_scope")),
        _fk(table, ["owner_id"], "users", ["id"]),
        _fk(table, ["project_id"], "projects", ["id"]),
    ]


def _quality(table: str) -> list[SchemaItem]:
    """quality_flags (system bitmask) and is_valid (user verdict 0/1/2)."""
    return [
        sa.Column("quality_flags", sa.Integer(), server_default=sa.text("0"), nullable=False,
                  comment="Bitmask of system quality flags set by QC; 0 = nothing flagged"),
        sa.Column("is_valid", sa.Integer(), server_default=sa.text("1"), nullable=False,
                  comment="User verdict: 0 bad, 1 ok, 2 qualified (usable with care)"),
        sa.CheckConstraint("is_valid IN (0, 1, 2)", name=op.f(f"ck_{table}_is_valid")),
        sa.CheckConstraint("quality_flags >= 0", name=op.f(f"ck_{table}_quality_flags")),
    ]


def _pointing(where: str) -> list[SchemaItem]:
    """The observation columns shared by exposures and raw frames."""
    return [
        _col("exptime", sa.Double(), "Exposure time in s", null=True),
        _col("date_obs", _ts(), "Start of the exposure (UTC)", null=True),
        _col("mjd_obs", sa.Double(), "Start of the exposure, MJD (UTC) in days", null=True),
        _col("ra_deg", sa.Double(), f"{where} right ascension (ICRS) in degrees", null=True),
        _col("dec_deg", sa.Double(), f"{where} declination (ICRS) in degrees", null=True),
        _col("airmass", sa.Double(), "Airmass at the start (dimensionless)", null=True),
        _col("object", sa.String(), "OBJECT keyword: target or field name", null=True),
    ]


def upgrade() -> None:
    _upgrade_reference()
    _upgrade_raw()
    _upgrade_products()
    _upgrade_ops()
    # The default project and the system user (ids 1 in the new tables): rows made by the services
    # belong to them unless said otherwise.
    op.execute("INSERT INTO projects (name, description) VALUES ('default', 'Default project')")
    op.execute("INSERT INTO users (name) VALUES ('wisp')")
    op.execute("INSERT INTO memberships (user_id, project_id, role) SELECT u.id, p.id, 'admin' "
               "FROM users u, projects p WHERE u.name = 'wisp' AND p.name = 'default'")


def downgrade() -> None:
    # Children first; dropping a table drops its indexes.
    for table in ("raw_frames", "ingested_files", "exposures", "lineage_edges", "activities", "products",
                  "outbox", "dead_letters", "quarantine", "filters", "chips", "instruments", "memberships",
                  "users", "projects"):
        op.drop_table(table)


def _upgrade_reference() -> None:
    """Access (projects, users, memberships) and instruments (instruments, chips, filters)."""
    op.create_table(
        "projects",
        _col("id", sa.Integer(), "Project number", pk=True),
        _col("name", sa.String(), "Project name, unique"),
        _col("description", sa.String(), "Free text", default="''"),
        _created_at(),
        _pk("projects", "id"),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
        comment="Projects: the unit of privilege-2 (project) visibility",
    )
    op.create_table(
        "users",
        _col("id", sa.Integer(), "User number", pk=True),
        _col("name", sa.String(), "Login name, unique"),
        _created_at(),
        _pk("users", "id"),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
        comment="Users: owners of privilege-1 rows and members of projects",
    )
    op.create_table(
        "memberships",
        _col("user_id", sa.Integer(), "The member (users.id)", pk=True),
        _col("project_id", sa.Integer(), "The project (projects.id)", pk=True),
        _col("role", sa.String(), "'member' (reads project data) or 'admin' (also manages it)",
             default="'member'"),
        _pk("memberships", "user_id", "project_id"),
        _fk("memberships", ["user_id"], "users", ["id"], ondelete="CASCADE"),
        _fk("memberships", ["project_id"], "projects", ["id"], ondelete="CASCADE"),
        sa.CheckConstraint("role IN ('member', 'admin')", name=op.f("ck_memberships_role")),
        comment="Which users belong to which projects, and as what",
    )
    op.create_index("ix_memberships_project_id", "memberships", ["project_id"])

    op.create_table(
        "instruments",
        _col("name", sa.String(), "Instrument name, as in its description file (e.g. 'WFC')", pk=True),
        _col("telescope", sa.String(), "Telescope name"),
        _col("description", sa.String(), "Free text", default="''"),
        _col("definition", _json(), "The instrument description as loaded (JSON)"),
        _created_at(),
        _pk("instruments", "name"),
        comment="Instruments known to Wisp (one row per instrument description)",
    )
    op.create_table(
        "chips",
        _col("id", sa.Integer(), "Chip number (surrogate key)", pk=True),
        _col("instrument", sa.String(), "instruments.name"),
        _col("name", sa.String(), "Chip name, unique within the instrument (e.g. 'ccd1')"),
        _col("extname", sa.String(), "EXTNAME of the HDU that holds this chip, if named", null=True),
        _col("gain", sa.Double(), "Gain in e-/ADU", null=True),
        _col("read_noise", sa.Double(), "Read noise in e- (rms)", null=True),
        _col("saturation", sa.Double(), "Saturation level in ADU", null=True),
        _col("datasec", sa.String(), "Illuminated region, FITS section '[x1:x2,y1:y2]' (1-based)", null=True),
        _col("biassec", sa.String(), "Overscan region, FITS section '[x1:x2,y1:y2]' (1-based)", null=True),
        _pk("chips", "id"),
        _fk("chips", ["instrument"], "instruments", ["name"]),
        sa.UniqueConstraint("instrument", "name", name=op.f("uq_chips_instrument_name")),
        comment="Detectors of each instrument",
    )
    op.create_table(
        "filters",
        _col("instrument", sa.String(), "instruments.name", pk=True),
        _col("name", sa.String(), "Filter name as Wisp records it (e.g. 'r_SDSS')", pk=True),
        _col("band", sa.String(), "Photometric band (e.g. 'r')"),
        _pk("filters", "instrument", "name"),
        _fk("filters", ["instrument"], "instruments", ["name"]),
        comment="Filters of each instrument",
    )


def _upgrade_raw() -> None:
    """Exposures (one per raw file), raw frames (one per chip), the per-file ingest record."""
    op.create_table(
        "exposures",
        _col("id", sa.String(), "Deterministic id 'exp-<hash>' (wisp.ids)", pk=True),
        _col("instrument", sa.String(), "instruments.name"),
        _col("sha256", sa.String(), "sha256 of the raw file, 64 lowercase hex digits"),
        _col("object_key", sa.String(), "Key of the raw file in the object store"),
        _col("filename", sa.String(), "Original file name; informational only, never used as a key"),
        _col("size_bytes", sa.BigInteger(), "Raw file size in bytes"),
        _col("obstype", sa.String(), "Observation type: bias, dark, flat, science, ..."),
        _col("filter", sa.String(), "Filter name (filters.name); NULL when none applies", null=True),
        *_pointing("Pointing"),
        _col("n_chips", sa.Integer(), "Number of chips (raw frames) in the file"),
        _col("header", _json(), "Primary header as {keyword: value} (JSON)"),
        _created_at(),
        *_access("exposures"),
        _pk("exposures", "id"),
        _fk("exposures", ["instrument"], "instruments", ["name"]),
        _fk("exposures", ["instrument", "filter"], "filters", ["instrument", "name"]),
        sa.CheckConstraint(OBSTYPE_CHECK, name=op.f("ck_exposures_obstype")),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_exposures_size_bytes")),
        sa.UniqueConstraint("object_key", name=op.f("uq_exposures_object_key")),
        sa.UniqueConstraint("sha256", name=op.f("uq_exposures_sha256")),
        comment="Raw exposures: one row per ingested raw file",
    )
    op.create_index("ix_exposures_search", "exposures", ["instrument", "obstype", "filter", "mjd_obs"])
    op.create_index("ix_exposures_object", "exposures", ["object"])
    op.create_index("ix_exposures_dec_ra", "exposures", ["dec_deg", "ra_deg"])

    op.create_table(
        "raw_frames",
        _col("id", sa.String(), "Deterministic id 'raw-<hash>' (wisp.ids)", pk=True),
        _col("exposure_id", sa.String(), "exposures.id"),
        _col("instrument", sa.String(), "instruments.name"),
        _col("chip", sa.String(), "Chip name (chips.name within the instrument)"),
        _col("hdu_index", sa.Integer(), "Index of the HDU in the raw file (0 = primary)"),
        _col("extname", sa.String(), "EXTNAME of the HDU, if any", null=True),
        _col("obstype", sa.String(), "Observation type, as for the exposure"),
        _col("filter", sa.String(), "Filter name (filters.name); NULL when none applies", null=True),
        *_pointing("Chip centre (or pointing)"),
        _col("naxis1", sa.Integer(), "Image width in pixels (NAXIS1)", null=True),
        _col("naxis2", sa.Integer(), "Image height in pixels (NAXIS2)", null=True),
        _col("bitpix", sa.Integer(), "FITS BITPIX of the stored pixels (8, 16, 32, -32, -64)", null=True),
        _col("header", _json(), "Extension header as {keyword: value} (JSON)"),
        _created_at(),
        *_access("raw_frames"),
        *_quality("raw_frames"),
        _pk("raw_frames", "id"),
        _fk("raw_frames", ["exposure_id"], "exposures", ["id"]),
        _fk("raw_frames", ["instrument"], "instruments", ["name"]),
        _fk("raw_frames", ["instrument", "chip"], "chips", ["instrument", "name"]),
        _fk("raw_frames", ["instrument", "filter"], "filters", ["instrument", "name"]),
        sa.CheckConstraint(OBSTYPE_CHECK, name=op.f("ck_raw_frames_obstype")),
        sa.CheckConstraint("hdu_index >= 0", name=op.f("ck_raw_frames_hdu_index")),
        sa.UniqueConstraint("exposure_id", "chip", name=op.f("uq_raw_frames_exposure_id_chip")),
        sa.UniqueConstraint("exposure_id", "hdu_index", name=op.f("uq_raw_frames_exposure_id_hdu_index")),
        comment="Raw frames: one row per chip of each exposure",
    )
    op.create_index("ix_raw_frames_search", "raw_frames",
                    ["instrument", "chip", "filter", "obstype", "mjd_obs"])
    op.create_index("ix_raw_frames_object", "raw_frames", ["object"])
    op.create_index("ix_raw_frames_dec_ra", "raw_frames", ["dec_deg", "ra_deg"])

    op.create_table(
        "ingested_files",
        _col("sha256", sa.String(), "sha256 of the file, 64 lowercase hex digits", pk=True),
        _col("exposure_id", sa.String(), "exposures.id"),
        _col("filename", sa.String(), "File name when first ingested (informational)"),
        _col("source", sa.String(), "How it arrived first: 'upload', 'watch' or 'command'"),
        _col("first_ingested", _ts(), "When it was first ingested (UTC)"),
        _col("last_seen", _ts(), "When it was last offered again (UTC)"),
        _col("times_seen", sa.Integer(), "How many times the file was offered"),
        _pk("ingested_files", "sha256"),
        _fk("ingested_files", ["exposure_id"], "exposures", ["id"]),
        sa.CheckConstraint(SOURCE_CHECK, name=op.f("ck_ingested_files_source")),
        sa.CheckConstraint("times_seen >= 1", name=op.f("ck_ingested_files_times_seen")),
        comment="Files ingest accepted, keyed by checksum (duplicate detection)",
    )
    op.create_index("ix_ingested_files_exposure_id", "ingested_files", ["exposure_id"])


def _upgrade_products() -> None:
    """Products and PROV lineage (activities, edges)."""
    op.create_table(
        "products",
        _col("id", sa.String(), "Deterministic id: hash of stage, inputs, parameters, code version",
             pk=True),
        _col("kind", sa.String(), "What it is: 'master_bias', 'master_flat', 'reduced', 'coadd', ..."),
        _col("instrument", sa.String(), "instruments.name; NULL if not tied to one", null=True),
        _col("chip", sa.String(), "Chip name; NULL for whole-exposure or sky products", null=True),
        _col("filter", sa.String(), "Filter name; NULL where the filter does not matter", null=True),
        _col("object_key", sa.String(),
             "Key of the product's file in the object store; NULL if it has no file", null=True),
        _col("sha256", sa.String(), "sha256 of the stored file, 64 lowercase hex digits", null=True),
        _col("size_bytes", sa.BigInteger(), "Stored file size in bytes", null=True),
        _col("valid_from", _ts(), "Calibrations: start of the validity range (UTC, inclusive)", null=True),
        _col("valid_to", _ts(), "Calibrations: end of the validity range (UTC, exclusive); NULL = open-ended",
             null=True),
        _col("status", sa.String(), "'ok', or 'outdated' when an input was marked invalid or superseded",
             default="'ok'"),
        _col("params", _json(), "Parameters it was made with (JSON)"),
        _created_at("When it was made (UTC); among valid calibrations the newest eclipses older ones"),
        *_access("products"),
        *_quality("products"),
        _pk("products", "id"),
        _fk("products", ["instrument"], "instruments", ["name"]),
        _fk("products", ["instrument", "chip"], "chips", ["instrument", "name"]),
        _fk("products", ["instrument", "filter"], "filters", ["instrument", "name"]),
        sa.CheckConstraint("status IN ('ok', 'outdated')", name=op.f("ck_products_status")),
        sa.CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from",
                           name=op.f("ck_products_validity")),
        sa.CheckConstraint("size_bytes IS NULL OR size_bytes >= 0", name=op.f("ck_products_size_bytes")),
        sa.UniqueConstraint("object_key", name=op.f("uq_products_object_key")),
        comment="Products made by the stages (one row per product)",
    )
    op.create_index("ix_products_calib", "products", ["kind", "instrument", "chip", "filter", "valid_from"])
    op.create_index("ix_products_created_at", "products", ["created_at"])
    op.create_index("ix_products_sha256", "products", ["sha256"])

    op.create_table(
        "activities",
        _col("id", sa.String(), "Activity id (deterministic per stage run)", pk=True),
        _col("stage", sa.String(), "Stage that ran: 'ingest', 'calib', 'astrometry', ..."),
        _col("code_version", sa.String(), "Version of the code that ran"),
        _col("host", sa.String(), "Host (or pod) it ran on", default="''"),
        _col("params", _json(), "Parameters of the run (JSON)"),
        _col("started_at", _ts(), "Start (UTC)"),
        _col("ended_at", _ts(), "End (UTC); NULL while running", null=True),
        _col("status", sa.String(), "'running', 'succeeded' or 'failed'", default="'running'"),
        _col("log", sa.Text(), "Log of the run (text)", default="''"),
        _col("job_id", sa.String(), "Job (client request) that caused the run, if any", null=True),
        _pk("activities", "id"),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f("ck_activities_status")),
        comment="Stage runs (W3C PROV activities)",
    )
    op.create_index("ix_activities_job_id", "activities", ["job_id"])
    op.create_index("ix_activities_stage_started_at", "activities", ["stage", "started_at"])

    op.create_table(
        "lineage_edges",
        _col("id", sa.Integer(), "Edge number", pk=True),
        _col("activity_id", sa.String(), "activities.id"),
        _col("entity_id", sa.String(), "Id of an exposure, raw frame or product"),
        _col("entity_kind", sa.String(), "'exposure', 'raw_frame' or 'product'"),
        _col("relation", sa.String(),
             "'used' (activity read the entity) or 'wasGeneratedBy' (entity made by the activity)"),
        _col("role", sa.String(),
             "Role of the entity: 'raw', 'bias', 'flat', 'refcat', 'output', ...; '' if none", default="''"),
        _pk("lineage_edges", "id"),
        _fk("lineage_edges", ["activity_id"], "activities", ["id"]),
        sa.CheckConstraint("relation IN ('used', 'wasGeneratedBy')", name=op.f("ck_lineage_edges_relation")),
        sa.CheckConstraint("entity_kind IN ('exposure', 'raw_frame', 'product')",
                           name=op.f("ck_lineage_edges_entity_kind")),
        sa.UniqueConstraint("activity_id", "entity_id", "relation", "role",
                            name=op.f("uq_lineage_edges_activity_id_entity_id_relation_role")),
        comment="Lineage: 'used' and 'wasGeneratedBy' edges (W3C PROV)",
    )
    op.create_index("ix_lineage_edges_entity", "lineage_edges", ["entity_id", "relation", "activity_id"])


def _upgrade_ops() -> None:
    """Quarantine, dead letters and the transactional outbox."""
    op.create_table(
        "quarantine",
        _col("id", sa.Integer(), "Row number", pk=True),
        _col("sha256", sa.String(), "sha256 of the file, 64 lowercase hex digits"),
        _col("filename", sa.String(), "File name as offered (informational)"),
        _col("source", sa.String(), "How it arrived: 'upload', 'watch' or 'command'"),
        _col("size_bytes", sa.BigInteger(), "File size in bytes", null=True),
        _col("object_key", sa.String(), "Where the refused bytes are kept in the object store, if they are",
             null=True),
        _col("error_code", sa.String(), "Stable error code (wisp.errors), e.g. 'input.invalid'"),
        _col("message", sa.Text(), "Human-readable reason"),
        _col("details", _json(), "Structured reason: hdu, keyword, expected, ... (JSON)"),
        _col("first_seen", _ts(), "First refusal (UTC)"),
        _col("last_seen", _ts(), "Latest refusal (UTC)"),
        _col("seen_count", sa.Integer(), "How many times the file was offered", default="1"),
        _pk("quarantine", "id"),
        sa.CheckConstraint(SOURCE_CHECK, name=op.f("ck_quarantine_source")),
        sa.CheckConstraint("seen_count >= 1", name=op.f("ck_quarantine_seen_count")),
        sa.UniqueConstraint("sha256", name=op.f("uq_quarantine_sha256")),
        comment="Refused input files and why (one row per checksum)",
    )
    op.create_index("ix_quarantine_last_seen", "quarantine", ["last_seen"])

    op.create_table(
        "dead_letters",
        _col("id", sa.Integer(), "Row number", pk=True),
        _col("kind", sa.String(), "'invalid' (bad input), 'bug' (unexpected error) or 'exhausted'"),
        _col("stream", sa.String(), "JetStream stream name"),
        _col("subject", sa.String(), "Subject of the message"),
        _col("consumer", sa.String(), "Durable consumer that gave up"),
        _col("msg_id", sa.String(), "Nats-Msg-Id of the message, if it had one", null=True),
        _col("deliveries", sa.Integer(), "Delivery attempts made"),
        _col("payload", sa.LargeBinary(), "Message body as received (bytes)"),
        _col("error_code", sa.String(), "Stable error code, e.g. 'input.invalid' or 'bug'"),
        _col("message", sa.Text(), "Human-readable reason"),
        _col("traceback", sa.Text(), "Python traceback for bugs (operators only)", null=True),
        _created_at(),
        _pk("dead_letters", "id"),
        sa.CheckConstraint("kind IN ('invalid', 'bug', 'exhausted')", name=op.f("ck_dead_letters_kind")),
        comment="Messages given up on: invalid input, bugs, or retries exhausted",
    )
    op.create_index("ix_dead_letters_created_at", "dead_letters", ["created_at"])
    op.create_index("ix_dead_letters_msg_id", "dead_letters", ["msg_id"])

    op.create_table(
        "outbox",
        # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY auto-increments.
        _col("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), "Sequence number (publish order)",
             pk=True),
        _col("subject", sa.String(), "NATS subject to publish on"),
        _col("msg_id", sa.String(), "Nats-Msg-Id (de-duplication key), e.g. the product id"),
        _col("payload", sa.LargeBinary(), "Message body (serialised protobuf)"),
        _col("headers", _json(), "Extra message headers {name: value} (JSON)"),
        _created_at(),
        _col("published_at", _ts(), "When the relay published it (UTC); NULL = pending", null=True),
        _pk("outbox", "id"),
        sa.UniqueConstraint("msg_id", name=op.f("uq_outbox_msg_id")),
        comment="Transactional outbox of bus events",
    )
    # The relay's query (oldest unpublished first); partial on PostgreSQL, plain on SQLite.
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"],
                    postgresql_where=sa.text("published_at IS NULL"))
