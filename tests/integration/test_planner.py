"""The planner's rules on real rows (SQLite and PostgreSQL): blocks, waiting for masters, selection."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from services.ingest.ingestor import Ingestor
from wisp.db import Base, make_engine, session_scope
from wisp.instruments import load_registry
from wisp.pipeline.model import Trigger
from wisp.pipeline.registry import plan
from wisp.pipeline.rules.calib import select_calibration
from wisp.sim import SimResult
from wisp.store import FilesystemStore


def _ingest(db_url: str, tmp_path: Path, night: SimResult):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    ingestor = Ingestor(engine, FilesystemStore(tmp_path / "objects"), load_registry(), max_pixels_per_hdu=10**8)
    for path in night.raw_files:
        assert ingestor.ingest_path(path, filename=path.name, source="upload").status == "ingested"
    return engine


def _frames(engine, obstype: str) -> list:  # type: ignore[no-untyped-def]
    f = Base.metadata.tables["raw_frames"]
    with session_scope(engine) as s:
        return list(s.execute(select(f).where(f.c.obstype == obstype).order_by(f.c.date_obs, f.c.chip)))


def test_calibration_blocks_follow_the_description(db_url: str, tmp_path: Path, small_night: SimResult) -> None:
    engine = _ingest(db_url, tmp_path, small_night)
    bias = _frames(engine, "bias")[0]
    with session_scope(engine) as s:
        # the small night has 2 biases per chip; simcam asks for 3
        assert plan(s, Trigger("raw_frame", bias.id, "bias"), service="calib") == []
        i = Base.metadata.tables["instruments"]
        definition = s.scalar(select(i.c.definition).where(i.c.name == "simcam"))
        definition["calibration"]["bias"]["min_frames"] = 2
        s.execute(update(i).where(i.c.name == "simcam").values(definition=definition))
    with session_scope(engine) as s:
        tasks = [t for t in plan(s, Trigger("raw_frame", bias.id, "bias"), service="calib") if t.stage == "master_bias"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task.group["chip"] == bias.chip and len(task.inputs_with("raw")) == 2
    # deterministic: the same state plans the same product id
    with session_scope(engine) as s:
        again = [t for t in plan(s, Trigger("raw_frame", bias.id, "bias")) if t.stage == "master_bias"]
    assert [t.product_id for t in again] == [task.product_id]


def test_science_waits_for_its_masters_and_says_why(db_url: str, tmp_path: Path, small_night: SimResult) -> None:
    engine = _ingest(db_url, tmp_path, small_night)
    science = _frames(engine, "science")[0]
    with session_scope(engine) as s:
        assert plan(s, Trigger("raw_frame", science.id, "science"), service="calib") == []
        choice = select_calibration(s, "master_flat", science.instrument, science.chip, science.filter,
                                    science.date_obs)
    assert choice.chosen_id is None
    assert choice.reason == f"no master flat for simcam {science.chip} filter {science.filter} exists yet"
