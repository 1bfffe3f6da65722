"""The ``Ingest`` gRPC service: a client-streamed upload, spooled to local disk, then ingested."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from services.ingest.ingestor import Ingestor, IngestOutcome
from wisp.errors import InvalidInput, Transient
from wisp.uploads import clear_spool, error_info, spool_upload
from wisp.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

_STATUS = {"ingested": ingest_pb2.IngestResult.STATUS_INGESTED, "duplicate": ingest_pb2.IngestResult.STATUS_DUPLICATE,
           "rejected": ingest_pb2.IngestResult.STATUS_REJECTED}


def outcome_message(outcome: IngestOutcome) -> ingest_pb2.IngestResult:
    """The wire form of an :class:`IngestOutcome`."""
    result = ingest_pb2.IngestResult(
        status=_STATUS[outcome.status], exposure_id=outcome.exposure_id or "",
        frame_ids=list(outcome.frame_ids), sha256=outcome.sha256, instrument=outcome.instrument or "")
    if outcome.error is not None:
        result.error.CopyFrom(error_info(outcome.error))
    return result


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    """Spools an upload to ``spool_dir`` (bounded by ``max_bytes``), then runs the ingestor on it."""

    def __init__(self, ingestor: Ingestor, spool_dir: Path, max_bytes: int,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self.ingestor = ingestor
        self.on_done = on_done
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        clear_spool(spool_dir)

    async def Upload(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.spool_dir)
        os.close(fd)
        spool = Path(name)
        try:
            header = await spool_upload(request_iterator, spool, self.max_bytes)
            outcome = await asyncio.to_thread(
                self.ingestor.ingest_path, spool, filename=header.filename, source=header.source or "upload",
                project=header.project or "default", privilege=header.privilege or 2)
            self.on_done()
            return outcome_message(outcome)
        except InvalidInput as exc:
            return ingest_pb2.IngestResult(status=ingest_pb2.IngestResult.STATUS_REJECTED, error=error_info(exc))
        except Transient as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, exc.message)
        finally:
            spool.unlink(missing_ok=True)
