"""``python -m services.qc`` as a process on a real NATS server: events in, QC rows and dead letters out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.test_qc_service import add_product, reduced_file, snapshot
from wisp.bus import Bus, product_created_subject
from wisp.db import Base, make_engine, migrate, session_scope
from wisp.quality import BAD_PIXELS
from wisp.store import FilesystemStore
from wisp.v1 import pipeline_pb2


@pytest.fixture
def qc_process(tmp_path: Path, nats_url: str) -> Iterator[tuple[str, Path, Path]]:
    """A running qc service (its own process) on a fresh SQLite file and filesystem store."""
    data = tmp_path / "data"
    db_url = f"sqlite:///{tmp_path / 'wisp.sqlite'}"
    migrate(db_url)
    env = dict(os.environ, WISP_DATA_DIR=str(data), WISP_DB_URL=db_url, WISP_STORE_URL=(tmp_path / "objects").as_uri(),
               WISP_NATS_URL=nats_url, WISP_GRPC_PORT="0", WISP_LOG_JSON="true")
    log = tmp_path / "qc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.qc"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield db_url, tmp_path, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def checked(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("msg") == "checked"]


def wait_for(predicate: Callable[[], bool], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out; service log:\n{log.read_text()[-4000:]}")


async def test_events_are_checked_once_and_bad_ones_dead_lettered(qc_process: tuple[str, Path, Path],
                                                                  nats_url: str) -> None:
    db_url, tmp_path, log = qc_process
    engine = make_engine(db_url)
    store = FilesystemStore(tmp_path / "objects")
    with session_scope(engine) as s:
        t = Base.metadata.tables
        s.execute(t["instruments"].insert().values(name="simcam", telescope="T", definition={}))
        s.execute(t["chips"].insert().values(instrument="simcam", name="ccd1"))
        s.execute(t["filters"].insert().values(instrument="simcam", name="r", band="r"))
    pid = "red-0000000000000000000000b1"
    add_product(engine, store, tmp_path, pid, file=reduced_file(tmp_path, bad_rows=40))
    bus = await Bus.connect(nats_url, name="qc-test")
    try:
        await bus.ensure_streams(replicas=1)
        event = pipeline_pb2.ProductCreated(product=pipeline_pb2.Product(id=pid, kind="reduced"))
        await bus.publish(product_created_subject("reduced"), event, msg_id=pid)
        await asyncio.to_thread(wait_for, lambda: len(checked(log)) == 1, log)
        first = snapshot(engine)
        assert first["products"][0]["quality_flags"] == BAD_PIXELS and len(first["activities"]) == 1
        await bus.publish(product_created_subject("reduced"), event, msg_id=pid + "-again")  # a second delivery
        await asyncio.to_thread(wait_for, lambda: len(checked(log)) == 2, log)
        assert snapshot(engine) == first

        ghost = pipeline_pb2.ProductCreated(product=pipeline_pb2.Product(id="red-00000000000000000000dead"))
        await bus.publish(product_created_subject("reduced"), ghost, msg_id="red-00000000000000000000dead")

        def dead_letters() -> list[Any]:
            with session_scope(engine) as s:
                return list(s.execute(select(Base.metadata.tables["dead_letters"])))

        await asyncio.to_thread(wait_for, lambda: len(dead_letters()) == 1, log)
        [row] = dead_letters()
        assert row.kind == "invalid" and row.error_code == "qc.unknown_product" and row.consumer == "qc-products"
    finally:
        await bus.close()
        engine.dispose()
