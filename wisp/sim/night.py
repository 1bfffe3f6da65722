"""Orchestration: build the camera, the sky and the plan, then simulate and write every exposure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wisp.sim.artifacts import make_trail
from wisp.sim.camera import build_camera
from wisp.sim.config import SimConfig, stream
from wisp.sim.detector import build_detector
from wisp.sim.expose import expose_chip, sky_sources
from wisp.sim.schedule import Exposure, plan_night
from wisp.sim.sources import make_galaxies, make_refcat, make_stars
from wisp.sim.truth import (
    truth_name,
    write_catalogues,
    write_detector,
    write_exposure_truth,
    write_night_json,
)
from wisp.sim.wcs import sip_k
from wisp.sim.writer import write_raw

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SimResult:
    """What a simulated night produced: raw files in time order, the truth directory, the reference
    catalogue, counts per kind (``'BIAS'``, ``'DARK'``, ``'FLAT g'``, ``'OBJECT r'``...) and total bytes written."""

    outdir: Path
    raw_files: tuple[Path, ...]
    truth_dir: Path
    refcat: Path
    exposures: tuple[Exposure, ...]
    counts: dict[str, int]
    n_bytes: int


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def simulate_night(config: SimConfig, outdir: Path, progress: Progress | None = None) -> SimResult:
    """Simulate a night into ``outdir`` (``raw/``, ``refcat.fits``, ``truth/``); deterministic in
    ``config``. ``progress(done, total, filename)`` is called after each raw exposure is written."""
    outdir = Path(outdir)
    truth_dir, raw_dir = outdir / "truth", outdir / "raw"
    truth_dir.mkdir(parents=True, exist_ok=True)
    raw_dir.mkdir(exist_ok=True)
    for stale in [*raw_dir.glob("sim_*.fits"), *truth_dir.glob("sim_*_truth.fits")]:
        stale.unlink()  # a previous, different night in the same place must not leak into this one
    camera = build_camera(config)
    k = sip_k(config.distortion_px, camera.r_corner)
    dets = [build_detector(config, camera, chip) for chip in camera.chips]
    stars, galaxies = make_stars(config, camera), make_galaxies(config, camera)
    plan = plan_night(config)

    write_night_json(truth_dir / "night.json", config, camera, k, plan)
    write_detector(truth_dir, config, camera, dets)
    write_catalogues(outdir, truth_dir, config, stars, galaxies, make_refcat(config, stars))

    raw_files = []
    for done, exposure in enumerate(plan, start=1):
        sources = sky_sources(config, camera, exposure, stars, galaxies, k) if exposure.psf else None
        trail = make_trail(stream(config.seed, "trail", exposure.expid), camera.r_corner) if exposure.trail \
            else None
        chips = [expose_chip(config, camera, chip, det, exposure, sources, trail,
                             stream(config.seed, "pixels", exposure.expid, chip.chip_id))
                 for chip, det in zip(camera.chips, dets, strict=True)]
        path = raw_dir / exposure.filename
        write_raw(path, config, camera, exposure, [c.raw for c in chips])
        write_exposure_truth(truth_dir / truth_name(exposure), config, camera, k, exposure, chips, trail)
        raw_files.append(path)
        if progress is not None:
            progress(done, len(plan), exposure.filename)

    counts = Counter(e.imagetyp if e.filter == "NONE" else f"{e.imagetyp} {e.filter}" for e in plan)
    return SimResult(outdir=outdir, raw_files=tuple(raw_files), truth_dir=truth_dir,
                     refcat=outdir / "refcat.fits", exposures=tuple(plan), counts=dict(counts),
                     n_bytes=_size(outdir))
