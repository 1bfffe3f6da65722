"""The calib stages end to end on real rows and real objects (SQLite and PostgreSQL, an S3 server): a
simulated night with darks is ingested and the calib service's rules and runners are driven the way its
planner and worker do (every new product is a trigger), without the bus. Checked against the simulator's
truth: a bad-pixel map per chip, filter and night, reductions that wait for it and flag its pixels BAD,
master darks only for a camera whose description asks for them (and dark-subtracted sky levels), the PSF
FWHM measured for the cosmic-ray detector, and every choice recorded for `wisp why`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from gateway.why import why
from services.calib.service import make_service
from services.ingest.ingestor import Ingestor
from wisp.config import Settings
from wisp.db import make_engine, session_scope, table
from wisp.db.types import utcnow
from wisp.dq import BAD
from wisp.instruments import load_registry
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Task, Trigger
from wisp.pipeline.record import record_product
from wisp.pipeline.registry import plan
from wisp.pipeline.rules.calib import reduce_task, select_calibration
from wisp.sim import SimConfig, SimResult, simulate_night
from wisp.store import ObjectStore, open_store

pytestmark = pytest.mark.integration

DARK_RATE = 0.5  # e-/s/px everywhere (plus the hot pixels'), 60 e- in a 120 s science exposure
NIGHT = SimConfig(seed=5, n_chips=2, chip_nx=256, chip_ny=256, overscan=16, filters=("r",), n_bias=3,
                  n_flats_per_filter=3, n_dither_per_field_filter=2, star_density=300000.0, n_dark=3,
                  dark_rate=DARK_RATE)
OBSTYPES = {"BIAS": "bias", "DARK": "dark", "FLAT": "flat", "OBJECT": "science"}


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    """3 biases, 3 darks of 300 s, 3 r flats, 2 science exposures; 2 chips of 256x256 px, many stars."""
    return simulate_night(NIGHT, tmp_path_factory.mktemp("calib-night"))


@dataclass
class Calib:
    """The calib service's planner and worker, called directly: plan on every new entity, make every task
    (except the stages in ``hold``, whose tasks are kept in ``held``)."""

    engine: Engine
    store: ObjectStore
    settings: Settings
    hold: set[str] = field(default_factory=set)
    held: list[Task] = field(default_factory=list)
    made: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.runners = make_service(self.settings).runners

    def make(self, task: Task) -> Trigger:
        runner = self.runners[task.stage]
        workdir = self.settings.data_dir / "work" / task.product_id
        workdir.mkdir(parents=True)
        output = runner.run(task, InputLoader(self.engine, self.store, workdir), workdir)
        ref = self.store.put_file(output.path, namespace=f"products/{runner.spec.kind.replace('_', '-')}")
        with session_scope(self.engine) as s:
            assert record_product(s, runner.spec, task, output, ref, utcnow())
        self.made[task.stage] += 1
        return Trigger("product", task.product_id, runner.spec.kind)

    def feed(self, triggers: list[Trigger]) -> None:
        queue = list(triggers)
        while queue:
            trigger = queue.pop(0)
            with session_scope(self.engine) as s:
                tasks = plan(s, trigger, service="calib")
            for task in tasks:
                with session_scope(self.engine) as s:  # planned twice in one round: made once
                    if s.scalar(select(table("products").c.id).where(table("products").c.id == task.product_id)):
                        continue
                if task.stage in self.hold:
                    if task.product_id not in {t.product_id for t in self.held}:
                        self.held.append(task)
                else:
                    queue.append(self.make(task))

    def release(self) -> None:
        tasks, self.held, self.hold = self.held, [], set()
        self.feed([self.make(t) for t in tasks])


def _setup(db_url: str, settings: Settings, night: SimResult, darks: bool) -> tuple[Engine, ObjectStore]:
    engine = make_engine(db_url)
    store = open_store(settings)
    ingestor = Ingestor(engine, store, load_registry(), max_pixels_per_hdu=10**8)
    for path in night.raw_files:
        assert ingestor.ingest_path(path, filename=path.name, source="upload").status == "ingested"
    if darks:  # this camera's description asks for darks
        i = table("instruments")
        with session_scope(engine) as s:
            definition = s.scalar(select(i.c.definition).where(i.c.name == "simcam"))
            definition["calibration"]["dark"] = {"min_frames": 3, "validity_days": 3}
            s.execute(update(i).where(i.c.name == "simcam").values(definition=definition))
    return engine, store


def _frame_triggers(engine: Engine) -> list[Trigger]:
    f = table("raw_frames")
    with session_scope(engine) as s:
        return [Trigger("raw_frame", r.id, r.obstype) for r in s.execute(select(f).order_by(f.c.date_obs, f.c.chip))]


def _products(engine: Engine, kind: str) -> list[Any]:
    p = table("products")
    with session_scope(engine) as s:
        return list(s.execute(select(p).where(p.c.kind == kind).order_by(p.c.chip, p.c.id)))


def _inputs(engine: Engine, product_id: str) -> dict[str, str]:
    e = table("lineage_edges")
    with session_scope(engine) as s:
        act = select(e.c.activity_id).where(e.c.entity_id == product_id, e.c.relation == "wasGeneratedBy")
        return {r.role: r.entity_id for r in s.execute(select(e.c.role, e.c.entity_id).where(
            e.c.activity_id.in_(act), e.c.relation == "used", e.c.role != "raw"))}


def _fits(store: ObjectStore, key: str, dest: Path) -> fits.HDUList:
    store.download(key, dest)
    return fits.open(dest, memmap=False)


def _truth(night: SimResult, frame_row: Any, chip: str) -> tuple[float, float]:
    """The true sky (e-/px, median over the chip, flat-fielded as the reduction does: the master flat is
    normalised to median 1 and the mosaic gain factor puts every chip at the median of the chips' mean
    responses) and the true PSF FWHM (px, median of the chip's stars) of a science frame."""
    name = Path(frame_row.filename).name.replace(".fits", "_truth.fits")
    with fits.open(night.truth_dir / name) as t, fits.open(night.truth_dir / "flat_r.fits") as fl:
        response = float(np.median([np.median(h.data) for h in fl if h.data is not None]))
        sky = float(t[chip].header["SKYC"]) * response
        src = t["SOURCES"].data
        stars = src[(src["chip"] == int(chip.removeprefix("CCD"))) & (src["type"] == "star")]
        fwhm = float(np.median(stars["psf_fwhm"])) / NIGHT.pixel_scale
    return sky, fwhm


def _check_reductions(engine: Engine, store: ObjectStore, night: SimResult, tmp: Path, dark: bool
                      ) -> list[float]:
    """Every reduction used its chip's map (DQ BAD exactly where the map is non-zero) and, with darks, a
    master dark; its choices are recorded; its FWHM is measured. Returns sky - true sky (e-) per reduction."""
    f = table("raw_frames")
    offsets = []
    for red in _products(engine, "reduced"):
        used = _inputs(engine, red.id)
        assert set(used) == {"bias", "flat", "bpm"} | ({"dark"} if dark else set())
        bpm_row = next(b for b in _products(engine, "bad_pixel_map") if b.id == used["bpm"])
        assert bpm_row.chip == red.chip and bpm_row.filter == red.filter and bpm_row.night == red.night
        assert _inputs(engine, bpm_row.id)["flat"] == used["flat"]
        with _fits(store, bpm_row.object_key, tmp / f"{bpm_row.id}.fits") as h:
            bpm = h["BPM"].data
            assert h["BPM"].data.dtype == np.uint8 and h[0].header["NBAD"] == np.count_nonzero(bpm) > 0
        with _fits(store, red.object_key, tmp / f"{red.id}.fits") as h:
            sci, dq = h["SCI"].data, h["DQ"].data
            assert h[0].header["WISPBPM"] == bpm_row.id and ("WISPDARK" in h[0].header) == dark
        assert np.array_equal((dq & BAD) != 0, bpm != 0)
        with session_scope(engine) as s:
            frame = s.execute(select(f, table("exposures").c.filename).join(
                table("exposures"), table("exposures").c.id == f.c.exposure_id).where(f.c.id == red.frame_id)).one()
            answer = why(red.id, engine)
        recorded = {c["kind"]: c for c in answer["recorded"]}
        assert set(recorded) == {"bias", "flat", "bpm"} | ({"dark"} if dark else set())
        assert recorded["bpm"]["chosen_id"] == used["bpm"]
        assert recorded["bpm"]["reason"].startswith(f"{used['bpm']} is the usable bad pixel map")
        assert {c["kind"] for c in answer["now"]} == set(recorded)
        if dark:
            assert recorded["dark"]["chosen_id"] == used["dark"]
        true_sky, true_fwhm = _truth(night, frame, red.chip)
        _, sky, _ = sigma_clipped_stats(sci, mask=dq != 0, sigma=3.0)
        offsets.append(float(sky) - true_sky)
        m = red.metrics
        print(f"{red.chip}: FWHM {m['fwhm_px']:.2f} px from {m['fwhm_n_stars']} stars, truth {true_fwhm:.2f} px; "
              f"{m['cosmic_ray_pixels']} cosmic-ray px; BPM {np.count_nonzero(bpm)} px")
        assert m["fwhm_px"] == pytest.approx(true_fwhm, rel=0.1), (m, true_fwhm)
        assert m["fwhm_n_stars"] >= 5 and "cosmic_ray_pixels" in m
    return offsets


def test_bad_pixel_maps_and_darks_for_a_camera_that_asks(db_url: str, s3_settings: Settings, night: SimResult,
                                                         tmp_path: Path) -> None:
    engine, store = _setup(db_url, s3_settings, night, darks=True)
    calib = Calib(engine, store, s3_settings, hold={"bad_pixel_map"})
    calib.feed(_frame_triggers(engine))
    # every master is made, the maps are planned (and held): no frame is reduced while its map is missing
    assert dict(calib.made) == {"master_bias": 2, "master_dark": 2, "master_flat": 2}
    assert len(calib.held) == 2 and not _products(engine, "reduced")
    f = table("raw_frames")
    with session_scope(engine) as s:
        science = s.execute(select(f).where(f.c.obstype == "science").order_by(f.c.date_obs)).first()
        assert reduce_task(s, science) is None
        sel = select_calibration(s, "bad_pixel_map", science.instrument, science.chip, science.filter,
                                 science.date_obs, science.night)
    assert sel.waiting and sel.chosen_id is None
    assert sel.reason.startswith(f"waiting for the bad pixel map of night {science.night} (from the master flat mflat-")
    calib.release()
    # one map per chip, filter and night; each master and reduction made once
    assert dict(calib.made) == {"master_bias": 2, "master_dark": 2, "master_flat": 2, "bad_pixel_map": 2,
                                "reduce": 4}
    for bpm in _products(engine, "bad_pixel_map"):
        flat = next(fl for fl in _products(engine, "master_flat") if fl.chip == bpm.chip)
        dark = next(d for d in _products(engine, "master_dark") if d.chip == bpm.chip)
        assert _inputs(engine, bpm.id) == {"flat": flat.id, "bias": _inputs(engine, flat.id)["bias"], "dark": dark.id}
        assert (bpm.night, bpm.filter, bpm.valid_from, bpm.valid_to) == (flat.night, "r", flat.valid_from,
                                                                         flat.valid_to)
        m = bpm.metrics
        assert m["n_bad"] > 0 and m["n_hot"] + m["n_cold"] + m["n_badcol_pixels"] >= m["n_bad"]
        assert m["sources"] == ["bias", "dark", "flat r"] and len(m["columns"]) == NIGHT.bad_columns
        with _fits(store, bpm.object_key, tmp_path / f"{bpm.id}.fits") as h:
            found = h["BPM"].data != 0
        truth = fits.getdata(night.truth_dir / "bpm.fits", bpm.chip) != 0
        print(f"{bpm.chip}: {found.sum()} bad pixels flagged, {truth.sum()} true, {(found & truth).sum()} of them "
              "found")
        assert (found & truth).sum() >= 0.95 * truth.sum() and (found & ~truth).sum() <= 5
    gains = {f"CCD{c['chip_id']}": c["gain"] for c in json.loads((night.truth_dir / "night.json").read_text())
             ["camera"]["chips"]}
    for d in _products(engine, "master_dark"):  # ADU/s
        assert d.metrics["level_adu_s"] == pytest.approx(DARK_RATE / gains[d.chip], rel=0.05)
        assert d.metrics["n_frames"] == 3 and d.metrics["exptime_s"] == NIGHT.dark_exptime
    offsets = _check_reductions(engine, store, night, tmp_path, dark=True)
    print("sky - truth with the dark subtracted (e-):", [f"{o:+.2f}" for o in offsets])
    # the dark is 60 e-; what is left (~2.5 e- here, the same without darks) is the light of faint sources
    # in the clipped median
    assert all(abs(o) < 5.0 for o in offsets)


def test_a_camera_without_a_dark_rule_gets_no_darks(db_url: str, s3_settings: Settings, night: SimResult,
                                                     tmp_path: Path) -> None:
    engine, store = _setup(db_url, s3_settings, night, darks=False)
    calib = Calib(engine, store, s3_settings)
    calib.feed(_frame_triggers(engine))
    assert dict(calib.made) == {"master_bias": 2, "master_flat": 2, "bad_pixel_map": 2, "reduce": 4}
    for bpm in _products(engine, "bad_pixel_map"):
        assert set(_inputs(engine, bpm.id)) == {"flat", "bias"} and bpm.metrics["sources"] == ["bias", "flat r"]
    offsets = _check_reductions(engine, store, night, tmp_path, dark=False)
    print("sky - truth without dark subtraction (e-):", [f"{o:+.2f}" for o in offsets])
    dark = DARK_RATE * NIGHT.exptime
    assert all(abs(o - dark) < 5.0 for o in offsets)  # the dark charge is left in (and faint sources' light)
