"""The one adapter of every processing service: plan on events, make products on commands.

Two kinds of consumers per service:
* planners (on WISP_EVENTS): a new raw frame or product → the planner's ready tasks for this service's
  stages → one ``MakeProduct`` command each, with ``Nats-Msg-Id`` = product id (a task planned twice is
  one command);
* one worker (on WISP_COMMANDS, ``wisp.cmd.<service>.*``): run the stage's science on local copies of the
  inputs, store the file (verified), record product + provenance + event in one transaction.
A product that already exists is not made again; a run killed half-way is simply redone (outputs are
byte-deterministic, so the object store keeps one object).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from wisp.bus import (
    ALL_FRAMES_INGESTED,
    WISP_COMMANDS,
    WISP_EVENTS,
    Consumer,
    ConsumerSpec,
    DeliveryInfo,
    make_product_msg_id,
    make_product_subject,
    token,
)
from wisp.bus.subjects import COMMANDS_PREFIX
from wisp.config import Settings
from wisp.db import session_scope, table
from wisp.db.types import utcnow
from wisp.deadletters import DeadLetterRecorder
from wisp.errors import InvalidInput
from wisp.outbox import OutboxRelay
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.invalidate import for_job
from wisp.pipeline.model import Output, StageSpec, Task, Trigger
from wisp.pipeline.record import record_product
from wisp.pipeline.registry import plan, stages_of, trigger_subjects
from wisp.runtime import ServiceContext
from wisp.v1 import common_pb2, events_pb2, pipeline_pb2

log = logging.getLogger(__name__)
OBSTYPES = {common_pb2.OBS_TYPE_BIAS: "bias", common_pb2.OBS_TYPE_DARK: "dark", common_pb2.OBS_TYPE_FLAT: "flat",
            common_pb2.OBS_TYPE_SCIENCE: "science"}


def caused_by_job(session: Session, trigger: Trigger) -> str:
    """The job whose command made the triggering product ('' if none): what it causes carries the job id."""
    if trigger.entity_kind != "product":
        return ""
    a, e = table("activities"), table("lineage_edges")
    made_by = select(e.c.activity_id).where(e.c.entity_id == trigger.id, e.c.relation == "wasGeneratedBy")
    return session.scalar(select(a.c.job_id).where(a.c.id.in_(made_by), a.c.job_id.is_not(None))) or ""


class StageRunner(Protocol):
    """A stage's science behind its declaration: ``run`` is called in a worker thread."""

    spec: StageSpec

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output: ...


class PipelineService:
    """A processing service made of stage runners (all of one service)."""

    def __init__(self, name: str, runners: Sequence[StageRunner], settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.runners = {r.spec.name: r for r in runners}
        declared = {s.name for s in stages_of(name) if s.triggers}  # stages without triggers run on request
        if declared != set(self.runners):
            raise ValueError(f"service {name}: runners {sorted(self.runners)} != declared stages {sorted(declared)}")

    async def setup(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.relay = OutboxRelay(ctx.engine, ctx.bus)
        recorder = DeadLetterRecorder(ctx.engine)
        subjects = trigger_subjects(self.name)
        frame_subjects = tuple(s for s in subjects if s == ALL_FRAMES_INGESTED)
        product_subjects = tuple(s for s in subjects if s != ALL_FRAMES_INGESTED)
        if frame_subjects:
            ctx.consumers.append(Consumer(ctx.bus, ConsumerSpec(
                stream=WISP_EVENTS.name, durable=f"{self.name}-plan-frames", subjects=frame_subjects,
                ack_wait_s=60, max_deliver=10, description=f"{self.name}: plan on new raw frames"),
                events_pb2.FrameIngested, self._on_frame, recorder=recorder))
        if product_subjects:
            ctx.consumers.append(Consumer(ctx.bus, ConsumerSpec(
                stream=WISP_EVENTS.name, durable=f"{self.name}-plan-products", subjects=product_subjects,
                ack_wait_s=60, max_deliver=10, description=f"{self.name}: plan on new products"),
                pipeline_pb2.ProductCreated, self._on_product, recorder=recorder))
        ctx.consumers.append(Consumer(ctx.bus, ConsumerSpec(
            stream=WISP_COMMANDS.name, durable=f"{self.name}-work",
            subjects=(f"{COMMANDS_PREFIX}.{token(self.name)}.*",),
            ack_wait_s=120, max_deliver=5, description=f"{self.name}: make products"),
            pipeline_pb2.MakeProduct, self._on_make, recorder=recorder))
        ctx.spawn(self.relay.run(), "outbox-relay")

    async def _on_frame(self, msg: events_pb2.FrameIngested, _: DeliveryInfo) -> None:
        await self._plan(Trigger("raw_frame", msg.frame.id, OBSTYPES.get(msg.frame.obstype, "other")))

    async def _on_product(self, msg: pipeline_pb2.ProductCreated, _: DeliveryInfo) -> None:
        await self._plan(Trigger("product", msg.product.id, msg.product.kind))

    async def _plan(self, trigger: Trigger) -> None:
        def ready() -> list[Task]:
            with session_scope(self.ctx.engine) as session:
                tasks = plan(session, trigger, service=self.name)
                job_id = caused_by_job(session, trigger) if tasks else ""
                return [for_job(session, t, job_id) for t in tasks] if job_id else tasks

        for task in await asyncio.to_thread(ready):
            await self.ctx.bus.publish(make_product_subject(self.name, task.stage), task.to_command(),
                                       msg_id=make_product_msg_id(task.product_id))
            log.info("planned", extra={"stage": task.stage, "product_id": task.product_id, "trigger": trigger.id})

    async def _on_make(self, cmd: pipeline_pb2.MakeProduct, _: DeliveryInfo) -> None:
        task = Task.from_command(cmd)
        runner = self.runners.get(task.stage)
        if runner is None:
            raise InvalidInput(f"service {self.name} has no stage {task.stage!r}", code="task.unknown_stage")
        made = await asyncio.to_thread(self.make, runner, task)
        if made:
            self.relay.poke()

    def make(self, runner: StageRunner, task: Task) -> bool:
        """Run one task to completion (thread); False when the product already existed."""
        products = table("products")
        with session_scope(self.ctx.engine) as session:
            if session.scalar(select(products.c.id).where(products.c.id == task.product_id)) is not None:
                return False
        started = utcnow()
        tmp_root = self.settings.data_dir / "tmp" / self.name
        tmp_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            workdir = Path(tmp)
            output = runner.run(task, InputLoader(self.ctx.engine, self.ctx.store, workdir), workdir)
            ref = self.ctx.store.put_file(output.path, namespace=f"products/{runner.spec.kind.replace('_', '-')}")
            with session_scope(self.ctx.engine) as session:
                made = record_product(session, runner.spec, task, output, ref, started)
        log.info("made" if made else "already made", extra={"stage": task.stage, "product_id": task.product_id})
        return made
