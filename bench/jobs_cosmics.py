"""Cosmic-ray detection job: our ``detect_cosmics`` vs ``astroscrappy.detect_cosmics`` (defaults) on reduced chips.

Inputs: the chips reduced by the ``reduce`` job (``ctx.reduced``; SCI e- with the sky, VAR e-^2, DQ), the
first two r-band exposures x every chip (8 chips of 1024^2 for the default night), the same files for both.
The reduction runs without a bad-pixel mask (ccdproc gets none), so the harness ORs the true BPM into DQ as
BAD (a pipeline has its BPM; unmasked hot pixels are single-frame "cosmic rays" to any detector).
Each tool runs in its own process (``python -m bench.worker cosmics ours|astroscrappy spec.json``), one
thread (``OMP_NUM_THREADS=1`` for astroscrappy's OpenMP loops; our kernel is single-threaded numba), and
writes one uint8 FITS mask per chip.

How each is called (per chip):

* ours: ``detect_cosmics(sci, var, dq, fwhm=...)`` with default ``CosmicParams``; ``fwhm`` is the median
  true PSF FWHM of the chip's sources in px (a pipeline would give its measured seeing). The numba kernels
  are loaded from their on-disk cache by a call on a 16x16 array before the measured section (the
  equivalent of astroscrappy's import of its compiled module); the harness compiles them once, untimed.
* astroscrappy: ``detect_cosmics(sci, inmask=dq & (BAD|SATURATED|NO_DATA) != 0, gain=1.0,
  readnoise=<chip read noise, e->)``, every other parameter at its default (sigclip 4.5, sigfrac 0.3,
  objlim 5, satlevel 65536, niter 4, sepmed, meanmask cleaning); the sky stays in the image (astroscrappy's
  noise model needs it); NaN (NO_DATA) pixels are set to the image median (they are in ``inmask``).

Accuracy against the simulator's truth: the truth mask's CR bit marks pixels that received > 5 e-, most of
which are invisible under ~20 e- of sky noise; the scored set is the marked pixels whose deposited charge
(re-rendered from the truth COSMICS table exactly as the simulator deposits it) exceeds 3 x the pixel's
CR-free noise (sqrt of the 5x5 median of VAR), minus BAD/SATURATED/NO_DATA pixels. Completeness = flagged
fraction of that set; false = flagged pixels the truth does not mark at all; "on stars" = false pixels within
2 FWHM of unsaturated stars of > 5000 e-.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from bench.context import Context, _failed, _key, _measure_worker, _science, _skip
from bench.measure import ToolFailed
from bench.report import Row
from wisp.sim.artifacts import render_cosmics

IGNORED = 1 | 2 | 16  # wisp.dq BAD | SATURATED | NO_DATA
SIGMA_TRUTH = 3.0
N_EXPOSURES = 2


# ---------------------------------------------------------------- workers (run in ``python -m bench.worker``)

def _read_chip(item: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sci = np.asarray(fits.getdata(item["sci"]), dtype=np.float32)
    var = np.asarray(fits.getdata(item["var"]), dtype=np.float32)
    dq = np.asarray(fits.getdata(item["dq"])).astype(np.uint16)
    return sci, var, dq


def _write_mask(path: str, mask: np.ndarray) -> None:
    fits.PrimaryHDU(np.asarray(mask, dtype=np.uint8)).writeto(path, overwrite=True)


def ours_cosmics(spec: dict[str, Any]) -> dict[str, Any]:
    """``services.calib.science.cosmics.detect_cosmics`` per chip, default parameters, the chip's FWHM."""
    from bench.worker import Meter
    from services.calib.science.cosmics import detect_cosmics
    meter = Meter()
    detect_cosmics(np.full((16, 16), 100.0, np.float32), np.full((16, 16), 100.0, np.float32))  # load the cache
    flagged = 0
    for item in spec["frames"]:
        sci, var, dq = _read_chip(item)
        with meter.section():
            mask = detect_cosmics(sci, var, dq, fwhm=float(item["fwhm"]))
        flagged += int(mask.sum())
        _write_mask(item["out"], mask)
    return meter.report(n=len(spec["frames"]), flagged=flagged)


def astroscrappy_cosmics(spec: dict[str, Any]) -> dict[str, Any]:
    """``astroscrappy.detect_cosmics`` with its defaults, gain 1 (e-), the chip's read noise, our DQ as inmask."""
    import astroscrappy

    from bench.worker import Meter
    meter = Meter()
    flagged = 0
    for item in spec["frames"]:
        sci, _, dq = _read_chip(item)
        ignored = (dq & IGNORED) != 0
        data = np.where(ignored | ~np.isfinite(sci), np.nanmedian(sci), sci).astype(np.float32)
        with meter.section():
            mask, _ = astroscrappy.detect_cosmics(data, inmask=ignored, gain=1.0, readnoise=float(item["read_noise"]))
        flagged += int(np.count_nonzero(mask))
        _write_mask(item["out"], np.asarray(mask, bool))
    return meter.report(n=len(spec["frames"]), flagged=flagged)


# ---------------------------------------------------------------- truth

def _truth(ctx: Context, exposure: dict[str, Any], ext: str, chip_id: int, var: np.ndarray,
           dq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(scored CR pixels, every truth-marked CR pixel, star zone, FWHM px) of one chip."""
    night = ctx.night
    mask, _ = night.chip_truth(exposure, ext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cosmics = Table.read(night.truth(exposure), hdu="COSMICS")
    sources = night.sources(exposure)
    cosmics = cosmics[cosmics["chip"] == chip_id]
    sources = sources[sources["chip"] == chip_id]
    ny, nx = mask.shape
    deposit = render_cosmics(cosmics, nx, ny)
    truth_all = (mask & 1) != 0
    ignored = (dq & IGNORED) != 0
    filled = np.where(ignored | ~np.isfinite(var), np.nanmedian(var[~ignored]), var)
    noise = np.sqrt(ndimage.median_filter(filled, 5))
    truth = truth_all & ~ignored & (deposit > SIGMA_TRUTH * noise)
    fwhm = float(np.median(sources["psf_fwhm"])) / night.config.pixel_scale if len(sources) else 4.0
    zone = np.zeros((ny, nx), bool)
    yy, xx = np.mgrid[0:ny, 0:nx]
    stars = sources[(sources["type"] == "star") & (sources["flux"] > 5e3) & ~np.asarray(sources["saturated"], bool)]
    for row in stars:
        x, y, r = float(row["x"]), float(row["y"]), 2 * fwhm
        sl = (slice(max(int(y - r), 0), max(min(int(y + r) + 2, ny), 0)),
              slice(max(int(x - r), 0), max(min(int(x + r) + 2, nx), 0)))
        zone[sl] |= (xx[sl] - x) ** 2 + (yy[sl] - y) ** 2 < r * r
    return truth, truth_all, zone & ~truth_all, fwhm


# ---------------------------------------------------------------- the job

def _available(tool: str) -> str | None:
    module, attr = {"ours": ("services.calib.science.cosmics", "detect_cosmics"),
                    "astroscrappy": ("astroscrappy", "detect_cosmics")}[tool]
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # not importable: a skipped row, not a failed run
        return f"{module} not importable ({type(exc).__name__}: {exc})"
    return None if hasattr(mod, attr) else f"{module}.{attr} missing"


def job_cosmics(ctx: Context) -> list[Row]:
    night = ctx.night
    exposures = _science(night, "r")[:N_EXPOSURES] or _science(night)[:N_EXPOSURES]
    n_chips = len(exposures) * len(night.chips)
    job = f"cosmic rays ({n_chips} chips)"
    tools = (("ours", "wisp detect_cosmics"), ("astroscrappy", "astroscrappy (defaults)"))
    if not ctx.reduced:
        return [_skip(job, name, "needs the reduce job's chips") for _, name in tools]
    wd = ctx.dir("cosmics")
    items, truths = [], {}
    for e in exposures:
        for c in night.chips:
            key = _key(e, c.extname)
            red = ctx.reduced[key]
            var = np.asarray(fits.getdata(red["var"]), dtype=np.float64)
            # the reduction ran without a bad-pixel mask; a pipeline has one: the true BPM as BAD
            dq = np.asarray(fits.getdata(red["dq"])).astype(np.uint16)
            dq[night.truth_bpm(c.extname) != 0] |= 1
            dq_path = wd / f"{key}.dq.fits"
            fits.PrimaryHDU(dq.astype(np.int16)).writeto(dq_path, overwrite=True)
            truth, truth_all, stars, fwhm = _truth(ctx, e, c.extname, c.chip_id, var, dq)
            truths[key] = (truth, truth_all, stars, dq)
            items.append({"key": key, "sci": red["sci"], "var": red["var"], "dq": str(dq_path), "fwhm": fwhm,
                          "read_noise": c.read_noise})
    if _available("ours") is None:  # compile the numba kernels into their cache once, untimed
        from services.calib.science.cosmics import detect_cosmics
        detect_cosmics(np.full((16, 16), 100.0, np.float32), np.full((16, 16), 100.0, np.float32))
    rows: list[Row] = []
    for tool, name in tools:
        if (why := _available(tool)) is not None:
            rows.append(_skip(job, name, why))
            continue
        frames = [{**it, "out": str(wd / f"{it['key']}.{tool}.cr.fits")} for it in items]
        try:
            m = _measure_worker(ctx, "cosmics", tool, {"frames": frames}, wd)
        except ToolFailed as exc:
            rows.append(_failed(job, name, exc))
            continue
        acc, score = _accuracy(frames, truths)
        rows.append(Row(job=job, tool=name, m=m, ours=tool == "ours", accuracy=acc, score=score))
    if ctx.reduced_by != "wisp":
        ctx.notes.append(f"cosmic rays: chips reduced by {ctx.reduced_by}, whose DQ is empty (no BAD/SATURATED "
                         "pixels to ignore)")
    return rows


def _accuracy(frames: list[dict[str, Any]],
              truths: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[str, float]:
    n = hit = false = on_stars = on_ignored = 0
    for it in frames:
        truth, truth_all, stars, dq = truths[it["key"]]
        mask = np.asarray(fits.getdata(it["out"])) != 0
        n += int(truth.sum())
        hit += int((mask & truth).sum())
        false += int((mask & ~truth_all).sum())
        on_stars += int((mask & stars).sum())
        on_ignored += int((mask & ((dq & IGNORED) != 0)).sum())
    comp = hit / n if n else float("nan")
    acc = (f"CR px > {SIGMA_TRUTH:g}σ: {comp * 100:.2f} % found ({hit}/{n}); false px {false} "
           f"(on stars {on_stars}, on BAD/SAT/NO_DATA {on_ignored})")
    return acc, comp


__all__ = ["astroscrappy_cosmics", "job_cosmics", "ours_cosmics"]

