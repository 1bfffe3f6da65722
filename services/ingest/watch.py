"""The watched folder: every file that has stopped growing becomes an ``IngestFile`` command.

Commands go through JetStream (a work queue), so a file seen by the watcher is ingested even if this
process dies right after: the command waits for the next ingest replica. The command id is derived from
the path, size and modification time, so re-scanning after a restart publishes nothing new (JetStream
drops the duplicate) and a file already ingested is recognised by its checksum.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from wisp.bus import INGEST_FILE, Bus
from wisp.fitsio import fits_files
from wisp.ids import make_id
from wisp.v1 import commands_pb2

log = logging.getLogger(__name__)
def candidates(folder: Path) -> dict[Path, tuple[int, int]]:
    """FITS-like files under ``folder`` (hidden entries skipped) with (size, mtime_ns)."""
    out: dict[Path, tuple[int, int]] = {}
    for path in fits_files(folder):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
        out[path] = (st.st_size, st.st_mtime_ns)
    return out


async def watch_folder(bus: Bus, folder: Path, period_s: float = 2.0) -> None:
    """Scan ``folder`` forever; publish a command for each file that is the same on two scans."""
    folder.mkdir(parents=True, exist_ok=True)
    previous: dict[Path, tuple[int, int]] = {}
    sent: set[str] = set()
    while True:
        current = await asyncio.to_thread(candidates, folder)
        for path, stamp in current.items():
            if previous.get(path) != stamp:
                continue  # new or still growing: wait for one more scan
            cmd_id = make_id("cmd", "ingest.file", str(path), *stamp)
            if cmd_id in sent:
                continue
            cmd = commands_pb2.IngestFile(path=str(path), filename=path.name, source="watch",
                                          project="default", privilege=2)
            await bus.publish(INGEST_FILE, cmd, msg_id=cmd_id)
            sent.add(cmd_id)
            log.info("queued from watched folder", extra={"path": str(path)})
        previous = current
        await asyncio.sleep(period_s)
