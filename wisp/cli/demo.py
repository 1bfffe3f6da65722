"""``make demo``: simulate a night, start the stack, upload everything, let the pipeline run by itself, and
show what it made: masters, reduced frames, solutions with their RMS, zeropoints, coadds, catalogues, QC.

Run as ``python -m wisp.cli.demo [--workdir demo-data] [--keep-running]``. The simulated night is cached
in the work directory (same configuration → reused); the stack's data directory is made anew each run.
The coadds and their catalogues are left in ``WORKDIR/results`` for the user to open.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from statistics import median
from typing import Any

from wisp.cli.frames import print_table
from wisp.cli.ingest import expand, ingest_one
from wisp.client import WispClient
from wisp.errors import Transient
from wisp.natsserver import free_port
from wisp.quality import FLAG_NAMES
from wisp.sim import SimConfig, simulate_night

#: The demo night: 4 chips of 1024², 5 biases, 3 flats per filter, 5 dithers per filter in g and r, in a
#: field rich enough in reference stars for per-chip zeropoints.
DEMO_NIGHT = SimConfig(star_density=50000.0, refcat_mag_limit=21.5)
PIPELINE_TIMEOUT_S = 1200


def simulate(workdir: Path, config: SimConfig) -> Path:
    """The simulated night's directory (raw/, refcat.fits, truth/), made once per configuration."""
    sim_dir = workdir / "sim"
    marker = sim_dir / ".complete"
    wanted = json.dumps(asdict(config), sort_keys=True, default=str)
    if marker.exists() and marker.read_text() == wanted:
        print(f"== Simulated night found in {sim_dir} (same configuration): reusing it", flush=True)
        return sim_dir
    shutil.rmtree(sim_dir, ignore_errors=True)
    print(f"== Simulating a night: {config.n_chips} chips of {config.chip_nx}x{config.chip_ny} px, "
          f"filters {','.join(config.filters)}", flush=True)
    started = time.monotonic()
    simulate_night(config, sim_dir, progress=lambda i, n, what: print(f"   [{i}/{n}] {what}", flush=True))
    marker.write_text(wanted)
    print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
    return sim_dir


def start_stack(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    print(f"== Starting the stack: wisp up --data-dir {data_dir} --port {port}", flush=True)
    return subprocess.Popen([sys.executable, "-m", "wisp.cli.main", "up", "--data-dir", str(data_dir),
                             "--port", str(port)], start_new_session=True)


def wait_ready(client: WispClient, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Transient(f"wisp up exited with status {proc.returncode}", code="demo.stack_failed")
        try:
            client.health()
            return
        except Transient:
            time.sleep(0.5)
    raise Transient("the stack did not become ready in time", code="demo.stack_not_ready")


def upload(client: WispClient, raw_dir: Path) -> Counter[str]:
    files = expand([raw_dir])
    print(f"== Uploading {len(files)} raw files through the gateway", flush=True)
    statuses: Counter[str] = Counter()
    for i, path in enumerate(files, 1):
        entry = ingest_one(client, path, retry_for_s=60)
        statuses[entry["status"]] += 1
        detail = f"{len(entry['frame_ids'])} frames" if entry["status"] != "rejected" else entry["error"]["message"]
        print(f"   [{i:>2}/{len(files)}] {entry['status']:<9} {path.name}  {detail}", flush=True)
    return statuses


def wait_for_pipeline(client: WispClient, n_coadds: int, timeout_s: float = PIPELINE_TIMEOUT_S) -> dict[str, int]:
    """Watch products appear (nobody asks for them) until every coadd has its catalogue and nothing moves."""
    print("== The pipeline runs by itself: products as they appear", flush=True)
    deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = Counter(p["kind"] for p in _all_products(client))
        if counts != last:
            print("   " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())), flush=True)
            last, quiet_since = dict(counts), time.monotonic()
        if counts.get("coadd_catalog", 0) >= n_coadds and time.monotonic() - quiet_since > 10:
            return last
        time.sleep(2)
    raise Transient(f"the pipeline did not finish in {timeout_s:.0f} s", code="demo.timeout")


def _all_products(client: WispClient, **filters: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.products(**filters, limit=1000, offset=len(out))
        out += page["products"]
        if len(out) >= page["total"]:
            return out


def _flags(bits: int) -> str:
    return ",".join(name for bit, name in FLAG_NAMES.items() if bits & bit) or "-"


def summarise(client: WispClient, results: Path) -> None:
    products = _all_products(client)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for p in products:
        by_kind.setdefault(p["kind"], []).append(p)
    print("== Master calibrations", flush=True)
    print_table([{"kind": p["kind"], "chip": p["chip"], "filter": p["filter"] or "",
                  "frames": p["metrics"].get("n_frames"), "valid_from": p["valid_from"][:16],
                  "valid_to": p["valid_to"][:16], "qc": _flags(p["quality_flags"])}
                 for p in by_kind.get("master_bias", []) + by_kind.get("master_flat", [])],
                ("kind", "chip", "filter", "frames", "valid_from", "valid_to", "qc"))
    print(f"== Reduced frames: {len(by_kind.get('reduced', []))}", flush=True)
    sols = by_kind.get("astrometry", [])
    rows = []
    for f in sorted({s["filter"] for s in sols}):
        group = [s["metrics"] for s in sols if s["filter"] == f and "failed" not in s["metrics"]]
        rows.append({"filter": f, "solved": f"{len(group)}/{sum(s['filter'] == f for s in sols)}",
                     "median_rms_mas": f"{median(g['astrom_rms_mas'] for g in group):.1f}",
                     "median_n_ref": int(median(g["n_ref"] for g in group)),
                     "zeropoints_mag": f"{min(g['zeropoint_mag'] for g in group):.3f}"
                                       f"..{max(g['zeropoint_mag'] for g in group):.3f}"})
    print("== Astrometric and photometric solutions (per chip)", flush=True)
    print_table(rows, ("filter", "solved", "median_rms_mas", "median_n_ref", "zeropoints_mag"))
    cats = by_kind.get("catalog", [])
    n_sources = sum(c["metrics"].get("n_sources", 0) for c in cats)
    print(f"== Frame catalogues: {len(cats)}, {n_sources} sources", flush=True)
    print("== Coadds and their catalogues", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for coadd in by_kind.get("coadd", []):
        cat = next(c for c in by_kind.get("coadd_catalog", []) if c["filter"] == coadd["filter"]
                   and c["field"] == coadd["field"])
        image = client.download_product(coadd["id"], results / f"coadd_{coadd['field']}_{coadd['filter']}.fits")
        table = client.download_product(cat["id"], results / f"coadd_{coadd['field']}_{coadd['filter']}_cat.fits")
        rows.append({"field": coadd["field"], "filter": coadd["filter"], "inputs": coadd["metrics"].get("n_inputs"),
                     "zeropoint": f"{coadd['metrics'].get('zeropoint_mag', float('nan')):.3f}",
                     "sources": cat["metrics"].get("n_sources"), "qc": _flags(coadd["quality_flags"]),
                     "coadd_file": str(image), "catalogue_file": str(table)})
    print_table(rows, ("field", "filter", "inputs", "zeropoint", "sources", "qc", "coadd_file", "catalogue_file"))
    flagged = Counter(name for p in products for bit, name in FLAG_NAMES.items() if p["quality_flags"] & bit)
    print("== QC flags over all products: " + (", ".join(f"{n} {k}" for k, n in flagged.items()) or "none"),
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m wisp.cli.demo")
    parser.add_argument("--workdir", type=Path, default=Path("demo-data"))
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up at the end")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    sim_dir = simulate(workdir, DEMO_NIGHT)
    port = free_port("127.0.0.1")
    proc = start_stack(workdir / "stack", port)
    url = f"http://127.0.0.1:{port}"
    try:
        with WispClient(url) as client:
            wait_ready(client, proc)
            print(f"   ready: {url}/health is 200", flush=True)
            answer = client.import_refcat(sim_dir / "refcat.fits")
            print(f"== Reference catalogue imported: {answer['n_stars']} stars ({answer['product_id']})", flush=True)
            statuses = upload(client, sim_dir / "raw")
            print("== Ingested raw frames by type, filter and chip", flush=True)
            groups = client.frame_summary()
            print_table(groups, ("instrument", "obstype", "filter", "chip", "frames"))
            print(f"total: {sum(g['frames'] for g in groups)} raw frames", flush=True)
            wait_for_pipeline(client, n_coadds=len(DEMO_NIGHT.filters) * len(DEMO_NIGHT.fields))
            summarise(client, workdir / "results")
            ok = statuses.get("rejected", 0) == 0 and statuses.get("failed", 0) == 0
        if args.keep_running:
            print(f"== The stack stays up at {url}; Ctrl-C to stop", flush=True)
            proc.wait()
        return 0 if ok else 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("== Stack stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
