"""Ingest one file: verify before believing a byte, identify, normalise, store, record, announce.

The order follows DESIGN.md §5: write the object (verified) → commit the rows and their outbox events in
one transaction → the outbox relay publishes. A crash anywhere leaves either nothing (the file is simply
ingested again) or everything (the file is then a duplicate), never a partial exposure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy.engine import Engine

from services.ingest import records
from wisp.db import session_scope
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.fitsio import scan_fits
from wisp.instruments import InstrumentRegistry, normalise
from wisp.store import ObjectStore, sha256_file

log = logging.getLogger(__name__)
RAW_NAMESPACE = "raw"


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one file."""

    status: str  # "ingested" | "duplicate" | "rejected"
    filename: str
    sha256: str
    size: int
    instrument: str | None = None
    exposure_id: str | None = None
    frame_ids: tuple[str, ...] = ()
    error: InvalidInput | None = field(default=None, compare=False)


class Ingestor:
    """Turns files on local disk into raw frames; thread-safe (each call has its own transaction)."""

    def __init__(self, engine: Engine, store: ObjectStore, registry: InstrumentRegistry, *,
                 max_pixels_per_hdu: int) -> None:
        self.engine = engine
        self.store = store
        self.registry = registry
        self.max_pixels_per_hdu = max_pixels_per_hdu

    def ingest_path(self, path: Path, *, filename: str, source: str, project: str = "default",
                    privilege: int = 2) -> IngestOutcome:
        """Ingest the file at ``path`` (``filename`` is the client's name, kept as information)."""
        started = utcnow()
        size = path.stat().st_size
        sha = sha256_file(path)
        known = self._known(sha)
        if known is not None:
            return self._duplicate(known, filename, sha, size)
        try:
            with scan_fits(path, max_pixels_per_hdu=self.max_pixels_per_hdu, filename=filename) as layout:
                desc = self.registry.identify(layout, filename)
                exposure = normalise(layout, desc, filename)
        except InvalidInput as exc:
            return self._reject(exc, filename=filename, source=source, sha=sha, size=size)
        ref = self.store.put_file(path, namespace=RAW_NAMESPACE)
        try:
            with session_scope(self.engine) as session:
                made = records.write_ingest(
                    session, sha256=sha, size=size, filename=filename, source=source, object_key=ref.key,
                    desc=desc, exp=exposure, project=project, privilege=privilege, started=started)
        except InvalidInput as exc:
            return self._reject(exc, filename=filename, source=source, sha=sha, size=size)
        except sqlalchemy.exc.IntegrityError:
            # Another replica committed the same file first: that is a duplicate, not an error.
            known = self._known(sha)
            if known is None:
                raise
            return self._duplicate(known, filename, sha, size)
        log.info("ingested", extra={"file": filename, "sha256": sha, "exposure_id": made.exposure_id,
                                    "frames": len(made.frame_ids), "instrument": made.instrument})
        return IngestOutcome("ingested", filename, sha, size, made.instrument, made.exposure_id,
                             made.frame_ids)

    def _known(self, sha: str) -> records.Known | None:
        with session_scope(self.engine) as session:
            return records.find_known(session, sha)

    def _duplicate(self, known: records.Known, filename: str, sha: str, size: int) -> IngestOutcome:
        with session_scope(self.engine) as session:
            records.note_sighting(session, sha)
        log.info("duplicate", extra={"file": filename, "sha256": sha, "exposure_id": known.exposure_id})
        return IngestOutcome("duplicate", filename, sha, size, known.instrument, known.exposure_id,
                             known.frame_ids)

    def _reject(self, exc: InvalidInput, *, filename: str, source: str, sha: str, size: int) -> IngestOutcome:
        with session_scope(self.engine) as session:
            records.quarantine(session, sha256=sha, size=size, filename=filename, source=source,
                               code=exc.code, message=exc.message, details=exc.details)
        log.warning("rejected", extra={"file": filename, "sha256": sha, "code": exc.code, "reason": exc.message})
        return IngestOutcome("rejected", filename, sha, size, error=exc)
