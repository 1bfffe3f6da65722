"""The bus kernel against a real nats-server: streams, publishing, and the consumer wrapper's outcomes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from wisp.bus import (
    ALL_FRAMES_INGESTED,
    INGEST_FILE,
    WISP_COMMANDS,
    WISP_EVENTS,
    Backoff,
    Bus,
    Consumer,
    ConsumerSpec,
    DeliveryInfo,
    FailureRecord,
    frame_ingested_subject,
)
from wisp.errors import ConfigError, InvalidInput, Transient
from wisp.natsserver import free_port
from wisp.v1 import commands_pb2, events_pb2, frame_pb2


class Recorder:
    """An in-memory FailureRecorder (async), standing in for the database-backed one."""

    def __init__(self) -> None:
        self.records: list[FailureRecord] = []

    async def __call__(self, record: FailureRecord) -> None:
        self.records.append(record)


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def frame_event(frame_id: str, instrument: str = "DECam") -> events_pb2.FrameIngested:
    frame = frame_pb2.RawFrame(id=frame_id, instrument=instrument)
    return events_pb2.FrameIngested(frame=frame, source="test")


def spec(durable: str = "test-frames", **kw: Any) -> ConsumerSpec:
    """A frames consumer with short timings (ack_wait 1 s) to keep the suite fast."""
    values: dict[str, Any] = {"stream": WISP_EVENTS.name, "durable": durable,
                              "subjects": (ALL_FRAMES_INGESTED,), "ack_wait_s": 1.0, "max_deliver": 4,
                              "backoff": Backoff(0.1, 2.0, 0.5)}
    values.update(kw)
    return ConsumerSpec(**values)


def consumer_of(bus: Bus, handler: Any, recorder: Any = None, message_type: Any = events_pb2.FrameIngested,
                consumer_spec: ConsumerSpec | None = None, **kw: Any) -> Consumer[Any]:
    """A Consumer with a short fetch timeout (stop() waits at most for one fetch)."""
    return Consumer(bus, consumer_spec or spec(), message_type, handler, recorder=recorder or Recorder(),
                    fetch_timeout_s=0.5, **kw)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test")
    await b.ensure_streams()
    yield b
    await b.close()


async def ack_state(bus: Bus, durable: str) -> tuple[int, int, int]:
    """(num_pending, num_ack_pending, num_redelivered) of a consumer."""
    info = await bus.js.consumer_info(WISP_EVENTS.name, durable)
    return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0


# -- streams and publishing ------------------------------------------------------------------------------


async def test_ensure_streams_is_idempotent_and_concurrency_safe(nats_url: str) -> None:
    async with await Bus.connect(nats_url) as bus:
        assert await bus.ensure_streams() == {"WISP_EVENTS": "created", "WISP_COMMANDS": "created"}
        assert await bus.ensure_streams() == {"WISP_EVENTS": "unchanged", "WISP_COMMANDS": "unchanged"}
        for name in ("WISP_EVENTS", "WISP_COMMANDS"):
            await bus.js.delete_stream(name)
        buses = [await Bus.connect(nats_url) for _ in range(5)]
        try:
            results = await asyncio.gather(*(b.ensure_streams() for b in buses))
        finally:
            await asyncio.gather(*(b.close() for b in buses))
        assert all(set(r) == {"WISP_EVENTS", "WISP_COMMANDS"} for r in results)
        events = (await bus.js.stream_info("WISP_EVENTS")).config
        assert events.subjects == ["wisp.evt.>"] and events.retention == "limits" and events.storage == "file"
        assert events.max_age == pytest.approx(30 * 86400) and events.duplicate_window == pytest.approx(600)
        assert (await bus.js.stream_info("WISP_COMMANDS")).config.retention == "workqueue"
        # A changed setting is applied; an impossible change is a ConfigError, not a silent mismatch.
        longer = dataclasses.replace(WISP_EVENTS, max_age_s=60 * 86400.0)
        assert await bus.ensure_streams([longer]) == {"WISP_EVENTS": "updated"}
        assert (await bus.js.stream_info("WISP_EVENTS")).config.max_age == pytest.approx(60 * 86400)
        with pytest.raises(ConfigError, match="WISP_COMMANDS"):
            await bus.ensure_streams([dataclasses.replace(WISP_COMMANDS, retention=WISP_EVENTS.retention)])


async def test_publish_deduplicates_by_msg_id(bus: Bus) -> None:
    subject = frame_ingested_subject("DECam")
    assert await bus.publish(subject, frame_event("f1"), msg_id="f1") is True
    assert await bus.publish(subject, frame_event("f1"), msg_id="f1") is False
    assert await bus.publish(subject, frame_event("f2"), msg_id="f2") is True
    assert (await bus.js.stream_info("WISP_EVENTS")).state.messages == 2


async def test_unreachable_server_raises_transient_quickly() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(Transient, match=url.replace(".", r"\.")):
        await Bus.connect(url, connect_timeout=1.5)
    assert time.monotonic() - started < 4


# -- the consumer wrapper --------------------------------------------------------------------------------


async def test_consumer_acks_on_success(bus: Bus) -> None:
    seen: list[tuple[str, DeliveryInfo]] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        seen.append((event.frame.id, info))

    consumer = consumer_of(bus, handler)
    await consumer.start()
    for i in range(3):
        await bus.publish(frame_ingested_subject("DECam"), frame_event(f"f{i}"), msg_id=f"f{i}")
    await until(lambda: consumer.stats.succeeded == 3, what="3 acks")
    assert [fid for fid, _ in seen] == ["f0", "f1", "f2"]
    info = seen[0][1]
    assert info.subject == "wisp.evt.frame.ingested.decam"
    assert (info.msg_id, info.num_delivered, info.stream_seq) == ("f0", 1, 1)
    assert info.headers["Wisp-Msg-Type"] == "wisp.v1.FrameIngested"
    assert await ack_state(bus, "test-frames") == (0, 0, 0)
    assert await consumer.stop(timeout=2)
    assert consumer.stats.handled == 3 and consumer.stats.in_flight == 0


async def test_transient_is_redelivered_then_succeeds(bus: Bus) -> None:
    deliveries: list[int] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        deliveries.append(info.num_delivered)
        if info.num_delivered == 1:
            raise Transient("database down")

    recorder = Recorder()
    consumer = consumer_of(bus, handler, recorder)
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: consumer.stats.succeeded == 1, what="success on redelivery")
    await consumer.stop(timeout=2)
    assert deliveries == [1, 2]
    assert consumer.stats.retried == 1 and recorder.records == []


async def test_transient_on_every_delivery_is_recorded_as_exhausted(bus: Bus) -> None:
    calls: list[int] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        calls.append(info.num_delivered)
        raise Transient("store down", code="store.unavailable")

    recorder = Recorder()
    consumer = consumer_of(bus, handler, recorder, consumer_spec=spec(max_deliver=3))
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: len(recorder.records) == 1, what="exhausted record")
    await consumer.stop(timeout=2)
    record = recorder.records[0]
    assert (record.kind, record.deliveries, record.error_code, record.msg_id) == ("exhausted", 3,
                                                                                   "store.unavailable", "f1")
    assert calls == [1, 2, 3] and consumer.stats.exhausted == 1 and consumer.stats.retried == 2
    assert await ack_state(bus, "test-frames") == (0, 0, 0)


async def test_invalid_input_is_terminated_and_recorded(bus: Bus) -> None:
    calls: list[int] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        calls.append(info.num_delivered)
        raise InvalidInput("HDU 3 is truncated", code="fits.truncated", hdu=3)

    recorder = Recorder()
    consumer = consumer_of(bus, handler, recorder)
    await consumer.start()
    event = frame_event("f1")
    await bus.publish(frame_ingested_subject("DECam"), event, msg_id="f1")
    await until(lambda: len(recorder.records) == 1, what="invalid record")
    await asyncio.sleep(1.5)  # longer than ack_wait: a non-terminated message would be back by now
    await consumer.stop(timeout=2)
    record = recorder.records[0]
    assert (record.kind, record.error_code) == ("invalid", "fits.truncated")
    assert record.message == "HDU 3 is truncated"
    assert record.details == {"hdu": "3"} and record.traceback is None
    assert (record.stream, record.consumer) == ("WISP_EVENTS", "test-frames")
    assert record.subject == "wisp.evt.frame.ingested.decam"
    assert record.payload == event.SerializeToString() and record.msg_id == "f1" and record.deliveries == 1
    assert calls == [1] and consumer.stats.invalid == 1
    assert await ack_state(bus, "test-frames") == (0, 0, 0)


async def test_undecodable_or_mistyped_payload_is_invalid(bus: Bus) -> None:
    calls: list[str] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        calls.append(info.msg_id or "")

    recorder = Recorder()
    consumer = consumer_of(bus, handler, recorder)
    await consumer.start()
    subject = frame_ingested_subject("DECam")
    await bus.publish_raw(subject, b"\xff\xff\xff\xff", msg_id="garbage")
    wrong = events_pb2.ExposureIngested().SerializeToString()  # as a misconfigured publisher would send
    await bus.publish_raw(subject, wrong, msg_id="wrong-type", msg_type="wisp.v1.ExposureIngested")
    await until(lambda: len(recorder.records) == 2, what="two invalid records")
    await consumer.stop(timeout=2)
    codes = {r.msg_id: (r.kind, r.error_code) for r in recorder.records}
    assert codes == {"garbage": ("invalid", "bus.undecodable"), "wrong-type": ("invalid", "bus.wrong_type")}
    assert calls == []


async def test_bug_is_terminated_with_traceback(bus: Bus) -> None:
    async def buggy_handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        _ = 1 / 0

    recorder = Recorder()
    consumer = consumer_of(bus, buggy_handler, recorder)
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: len(recorder.records) == 1, what="bug record")
    await consumer.stop(timeout=2)
    record = recorder.records[0]
    assert (record.kind, record.error_code, record.deliveries) == ("bug", "internal", 1)
    assert record.message.startswith("ZeroDivisionError")
    assert record.traceback and "ZeroDivisionError" in record.traceback
    assert "buggy_handler" in record.traceback
    assert consumer.stats.bug == 1 and consumer.stats.last_error_message == "ZeroDivisionError"
    assert await ack_state(bus, "test-frames") == (0, 0, 0)


@pytest.mark.parametrize("heartbeats", [True, False], ids=["heartbeats", "no-heartbeats-control"])
async def test_slow_handler_is_not_redelivered_thanks_to_heartbeats(bus: Bus, heartbeats: bool) -> None:
    deliveries: list[int] = []

    async def slow(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        deliveries.append(info.num_delivered)
        await asyncio.sleep(2.5)  # 2.5 x ack_wait

    consumer = consumer_of(bus, slow, concurrency=2,
                        heartbeat_s=None if heartbeats else 60.0)
    await consumer.start()
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f1"), msg_id="f1")
    await until(lambda: consumer.stats.succeeded >= 1, timeout=10, what="slow success")
    await consumer.stop(timeout=5)
    if heartbeats:
        assert deliveries == [1]
        assert await ack_state(bus, "test-frames") == (0, 0, 0)
    else:  # the control: without heartbeats the server gives the message to the second slot
        assert deliveries[:2] == [1, 2]


WORKER = """
import asyncio, sys
from wisp.bus import Bus, Consumer, ConsumerSpec, WISP_COMMANDS, INGEST_FILE
from wisp.v1 import commands_pb2

async def main(url):
    bus = await Bus.connect(url)
    async def handler(cmd, info):
        print("STARTED", info.msg_id, flush=True)
        await asyncio.sleep(600)
    async def recorder(record):
        pass
    spec = ConsumerSpec(stream=WISP_COMMANDS.name, durable="ingest-file", subjects=(INGEST_FILE,),
                        ack_wait_s=2.0)
    await Consumer(bus, spec, commands_pb2.IngestFile, handler, recorder=recorder).start()
    await asyncio.sleep(600)

asyncio.run(main(sys.argv[1]))
"""


async def test_killed_consumer_message_is_redelivered_and_processed_once(bus: Bus, nats_url: str) -> None:
    await bus.publish(INGEST_FILE, commands_pb2.IngestFile(path="/data/a.fits"), msg_id="cmd-1")
    proc = subprocess.Popen([sys.executable, "-c", WORKER, nats_url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.split() == ["STARTED", "cmd-1"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    killed = time.monotonic()

    effects: list[str] = []
    done_ids: set[str] = set()
    deliveries: list[int] = []

    async def idempotent(cmd: commands_pb2.IngestFile, info: DeliveryInfo) -> None:
        deliveries.append(info.num_delivered)
        if info.msg_id in done_ids:
            return
        done_ids.add(info.msg_id or "")
        effects.append(cmd.path)

    spec2 = ConsumerSpec(stream=WISP_COMMANDS.name, durable="ingest-file", subjects=(INGEST_FILE,),
                         ack_wait_s=2.0)
    consumer = consumer_of(bus, idempotent, message_type=commands_pb2.IngestFile, consumer_spec=spec2)
    await consumer.start()
    await until(lambda: consumer.stats.succeeded == 1, timeout=10, what="redelivery to the new consumer")
    assert time.monotonic() - killed < 4.5  # about ack_wait after the last heartbeat of the dead worker
    await asyncio.sleep(2.5)  # longer than ack_wait: nothing else comes
    await consumer.stop(timeout=2)
    assert effects == ["/data/a.fits"] and deliveries == [2]
    assert (await bus.js.stream_info(WISP_COMMANDS.name)).state.messages == 0  # work queue: acked = removed


async def test_stop_drains_in_flight_work(bus: Bus) -> None:
    started: list[str] = []
    finished: list[str] = []

    async def handler(event: events_pb2.FrameIngested, info: DeliveryInfo) -> None:
        started.append(event.frame.id)
        await asyncio.sleep(1.0)
        finished.append(event.frame.id)

    consumer = consumer_of(bus, handler, concurrency=2)
    await consumer.start()
    for fid in ("f1", "f2"):
        await bus.publish(frame_ingested_subject("DECam"), frame_event(fid), msg_id=fid)
    await until(lambda: len(started) == 2, what="two handlers running")
    t0 = time.monotonic()
    assert await consumer.stop(timeout=10) is True
    await asyncio.wait_for(consumer.wait(), 1)  # the fetch loop has ended, without an error
    assert not consumer.running
    assert sorted(finished) == ["f1", "f2"] and consumer.stats.succeeded == 2
    assert time.monotonic() - t0 < 3.5
    await bus.publish(frame_ingested_subject("DECam"), frame_event("f3"), msg_id="f3")
    await asyncio.sleep(0.5)
    assert started == ["f1", "f2"] or sorted(started) == ["f1", "f2"]
    assert await ack_state(bus, "test-frames") == (1, 0, 0)  # f3 waits for the next consumer
