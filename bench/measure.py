"""Running one tool as its own process and measuring it: wall time and peak resident memory.

Each measured run is a child process, so both sides pay their start-up cost (interpreter and imports for
Python tools, configuration parsing for the C tools). Peak memory is the child's ``ru_maxrss`` from
``os.wait4`` (that child and the descendants it waited for, not the harness); CPU time is its user + system
time from the same call (robust when the machine is shared, unlike wall time). Python workers
(``bench.worker``) additionally report their in-process compute time and ``tracemalloc`` peak on the last
line of their stdout as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ProcRun:
    """One finished child process: wall seconds, peak RSS (MB), exit code, captured output."""

    cmd: list[str]
    wall_s: float
    maxrss_mb: float
    cpu_s: float
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 12) -> str:
        """The last lines of stderr (else stdout), for error messages."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-n:])


@dataclass
class Measurement:
    """A job measured for one tool, possibly over several processes (wall summed, memory maximum)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    maxrss_mb: float = 0.0
    inproc_s: float | None = None
    inproc_cpu_s: float | None = None
    tracemalloc_mb: float | None = None
    n_proc: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, run: ProcRun) -> None:
        self.wall_s += run.wall_s
        self.cpu_s += run.cpu_s
        self.maxrss_mb = max(self.maxrss_mb, run.maxrss_mb)
        self.n_proc += 1

    def add_worker(self, report: Mapping[str, Any]) -> None:
        """Fold in the JSON a ``bench.worker`` printed (in-process time and tracemalloc peak)."""
        if "inproc_s" in report:
            self.inproc_s = (self.inproc_s or 0.0) + float(report["inproc_s"])
        if "inproc_cpu_s" in report:
            self.inproc_cpu_s = (self.inproc_cpu_s or 0.0) + float(report["inproc_cpu_s"])
        if "tracemalloc_mb" in report:
            self.tracemalloc_mb = max(self.tracemalloc_mb or 0.0, float(report["tracemalloc_mb"]))
        self.info.update({k: v for k, v in report.items() if k not in ("inproc_s", "inproc_cpu_s", "tracemalloc_mb")})


class ToolFailed(RuntimeError):
    """A measured process exited non-zero (message holds the command and the tail of its output)."""


def run_process(cmd: Sequence[str | Path], cwd: Path | None = None, env: Mapping[str, str] | None = None,
                timeout: float = 3600.0, check: bool = True) -> ProcRun:
    """Run ``cmd`` as a child, reap it with ``os.wait4`` and return its wall time and peak RSS.

    Output goes to temporary files (not pipes), so the harness never has to read while it waits and the
    child's own resource usage is exactly what ``wait4`` reports.
    """
    args = [str(c) for c in cmd]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise ToolFailed(f"timed out after {timeout:.0f} s: {' '.join(args)}")
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    run = ProcRun(args, wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime, proc.returncode, stdout,
                  stderr)
    if check and not run.ok:
        raise ToolFailed(f"exit {run.returncode}: {' '.join(args)}\n{run.tail()}")
    return run


def thread_env(threads: int) -> dict[str, str]:
    """Environment limiting numpy/BLAS/OpenMP thread pools of a Python child to ``threads``."""
    n = str(max(1, threads))
    return {k: n for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def python_worker(job: str, tool: str, spec: Mapping[str, Any], workdir: Path,
                  threads: int = 1) -> tuple[ProcRun, dict[str, Any]]:
    """Run ``python -m bench.worker JOB TOOL SPEC.json`` (a fresh interpreter) and parse its JSON report."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"spec_{job}_{tool}.json"
    spec_path.write_text(json.dumps(spec, indent=1, default=str))
    run = run_process([sys.executable, "-m", "bench.worker", job, tool, str(spec_path)], cwd=ROOT,
                      env=thread_env(threads))
    lines = [ln for ln in run.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise ToolFailed(f"bench.worker {job} {tool} printed no report\n{run.tail()}")
    return run, json.loads(lines[-1])
