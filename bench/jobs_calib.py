"""Calibration jobs: master bias (5 and 20 frames) and masters + reduction of every science chip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from bench import metrics
from bench.context import Context, _failed, _key, _measure_worker, _ours_or_skip, _science, _skip
from bench.measure import ToolFailed
from bench.report import Row

# ---------------------------------------------------------------- 1. master bias

def job_bias(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    ext = "CCD1"
    chip = ctx.night.chip(ext)
    nx, ny = ctx.night.config.chip_nx, ctx.night.config.chip_ny
    truth = ctx.night.truth_bias(ext)[:ny, :nx]
    floor_1 = chip.read_noise / chip.gain
    for night, n in ((ctx.night, 5), (ctx.biases, len(ctx.biases.exposures("BIAS")))):
        job = f"master bias ({n} frames, 1 chip)"
        files = [str(night.raw(e)) for e in night.exposures("BIAS")][:n]
        wd = ctx.dir(f"bias{n}")
        for tool, name in (("ours", "wisp"), ("ccdproc", "ccdproc.combine")):
            if tool == "ours" and (why := _ours_or_skip("bias")):
                rows.append(_skip(job, name, why))
                continue
            if tool == "ccdproc" and not ctx.peers["ccdproc"].available:
                rows.append(_skip(job, name, ctx.peers["ccdproc"].skip_reason()))
                continue
            out = wd / f"master_{tool}.fits"
            try:
                m = _measure_worker(ctx, "bias", tool, {"files": files, "ext": ext, "out": str(out)}, wd)
            except ToolFailed as exc:
                rows.append(_failed(job, name, exc))
                continue
            rms, rsig = metrics.bias_residual_rms(fits.getdata(out), truth)
            rows.append(Row(job=job, tool=name, m=m, ours=tool == "ours",
                            accuracy=f"resid RMS {rms:.3f} ADU (robust {rsig:.3f}; ideal ≈{floor_1 / np.sqrt(n):.3f})",
                            score=rms))
    return rows


# ---------------------------------------------------------------- 2. masters + reduction

def _masters_spec(ctx: Context, wd: Path, tool: str) -> dict[str, Any]:
    night = ctx.night
    chips = {}
    for c in night.chips:
        chips[c.extname] = {
            "bias": [str(night.raw(e)) for e in night.exposures("BIAS")],
            "flats": {f: [str(night.raw(e)) for e in night.exposures("FLAT", f)] for f in night.config.filters},
            "out_bias": str(wd / f"{tool}_bias_{c.extname}.fits"),
            "out_flat": {f: str(wd / f"{tool}_flat_{f}_{c.extname}.fits") for f in night.config.filters},
        }
    return {"chips": chips}


def job_reduce(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    night = ctx.night
    n_chips = len(_science(night)) * len(night.chips)
    job_m = f"masters (bias + {len(night.config.filters)} flats, {len(night.chips)} chips)"
    job_r = f"reduction ({n_chips} science chips)"
    outputs: dict[str, dict[str, dict[str, str]]] = {}
    for tool, name in (("ours", "wisp reduce_frame"), ("ccdproc", "ccdproc.ccd_process")):
        mname = "wisp masters" if tool == "ours" else "ccdproc.combine"
        if tool == "ours" and (why := _ours_or_skip("reduce")):
            rows += [_skip(job_m, mname, why), _skip(job_r, name, why)]
            continue
        if tool == "ccdproc" and not ctx.peers["ccdproc"].available:
            rows += [_skip(job_m, mname, ctx.peers["ccdproc"].skip_reason()),
                     _skip(job_r, name, ctx.peers["ccdproc"].skip_reason())]
            continue
        wd = ctx.dir(f"reduce_{tool}")
        mspec = _masters_spec(ctx, wd, tool)
        try:
            mm = _measure_worker(ctx, "masters", tool, mspec, wd)
        except ToolFailed as exc:
            rows += [_failed(job_m, mname, exc), _skip(job_r, name, "no masters")]
            continue
        rows.append(Row(job=job_m, tool=mname, m=mm, ours=tool == "ours", accuracy=_flat_accuracy(ctx, mspec)))
        frames, outs = [], {}
        for e in _science(night):
            for c in night.chips:
                key = _key(e, c.extname)
                out = {k: str(wd / f"{key}.{k}.fits") for k in ("sci", "var", "dq")}
                outs[key] = out
                frames.append({"raw": str(night.raw(e)), "ext": c.extname, "out": out,
                               "bias": mspec["chips"][c.extname]["out_bias"],
                               "flat": mspec["chips"][c.extname]["out_flat"][e["filter"]]})
        try:
            m = _measure_worker(ctx, "reduce", tool, {"frames": frames}, wd)
        except ToolFailed as exc:
            rows.append(_failed(job_r, name, exc))
            continue
        outputs[tool] = outs
        acc, score = _reduce_accuracy(ctx, outs)
        rows.append(Row(job=job_r, tool=name, m=m, ours=tool == "ours", accuracy=acc, score=score))
    for tool in ("ours", "ccdproc"):
        if tool in outputs:
            ctx.reduced_by, ctx.reduced = ("wisp" if tool == "ours" else "ccdproc"), outputs[tool]
            break
    return rows


def _flat_accuracy(ctx: Context, mspec: dict[str, Any]) -> str:
    """Master flats vs the true flat (both normalised to their median): RMS of the ratio - 1, in %."""
    errs = []
    for ext, job in mspec["chips"].items():
        for filt, path in job["out_flat"].items():
            with fits.open(path) as hdul:
                mf = np.asarray(hdul[0].data, float)
            tf = ctx.night.truth_flat(filt, ext)
            bpm = ctx.night.truth_bpm(ext) != 0
            r = mf / tf
            good = np.isfinite(r) & ~bpm
            r = r / np.median(r[good])
            errs.append(float(np.sqrt(np.mean((r[good] - 1.0) ** 2))) * 100)
    return f"flat vs true flat: RMS {np.median(errs):.3f} % (median of {len(errs)})"


def _truth_var(flat: np.ndarray, sky: np.ndarray, rn: float) -> np.ndarray:
    return (flat * sky + rn**2) / flat**2


def _reduce_accuracy(ctx: Context, outs: dict[str, dict[str, str]]) -> tuple[str, float]:
    night = ctx.night
    flats, chis, ratios, scales = [], [], [], []
    for e in _science(night):
        src_all = night.sources(e)
        for c in night.chips:
            out = outs[_key(e, c.extname)]
            sci = np.asarray(fits.getdata(out["sci"]), float)
            mask, th = night.chip_truth(e, c.extname)
            sky = metrics.sky_model(sci.shape, th["SKYC"], th["SKYDX"], th["SKYDY"])
            src = src_all[src_all["chip"] == c.chip_id]
            fwhm_px = float(np.median(src["psf_fwhm"])) / night.config.pixel_scale if len(src) else 4.0
            bad = (mask != 0) | (night.truth_bpm(c.extname) != 0) | metrics.source_mask(sci.shape, src, fwhm_px)
            bad |= ~np.isfinite(sci)
            tflat = night.truth_flat(e["filter"], c.extname)
            stars = metrics.isolated_stars(src, sci.shape)
            s = metrics.score_reduced(sci, _truth_var(tflat, sky, c.read_noise), sky, bad, stars)
            flats.append(s.flatness_pct)
            chis.append(s.chi_sigma)
            ratios.append(s.star_ratios)
            scales.append(s.scale)
    r = np.concatenate(ratios)
    r = r[np.isfinite(r)]
    acc = (f"sky flatness {np.median(flats):.2f} %, sky χσ {np.median(chis):.3f}; "
           f"star flux/true {np.median(r):.4f} ± {metrics.robust_sigma(r) * 100:.2f} % (n={r.size})")
    return acc, float(np.median(flats))
