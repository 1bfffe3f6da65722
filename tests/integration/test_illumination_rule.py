"""The ``illumination`` stage's rule on real rows (SQLite and PostgreSQL), frame by frame through a night:
planned once per chip, filter and night for a camera that asks, never for simcam's default description;
what a science frame's reduction would be told (waiting, chosen, not asked) at each point."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.ingest.ingestor import Ingestor
from tests.fixtures.instruments import simcam_with_illumination
from tests.integration.test_invalidation import _make
from wisp.db import make_engine, session_scope, table
from wisp.instruments import load_registry
from wisp.pipeline.invalidate import invalidate, reprocess
from wisp.pipeline.model import InputRef, Task, Trigger
from wisp.pipeline.registry import plan, stage
from wisp.pipeline.rules.calib import MASTER_FLAT
from wisp.pipeline.rules.illumination import CHOSEN, NONE, NOT_ASKED, WAITING, illumination_for, released_frames
from wisp.sim import SimConfig, SimResult, simulate_night
from wisp.store import FilesystemStore

pytestmark = pytest.mark.integration

#: g then r, 4 dithers each, then a morning flat block (which closes the r block)
NIGHT = SimConfig(seed=5, n_chips=2, chip_nx=64, chip_ny=64, overscan=8, filters=("g", "r"), n_bias=3,
                  n_flats_per_filter=3, n_dither_per_field_filter=4, flat_blocks=2, trail_every=0)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    return simulate_night(NIGHT, tmp_path_factory.mktemp("illum-night"))


class Pipeline:
    """The forward chain without the bus: each new entity is planned for, and every task made at once
    (fake product files: the planner does not read them)."""

    def __init__(self, engine: Engine, store: FilesystemStore, tmp_path: Path, registry: Any,
                 skip: tuple[str, ...] = ()) -> None:
        self.engine, self.store, self.tmp_path, self.skip = engine, store, tmp_path, skip
        self.ingestor = Ingestor(engine, store, registry, max_pixels_per_hdu=10**8)
        self.made: list[Task] = []
        self.last_frames: list[Any] = []

    def frames(self, exposure_id: str) -> list[Any]:
        f = table("raw_frames")
        with session_scope(self.engine) as s:
            return list(s.execute(select(f).where(f.c.exposure_id == exposure_id).order_by(f.c.chip)))

    def plan(self, trigger: Trigger) -> list[Task]:
        with session_scope(self.engine) as s:
            return plan(s, trigger)

    def make(self, tasks: list[Task]) -> None:
        queue = list(tasks)
        while queue:
            task = queue.pop(0)
            with session_scope(self.engine) as s:
                exists = s.scalar(select(table("products").c.id).where(table("products").c.id == task.product_id))
            if exists or task.stage in self.skip:
                continue
            extra = {}
            if task.stage == "bad_pixel_map":  # the runner writes its flat's night
                with session_scope(self.engine) as s:
                    extra["night"] = s.scalar(select(table("products").c.night).where(
                        table("products").c.id == task.inputs_with("flat")[0].id))
            _make(self.engine, self.store, self.tmp_path, task, extra)
            self.made.append(task)
            queue += self.plan(Trigger("product", task.product_id, _kind(task)))

    def arrive(self, path: Path, *, make: bool = True) -> list[Task]:
        out = self.ingestor.ingest_path(path, filename=path.name, source="upload")
        assert out.status == "ingested" and out.exposure_id
        self.last_frames = self.frames(out.exposure_id)
        tasks = [t for fr in self.last_frames for t in self.plan(Trigger("raw_frame", fr.id, fr.obstype))]
        if make:
            self.make(tasks)
        return tasks


def _kind(task: Task) -> str:
    return stage(task.stage).kind


def _science(engine: Engine, filt: str) -> list[Any]:
    f = table("raw_frames")
    with session_scope(engine) as s:
        return list(s.execute(select(f).where(f.c.obstype == "science", f.c.filter == filt)
                              .order_by(f.c.date_obs, f.c.chip)))


def _choice(engine: Engine, frame: Any) -> Any:
    with session_scope(engine) as s:
        return illumination_for(s, frame)


def test_planned_once_per_chip_filter_night_for_a_camera_that_asks(db_url: str, tmp_path: Path,
                                                                   night: SimResult) -> None:
    engine = make_engine(db_url)
    registry = load_registry([simcam_with_illumination(tmp_path / "desc", filters=("r",), fringe_filters=())
                              .parent])
    pipe = Pipeline(engine, FilesystemStore(tmp_path / "objects"), tmp_path, registry)
    files = sorted(night.raw_files)
    science_r = [p for p in files if "object_r" in p.name]
    morning = [p for p in files if "flat" in p.name and p.name > science_r[-1].name]
    assert len(science_r) == 4 and morning
    for path in files[: files.index(science_r[0]) + 1]:
        pipe.arrive(path)
    first = _science(engine, "r")[0]
    choice = _choice(engine, first)
    assert choice.status == WAITING and "block" in choice.reason and "1 frames so far" in choice.reason
    g = _science(engine, "g")[0]
    assert _choice(engine, g).status == NOT_ASKED and "in r only" in _choice(engine, g).reason
    for path in files[files.index(science_r[0]) + 1: files.index(science_r[-1]) + 1]:
        pipe.arrive(path)
    assert _choice(engine, first).status == WAITING  # the block is still open: more r frames may come
    assert not [t for t in pipe.made if t.stage == "illumination"]
    # the first morning flat closes the r block: planned now, the frames wait for the product
    planned = [t for t in pipe.arrive(morning[0], make=False) if t.stage == "illumination"]
    assert len(planned) == NIGHT.n_chips
    choice = _choice(engine, first)
    assert choice.status == WAITING and "waiting for the night-sky flat" in choice.reason
    pipe.make(planned)
    for path in morning[1:]:
        pipe.arrive(path)
    made = [t for t in pipe.made if t.stage == "illumination"]
    assert Counter((t.group["chip"], t.group["filter"], t.group["night"]) for t in made) == {
        (c, "r", first.night): 1 for c in ("CCD1", "CCD2")}
    for task in made:
        raw = task.inputs_with("raw")
        chip_frames = [fr for fr in _science(engine, "r") if fr.chip == task.group["chip"]]
        assert [r.id for r in raw] == sorted(fr.id for fr in chip_frames)
        assert [len(task.inputs_with(r)) for r in ("bias", "flat", "bpm", "dark")] == [1, 1, 1, 0]
        assert task.params["fringe"] is False and task.params["method"] == "median"
    for fr in _science(engine, "r"):
        choice = _choice(engine, fr)
        assert choice.status == CHOSEN
        assert choice.chosen_id == next(t.product_id for t in made if t.group["chip"] == fr.chip)
        assert choice.candidates[0]["verdict"] == "chosen"

    # planning again from every entity gives nothing new; a newer master flat does not remake it
    f, p = table("raw_frames"), table("products")
    with session_scope(engine) as s:
        everything = [Trigger("raw_frame", r.id, r.obstype) for r in s.execute(select(f))]
        everything += [Trigger("product", r.id, r.kind) for r in s.execute(select(p))]
        flats = list(s.execute(select(p).where(p.c.kind == "master_flat", p.c.filter == "r")))
    assert not [t for trig in everything for t in pipe.plan(trig) if t.stage == "illumination"]
    e = table("lineage_edges")
    newer_flats: dict[str, str] = {}
    for flat in flats:
        with session_scope(engine) as s:
            act = select(e.c.activity_id).where(e.c.entity_id == flat.id, e.c.relation == "wasGeneratedBy")
            inputs = [(r.entity_id, r.entity_kind, r.role) for r in s.execute(
                select(e.c.entity_id, e.c.entity_kind, e.c.role).where(e.c.activity_id.in_(act),
                                                                       e.c.relation == "used"))]
        newer = MASTER_FLAT.task([InputRef(*x) for x in inputs],
                                 {k: getattr(flat, k) for k in ("instrument", "chip", "filter", "night")}
                                 | {"valid_from": flat.valid_from.isoformat(), "valid_to": flat.valid_to.isoformat()},
                                 params={"sigma": 2.5})
        assert [t for t in pipe.plan(Trigger("product", newer.product_id, "master_flat"))
                if t.stage == "illumination"] == []
        pipe.make([newer])  # with its bad-pixel map
        newer_flats[flat.chip] = newer.product_id
    assert len([t for t in pipe.made if t.stage == "illumination"]) == len(made)
    # a night-sky flat marked bad: its frames are not told to wait for another one, none is left
    with session_scope(engine) as s:
        invalidate(s, made[0].product_id, "satellite in every frame")
    bad_chip = made[0].group["chip"]
    choice = _choice(engine, next(fr for fr in _science(engine, "r") if fr.chip == bad_chip))
    assert choice.status == NONE and choice.chosen_id is None
    assert "marked bad" in choice.candidates[0]["reason"]
    # the other chip's master flat marked bad: its night-sky flat is outdated, its frames wait for the remake,
    # which the reprocess job makes from the newer flat (and that flat's map, which exists)
    other = made[1]
    with session_scope(engine) as s:
        inv = invalidate(s, other.inputs_with("flat")[0].id, "dust on the dome screen")
    assert other.product_id in inv.outdated
    frame = next(fr for fr in _science(engine, "r") if fr.chip == other.group["chip"])
    choice = _choice(engine, frame)
    assert choice.status == WAITING and f"{other.product_id} outdated, to be remade" in choice.reason
    with session_scope(engine) as s:
        job = reprocess(s)
    remakes = [t for t in job.tasks if t.stage == "illumination"]
    assert len(remakes) == 1 and remakes[0].group["chip"] == other.group["chip"]
    assert remakes[0].inputs_with("flat")[0].id == newer_flats[other.group["chip"]]
    assert [i.id for i in remakes[0].inputs_with("raw")] == [i.id for i in other.inputs_with("raw")]
    pipe.make(job.tasks)
    choice = _choice(engine, frame)
    assert choice.status == CHOSEN and choice.chosen_id == remakes[0].product_id
    engine.dispose()


def test_a_short_block_releases_its_frames(db_url: str, tmp_path: Path,
                                                                             night: SimResult) -> None:
    engine = make_engine(db_url)
    registry = load_registry([simcam_with_illumination(tmp_path / "desc", filters=("g", "r"), fringe_filters=("r",),
                                                       min_frames=5).parent])
    # reductions are left out: the reduce rule does not consult the night-sky flat yet
    pipe = Pipeline(engine, FilesystemStore(tmp_path / "objects"), tmp_path, registry, skip=("reduce",))
    files = sorted(night.raw_files)
    last_g = max(files.index(p) for p in files if "object_g" in p.name)
    for path in files[: last_g + 1]:
        pipe.arrive(path)
    g = _science(engine, "g")
    assert all(_choice(engine, fr).status == WAITING for fr in g)  # open block
    pipe.arrive(files[last_g + 1])  # the first r frame closes the g block
    with session_scope(engine) as s:
        released = {r.id for fr in pipe.last_frames for r in released_frames(s, fr)}
    # 4 g frames < min_frames 5: the block closed without a night-sky flat; its frames go on without one
    assert released == {fr.id for fr in g}
    for fr in g:
        choice = _choice(engine, fr)
        assert choice.status == NONE and choice.reason.startswith("no night-sky flat for simcam")
    for path in files[last_g + 2:]:
        pipe.arrive(path)
    assert not [t for t in pipe.made if t.stage == "illumination"]  # r has 4 frames too
    engine.dispose()


def test_simcam_default_never_plans_the_stage(db_url: str, tmp_path: Path, night: SimResult) -> None:
    engine = make_engine(db_url)
    pipe = Pipeline(engine, FilesystemStore(tmp_path / "objects"), tmp_path, load_registry())
    for path in sorted(night.raw_files):
        pipe.arrive(path)
    kinds = Counter(t.stage for t in pipe.made)
    assert kinds["reduce"] == NIGHT.n_chips * 8 and kinds["master_bias"] == NIGHT.n_chips
    assert "illumination" not in kinds
    with session_scope(engine) as s:
        everything = [Trigger("raw_frame", r.id, r.obstype) for r in s.execute(select(table("raw_frames")))]
    assert not [t for trig in everything for t in pipe.plan(trig) if t.stage == "illumination"]
    for fr in _science(engine, "r")[:1]:
        choice = _choice(engine, fr)
        assert choice.status == NOT_ASKED and "asks for no night-sky flat" in choice.reason
        with session_scope(engine) as s:
            assert released_frames(s, fr) == []
    engine.dispose()
