"""The ingest service adapter: gRPC uploads, the ``IngestFile`` command consumer, the watched folder,
and the outbox relay. The work itself is :class:`~services.ingest.ingestor.Ingestor`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.ingest.grpc_api import IngestServicer
from services.ingest.ingestor import Ingestor
from services.ingest.watch import watch_folder
from wisp.bus import INGEST_FILE, WISP_COMMANDS, Consumer, ConsumerSpec, DeliveryInfo
from wisp.config import Settings
from wisp.deadletters import DeadLetterRecorder
from wisp.errors import InvalidInput
from wisp.instruments import load_registry
from wisp.outbox import OutboxRelay
from wisp.runtime import ServiceContext, run_service
from wisp.v1 import commands_pb2, ingest_pb2_grpc

INGEST_FILE_CONSUMER = ConsumerSpec(stream=WISP_COMMANDS.name, durable="ingest-file", subjects=(INGEST_FILE,),
                                    ack_wait_s=60, max_deliver=10,
                                    description="ingest files named by IngestFile commands")


class IngestService:
    """Owns raw frames: everything that turns bytes into ``RawFrame`` rows and events."""

    name = "ingest"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def setup(self, ctx: ServiceContext) -> None:
        registry = load_registry(self.settings.instrument_paths)
        ingestor = Ingestor(ctx.engine, ctx.store, registry,
                            max_pixels_per_hdu=self.settings.max_pixels_per_hdu)
        relay = OutboxRelay(ctx.engine, ctx.bus)
        servicer = IngestServicer(ingestor, self.settings.data_dir / "tmp" / "ingest",
                                  self.settings.max_upload_bytes, on_done=relay.poke)
        ingest_pb2_grpc.add_IngestServicer_to_server(servicer, ctx.server)

        async def ingest_file(cmd: commands_pb2.IngestFile, delivery: DeliveryInfo) -> None:
            path = Path(cmd.path)
            if not path.is_file():
                raise InvalidInput(f"{cmd.path}: no such file (it was moved or deleted before ingest)",
                                   code="ingest.file_missing", file=cmd.path)
            outcome = await asyncio.to_thread(
                ingestor.ingest_path, path, filename=cmd.filename or path.name, source=cmd.source or "command",
                project=cmd.project or "default", privilege=cmd.privilege or 2)
            relay.poke()
            if outcome.error is not None:
                raise outcome.error

        ctx.consumers.append(Consumer(ctx.bus, INGEST_FILE_CONSUMER, commands_pb2.IngestFile, ingest_file,
                                      recorder=DeadLetterRecorder(ctx.engine)))
        ctx.spawn(relay.run(), "outbox-relay")
        if self.settings.watch_dir is not None:
            ctx.spawn(watch_folder(ctx.bus, self.settings.watch_dir), "watch-folder")


def main() -> None:
    run_service(IngestService)
