"""``python -m bench``: every job, ours and the peer on the same simulated data, in one run.

Jobs (each a function in bench.jobs_calib or bench.jobs_sky): master bias (5 and 20 frames), masters +
reduction of every science chip, source extraction, coaddition (true WCS) and astrometric solution. Each
returns table rows; a tool that is not installed or a stage of ours that has not landed yet gives a row that
says so instead of a number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import peers
from bench.context import Context, _failed, _key, _science
from bench.data import BENCH, WORK, ensure_nights
from bench.jobs_calib import job_bias, job_combine, job_reduce
from bench.jobs_cosmics import job_cosmics
from bench.jobs_sky import job_astrometry, job_coadd, job_extract
from bench.report import Row, render_table, write_readme

# ---------------------------------------------------------------- main

JOBS: dict[str, Callable[[Context], list[Row]]] = {
    "bias": job_bias, "combine": job_combine, "reduce": job_reduce, "extract": job_extract, "coadd": job_coadd,
    "cosmics": job_cosmics, "astrometry": job_astrometry,
}


def _reuse_reduced(ctx: Context) -> bool:
    """With ``--keep`` and no ``reduce`` job: the previous run's reduced chips, if complete (ours first)."""
    for tool, by in (("ours", "wisp"), ("ccdproc", "ccdproc")):
        wd = WORK / f"reduce_{tool}"
        outs = {}
        for e in _science(ctx.night):
            for c in ctx.night.chips:
                key = _key(e, c.extname)
                outs[key] = {k: str(wd / f"{key}.{k}.fits") for k in ("sci", "var", "dq")}
        if all(Path(p).exists() for o in outs.values() for p in o.values()):
            ctx.reduced_by, ctx.reduced = by, outs
            return True
    return False


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in lines if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "os": platform.platform(),
            "python": platform.python_version(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for every tool (NTHREADS of the AstrOmatic tools, OMP/BLAS threads of Python)")
    ap.add_argument("--no-readme", action="store_true", help="print the table only, leave bench/README.md alone")
    ap.add_argument("--keep", action="store_true", help="keep bench/.work from the previous run")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    wanted = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in wanted if j not in JOBS]
    if unknown:
        ap.error(f"unknown job(s) {unknown}; choose from {list(JOBS)}")
    if not args.keep and WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    night, biases = ensure_nights(log)
    found = peers.detect()
    for p in found.values():
        log(f"peer {p.name}: {p.version or 'NOT INSTALLED'}")
    ctx = Context(night=night, biases=biases, peers=found, work=WORK, threads=args.threads, log=log)
    rows: list[Row] = []
    for name in JOBS:
        downstream = bool(set(wanted) & {"extract", "coadd", "cosmics", "astrometry"})
        if name == "reduce" and "reduce" not in wanted and downstream and args.keep and _reuse_reduced(ctx):
            log(f"reusing the chips reduced by {ctx.reduced_by} in {WORK} (--keep)")
            continue
        if name not in wanted and not (name == "reduce" and downstream):
            continue
        log(f"job {name}")
        try:
            rows += JOBS[name](ctx)
        except Exception as exc:  # one broken job must not hide the others' numbers
            traceback.print_exc()
            rows.append(_failed(name, "(harness)", exc))
    table = render_table(rows)
    print(table)
    for note in ctx.notes:
        print(f"- {note}")
    info = {"machine": machine(), "load": [load0, os.getloadavg()[0]],
            "peers": {k: v.version for k, v in found.items()},
            "python": peers.python_versions(), "threads": args.threads, "wall_total_s": time.perf_counter() - t_start}
    (WORK / "results.json").write_text(json.dumps({"info": info, "rows": [r.as_dict() for r in rows],
                                                   "notes": ctx.notes}, indent=1, default=str))
    if not args.no_readme:
        write_readme(BENCH / "README.md", table, info, ctx.notes, rows)
        log("wrote bench/README.md")
    log(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0
