"""The events ingest publishes, built from the rows it just wrote (pure: no I/O)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from wisp.bus import exposure_ingested_subject, frame_ingested_subject
from wisp.v1 import common_pb2, events_pb2, frame_pb2

OBSTYPE = {
    "bias": common_pb2.OBS_TYPE_BIAS,
    "dark": common_pb2.OBS_TYPE_DARK,
    "flat": common_pb2.OBS_TYPE_FLAT,
    "science": common_pb2.OBS_TYPE_SCIENCE,
}


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def frame_message(row: dict, raw: common_pb2.ObjectRef) -> frame_pb2.RawFrame:
    """A ``RawFrame`` message from a raw_frames row (as a dict of column values)."""
    msg = frame_pb2.RawFrame(
        id=row["id"], exposure_id=row["exposure_id"], instrument=row["instrument"], chip=row["chip"],
        hdu_index=row["hdu_index"], extname=row["extname"] or "",
        obstype=OBSTYPE.get(row["obstype"], common_pb2.OBS_TYPE_OTHER), filter=row["filter"] or "",
        exptime_s=row["exptime"], date_obs=_ts(row["date_obs"]), mjd_obs=row["mjd_obs"],
        object=row["object"] or "", naxis1=row["naxis1"], naxis2=row["naxis2"], raw=raw,
    )
    if row["ra_deg"] is not None and row["dec_deg"] is not None:
        msg.ra_deg, msg.dec_deg = row["ra_deg"], row["dec_deg"]
    if row["airmass"] is not None:
        msg.airmass = row["airmass"]
    return msg


def ingest_events(exposure: dict, frames: list[dict], raw: common_pb2.ObjectRef,
                  source: str) -> list[tuple[str, str, bytes]]:
    """(subject, Nats-Msg-Id, payload) of every event of one ingested exposure: one per frame, then one
    for the exposure. The message id is the entity id, so a re-publication is dropped by JetStream."""
    out: list[tuple[str, str, bytes]] = []
    for row in frames:
        event = events_pb2.FrameIngested(frame=frame_message(row, raw), source=source)
        out.append((frame_ingested_subject(row["instrument"]), row["id"], event.SerializeToString()))
    exp = frame_pb2.Exposure(
        id=exposure["id"], instrument=exposure["instrument"], sha256=exposure["sha256"],
        filename=exposure["filename"], obstype=OBSTYPE.get(exposure["obstype"], common_pb2.OBS_TYPE_OTHER),
        filter=exposure["filter"] or "", exptime_s=exposure["exptime"], date_obs=_ts(exposure["date_obs"]),
        mjd_obs=exposure["mjd_obs"], object=exposure["object"] or "", n_chips=exposure["n_chips"], raw=raw,
        frame_ids=[f["id"] for f in frames],
    )
    if exposure["ra_deg"] is not None and exposure["dec_deg"] is not None:
        exp.ra_deg, exp.dec_deg = exposure["ra_deg"], exposure["dec_deg"]
    if exposure["airmass"] is not None:
        exp.airmass = exposure["airmass"]
    out.append((exposure_ingested_subject(exposure["instrument"]), exposure["id"],
                events_pb2.ExposureIngested(exposure=exp).SerializeToString()))
    return out
