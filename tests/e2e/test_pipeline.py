"""A whole night, end to end, by itself: every product appears without anybody asking, every service is
killed once mid-night and restarted, every product exists exactly once, and the science matches the truth."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e import truth
from tests.e2e.conftest import Stack, start_stack, stop_stack
from wisp.sim import SimConfig, SimResult, simulate_night

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NIGHT = SimConfig(seed=11, n_chips=4, chip_nx=1024, chip_ny=1024, n_bias=3, n_flats_per_filter=3,
                  n_dither_per_field_filter=5, star_density=50000.0, refcat_mag_limit=21.5)
#: the next night, same camera: its g flats give every chip a second, newer candidate master flat
NEXT_NIGHT = replace(NIGHT, night_date="2026-03-15", filters=("g",), n_dither_per_field_filter=1)
N_SCIENCE = 2 * 5
KILL_WHEN = {  # service -> (product kind, count) after which it is SIGKILLed, once
    "calib": ("reduced", 8), "astrometry": ("astrometry", 8), "catalog": ("catalog", 8), "qc": ("catalog", 4),
    "coadd": ("astrometry", NIGHT.n_chips * N_SCIENCE),
}


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    return simulate_night(NIGHT, tmp_path_factory.mktemp("night"))


def counts(stack: Stack) -> dict[str, int]:
    with sqlite3.connect(stack.data_dir / "wisp.sqlite") as con:
        return dict(con.execute("SELECT kind, count(*) FROM products GROUP BY kind").fetchall())


def objects(stack: Stack, kind: str) -> int:
    root = stack.data_dir / "objects" / "products" / kind.replace("_", "-")
    return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def run_night(stack: Stack, night: SimResult, timeout_s: float = 900) -> dict[str, int]:
    """Import the refcat, upload the night, kill each service once mid-work; wait for the coadd catalogues."""
    assert stack.wisp("refcat", "import", str(night.refcat)).returncode == 0
    env = dict(os.environ, WISP_GATEWAY_URL=stack.url)
    uploader = subprocess.Popen([sys.executable, "-m", "wisp.cli.main", "ingest", str(night.raw_files[0].parent)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    stable_since, last = time.monotonic(), {}
    while time.monotonic() < deadline:
        now = counts(stack)
        pids = stack.info()["pids"]
        for service, (kind, n) in KILL_WHEN.items():
            if service not in killed and now.get(kind, 0) >= n:
                killed[service] = pids[service]
                os.kill(pids[service], signal.SIGKILL)
        if now != last:
            stable_since, last = time.monotonic(), now
        if now.get("coadd_catalog", 0) >= 2 and len(killed) == len(KILL_WHEN) \
                and time.monotonic() - stable_since > 15:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the night did not complete in {timeout_s:.0f} s: {last}")
    _, err = uploader.communicate(timeout=60)
    assert uploader.returncode == 0, err
    restarted = stack.info()["pids"]
    assert all(restarted[s] != pid for s, pid in killed.items()), "every killed service was restarted"
    return last


@pytest.mark.timeout(1800)
def test_the_night_completes_by_itself_exactly_once_and_matches_the_truth(night: SimResult, tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack")
    try:
        made = run_night(stack, night)
        solved = _solved(stack)
        expected = {"master_bias": 4, "master_flat": 8, "bad_pixel_map": 8, "reduced": 40, "astrometry": 40,
                    "catalog": solved, "coadd": 2, "coadd_catalog": 2, "refcat": 1}
        assert made == expected
        for kind, n in expected.items():
            if kind != "refcat":
                assert objects(stack, kind) == n, kind  # one object per product: nothing made twice
        assert solved >= 36  # at most one chip in ten may fail to solve
        _check_science(stack, night)
        _check_lineage(stack)
        cone = httpx.get(stack.url + "/v1/sources", params={"ra": 150.1, "dec": 2.2, "radius": 0.05}).json()
        assert cone["total"] > 50
        _check_invalidation(stack, simulate_night(NEXT_NIGHT, tmp_path / "next"))
    finally:
        assert stop_stack(stack) == 0


def _solved(stack: Stack) -> int:
    with sqlite3.connect(stack.data_dir / "wisp.sqlite") as con:
        return int(con.execute("SELECT count(*) FROM products WHERE kind = 'astrometry' "
                               "AND json_extract(metrics, '$.failed') IS NULL").fetchone()[0])


def _check_science(stack: Stack, night: SimResult) -> None:
    read_noise = float(np.median([c["read_noise"] for c in
                                  json.loads((night.truth_dir / "night.json").read_text())["camera"]["chips"]]))
    rms_mas, completeness, n_bright, n_snr20 = truth.catalogue_vs_truth(stack.data_dir, night.outdir, read_noise)
    print(f"astrometric RMS {rms_mas:.1f} mas over {n_bright} stars; completeness {completeness:.3f} of {n_snr20}")
    assert rms_mas <= 50.0 and n_bright >= 200
    assert completeness >= 0.90
    zp = truth.zeropoint_errors(stack.data_dir, night.outdir)
    print(f"zeropoint error: median {np.median(zp):+.4f}, max |err| {np.max(np.abs(zp)):.4f} mag over {zp.size} chips")
    assert zp.size >= 36 and np.max(np.abs(zp)) <= 0.02
    ratios = truth.coadd_flux_ratios(stack.data_dir, night.outdir)
    print(f"coadd flux / truth: median {np.median(ratios):.4f} over {ratios.size} isolated stars")
    assert ratios.size >= 15 and abs(float(np.median(ratios)) - 1.0) <= 0.01


def _check_lineage(stack: Stack) -> None:
    coadd = truth.products(stack.data_dir, "coadd")[0]
    up = httpx.get(f"{stack.url}/v1/lineage/{coadd.id}").json()["nodes"]
    kinds = [n["kind"] for n in up]
    assert kinds.count("raw_frame") == 4 * 5 + 4 * 3 + 4 * 3  # science + flats of the filter + biases
    assert kinds.count("master_bias") == 4 and kinds.count("master_flat") == 4 and kinds.count("refcat") == 1
    assert kinds.count("bad_pixel_map") == 4
    flat = next(p for p in truth.products(stack.data_dir, "master_flat") if p.filter == coadd.filter)
    down = httpx.get(f"{stack.url}/v1/lineage/{flat.id}", params={"direction": "down"}).json()["nodes"]
    derived = {n["kind"] for n in down[1:]}
    assert derived >= {"bad_pixel_map", "reduced", "astrometry", "catalog", "coadd", "coadd_catalog"}
    assert sum(n["kind"] == "reduced" for n in down) == 5 and sum(n["kind"] == "bad_pixel_map" for n in down) == 1
    bpm = next(n for n in down if n["kind"] == "bad_pixel_map")
    reduced = next(n for n in down if n["kind"] == "reduced")
    why = httpx.get(f"{stack.url}/v1/why/{reduced['id']}").json()
    flat_choice = next(c for c in why["recorded"] if c["kind"] == "flat")
    assert flat_choice["chosen_id"] == flat.id
    assert flat_choice["reason"].startswith(f"{flat.id} is the usable master flat")
    bpm_choice = next(c for c in why["recorded"] if c["kind"] == "bpm")
    assert bpm_choice["chosen_id"] == bpm["id"]
    assert bpm_choice["reason"].startswith(f"{bpm['id']} is the usable bad pixel map")


def _wait_stable(stack: Stack, done: Callable[[dict[str, int]], bool], timeout_s: float = 600) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    stable_since, last = time.monotonic(), counts(stack)
    while time.monotonic() < deadline:
        now = counts(stack)
        if now != last:
            stable_since, last = time.monotonic(), now
        if done(now) and time.monotonic() - stable_since > 10:
            return now
        time.sleep(0.5)
    raise AssertionError(f"not done in {timeout_s:.0f} s: {last}")


def _check_invalidation(stack: Stack, next_night: SimResult) -> None:
    """Invalidate the master flat a g frame of CCD1 used: exactly its derived products become outdated (its
    bad-pixel map and everything made from its frames), a reprocess job replaces exactly those (the map by the
    next night's map, which exists; the rest remade with the next night's flat and map), and `wisp why`
    explains the choice."""
    before = counts(stack)
    assert stack.wisp("ingest", str(next_night.raw_files[0].parent)).returncode == 0
    after = _wait_stable(stack, lambda c: c.get("reduced", 0) >= before["reduced"] + 4)
    # one more g flat (and map) per chip, and the next night's frames are reduced with it (same night first), once
    assert after["master_flat"] == before["master_flat"] + 4 and after["reduced"] == before["reduced"] + 4
    assert after["bad_pixel_map"] == before["bad_pixel_map"] + 4
    flat = next(p for p in truth.products(stack.data_dir, "master_flat")
                if p.chip == "CCD1" and p.filter == "g" and _night(stack, p.id) == NIGHT.night_date)
    down = httpx.get(f"{stack.url}/v1/lineage/{flat.id}", params={"direction": "down"}).json()["nodes"]
    derived = {n["id"] for n in down[1:]}
    bpm = next(n["id"] for n in down[1:] if n["kind"] == "bad_pixel_map")
    print("outdated by kind:", dict(sorted(Counter(n["kind"] for n in down[1:]).items())))
    inv = stack.wisp("invalidate", flat.id, "--reason", "lamp flicker during the flats", "--json")
    assert inv.returncode == 0, inv.stderr
    outdated = json.loads(inv.stdout)["outdated"]
    assert set(outdated) == derived and len(outdated) == len(derived)
    rep = stack.wisp("reprocess", "--wait", "600", "--json", timeout=660)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    job = json.loads(rep.stdout)["job"]
    print(f"invalidated {flat.id}; job {job['id']} remade {len(job['remade'])} products:")
    for r in job["remade"]:
        print(f"  {r['stage']:<14} {r['outdated']} -> {r['by']}  {r.get('chip', '')} {r.get('filter', '')}")
    assert job["status"] == "succeeded" and job["pending"] == [] and job["extra"] == []
    assert {r["outdated"] for r in job["remade"]} == derived
    # the map is replaced by the next night's map of the chip and filter, which exists: made from the same
    # flat, it is the same product; everything else is made again
    next_bpm = next(r["by"] for r in job["remade"] if r["outdated"] == bpm)
    assert _night(stack, next_bpm) == NEXT_NIGHT.night_date and job["target"]["existing"] == {bpm: next_bpm}
    final = _wait_stable(stack, lambda c: True, timeout_s=120)
    assert sum(final.values()) == sum(after.values()) + len(derived) - 1  # those products and nothing else
    new_reduced = next(r["by"] for r in job["remade"] if r["stage"] == "reduce")
    why = stack.wisp("why", new_reduced)
    print(why.stdout)
    assert why.returncode == 0 and f"not {flat.id}: marked bad by a user" in why.stdout
    answer = httpx.get(f"{stack.url}/v1/why/{new_reduced}").json()
    chosen = [c for c in answer["recorded"] if c["kind"] == "flat"][-1]["chosen_id"]
    assert chosen != flat.id and _night(stack, chosen) == NEXT_NIGHT.night_date
    assert [c for c in answer["recorded"] if c["kind"] == "bpm"][-1]["chosen_id"] == next_bpm
    assert f"not {bpm}: status is outdated" in why.stdout


def _night(stack: Stack, product_id: str) -> str:
    with sqlite3.connect(stack.data_dir / "wisp.sqlite") as con:
        return str(con.execute("SELECT night FROM products WHERE id = ?", (product_id,)).fetchone()[0])
