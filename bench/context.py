"""The bench's shared state and helpers: :class:`Context` (one per run), the measured-worker call and the
rows for a skipped or failed tool, and the science-exposure helpers every job uses."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.units import UnitsWarning
from astropy.wcs import FITSFixedWarning

from bench import ours, peers
from bench.data import Night
from bench.measure import Measurement, python_worker
from bench.report import Row

warnings.simplefilter("ignore", FITSFixedWarning)
warnings.simplefilter("ignore", UnitsWarning)


@dataclass
class Context:
    night: Night
    biases: Night
    peers: dict[str, peers.Peer]
    work: Path
    threads: int
    log: Callable[[str], None]
    reduced_by: str = ""
    reduced: dict[str, dict[str, str]] = field(default_factory=dict)  # "<exp>_<chip>" -> sci/var/dq paths
    notes: list[str] = field(default_factory=list)
    kernels_warm: bool = False  # our numba kernels compiled/cached this run (bench.jobs_calib.warm_ours)

    def dir(self, name: str) -> Path:
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        return d


def _measure_worker(ctx: Context, job: str, tool: str, spec: dict[str, Any], workdir: Path) -> Measurement:
    run, report = python_worker(job, tool, spec, workdir, threads=ctx.threads)
    m = Measurement()
    m.add(run)
    m.add_worker(report)
    if report.get("peak_rss_mb"):  # the worker's own VmHWM: wait4's ru_maxrss includes the harness (see worker)
        m.info["wait4_maxrss_mb"] = m.maxrss_mb
        m.maxrss_mb = float(report["peak_rss_mb"])
    return m


def _skip(job: str, tool: str, why: str) -> Row:
    return Row(job=job, tool=tool, skipped=why)


def _failed(job: str, tool: str, exc: BaseException) -> Row:
    text = str(exc).strip().splitlines()
    return Row(job=job, tool=tool, skipped=f"FAILED: {text[0][:160] if text else type(exc).__name__}",
               detail="\n".join(text[:12]))


def _ours_or_skip(job: str) -> str | None:
    why = ours.missing(job)
    return why


def _science(night: Night, filt: str | None = None) -> list[dict[str, Any]]:
    return night.exposures("OBJECT", filt)


def _key(exposure: dict[str, Any], ext: str) -> str:
    return f"{Path(str(exposure['file'])).stem}_{ext}"
