"""``make demo``: simulate a night, start the stack, upload everything through the gateway, show it.

Run as ``python -m wisp.cli.demo [--workdir demo-data] [--keep-running]``. The simulated night is cached
in the work directory (same configuration → reused); the stack's data directory is made anew each run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from wisp.cli.frames import print_table
from wisp.cli.ingest import expand, ingest_one
from wisp.client import WispClient
from wisp.errors import Transient
from wisp.natsserver import free_port
from wisp.sim import SimConfig, simulate_night


def simulate(workdir: Path, config: SimConfig) -> Path:
    """The raw files of the demo night, simulated once per configuration."""
    sim_dir = workdir / "sim"
    marker = sim_dir / ".complete"
    wanted = json.dumps(asdict(config), sort_keys=True, default=str)
    if marker.exists() and marker.read_text() == wanted:
        print(f"== Simulated night found in {sim_dir} (same configuration): reusing it", flush=True)
        return sim_dir / "raw"
    shutil.rmtree(sim_dir, ignore_errors=True)
    print(f"== Simulating a night: {config.n_chips} chips of {config.chip_nx}x{config.chip_ny} px, "
          f"filters {','.join(config.filters)}", flush=True)
    started = time.monotonic()
    simulate_night(config, sim_dir, progress=lambda i, n, what: print(f"   [{i}/{n}] {what}", flush=True))
    marker.write_text(wanted)
    print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
    return sim_dir / "raw"


def start_stack(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    print(f"== Starting the stack: wisp up --data-dir {data_dir} --port {port}", flush=True)
    return subprocess.Popen([sys.executable, "-m", "wisp.cli.main", "up", "--data-dir", str(data_dir),
                             "--port", str(port)], start_new_session=True)


def wait_ready(client: WispClient, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m wisp.cli.demo")
    parser.add_argument("--workdir", type=Path, default=Path("demo-data"))
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up at the end")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    raw_dir = simulate(workdir, SimConfig())
    port = free_port("127.0.0.1")
    proc = start_stack(workdir / "stack", port)
    url = f"http://127.0.0.1:{port}"
    try:
        with WispClient(url) as client:
            wait_ready(client, proc)
            print(f"   ready: {url}/health is 200", flush=True)
            files = expand([raw_dir])
            print(f"== Uploading {len(files)} files through the gateway", flush=True)
            statuses: dict[str, int] = {}
            for i, path in enumerate(files, 1):
                entry = ingest_one(client, path, retry_for_s=60)
                statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
                detail = (f"{len(entry['frame_ids'])} frames" if entry["status"] != "rejected"
                          else entry["error"]["message"])
                print(f"   [{i:>2}/{len(files)}] {entry['status']:<9} {path.name}  {detail}", flush=True)
            again = ingest_one(client, files[0], retry_for_s=60)
            print(f"   the same file again: {again['status']} (nothing new made)", flush=True)
            print("== Ingested raw frames by type, filter and chip", flush=True)
            groups = client.frame_summary()
            print_table(groups, ("instrument", "obstype", "filter", "chip", "frames"))
            print(f"total: {sum(g['frames'] for g in groups)} raw frames from "
                  f"{statuses.get('ingested', 0)} exposures; "
                  + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())), flush=True)
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
