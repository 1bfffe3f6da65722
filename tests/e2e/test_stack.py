"""The local stack end to end: real NATS, SQLite, filesystem store, every service its own process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import numpy as np
import pytest
from astropy.io import fits

from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.fixtures import fitsfiles
from wisp.sim import SimResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def db_count(stack: Stack, table: str) -> int:
    with sqlite3.connect(stack.data_dir / "wisp.sqlite") as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def raw_objects(stack: Stack) -> int:
    root = stack.data_dir / "objects" / "raw"
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")) if root.exists() else 0


def ingest_events(stack: Stack) -> int:
    """FrameIngested + ExposureIngested messages stored in WISP_EVENTS (other stages publish there too)."""
    async def count() -> int:
        nc = await nats.connect(stack.info()["nats_url"])
        try:
            info = await nc.jetstream().stream_info("WISP_EVENTS", subjects_filter="wisp.evt.*.ingested.>")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()
    return asyncio.run(count())


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def distinct_copies(files: tuple[Path, ...], dest: Path, copies: int) -> list[Path]:
    """``copies`` rounds of the night with a changed header card: new bytes, same camera."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies):
        for src in files:
            path = dest / f"r{k}_{src.name}"
            shutil.copy(src, path)
            with fits.open(path, mode="update") as hdul:
                hdul[0].header["OBSERVER"] = f"copy {k}"
                for hdu in hdul:
                    hdu.header.pop("CHECKSUM", None)
                    hdu.header.pop("DATASUM", None)
            out.append(path)
    return out


def test_a_night_flows_in_and_can_be_queried(stack: Stack, small_night: SimResult) -> None:
    raw_dir = small_night.raw_files[0].parent
    done = stack.wisp("ingest", str(raw_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [e["status"] for e in report] == ["ingested"] * len(small_night.raw_files)
    n_frames = 2 * len(small_night.raw_files)

    summary = httpx.get(stack.url + "/v1/frames/summary").json()["groups"]
    assert sum(g["frames"] for g in summary) == n_frames
    assert {(g["obstype"], g["filter"]) for g in summary} >= {("science", "g"), ("science", "r"), ("flat", "g")}

    again = stack.wisp("ingest", str(raw_dir), "--json")
    assert again.returncode == 0
    assert {e["status"] for e in json.loads(again.stdout)} == {"duplicate"}
    assert db_count(stack, "raw_frames") == n_frames
    assert raw_objects(stack) == len(small_night.raw_files)
    # every frame and exposure announced exactly once on the bus
    wait_for(lambda: ingest_events(stack) == n_frames + len(small_night.raw_files))

    science = httpx.get(stack.url + "/v1/frames", params={"obstype": "science", "filter": "g"}).json()
    assert science["total"] == 2 * 2
    cone = httpx.get(stack.url + "/v1/frames", params={"ra": 150.1, "dec": 2.2, "radius": 0.5}).json()
    assert cone["total"] > 0 and all(abs(f["dec_deg"] - 2.2) < 0.5 for f in cone["frames"])
    far = httpx.get(stack.url + "/v1/frames", params={"ra": 10.0, "dec": -40.0, "radius": 1.0}).json()
    assert far["total"] == 0

    frame = science["frames"][0]
    detail = httpx.get(f"{stack.url}/v1/frames/{frame['id']}").json()
    assert detail["header"]["EXTNAME"] and detail["file"]["sha256"]
    pixels = httpx.get(f"{stack.url}/v1/frames/{frame['id']}/fits")
    assert pixels.status_code == 200
    hdu = fits.HDUList.fromstring(pixels.content)[0]
    assert hdu.data.shape == (frame["naxis2"], frame["naxis1"])
    assert hdu.header["INSTRUME"] == "WISPSIM"
    raw = httpx.get(f"{stack.url}/v1/exposures/{frame['exposure_id']}/raw")
    src = next(p for p in small_night.raw_files
               if fits.getheader(p)["EXPID"] == fits.getheader(__import__("io").BytesIO(raw.content))["EXPID"])
    assert raw.content == src.read_bytes()


def test_bad_uploads_get_a_precise_4xx_and_store_nothing(stack: Stack, small_night: SimResult,
                                                         tmp_path: Path) -> None:
    before = (db_count(stack, "exposures"), db_count(stack, "raw_frames"), raw_objects(stack))
    src = small_night.raw_files[-1]
    cases = {
        "truncated": (fitsfiles.truncated(src, tmp_path / "t.fits"), 422, "fits.truncated"),
        "corrupt": (fitsfiles.corrupt_header(src, tmp_path / "c.fits"), 422, "fits.bad_keyword"),
        "not_fits": (fitsfiles.not_fits(tmp_path / "n.fits"), 422, "fits.not_fits"),
    }
    big = tmp_path / "big.fits"
    fits.PrimaryHDU(np.zeros((1100, 1100), dtype=np.float32)).writeto(big)
    cases["oversized"] = (big, 413, "input.too_large")
    for name, (path, status, code) in cases.items():
        r = httpx.post(stack.url + "/v1/uploads", params={"filename": path.name}, content=path.read_bytes())
        assert r.status_code == status, (name, r.text)
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["code"] == code, (name, body)
        assert path.name in body["detail"] and "Traceback" not in r.text
    # a chunked upload without Content-Length is cut off at the limit too
    chunks = (b"\0" * (1 << 20) for _ in range(5))
    r = httpx.post(stack.url + "/v1/uploads", params={"filename": "stream.fits"}, content=chunks)
    assert r.status_code == 413 and r.json()["code"] == "input.too_large"
    assert (db_count(stack, "exposures"), db_count(stack, "raw_frames"), raw_objects(stack)) == before
    rejected = httpx.get(stack.url + "/v1/quarantine").json()["files"]
    assert {"fits.truncated", "fits.bad_keyword", "fits.not_fits"} <= {f["error_code"] for f in rejected}


def test_bad_ids_and_parameters_are_4xx_problems(stack: Stack) -> None:
    cases = [
        ("/v1/frames/nonsense", 400, "id.malformed"),
        ("/v1/frames/raw-000000000000000000000000", 404, "frame.not_found"),
        ("/v1/exposures/exp-000000000000000000000000/raw", 404, "exposure.not_found"),
        ("/v1/frames?ra=10", 400, "request.invalid"),
        ("/v1/frames?limit=0", 400, "request.invalid"),
        ("/v1/frames?obstype=banana", 400, "request.invalid"),
        ("/v1/frames?date_from=yesterday", 400, "request.invalid"),
        ("/v1/nowhere", 404, "not_found"),
    ]
    for path, status, code in cases:
        r = httpx.get(stack.url + path)
        assert (r.status_code, r.json()["code"]) == (status, code), (path, r.text)
        assert "Traceback" not in r.text
    assert httpx.get(stack.url + "/openapi.json").json()["paths"]["/v1/uploads"]


def test_real_files_are_ingested_or_rejected_by_name(stack: Stack, shared_data: Path) -> None:
    done = stack.wisp("ingest", str(shared_data / "m13-raw"), str(shared_data / "sep-ntt" / "image.fits"),
                      "--json")
    report = {Path(e["path"]).name: e for e in json.loads(done.stdout)}
    assert done.returncode == 1  # one file rejected
    assert all(report[f"M13_blue_000{i}.fits"]["status"] == "ingested" for i in range(1, 6))
    ntt = report["image.fits"]
    assert ntt["status"] == "rejected" and ntt["error"]["code"] == "header.missing_keyword"
    assert "IMAGETYP" in ntt["error"]["message"]


def test_the_watched_folder_ingests_new_files(stack: Stack, small_night: SimResult, tmp_path: Path) -> None:
    before = db_count(stack, "exposures")
    new = distinct_copies(small_night.raw_files[:2], tmp_path, 1)
    inbox = Path(stack.info()["watch_dir"])
    for path in new:
        shutil.copy(path, inbox / path.name)
    wait_for(lambda: db_count(stack, "exposures") == before + 2, timeout=60)


def test_ingest_killed_mid_night_ingests_every_frame_exactly_once(small_night: SimResult,
                                                                   tmp_path: Path) -> None:
    files = distinct_copies(small_night.raw_files, tmp_path / "night", 3)
    s = start_stack(tmp_path / "stack")
    try:
        ingest_pid = s.info()["pids"]["ingest"]
        env = dict(os.environ, WISP_GATEWAY_URL=s.url)
        uploader = subprocess.Popen([sys.executable, "-m", "wisp.cli.main", "ingest", str(tmp_path / "night"),
                                     "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: db_count(s, "exposures") >= 5, timeout=60)
        os.kill(ingest_pid, signal.SIGKILL)
        out, err = uploader.communicate(timeout=300)
        assert uploader.returncode == 0, err
        assert {e["status"] for e in json.loads(out)} <= {"ingested", "duplicate"}
        assert s.info()["pids"]["ingest"] != ingest_pid  # the supervisor restarted it
        assert db_count(s, "exposures") == len(files)
        assert db_count(s, "raw_frames") == 2 * len(files)
        assert db_count(s, "ingested_files") == len(files)
        assert raw_objects(s) == len(files)
        wait_for(lambda: ingest_events(s) == 3 * len(files))
        pids = list(s.info()["pids"].values())
    finally:
        assert stop_stack(s) == 0
    for pid in pids:  # Ctrl-C stopped every process of the stack
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (s.data_dir / "stack.json").exists()


def test_why_no_calibration_is_explained(stack: Stack, small_night: SimResult) -> None:
    stack.wisp("ingest", str(small_night.raw_files[0].parent))
    frame = httpx.get(stack.url + "/v1/frames", params={"obstype": "science", "instrument": "simcam",
                                                      "limit": 1}).json()["frames"][0]
    done = stack.wisp("why", frame["id"])
    assert done.returncode == 0, done.stderr
    # the small night has 1 flat per filter and chip, and simcam asks for 3: no master, and the answer says so
    assert f"flat: no master flat for simcam {frame['chip']} filter {frame['filter']} exists yet" in done.stdout
    assert "not reduced yet" in done.stdout
    assert httpx.get(stack.url + "/v1/why/raw-000000000000000000000000").status_code == 404
