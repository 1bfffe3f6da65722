"""Invalidation and reprocessing on real rows (SQLite and PostgreSQL): a bad master flat makes exactly its
derived products (its bad-pixel map, the reductions) outdated, the reprocess job plans their replacements
with the other flat (and that flat's bad-pixel map, which exists), and the job report pairs every outdated
product with its replacement."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from services.ingest.ingestor import Ingestor
from wisp.bus import make_product_msg_id, make_product_subject
from wisp.db import make_engine, session_scope, table
from wisp.db.types import utcnow
from wisp.errors import BadRequest, Conflict, InvalidInput, NotFound
from wisp.instruments import load_registry
from wisp.pipeline.invalidate import invalidate, job_report, reprocess
from wisp.pipeline.model import InputRef, Output, Task, Trigger
from wisp.pipeline.record import record_product
from wisp.pipeline.registry import plan, stage
from wisp.pipeline.rules.calib import MASTER_FLAT
from wisp.sim import SimResult
from wisp.store import FilesystemStore
from wisp.v1 import pipeline_pb2

pytestmark = pytest.mark.integration


def _make(engine: Engine, store: FilesystemStore, tmp_path: Path, task: Task, columns: dict[str, Any]) -> None:
    """What a worker does after the science: store a file, record the product (the file content does not
    matter to the planner)."""
    path = tmp_path / f"{task.product_id}.fits"
    path.write_bytes(task.product_id.encode())
    ref = store.put_file(path, namespace="products/test")
    spec = stage(task.stage)
    cols = {k: v for k, v in task.group.items() if k in ("instrument", "chip", "filter", "night", "field",
                                                          "frame_id", "exposure_id")}
    for k in ("valid_from", "valid_to"):
        if k in task.group:
            cols[k] = datetime.fromisoformat(task.group[k])
    with session_scope(engine) as s:
        assert record_product(s, spec, task, Output(path, {**cols, **columns}), ref, utcnow())


def _input(engine: Engine, product_id: str, role: str) -> str | None:
    """The input of ``role`` of a product, from its lineage."""
    e = table("lineage_edges")
    with session_scope(engine) as s:
        return s.scalar(select(e.c.entity_id).where(e.c.role == role, e.c.activity_id.in_(
            select(e.c.activity_id).where(e.c.entity_id == product_id, e.c.relation == "wasGeneratedBy"))))


def _plan_all(engine: Engine, trigger: Trigger, stage_name: str) -> list[Task]:
    with session_scope(engine) as s:
        return [t for t in plan(s, trigger) if t.stage == stage_name]


def _make_bpms(engine: Engine, store: FilesystemStore, tmp_path: Path, flat_id: str) -> list[Task]:
    """What the calib service does on a new master flat: its bad-pixel map (night from the flat, as the
    runner writes it)."""
    p = table("products")
    with session_scope(engine) as s:
        night = s.scalar(select(p.c.night).where(p.c.id == flat_id))
    tasks = _plan_all(engine, Trigger("product", flat_id, "master_flat"), "bad_pixel_map")
    for task in tasks:
        _make(engine, store, tmp_path, task, {"night": night})
    return tasks


@pytest.fixture
def night_db(db_url: str, tmp_path: Path, small_night: SimResult) -> tuple[Engine, FilesystemStore]:
    """The small night ingested, with master biases, two master flats per chip and filter (the second
    made later, with other parameters), a bad-pixel map of each, and every science frame reduced with the
    first flat and its map."""
    engine = make_engine(db_url)
    store = FilesystemStore(tmp_path / "objects")
    ingestor = Ingestor(engine, store, load_registry(), max_pixels_per_hdu=10**8)
    for path in small_night.raw_files:
        assert ingestor.ingest_path(path, filename=path.name, source="upload").status == "ingested"
    i, f = table("instruments"), table("raw_frames")
    with session_scope(engine) as s:
        definition = s.scalar(select(i.c.definition).where(i.c.name == "simcam"))
        definition["calibration"] = {"bias": {"min_frames": 2}, "flat": {"min_frames": 1}}
        s.execute(update(i).where(i.c.name == "simcam").values(definition=definition))
        frames = list(s.execute(select(f).order_by(f.c.date_obs, f.c.chip)))
    for fr in [r for r in frames if r.obstype == "bias"]:
        for task in _plan_all(engine, Trigger("raw_frame", fr.id, "bias"), "master_bias"):
            _make(engine, store, tmp_path, task, {})
    flat_frames = [r for r in frames if r.obstype == "flat"]
    for fr in flat_frames:
        for task in _plan_all(engine, Trigger("raw_frame", fr.id, "flat"), "master_flat"):
            _make(engine, store, tmp_path, task, {})
            assert len(_make_bpms(engine, store, tmp_path, task.product_id)) == 1
    for fr in [r for r in frames if r.obstype == "science"]:
        for task in _plan_all(engine, Trigger("raw_frame", fr.id, "science"), "reduce"):
            _make(engine, store, tmp_path, task, {})
    # a second, newer master flat per chip and filter (same frames, other parameters: another product)
    p = table("products")
    with session_scope(engine) as s:
        firsts = list(s.execute(select(p).where(p.c.kind == "master_flat")))
    for first in firsts:
        with session_scope(engine) as s:
            e = table("lineage_edges")
            act = select(e.c.activity_id).where(e.c.entity_id == first.id, e.c.relation == "wasGeneratedBy")
            inputs = [(r.entity_id, r.entity_kind, r.role) for r in s.execute(
                select(e.c.entity_id, e.c.entity_kind, e.c.role).where(e.c.activity_id.in_(act),
                                                                       e.c.relation == "used"))]
        task = MASTER_FLAT.task([InputRef(*x) for x in inputs],
                                {k: getattr(first, k) for k in ("instrument", "chip", "filter", "night")}
                                | {"valid_from": first.valid_from.isoformat(), "valid_to": first.valid_to.isoformat()},
                                params={"sigma": 2.5})
        _make(engine, store, tmp_path, task, {})
        _make_bpms(engine, store, tmp_path, task.product_id)
    return engine, store


def test_invalidating_a_flat_outdates_its_map_and_remakes_its_frames(night_db: tuple[Engine, FilesystemStore],
                                                                     tmp_path: Path) -> None:
    engine, store = night_db
    p, e = table("products"), table("lineage_edges")
    with session_scope(engine) as s:
        reduced = list(s.execute(select(p).where(p.c.kind == "reduced")))
        assert reduced
        first = reduced[0]
        flat_id = s.scalar(select(e.c.entity_id).where(
            e.c.role == "flat", e.c.activity_id.in_(select(e.c.activity_id).where(e.c.entity_id == first.id))))
        users = {r.id for r in reduced if _input(engine, r.id, "flat") == flat_id}
        flat = s.execute(select(p).where(p.c.id == flat_id)).one()
        bpms = {r.id: r for r in s.execute(select(p).where(p.c.kind == "bad_pixel_map", p.c.chip == flat.chip,
                                                           p.c.filter == flat.filter))}
    bpm_of = {_input(engine, b, "flat"): b for b in bpms}
    assert first.id in users and len(users) < len(reduced)  # one chip and filter only
    assert len(bpms) == 2 and flat_id in bpm_of  # one map per master flat of the chip, filter and night
    bad_bpm, other_bpm = bpm_of.pop(flat_id), bpm_of.popitem()[1]
    assert bpms[bad_bpm].night == flat.night and bpms[bad_bpm].valid_to == flat.valid_to

    with session_scope(engine) as s:
        inv = invalidate(s, flat_id, "dust on the dome screen")
    reductions, users = users, users | {bad_bpm}
    assert set(inv.outdated) == users
    with session_scope(engine) as s:
        rows = {r.id: r for r in s.execute(select(p))}
        event = s.execute(select(table("outbox")).where(
            table("outbox").c.subject == "wisp.evt.product.invalidated.master_flat")).one()
    assert rows[flat_id].is_valid == 0 and rows[flat_id].validity_note == "dust on the dome screen"
    assert {pid for pid, r in rows.items() if r.status == "outdated"} == users
    msg = pipeline_pb2.ProductInvalidated.FromString(event.payload)
    assert msg.product_id == flat_id and set(msg.outdated_ids) == users
    with session_scope(engine) as s:  # again: nothing new becomes outdated
        assert invalidate(s, flat_id, "still dusty").outdated == ()

    with session_scope(engine) as s:
        job = reprocess(s)
    # the map is the root; its replacement (the other flat's map) exists, so the reductions are roots too
    assert set(job.outdated) == users and job.roots[0] == bad_bpm and set(job.roots) == users and not job.blocked
    assert job.existing == {bad_bpm: other_bpm}
    assert sorted(job.replaces.values()) == sorted(reductions)
    for task in job.tasks:
        assert task.stage == "reduce" and task.job_id == job.job_id
        assert task.inputs_with("flat")[0].id != flat_id and task.inputs_with("bpm")[0].id == other_bpm
    with session_scope(engine) as s:
        queued = list(s.execute(select(table("outbox")).where(
            table("outbox").c.subject == make_product_subject("calib", "reduce"))))
    assert {q.msg_id for q in queued} == {make_product_msg_id(t.product_id) for t in job.tasks}

    with session_scope(engine) as s:
        assert job_report(s, job.job_id)["status"] == "running"
    for task in job.tasks:  # the worker runs the commands
        _make(engine, store, tmp_path, task, {})
    with session_scope(engine) as s:
        report = job_report(s, job.job_id)
    assert report["status"] == "succeeded" and report["pending"] == [] and report["extra"] == []
    assert {r["outdated"] for r in report["remade"]} == users
    # asking again sends nothing: the replacements exist
    with session_scope(engine) as s:
        again = reprocess(s)
    assert again.tasks == [] and set(again.outdated) == users  # already remade: no command twice


def test_bad_requests_are_refused_with_reasons(night_db: tuple[Engine, FilesystemStore]) -> None:
    engine, _ = night_db
    p = table("products")
    with session_scope(engine) as s:
        ok_id = s.scalar(select(p.c.id).where(p.c.kind == "reduced"))
    with session_scope(engine) as s, pytest.raises(BadRequest):
        invalidate(s, "not-an-id", "why")
    with session_scope(engine) as s, pytest.raises(NotFound):
        invalidate(s, "mflat-000000000000000000000000", "why")
    with session_scope(engine) as s, pytest.raises(InvalidInput):
        invalidate(s, ok_id, "   ")
    with session_scope(engine) as s, pytest.raises(Conflict):
        reprocess(s, [ok_id])


def test_request_parameters_are_checked_applied_and_recorded(night_db: tuple[Engine, FilesystemStore],
                                                              tmp_path: Path) -> None:
    engine, store = night_db
    p, a = table("products"), table("activities")
    with session_scope(engine) as s:
        flat_id = s.scalar(select(p.c.id).where(p.c.kind == "master_flat").order_by(p.c.created_at))
        invalidate(s, flat_id, "saturated lamp")
    with session_scope(engine) as s, pytest.raises(InvalidInput, match="did you mean 'cr_sigclip'"):
        reprocess(s, params={"reduce": {"cr_sigclipp": 5}})
    with session_scope(engine) as s:
        job = reprocess(s, params={"reduce": {"cr_sigclip": 5}})
    assert job.tasks and all(t.params["cr_sigclip"] == 5.0 and t.params["trails"] is True for t in job.tasks)
    for task in job.tasks:
        _make(engine, store, tmp_path, task, {})
    with session_scope(engine) as s:
        recorded = list(s.execute(select(a.c.params).where(a.c.job_id == job.job_id)))
        made = list(s.execute(select(p.c.params).where(p.c.id.in_([t.product_id for t in job.tasks]))))
        assert job_report(s, job.job_id)["status"] == "succeeded"
    assert len(recorded) == len(job.tasks) and all(r.params["cr_sigclip"] == 5.0 for r in recorded + made)
