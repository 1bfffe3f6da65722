"""The astrometry service: solutions of reduced frames (pipeline stage) and reference-catalogue imports
(gRPC ``Astrometry.ImportRefcat``)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from services.astrometry.stages import AstrometryRunner, import_refcat
from wisp.config import Settings
from wisp.errors import InvalidInput, Transient
from wisp.pipeline.service import PipelineService
from wisp.runtime import ServiceContext, run_service
from wisp.uploads import clear_spool, error_info, spool_upload
from wisp.v1 import astrometry_pb2, astrometry_pb2_grpc

_Result = astrometry_pb2.RefcatResult


class RefcatServicer(astrometry_pb2_grpc.AstrometryServicer):
    """Spools an uploaded table, then imports it (partitioned) as a ``refcat`` product."""

    def __init__(self, service: AstrometryService) -> None:
        self.service = service
        self.spool_dir = service.settings.data_dir / "tmp" / "refcat"
        clear_spool(self.spool_dir)

    async def ImportRefcat(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        ctx = self.service.ctx
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
        os.close(fd)
        spool = Path(name)
        try:
            header = await spool_upload(request_iterator, spool, self.service.settings.max_upload_bytes)
            with tempfile.TemporaryDirectory(dir=self.spool_dir) as tmp:
                pid, created, manifest = await asyncio.to_thread(
                    import_refcat, ctx.engine, ctx.store, spool, header.filename, Path(tmp))
            self.service.relay.poke()
            return _Result(status=_Result.STATUS_CREATED if created else _Result.STATUS_DUPLICATE, product_id=pid,
                           n_stars=int(manifest["n_sources"]), n_partitions=len(manifest["counts"]),
                           bands=list(manifest["bands"]))
        except InvalidInput as exc:
            return _Result(status=_Result.STATUS_REJECTED, error=error_info(exc))
        except Transient as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
        finally:
            spool.unlink(missing_ok=True)


class AstrometryService(PipelineService):
    async def setup(self, ctx: ServiceContext) -> None:
        await super().setup(ctx)
        astrometry_pb2_grpc.add_AstrometryServicer_to_server(RefcatServicer(self), ctx.server)


def make_service(settings: Settings) -> AstrometryService:
    return AstrometryService("astrometry", [AstrometryRunner()], settings)


def main() -> None:
    run_service(make_service)
