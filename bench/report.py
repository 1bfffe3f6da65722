"""The results table (Markdown, printed and written into ``bench/README.md`` between markers)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Measurement

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


@dataclass
class Row:
    """One (job, tool) line. ``ours`` marks Wisp's row, the reference of the ratios on the peer rows of the
    same job. ``skipped`` replaces the numbers with a reason (tool missing, stage not landed, failure)."""

    job: str
    tool: str
    m: Measurement | None = None
    ours: bool = False
    accuracy: str = ""
    score: float = math.nan
    skipped: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"job": self.job, "tool": self.tool, "ours": self.ours, "accuracy": self.accuracy,
                             "score": self.score, "skipped": self.skipped}
        if self.m is not None:
            d.update(wall_s=self.m.wall_s, cpu_s=self.m.cpu_s, maxrss_mb=self.m.maxrss_mb, inproc_s=self.m.inproc_s,
                     inproc_cpu_s=self.m.inproc_cpu_s,
                     tracemalloc_mb=self.m.tracemalloc_mb, n_proc=self.m.n_proc)
        return d


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None or not math.isfinite(x) else fmt.format(x)


def _inproc(m: Measurement) -> str:
    if m.inproc_s is None:
        return "–"
    return f"{m.inproc_s:.2f} / {_f(m.inproc_cpu_s)}"


HEADER = ("| job | tool | wall s (process) | CPU s | in-proc s wall / CPU | peak RSS MB | tracemalloc MB "
          "| accuracy vs truth | ours/peer wall | speed-up (peer/ours wall) | ours/peer CPU | ours/peer RSS |")
NCOL = 12


def render_table(rows: Sequence[Row]) -> str:
    """Markdown table; on each peer row the ratios of our row of the same job to it."""
    lines = [HEADER, "|" + "---|" * NCOL]
    ours_by_job = {r.job: r for r in rows if r.ours and r.m is not None}
    order = list(dict.fromkeys(r.job for r in rows))
    for r in sorted(rows, key=lambda row: order.index(row.job)):
        if r.m is None:
            lines.append(f"| {r.job} | {r.tool} | – | – | – | – | – | {r.skipped or r.accuracy} | – | – | – | – |")
            continue
        t_ratio = sp = mem = cpu = "–"
        ref = ours_by_job.get(r.job)
        if ref is not None and ref.m is not None and not r.ours and r.m.wall_s > 0:
            t_ratio = f"{ref.m.wall_s / r.m.wall_s:.2f}"
            sp = f"{r.m.wall_s / ref.m.wall_s:.2f}×"
            mem = f"{ref.m.maxrss_mb / r.m.maxrss_mb:.2f}" if r.m.maxrss_mb > 0 else "–"
            cpu = f"{ref.m.cpu_s / r.m.cpu_s:.2f}" if r.m.cpu_s > 0 else "–"
        elif r.ours:
            t_ratio = sp = mem = cpu = "(ref)"
        nproc = f" ({r.m.n_proc} proc)" if r.m.n_proc > 1 else ""
        lines.append(f"| {r.job} | {r.tool} | {_f(r.m.wall_s)}{nproc} | {_f(r.m.cpu_s)} | {_inproc(r.m)} "
                     f"| {_f(r.m.maxrss_mb, '{:.0f}')} | {_f(r.m.tracemalloc_mb, '{:.0f}')} | {r.accuracy} "
                     f"| {t_ratio} | {sp} | {cpu} | {mem} |")
    return "\n".join(lines)


def write_readme(path: Path, table: str, info: Mapping[str, Any], notes: Sequence[str], rows: Sequence[Row]) -> None:
    """Replace the results block of ``path`` (between the markers) with this run's table and context."""
    mach = info["machine"]
    peer_versions = ", ".join(f"{k} {v}" for k, v in info["peers"].items() if v) or "none"
    missing = ", ".join(k for k, v in info["peers"].items() if not v)
    py = ", ".join(f"{k} {v}" for k, v in info["python"].items())
    block = [
        BEGIN,
        f"Run {mach['date']} on {mach['cpu']} (`nproc` = {mach['nproc']}, {mach['memory']}), {mach['os']}, "
        f"Python {mach['python']}; threads per tool: {info['threads']}; whole run {info['wall_total_s']:.0f} s; "
        f"load average (1 min) at start {info['load'][0]:.1f}, at end {info['load'][1]:.1f}"
        + (" — the machine was shared, so compare CPU s rather than wall s." if max(info["load"]) > 1.5 else "."),
        "",
        f"Peers: {peer_versions}" + (f" (not installed: {missing})" if missing else "") + f". Python: {py}.",
        "",
        table,
        "",
        *[f"- {n}" for n in notes],
        *[f"- {r.tool} ({r.job}): {r.detail}" for r in rows if r.detail],
        END,
    ]
    text = path.read_text() if path.exists() else f"# bench\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + "\n".join(block) + tail
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(block) + "\n"
    path.write_text(text)
