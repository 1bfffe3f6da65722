"""The qc handler against a real migrated database and a filesystem object store (no NATS)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from services.qc.records import qc_activity_id
from services.qc.runner import QcRunner
from services.qc.service import QC_CONSUMER, make_handler
from tests.unit.test_qc_metrics import master, reduced_hdul, sky_image
from wisp.bus import ALL_PRODUCTS_CREATED, DeliveryInfo
from wisp.db import Base, make_engine, session_scope
from wisp.errors import InvalidInput, WispError
from wisp.instruments import load_registry
from wisp.quality import BAD_PIXELS, FEW_SOURCES, MASTER_NOISE, SEEING
from wisp.store import FilesystemStore, ObjectStore
from wisp.v1 import pipeline_pb2

NON_QC_BIT = 1 << 20  # a bit QC does not own: must survive


def t(name: str) -> Any:
    return Base.metadata.tables[name]


@pytest.fixture
def engine(db_url: str) -> Any:
    eng = make_engine(db_url)
    with session_scope(eng) as s:
        for cam in ("simcam", "generic:orion-ssdsi"):
            s.execute(insert(t("instruments")).values(name=cam, telescope="T", definition={}))
            s.execute(insert(t("chips")).values(instrument=cam, name="ccd1"))
            s.execute(insert(t("filters")).values(instrument=cam, name="r", band="r"))
    yield eng
    eng.dispose()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "objects")


def runner(engine: Engine, store: ObjectStore, tmp_path: Path, paths: tuple[Path, ...] = ()) -> QcRunner:
    return QcRunner(engine, store, load_registry(paths), tmp_path / "data" / "tmp" / "qc")


def add_product(engine: Engine, store: ObjectStore, tmp_path: Path, pid: str, kind: str = "reduced", *,
                file: Path | None = None, instrument: str | None = "simcam", metrics: dict[str, Any] | None = None,
                quality_flags: int = 0, is_valid: int = 2) -> None:
    key = store.put_file(file, namespace=f"products/{kind.replace('_', '-')}").key if file else None
    row = {"id": pid, "kind": kind, "stage": kind, "object_key": key, "instrument": instrument,
           "chip": "ccd1" if instrument else None, "filter": "r" if instrument else None, "params": {},
           "metrics": metrics or {}, "quality_flags": quality_flags, "is_valid": is_valid}
    with session_scope(engine) as s:
        s.execute(insert(t("products")).values(**row))


def reduced_file(tmp_path: Path, *, bad_rows: int = 0, fwhm: float = 4.0) -> Path:
    hdul = reduced_hdul(sky_image(n=512, n_stars=40, fwhm=fwhm))
    hdul["DQ"].data[:bad_rows, :] |= 16  # no data
    path = tmp_path / f"reduced-{bad_rows}-{fwhm}.fits"
    hdul.writeto(path)
    return path


def snapshot(engine: Engine) -> dict[str, Any]:
    with session_scope(engine) as s:
        return {name: [dict(r._mapping) for r in s.execute(select(t(name)).order_by(*t(name).primary_key))]
                for name in ("products", "activities", "lineage_edges", "dead_letters")}


def delivery() -> DeliveryInfo:
    return DeliveryInfo(subject="wisp.evt.product.created.reduced", msg_id="red-1", num_delivered=1,
                        stream_seq=1, stream="WISP_EVENTS", consumer="qc-products")


def event(pid: str) -> pipeline_pb2.ProductCreated:
    return pipeline_pb2.ProductCreated(product=pipeline_pb2.Product(id=pid, kind="reduced"))


def test_consumer_declaration() -> None:
    assert QC_CONSUMER.stream == "WISP_EVENTS" and QC_CONSUMER.durable == "qc-products"
    assert QC_CONSUMER.subjects == (ALL_PRODUCTS_CREATED,)


async def test_reduced_frame_is_measured_flagged_and_recorded_once(engine: Engine, store: FilesystemStore,
                                                                   tmp_path: Path) -> None:
    pid = "red-000000000000000000000001"
    add_product(engine, store, tmp_path, pid, file=reduced_file(tmp_path, bad_rows=40),
                metrics={"stage_note": 1.5, "noise_e": 999.0}, quality_flags=NON_QC_BIT | SEEING)
    handler = make_handler(runner(engine, store, tmp_path))
    await handler(event(pid), delivery())
    first = snapshot(engine)
    product = first["products"][0]
    m = product["metrics"]
    assert m["stage_note"] == 1.5  # a stage's key is kept
    assert m["noise_e"] == pytest.approx(20.0, rel=0.03)  # QC's own measurement replaces the stage's
    assert m["seeing_arcsec"] == pytest.approx(4.0 * 0.26, rel=0.05)
    assert m["dq_nodata_fraction"] == pytest.approx(40 / 512)
    # simcam: dq_bad_fraction <= 0.05 -> BAD_PIXELS; seeing fine, so the old SEEING bit is cleared
    assert product["quality_flags"] == NON_QC_BIT | BAD_PIXELS
    assert product["is_valid"] == 2  # the user's verdict is never touched
    [act] = first["activities"]
    assert act["id"] == qc_activity_id(pid) and act["stage"] == "qc" and act["status"] == "succeeded"
    assert act["params"]["flags"] == ["BAD_PIXELS"] and act["params"]["description"] == "simcam"
    assert act["params"]["reasons"][0].startswith("dq_bad_fraction = 0.0803")
    assert act["params"]["thresholds"]["seeing_arcsec"] == {"max": 2.0}
    assert [(e["entity_id"], e["relation"], e["role"]) for e in first["lineage_edges"]] == [(pid, "used", "subject")]
    assert not list((tmp_path / "data" / "tmp" / "qc").iterdir())  # the local copy is gone

    await handler(event(pid), delivery())  # redelivery
    outcome = await asyncio.to_thread(runner(engine, store, tmp_path).run, pid)
    assert not outcome.changed
    assert snapshot(engine) == first


def test_new_thresholds_change_the_verdict_not_the_identity(engine: Engine, store: FilesystemStore,
                                                            tmp_path: Path) -> None:
    pid = "red-000000000000000000000002"
    add_product(engine, store, tmp_path, pid, file=reduced_file(tmp_path))
    assert runner(engine, store, tmp_path).run(pid).flags == 0
    strict = tmp_path / "instruments"
    strict.mkdir()
    text = (Path(__file__).resolve().parents[2] / "wisp/instruments/data/simcam.yaml").read_text()
    (strict / "simcam.yaml").write_text(text.replace("seeing_arcsec: {max: 2.0}", "seeing_arcsec: {max: 0.5}", 1))
    outcome = runner(engine, store, tmp_path, (strict,)).run(pid)
    assert outcome.flags == SEEING and outcome.changed
    state = snapshot(engine)
    assert len(state["activities"]) == 1 and state["activities"][0]["params"]["flags"] == ["SEEING"]
    assert state["products"][0]["quality_flags"] == SEEING


def test_generic_cameras_and_products_without_files(engine: Engine, store: FilesystemStore, tmp_path: Path) -> None:
    qc = runner(engine, store, tmp_path)
    pid = "red-000000000000000000000003"
    add_product(engine, store, tmp_path, pid, file=reduced_file(tmp_path), instrument="generic:orion-ssdsi")
    qc.run(pid)
    with session_scope(engine) as s:
        params = s.scalar(select(t("activities").c.params).where(t("activities").c.id == qc_activity_id(pid)))
    assert params is not None
    assert params["description"] == "generic" and params["thresholds"]["seeing_arcsec"] == {"max": 6.0}

    add_product(engine, store, tmp_path, "ref-000000000000000000000001", "refcat", instrument=None,
                metrics={"n_sources": 3, "radius_deg": 1.0})
    out = qc.run("ref-000000000000000000000001")
    assert out.flags == FEW_SOURCES and out.metrics == {"n_sources": 3, "radius_deg": 1.0}

    add_product(engine, store, tmp_path, "xyz-000000000000000000000001", "mystery", instrument=None)
    assert qc.run("xyz-000000000000000000000001").flags == 0  # unknown kinds: recorded, nothing measured

    add_product(engine, store, tmp_path, "red-000000000000000000000009", instrument=None)
    with pytest.raises(InvalidInput) as info:
        qc.run("red-000000000000000000000009")
    assert info.value.code == "qc.no_file"


async def test_unknown_product_is_invalid_input(engine: Engine, store: FilesystemStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        await make_handler(runner(engine, store, tmp_path))(event("red-00000000000000000000dead"), delivery())
    assert info.value.code == "qc.unknown_product"
    with pytest.raises(InvalidInput):
        await make_handler(runner(engine, store, tmp_path))(pipeline_pb2.ProductCreated(), delivery())


def test_unreadable_file_is_a_bug(engine: Engine, store: FilesystemStore, tmp_path: Path) -> None:
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"this is not FITS" * 200)
    add_product(engine, store, tmp_path, "red-000000000000000000000004", file=junk)
    with pytest.raises(Exception) as info:
        runner(engine, store, tmp_path).run("red-000000000000000000000004")
    assert not isinstance(info.value, WispError)  # not invalid input, not transient: dead-lettered as a bug
    assert snapshot(engine)["activities"] == []


def test_metrics_of_a_master_bias_file(engine: Engine, store: FilesystemStore, tmp_path: Path) -> None:
    path = tmp_path / "bias.fits"
    master(1000.0 + np.random.default_rng(1).normal(0, 8.0, (256, 256)), NCOMBINE=2).writeto(path)
    add_product(engine, store, tmp_path, "mbias-00000000000000000000001", "master_bias", file=path)
    out = runner(engine, store, tmp_path).run("mbias-00000000000000000000001")
    assert out.metrics["n_combine"] == 2
    assert out.flags == MASTER_NOISE  # simcam: std_adu <= 5, pixel_noise_adu <= 3, n_combine >= 3
    assert [r.split(" = ")[0] for r in out.reasons] == ["n_combine", "pixel_noise_adu", "std_adu"]
