"""Pipeline: product context (stage, night, field, origin, centre, metrics), the night of raw frames,
catalogue sources, calibration choices and jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Written by hand in the style of 0001: a frozen snapshot with plain SQLAlchemy types and literal SQL, never
Wisp's models or constants. ``tests/integration/test_db_schema.py`` checks it against the models.

On SQLite, adding the foreign keys of ``products`` copies the table (Alembic batch mode); its named
constraints and indexes are reflected and recreated. Every new column of an existing table is nullable or
has a server default, so existing rows stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


NIGHT_COMMENT = "Observing night as 'YYYY-MM-DD': the local date at the start of the night"


def upgrade() -> None:
    # raw_frames first: the new foreign keys of products refer to it.
    with op.batch_alter_table("raw_frames") as batch:
        batch.add_column(_col("night", sa.String(), f"{NIGHT_COMMENT}; NULL if unknown", null=True))
        batch.create_index("ix_raw_frames_night", ["instrument", "night", "obstype", "chip", "filter"])
    _upgrade_products()
    _create_sources()
    _create_calib_selections()
    _create_jobs()


def downgrade() -> None:
    # Children first; dropping a table drops its indexes.
    for table in ("jobs", "calib_selections", "sources"):
        op.drop_table(table)
    with op.batch_alter_table("products") as batch:
        for index in ("ix_products_dec_ra", "ix_products_night_field", "ix_products_kind_exposure_id",
                      "ix_products_kind_frame_id"):
            batch.drop_index(index)
        batch.drop_constraint(op.f("fk_products_frame_id_raw_frames"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_products_exposure_id_exposures"), type_="foreignkey")
        for column in ("metrics", "dec_deg", "ra_deg", "mjd_obs", "frame_id", "exposure_id", "field",
                       "night", "stage"):
            batch.drop_column(column)
    with op.batch_alter_table("raw_frames") as batch:
        batch.drop_index("ix_raw_frames_night")
        batch.drop_column("night")


def _upgrade_products() -> None:
    """Where a product comes from and what it covers, for look-ups by frame, night, field and position."""
    with op.batch_alter_table("products") as batch:
        batch.add_column(_col(
            "stage", sa.String(),
            "Stage that made it: 'master_bias', 'reduce', 'astrometry', 'catalog', 'coadd', 'refcat', "
            "'qc', ...", null=True))
        batch.add_column(_col("night", sa.String(), f"{NIGHT_COMMENT}; NULL if none", null=True))
        batch.add_column(_col("field", sa.String(),
                              "Field name (OBJECT keyword of its inputs); NULL if not tied to one", null=True))
        batch.add_column(_col("exposure_id", sa.String(),
                              "Exposure it derives from (exposures.id); NULL if none or many", null=True))
        batch.add_column(_col(
            "frame_id", sa.String(),
            "Per-chip products: the raw frame it derives from (raw_frames.id); NULL otherwise", null=True))
        batch.add_column(_col(
            "mjd_obs", sa.Double(),
            "Observation time, MJD (UTC) in days: start of the exposure for single-exposure products",
            null=True))
        batch.add_column(_col("ra_deg", sa.Double(), "Centre right ascension (ICRS) in degrees", null=True))
        batch.add_column(_col("dec_deg", sa.Double(), "Centre declination (ICRS) in degrees", null=True))
        batch.add_column(_col(
            "metrics", _json(),
            "QC and stage metrics as {name: value}, values in the units their names say (JSON)",
            default="'{}'"))
        batch.create_foreign_key(op.f("fk_products_exposure_id_exposures"), "exposures",
                                 ["exposure_id"], ["id"])
        batch.create_foreign_key(op.f("fk_products_frame_id_raw_frames"), "raw_frames", ["frame_id"], ["id"])
        batch.create_index("ix_products_kind_frame_id", ["kind", "frame_id"])
        batch.create_index("ix_products_kind_exposure_id", ["kind", "exposure_id"])
        batch.create_index("ix_products_night_field", ["kind", "instrument", "night", "field", "filter"])
        batch.create_index("ix_products_dec_ra", ["dec_deg", "ra_deg"])


def _create_sources() -> None:
    op.create_table(
        "sources",
        # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY auto-increments.
        _col("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), "Row number", pk=True),
        _col("product_id", sa.String(),
             "Catalogue the source is in (products.id); deleting the catalogue deletes its sources"),
        _col("number", sa.Integer(), "Source number in its catalogue (e.g. SExtractor NUMBER)"),
        _col("ra_deg", sa.Double(), "Right ascension (ICRS) in degrees"),
        _col("dec_deg", sa.Double(), "Declination (ICRS) in degrees"),
        _col("x", sa.Double(), "Column position in pixels, 0-based (0 = centre of first pixel)"),
        _col("y", sa.Double(), "Row position in pixels, 0-based (0 = centre of first pixel)"),
        _col("mag", sa.Double(), "Calibrated magnitude (AB-like, zeropoint applied) in mag; NULL if not calibrated",
             null=True),
        _col("mag_err", sa.Double(), "Uncertainty of mag (1 sigma) in mag", null=True),
        _col("flux", sa.Double(), "Flux in e- (total electrons in the measurement)", null=True),
        _col("flux_err", sa.Double(), "Uncertainty of flux (1 sigma) in e-", null=True),
        _col("fwhm_arcsec", sa.Double(), "Full width at half maximum in arcsec", null=True),
        _col("ellipticity", sa.Double(), "Ellipticity 1 - b/a (dimensionless)", null=True),
        _col("flags", sa.Integer(), "Extraction flags bitmask (e.g. SExtractor FLAGS); 0 = nothing flagged",
             default="0"),
        _pk("sources", "id"),
        _fk("sources", ["product_id"], "products", ["id"], ondelete="CASCADE"),
        comment="Sources of the catalogue products (one row per detection): the cone-search index",
    )
    op.create_index("ix_sources_dec_ra", "sources", ["dec_deg", "ra_deg"])
    op.create_index("ix_sources_product_id", "sources", ["product_id"])


def _create_calib_selections() -> None:
    op.create_table(
        "calib_selections",
        _col("id", sa.Integer(), "Row number", pk=True),
        _col("frame_id", sa.String(), "Raw frame the calibration is for (raw_frames.id)"),
        _col("kind", sa.String(), "Calibration kind: 'bias', 'flat', ..."),
        _col("chosen_id", sa.String(), "The calibration chosen (products.id); NULL = none found", null=True),
        _col("candidates", _json(),
             "Candidates considered: [{id, verdict: 'chosen' or 'rejected', reason}] (JSON)"),
        _col("reason", sa.Text(), "Why, in a sentence a user understands"),
        sa.Column("decided_at", _ts(), server_default=NOW, nullable=False,
                  comment="When the choice was made (UTC)"),
        _col("activity_id", sa.String(), "Stage run that made the choice (activities.id), if any", null=True),
        _pk("calib_selections", "id"),
        _fk("calib_selections", ["frame_id"], "raw_frames", ["id"]),
        _fk("calib_selections", ["chosen_id"], "products", ["id"]),
        _fk("calib_selections", ["activity_id"], "activities", ["id"]),
        comment="Calibration choices: for each raw frame and kind, the candidates and the reason",
    )
    op.create_index("ix_calib_selections_frame_kind", "calib_selections", ["frame_id", "kind", "decided_at"])


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        _col("id", sa.String(), "Job id (activities.job_id refers to it)", pk=True),
        _col("kind", sa.String(), "What to do: 'reduce', 'coadd', 'catalog', ..."),
        _col("target", _json(), "What to do it on, e.g. {instrument, night, field, filter} (JSON)"),
        _col("status", sa.String(), "'queued', 'running', 'succeeded', 'failed' or 'cancelled'",
             default="'queued'"),
        _col("progress", sa.Double(), "Fraction done, 0 to 1 (dimensionless)", default="0"),
        _col("message", sa.Text(), "Latest status message for the user; '' if none", default="''"),
        sa.Column("created_at", _ts(), server_default=NOW, nullable=False, comment="When it was requested (UTC)"),
        sa.Column("updated_at", _ts(), server_default=NOW, nullable=False,
                  comment="When status, progress or message last changed (UTC)"),
        _pk("jobs", "id"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                           name=op.f("ck_jobs_status")),
        sa.CheckConstraint("progress BETWEEN 0 AND 1", name=op.f("ck_jobs_progress")),
        comment="Processing requests (jobs) and their progress",
    )
