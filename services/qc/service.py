"""The qc service adapter: one consumer on every ``ProductCreated`` event; the work is
:class:`~services.qc.runner.QcRunner` (metrics, thresholds from the instrument descriptions, flags)."""

from __future__ import annotations

import asyncio

from services.qc.runner import QcRunner
from wisp.bus import ALL_PRODUCTS_CREATED, WISP_EVENTS, Consumer, ConsumerSpec, DeliveryInfo, Handler
from wisp.config import Settings
from wisp.deadletters import DeadLetterRecorder
from wisp.errors import InvalidInput
from wisp.instruments import load_registry
from wisp.runtime import ServiceContext, run_service
from wisp.v1 import pipeline_pb2

QC_CONSUMER = ConsumerSpec(stream=WISP_EVENTS.name, durable="qc-products", subjects=(ALL_PRODUCTS_CREATED,),
                           ack_wait_s=60, max_deliver=5,
                           description="qc: metrics and quality flags of every new product")


def make_handler(runner: QcRunner) -> Handler[pipeline_pb2.ProductCreated]:
    """The consumer's handler: QC the announced product in a worker thread (idempotent)."""

    async def on_product(msg: pipeline_pb2.ProductCreated, delivery: DeliveryInfo) -> None:
        if not msg.product.id:
            raise InvalidInput("ProductCreated event without a product id", code="qc.bad_event",
                               subject=delivery.subject)
        await asyncio.to_thread(runner.run, msg.product.id)

    return on_product


class QcService:
    """Owns quality: metrics and system ``quality_flags`` of every product (never ``is_valid``)."""

    name = "qc"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def setup(self, ctx: ServiceContext) -> None:
        registry = load_registry(self.settings.instrument_paths)
        runner = QcRunner(ctx.engine, ctx.store, registry, self.settings.data_dir / "tmp" / "qc")
        ctx.consumers.append(Consumer(ctx.bus, QC_CONSUMER, pipeline_pb2.ProductCreated, make_handler(runner),
                                      recorder=DeadLetterRecorder(ctx.engine)))


def main() -> None:
    run_service(QcService)
