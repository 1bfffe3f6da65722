"""The one consumer wrapper every Wisp service uses: durable pull consumer + error taxonomy -> actions.

success -> ``ack`` (confirmed); :class:`~wisp.errors.Transient` -> ``nak`` with back-off, or on the last
allowed delivery ``term`` + failure record ``exhausted``; :class:`~wisp.errors.InvalidInput` or an
undecodable payload -> ``term`` + record ``invalid``; anything else -> ``term`` + record ``bug`` with
the traceback. A record is stored before the message is terminated; if it cannot be stored the message
is handed back (``nak``) so nothing disappears without a row. Messages the server stops delivering
after ``max_deliver`` silent attempts (crashed or hung workers) are recorded as ``exhausted`` from the
server's advisory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from wisp.bus._nats_errors import ANY_NATS_ERRORS, TRANSIENT_NATS_ERRORS, TRANSIENT_OR_API_ERRORS, is_refusal
from wisp.bus.connection import Bus
from wisp.bus.delivery import advisory_sequence, decode, delivery_info, record_for, record_for_max_deliveries
from wisp.bus.spec import ConsumerSpec
from wisp.bus.stats import ConsumerStats
from wisp.bus.types import DeliveryInfo, FailureKind, FailureRecord, FailureRecorder, call_recorder
from wisp.errors import ConfigError, InvalidInput, Transient, WispError
from wisp.v1 import service_pb2

log = logging.getLogger(__name__)

MessageT = TypeVar("MessageT", bound=Message)
Handler = Callable[[MessageT, DeliveryInfo], Awaitable[None]]


class Consumer(Generic[MessageT]):
    """Runs ``handler(message, delivery)`` for every message of a durable consumer; see module doc.

    ``concurrency`` handlers run at once. Handlers must be idempotent (a message can come twice) and
    must not block the event loop (run heavy science with ``asyncio.to_thread``), else heartbeats stall.
    """

    def __init__(
        self,
        bus: Bus,
        spec: ConsumerSpec,
        message_type: type[MessageT],
        handler: Handler[MessageT],
        *,
        recorder: FailureRecorder,
        concurrency: int = 1,
        fetch_timeout_s: float = 2.0,
        heartbeat_s: float | None = None,
        ack_timeout_s: float = 5.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"consumer {spec.durable}: concurrency must be >= 1")
        self.bus, self.spec, self.message_type, self.handler = bus, spec, message_type, handler
        self.recorder, self.concurrency = recorder, concurrency
        self.fetch_timeout_s, self.ack_timeout_s = fetch_timeout_s, ack_timeout_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else spec.ack_wait_s / 3
        self._stats = ConsumerStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._idle = False  # True while the fetch loop may be cancelled without losing anything
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._advisory_sub: Subscription | None = None

    @property
    def name(self) -> str:
        """The durable consumer name (shared by all replicas)."""
        return self.spec.durable

    @property
    def stats(self) -> ConsumerStats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    def stats_proto(self) -> service_pb2.EndpointStats:
        """The counters as the ``EndpointStats`` of the Stats RPC."""
        return self._stats.to_proto(self.spec.durable)

    def describe(self) -> service_pb2.Endpoint:
        """This consumer as an ``Endpoint`` of the Info RPC."""
        spec = self.spec
        return service_pb2.Endpoint(name=spec.durable, kind="consumer", subjects=list(spec.subjects),
                                    stream=spec.stream, durable=spec.durable)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the end of the fetch loop."""
        return self._loop_task is not None and not self._loop_task.done()

    async def declare(self) -> None:
        """Create or update the durable consumer (idempotent; safe when replicas race)."""
        try:
            await self.bus.js.add_consumer(self.spec.stream, config=self.spec.config())
        except TRANSIENT_OR_API_ERRORS as exc:
            if not (isinstance(exc, js_errors.APIError) and is_refusal(exc)):
                raise Transient(f"JetStream unavailable declaring consumer {self.name}: {exc}",
                                code="bus.unavailable") from exc
            raise ConfigError(f"JetStream refused consumer {self.name} on {self.spec.stream}: "
                              f"{exc.description} (err_code {exc.err_code})",
                              code="bus.consumer_config") from exc

    async def start(self) -> None:
        """Declare the consumer, subscribe to its max-deliveries advisory and start fetching."""
        if self._loop_task is not None:
            raise RuntimeError(f"consumer {self.name} already started")
        await self.declare()
        js, spec = self.bus.js, self.spec
        self._sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        self._advisory_sub = await self.bus.nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{spec.stream}.{spec.durable}",
            queue=f"wisp-advisory-{spec.durable}", cb=self._on_max_deliveries,
        )
        self._loop_task = asyncio.create_task(self._fetch_loop(), name=f"consumer:{spec.durable}")
        self._loop_task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer %s stopped fetching: %r (await wait() to get the error)", self.name,
                      task.exception(), exc_info=task.exception())

    async def wait(self) -> None:
        """Wait for the fetch loop to end and re-raise what ended it; run it as a service task so that a
        consumer that can no longer fetch (connection closed for good, a bug) stops the service."""
        task = self._loop_task
        if task is None:
            return
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def stop(self, timeout: float = 30.0) -> bool:
        """Stop fetching, wait up to ``timeout`` s for in-flight handlers; True if they all finished.

        Handlers still running after ``timeout`` are cancelled and their messages handed back (``nak``).
        """
        self._stopping.set()
        loop = self._loop_task
        if loop is not None and not loop.done():
            if self._idle:
                loop.cancel()  # waiting for a slot or backing off: nothing in transit
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(loop), self.fetch_timeout_s + 1.0)
            if not loop.done():
                loop.cancel()
        drained = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                drained = False
                log.warning("consumer %s: %d handler(s) still running after %.1f s; handing them back",
                            self.name, len(pending), timeout)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        for sub in (self._sub, self._advisory_sub):
            if sub is not None:
                with contextlib.suppress(*ANY_NATS_ERRORS, ValueError):
                    await sub.unsubscribe()
        return drained

    # -- fetching -------------------------------------------------------------------------------------

    async def _pause(self, awaitable: Awaitable[object]) -> None:
        self._idle = True
        try:
            await awaitable
        finally:
            self._idle = False

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        errors = 0
        while not self._stopping.is_set():
            await self._pause(self._slots.acquire())
            taken = 1
            while taken < self.concurrency and not self._slots.locked():
                await self._slots.acquire()  # free slots are taken without waiting
                taken += 1
            msgs: list[Msg] = []
            try:
                msgs = await self._sub.fetch(batch=taken, timeout=self.fetch_timeout_s)
                errors = 0
            except TimeoutError:
                pass  # nothing to do right now (FetchTimeoutError is a TimeoutError too)
            except TRANSIENT_OR_API_ERRORS as exc:
                if self.bus.nc.is_closed:
                    raise Transient(f"consumer {self.name}: connection closed", code="bus.closed") from exc
                errors += 1
                self._stats.fetch_errors += 1
                log.warning("consumer %s: fetch failed (%r); retrying", self.name, exc)
                await self._pause(asyncio.sleep(min(0.2 * 2**errors, 10.0)))
                if not isinstance(exc, TRANSIENT_NATS_ERRORS):
                    with contextlib.suppress(WispError):
                        await self.declare()  # the consumer may have been deleted or changed
            for _ in range(taken - len(msgs)):
                self._slots.release()
            for msg in msgs:
                if self._stopping.is_set():
                    await self._settle(msg.nak(), msg)  # fetched while stopping: give it back at once
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._run_one(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # -- one delivery ---------------------------------------------------------------------------------

    async def _run_one(self, msg: Msg) -> None:
        started = time.monotonic()
        self._stats.in_flight += 1
        try:
            await self._process(msg)
        finally:
            self._stats.in_flight -= 1
            self._stats.handled += 1
            self._stats.total_ms += (time.monotonic() - started) * 1000.0
            self._slots.release()

    async def _process(self, msg: Msg) -> None:
        info = delivery_info(msg)
        try:
            decoded = decode(msg, self.message_type)
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            try:
                await self.handler(decoded, info)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(msg.nak(), msg))  # stop() gave up: redeliver elsewhere now
            self._stats.retried += 1
            raise
        except Transient as exc:
            if info.num_delivered >= self.spec.max_deliver:
                await self._fail(msg, info, "exhausted", exc)
            else:
                self._note(exc)
                await self._retry(msg, info)
        except InvalidInput as exc:
            await self._fail(msg, info, "invalid", exc)
        except Exception as exc:
            await self._fail(msg, info, "bug", exc)
        else:
            # The work is done even if the ack is lost: a redelivery then finds it done (idempotent).
            await self._settle(msg.ack_sync(timeout=self.ack_timeout_s), msg)
            self._stats.succeeded += 1

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await msg.in_progress()
            except ANY_NATS_ERRORS as exc:
                log.warning("consumer %s: in_progress failed (%s); the message may be redelivered",
                            self.name, exc)

    async def _retry(self, msg: Msg, info: DeliveryInfo) -> None:
        await self._settle(msg.nak(delay=self.spec.backoff.delay(info.num_delivered)), msg)
        self._stats.retried += 1

    async def _settle(self, action: Awaitable[object], msg: Msg) -> bool:
        """Send ack/nak/term; on failure count it and rely on redelivery (never lose the message)."""
        try:
            await action
            return True
        except ANY_NATS_ERRORS as exc:
            self._stats.ack_errors += 1
            log.warning("consumer %s: could not settle %s seq %s (%s: %s); it will be redelivered",
                        self.name, msg.subject, msg.metadata.sequence.stream, type(exc).__name__, exc)
            return False

    def _note(self, exc: BaseException) -> None:
        if isinstance(exc, WispError):
            self._stats.last_error_code, self._stats.last_error_message = exc.code, exc.message
        else:  # no internals in Stats: the failure record has the details
            self._stats.last_error_code, self._stats.last_error_message = "internal", type(exc).__name__

    async def _fail(self, msg: Msg, info: DeliveryInfo, kind: FailureKind, exc: BaseException) -> None:
        self._note(exc)
        record = record_for(kind, info, msg.data, exc)
        if not await self._record(record):
            await self._retry(msg, info)
            return
        await self._settle(msg.term(), msg)
        setattr(self._stats, kind, getattr(self._stats, kind) + 1)
        log.error("consumer %s: %s failure on %s (msg_id %s, delivery %d): %s: %s", self.name, kind,
                  info.subject, info.msg_id, info.num_delivered, record.error_code, record.message)

    async def _record(self, record: FailureRecord) -> bool:
        try:
            await call_recorder(self.recorder, record)
            return True
        except Exception:
            log.exception("consumer %s: the failure recorder failed; %s seq %s is handed back for a retry",
                          self.name, record.subject, record.stream_seq)
            return False

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """The server gave up on a message after max_deliver silent deliveries (crashes, hangs)."""
        try:
            seq, deliveries = advisory_sequence(advisory.data)
            raw = await self.bus.js.get_msg(self.spec.stream, seq)
            record = record_for_max_deliveries(
                stream=self.spec.stream, consumer=self.name, subject=raw.subject or "", seq=seq,
                deliveries=deliveries, payload=raw.data or b"",
                headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
            )
        except Exception:
            log.exception("consumer %s: cannot read max-deliveries advisory %r", self.name, advisory.data)
            return
        if await self._record(record):
            self._stats.exhausted += 1
            self._stats.last_error_code, self._stats.last_error_message = record.error_code, record.message
