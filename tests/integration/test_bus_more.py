"""More of the bus kernel: subjects, back-off, filters, concurrency, recorder failures, advisories,
forced stops, replicas, reconnects."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tests.integration.test_bus import Recorder, consumer_of, frame_event, spec, until
from wisp.bus import (
    INGEST_FILE,
    INGEST_REJECTED,
    WISP_EVENTS,
    Backoff,
    Bus,
    DeliveryInfo,
    FailureRecord,
    ensure_streams_at,
    exposure_ingested_subject,
    frame_ingested_subject,
    message_type_for,
    token,
)
from wisp.errors import ConfigError, InvalidInput, Transient
from wisp.natsserver import NatsServer
from wisp.v1 import events_pb2


@pytest.fixture
async def bus(nats_url: str) -> Any:
    b = await Bus.connect(nats_url, name="test-more")
    await b.ensure_streams()
    yield b
    await b.close()


def test_subject_tokens_are_sanitised() -> None:
    assert frame_ingested_subject("DECam") == "wisp.evt.frame.ingested.decam"
    assert token(" Mega Cam/2.0 ") == "mega_cam_2_0"
    assert token("hsc-wide_1") == "hsc-wide_1"
    assert token("a.*>b") == "a_b"
    with pytest.raises(InvalidInput):
        token(" .*> ")


def test_subject_message_types_name_real_messages() -> None:
    from wisp.v1 import commands_pb2

    assert message_type_for(frame_ingested_subject("hsc")) == events_pb2.FrameIngested.DESCRIPTOR.full_name
    exposure = events_pb2.ExposureIngested.DESCRIPTOR.full_name
    assert message_type_for(exposure_ingested_subject("x")) == exposure
    assert message_type_for(INGEST_REJECTED) == events_pb2.IngestRejected.DESCRIPTOR.full_name
    assert message_type_for(INGEST_FILE) == commands_pb2.IngestFile.DESCRIPTOR.full_name
    assert message_type_for("wisp.evt.frame.ingestedx") is None


async def test_publish_checks_the_subject_contract(bus: Bus) -> None:
    with pytest.raises(ValueError, match=r"carries wisp\.v1\.FrameIngested"):
        await bus.publish(frame_ingested_subject("x"), events_pb2.ExposureIngested(), msg_id="e")
    # Raw payloads (e.g. from an outbox) get the type header from the subject table.
    await bus.publish_raw(frame_ingested_subject("x"), frame_event("f").SerializeToString(), msg_id="f")
    raw = await bus.js.get_msg(WISP_EVENTS.name, 1)
    assert raw.headers == {"Nats-Msg-Id": "f", "Wisp-Msg-Type": "wisp.v1.FrameIngested"}


def test_backoff_is_exponential_and_capped() -> None:
    b = Backoff(initial_s=1.0, factor=2.0, max_s=5.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 10, 1000)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        Backoff(initial_s=0)


def test_ensure_streams_at_is_a_blocking_helper(nats_url: str) -> None:
    assert ensure_streams_at(nats_url) == {"WISP_EVENTS": "created", "WISP_COMMANDS": "created"}
    assert ensure_streams_at(nats_url) == {"WISP_EVENTS": "unchanged", "WISP_COMMANDS": "unchanged"}


async def test_three_replicas_without_a_cluster_is_a_config_error(nats_url: str) -> None:
    async with await Bus.connect(nats_url) as bus:
        with pytest.raises(ConfigError, match="WISP_EVENTS"):
            await bus.ensure_streams([WISP_EVENTS], replicas=3)


async def test_publish_outside_any_stream_is_transient(bus: Bus) -> None:
    with pytest.raises(Transient, match=r"nowhere\.at\.all"):
        await bus.publish("nowhere.at.all", frame_event("x"), msg_id="x", timeout=1)


async def test_consumer_with_several_filter_subjects(bus: Bus) -> None:
    got: list[str] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        got.append(info.subject)

    subjects = (frame_ingested_subject("decam"), frame_ingested_subject("hsc"))
    consumer = consumer_of(bus, handler, consumer_spec=spec(subjects=subjects))
    await consumer.start()
    for i, instrument in enumerate(("DECam", "MegaCam", "HSC")):
        event = frame_event(f"f{i}", instrument)
        await bus.publish(frame_ingested_subject(instrument), event, msg_id=f"f{i}")
    await until(lambda: len(got) == 2, what="two filtered messages")
    await asyncio.sleep(0.3)
    await consumer.stop(timeout=2)
    assert got == ["wisp.evt.frame.ingested.decam", "wisp.evt.frame.ingested.hsc"]
    assert consumer.describe().subjects == list(subjects)


async def test_concurrency_limit_is_respected(bus: Bus) -> None:
    running, peak = 0, 0

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.3)
        running -= 1

    consumer = consumer_of(bus, handler, concurrency=3)
    await consumer.start()
    for i in range(7):
        await bus.publish(frame_ingested_subject("DECam"), frame_event(f"f{i}"), msg_id=f"f{i}")
    await until(lambda: consumer.stats.succeeded == 7, what="7 successes")
    await consumer.stop(timeout=2)
    assert peak == 3
    stats = consumer.stats_proto()
    assert (stats.name, stats.handled, stats.succeeded, stats.in_flight) == ("test-frames", 7, 7, 0)
    assert stats.average_processing_ms >= 300


async def test_failed_recorder_hands_the_message_back(bus: Bus) -> None:
    records: list[FailureRecord] = []
    attempts: list[int] = []
    thread_ids: set[int] = set()

    def flaky_sync_recorder(record: FailureRecord) -> None:
        thread_ids.add(threading.get_ident())
        attempts.append(record.deliveries)
        if len(attempts) == 1:
            raise OSError("database is locked")
        records.append(record)

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        raise InvalidInput("nope", code="test.invalid")

    consumer = consumer_of(bus, handler, flaky_sync_recorder)
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: len(records) == 1, what="record on the second delivery")
    await consumer.stop(timeout=2)
    assert attempts == [1, 2] and records[0].deliveries == 2 and records[0].kind == "invalid"
    assert threading.get_ident() not in thread_ids  # sync recorders run off the event loop
    assert consumer.stats.retried == 1 and consumer.stats.invalid == 1


async def test_server_giving_up_is_recorded_from_its_advisory(bus: Bus) -> None:
    """A handler that hangs without heartbeats (as a wedged worker would) exhausts max_deliver."""
    release = asyncio.Event()

    async def hung(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        await release.wait()

    recorder = Recorder()
    consumer = consumer_of(bus, hung, recorder, consumer_spec=spec(max_deliver=2), concurrency=3,
                           heartbeat_s=60.0)
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: len(recorder.records) == 1, timeout=10, what="max-deliveries record")
    release.set()
    await consumer.stop(timeout=2)
    record = recorder.records[0]
    assert (record.kind, record.error_code) == ("exhausted", "bus.max_deliveries")
    assert (record.deliveries, record.msg_id) == (2, "f1")
    assert record.payload == frame_event("f1").SerializeToString() and record.stream_seq == 1


async def test_stop_timeout_hands_running_work_back(bus: Bus) -> None:
    async def forever(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        await asyncio.sleep(600)

    first = consumer_of(bus, forever, consumer_spec=spec(ack_wait_s=30.0))
    await first.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: first.stats.in_flight == 1, what="handler running")
    assert await first.stop(timeout=0.2) is False
    assert first.stats.retried == 1

    seen: list[int] = []

    async def quick(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        seen.append(info.num_delivered)

    second = consumer_of(bus, quick, consumer_spec=spec(ack_wait_s=30.0))
    started = time.monotonic()
    await second.start()
    await until(lambda: seen == [2], timeout=5, what="immediate redelivery")
    assert time.monotonic() - started < 5  # far less than ack_wait: it was nak'ed, not abandoned
    await second.stop(timeout=2)


async def test_bus_reconnects_after_a_server_restart(fresh_nats_server: NatsServer) -> None:
    server = fresh_nats_server
    bus = await Bus.connect(server.url, reconnect_time_wait=0.2)
    try:
        await bus.ensure_streams()
        server.stop()
        with pytest.raises(Transient):
            await bus.publish(frame_ingested_subject("x"), frame_event("a"), msg_id="a", timeout=0.5)
        restarted = NatsServer.start(port=server.port, monitor_port=server.monitor_port,
                                     store_dir=server.store_dir, log_file=server.log_file)
        try:
            await until(lambda: bus.is_connected, timeout=10, what="reconnect")
            assert await bus.publish(frame_ingested_subject("x"), frame_event("b"), msg_id="b") is True
        finally:
            restarted.stop()
    finally:
        await bus.close()
