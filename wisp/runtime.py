"""The service runtime: one lifecycle for every Wisp service.

start → connect database, store and bus → serve gRPC (standard health + ServiceInfo) and the
service's own consumers/tasks → SIGTERM/SIGINT → report NOT_SERVING, stop fetching, let in-flight work
finish (graceful drain), stop gRPC, close the bus. Everything is held in one ``AsyncExitStack`` so that
a failure at any step unwinds what was already started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine

from wisp import __version__
from wisp.bus import Bus, Consumer
from wisp.config import Settings, load_settings
from wisp.db import check as db_check
from wisp.db import make_engine, migrate
from wisp.errors import WispError
from wisp.logs import setup_logging
from wisp.store import ObjectStore, open_store
from wisp.v1 import service_pb2, service_pb2_grpc

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 30.0
READINESS_PERIOD_S = 2.0


@dataclass
class ServiceContext:
    """What a service's setup gets: its settings and connections, and places to register work."""

    name: str
    settings: Settings
    engine: Engine
    store: ObjectStore
    bus: Bus
    server: grpc.aio.Server
    consumers: list[Consumer[Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        """Run a background task for the life of the service; its crash stops the service."""
        self.tasks.append(asyncio.ensure_future(coro))
        self.tasks[-1].set_name(name)


class ServiceApp(Protocol):
    """A stage's adapter: registers its gRPC servicers, consumers and tasks on the context."""

    name: str

    async def setup(self, ctx: ServiceContext) -> None: ...


class _Info(service_pb2_grpc.ServiceInfoServicer):
    """Ping/Info/Stats for operators (nats.py ``micro`` style)."""

    def __init__(self, ctx: ServiceContext, instance: str, started: datetime) -> None:
        self.ctx, self.instance, self.started = ctx, instance, started

    async def Ping(self, request: Any, context: Any) -> Any:
        return service_pb2.PingReply(name=self.ctx.name, instance_id=self.instance)

    async def Info(self, request: Any, context: Any) -> Any:
        reply = service_pb2.InfoReply(name=self.ctx.name, version=__version__, instance_id=self.instance,
                                      host=socket.gethostname())
        reply.started_at.FromDatetime(self.started)
        reply.endpoints.extend(c.describe() for c in self.ctx.consumers)
        return reply

    async def Stats(self, request: Any, context: Any) -> Any:
        return service_pb2.StatsReply(name=self.ctx.name, instance_id=self.instance,
                                      endpoints=[c.stats_proto() for c in self.ctx.consumers])


async def _readiness(ctx: ServiceContext, health_servicer: health.aio.HealthServicer) -> None:
    """Report SERVING only while the database, the store and the bus answer."""
    status = None
    while True:
        try:
            await asyncio.to_thread(db_check, ctx.engine)
            await asyncio.to_thread(ctx.store.check)
            if not ctx.bus.is_connected:
                raise WispError("bus disconnected")
            new = health_pb2.HealthCheckResponse.SERVING
        except Exception as exc:  # any failed probe means "not ready", which is reported, not raised
            new = health_pb2.HealthCheckResponse.NOT_SERVING
            if status != new:
                log.warning("not ready: %s", exc)
        if new != status:
            status = new
            await health_servicer.set("", new)
            await health_servicer.set(ctx.name, new)
        await asyncio.sleep(READINESS_PERIOD_S)


async def serve(app: ServiceApp, settings: Settings | None = None) -> None:
    """Run ``app`` until SIGTERM/SIGINT, then drain and stop."""
    settings = settings or load_settings()
    instance = f"{app.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        await asyncio.to_thread(migrate, settings.db_url)
        engine = make_engine(settings.db_url)
        stack.callback(engine.dispose)
        store = open_store(settings)
        bus = await Bus.connect(settings.nats_url, name=instance)
        stack.push_async_callback(bus.close)
        await bus.ensure_streams(replicas=settings.nats_replicas)
        server = grpc.aio.server()
        ctx = ServiceContext(app.name, settings, engine, store, bus, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        service_pb2_grpc.add_ServiceInfoServicer_to_server(
            _Info(ctx, instance, datetime.now(UTC)), server)
        await app.setup(ctx)
        port = server.add_insecure_port(f"0.0.0.0:{settings.grpc_port}")
        await server.start()
        stack.push_async_callback(server.stop, 5.0)
        for consumer in ctx.consumers:
            await consumer.start()
            ctx.spawn(consumer.wait(), f"consumer {consumer.name}")
        ctx.spawn(_readiness(ctx, health_servicer), "readiness")
        log.info("service started", extra={"grpc_port": port, "instance": instance})
        crashed = asyncio.ensure_future(_first_crash(ctx.tasks))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({crashed, waiter}, return_when=asyncio.FIRST_COMPLETED)
        started = time.monotonic()
        await health_servicer.enter_graceful_shutdown()
        log.info("draining")
        await asyncio.gather(*(c.stop(timeout=DRAIN_TIMEOUT_S) for c in ctx.consumers))
        for task in ctx.tasks:
            task.cancel()
        await asyncio.gather(*ctx.tasks, return_exceptions=True)
        crashed.cancel()
        waiter.cancel()
        log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3)})
        if crashed.done() and not crashed.cancelled() and crashed.exception() is not None:
            raise crashed.exception()  # type: ignore[misc]


async def _first_crash(tasks: list[asyncio.Task[None]]) -> None:
    """Return (raising) as soon as a background task fails; never returns while they all run."""
    while True:
        for task in list(tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed", task.get_name(), exc_info=task.exception())
                raise task.exception()  # type: ignore[misc]
        await asyncio.sleep(0.5)


def run_service(make_app: Callable[[Settings], ServiceApp]) -> None:
    """Process entry point of a service: settings, logging, then :func:`serve`."""
    settings = load_settings()
    app = make_app(settings)
    setup_logging(app.name, settings.log_level, settings.log_json)
    asyncio.run(serve(app, settings))
