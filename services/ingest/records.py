"""The rows one ingest writes, in one transaction: exposure, frames, provenance and outbox events.

Either every row of a file is committed or none is (no partial ingest); a file whose checksum is already
known is a duplicate and writes nothing new but its sighting.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from services.ingest.events import ingest_events
from wisp import __version__
from wisp.db import insert_ignore, table
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.ids import exposure_id, make_id, raw_frame_id
from wisp.instruments import InstrumentDescription, NormalisedExposure
from wisp.nights import night_of, site_longitude
from wisp.v1 import common_pb2


@dataclass(frozen=True)
class Known:
    """A file already ingested: its exposure and frames."""

    exposure_id: str
    instrument: str
    frame_ids: tuple[str, ...]


def find_known(session: Session, sha256: str) -> Known | None:
    """The exposure made from a file with this checksum, if any."""
    exposures, frames = table("exposures"), table("raw_frames")
    row = session.execute(select(exposures.c.id, exposures.c.instrument)
                          .where(exposures.c.sha256 == sha256)).first()
    if row is None:
        return None
    ids = session.scalars(select(frames.c.id).where(frames.c.exposure_id == row.id)
                          .order_by(frames.c.hdu_index)).all()
    return Known(row.id, row.instrument, tuple(ids))


def note_sighting(session: Session, sha256: str) -> None:
    """Count one more arrival of an already-ingested file."""
    files = table("ingested_files")
    session.execute(update(files).where(files.c.sha256 == sha256)
                    .values(last_seen=utcnow(), times_seen=files.c.times_seen + 1))


def project_id(session: Session, name: str) -> int:
    """The id of a project by name; an unknown name is the caller's error."""
    projects = table("projects")
    pid = session.scalar(select(projects.c.id).where(projects.c.name == name))
    if pid is None:
        known = session.scalars(select(projects.c.name).order_by(projects.c.name)).all()
        raise InvalidInput(f"unknown project {name!r}; known projects: {', '.join(known)}",
                           code="project.unknown", project=name)
    return int(pid)


def register_instrument(session: Session, desc: InstrumentDescription, exp: NormalisedExposure) -> None:
    """Make sure the camera, its chips and filter have rows (first sight wins, never rewritten).

    The camera is ``exp.camera_id``: cameras that share a description (the generic one) stay apart."""
    insert_ignore(session, table("instruments"), [{
        "name": exp.camera_id, "telescope": exp.telescope or desc.telescope or "unknown",
        "description": desc.description, "definition": desc.to_dict()}])
    insert_ignore(session, table("chips"), [{
        "instrument": exp.camera_id, "name": c.name, "extname": c.extname, "gain": c.gain,
        "read_noise": c.read_noise, "saturation": c.saturation, "datasec": c.datasec_fits,
        "biassec": c.biassec_fits} for c in exp.chips])
    if exp.filter:
        band = exp.band or desc.band_of(exp.filter) or exp.filter
        insert_ignore(session, table("filters"), [{"instrument": exp.camera_id, "name": exp.filter,
                                                   "band": band}])


def write_ingest(session: Session, *, sha256: str, size: int, filename: str, source: str,
                 object_key: str, desc: InstrumentDescription, exp: NormalisedExposure,
                 project: str, privilege: int, started: datetime) -> Known:
    """Insert every row of one ingested file and its outbox events; return the ids."""
    pid = project_id(session, project)
    register_instrument(session, desc, exp)
    eid = exposure_id(sha256)
    access = {"project_id": pid, "privilege": privilege}
    common = {"instrument": exp.camera_id, "obstype": exp.obstype, "filter": exp.filter,
              "exptime": exp.exptime_s, "date_obs": exp.date_obs, "mjd_obs": exp.mjd_obs,
              "airmass": exp.airmass, "object": exp.object}
    exposure: dict[str, Any] = {
        "id": eid, "sha256": sha256, "object_key": object_key, "filename": filename, "size_bytes": size,
        "ra_deg": exp.ra_deg, "dec_deg": exp.dec_deg, "n_chips": len(exp.chips),
        "header": exp.primary_header, **common, **access}
    night = night_of(exp.date_obs, site_longitude(exp.primary_header))
    frames: list[dict[str, Any]] = [{
        "id": raw_frame_id(sha256, c.hdu_index), "exposure_id": eid, "chip": c.name, "night": night,
        "hdu_index": c.hdu_index, "extname": c.extname, "naxis1": c.naxis1, "naxis2": c.naxis2,
        "bitpix": c.bitpix, "header": c.header,
        "ra_deg": c.ra_deg if c.ra_deg is not None else exp.ra_deg,
        "dec_deg": c.dec_deg if c.dec_deg is not None else exp.dec_deg, **common, **access}
        for c in exp.chips]
    session.execute(insert(table("exposures")).values(**exposure))
    session.execute(insert(table("raw_frames")), frames)
    now = utcnow()
    session.execute(insert(table("ingested_files")).values(
        sha256=sha256, exposure_id=eid, filename=filename, source=source, first_ingested=now,
        last_seen=now, times_seen=1))
    act = make_id("act", "ingest", sha256)
    session.execute(insert(table("activities")).values(
        id=act, stage="ingest", code_version=__version__, host=socket.gethostname(),
        params={"filename": filename, "source": source, "description": desc.name, "notes": exp.notes,
                "keyword_sources": exp.sources},
        started_at=started, ended_at=now, status="succeeded"))
    edges = [{"activity_id": act, "entity_id": eid, "entity_kind": "exposure", "relation": "used",
              "role": "raw_file"}]
    edges += [{"activity_id": act, "entity_id": f["id"], "entity_kind": "raw_frame",
               "relation": "wasGeneratedBy", "role": "chip"} for f in frames]
    session.execute(insert(table("lineage_edges")), edges)
    raw = common_pb2.ObjectRef(key=object_key, sha256=sha256, size=size)
    session.execute(insert(table("outbox")), [
        {"subject": subject, "msg_id": msg_id, "payload": payload, "headers": {}, "created_at": now}
        for subject, msg_id, payload in ingest_events({**exposure}, frames, raw, source)])
    return Known(eid, exp.camera_id, tuple(f["id"] for f in frames))


def quarantine(session: Session, *, sha256: str, size: int, filename: str, source: str,
               code: str, message: str, details: dict[str, Any]) -> None:
    """Record a rejected file and why; a file rejected again only counts one more sighting."""
    q = table("quarantine")
    now = utcnow()
    inserted = insert_ignore(session, q, [{
        "sha256": sha256, "filename": filename, "source": source, "size_bytes": size, "error_code": code,
        "message": message, "details": details, "first_seen": now, "last_seen": now, "seen_count": 1}])
    if not inserted:
        session.execute(update(q).where(q.c.sha256 == sha256).values(
            last_seen=now, seen_count=q.c.seen_count + 1, error_code=code, message=message,
            details=details))
