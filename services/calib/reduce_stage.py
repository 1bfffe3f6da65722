"""The reduce stage's adapter: a raw science frame and its chosen calibrations in, SCI/VAR/DQ (e-) out, with
cosmic rays, trails and bad pixels in DQ and every choice recorded for ``wisp why``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.calib.science import (
    COSMIC_RAY,
    TRAIL,
    Reduced,
    reduce_frame,
)
from services.calib.science.cosmics import CosmicParams, detect_cosmics
from services.calib.science.darks import dark_for_exposure
from services.calib.science.illumcorr import apply_illumination
from services.calib.science.seeing import estimate_fwhm
from services.calib.science.trails import TrailParams, find_trails
from services.calib.stages import (
    _CalibRunner,
    _chip_numbers,
    _group_columns,
    _image,
    _sections,
    chip_of,
    params_of,
    read_bad_pixel_map,
    read_illumination,
    read_master_bias,
    read_master_dark,
    read_master_flat,
)
from wisp.db import table
from wisp.db.types import utcnow
from wisp.instruments import ChipFrame
from wisp.pipeline.files import copy_cards, provenance, write_fits
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Output, Task
from wisp.pipeline.params import ReduceParams
from wisp.pipeline.rules.calib import (
    BPM_KIND,
    REDUCE,
    select_calibration,
)
from wisp.pipeline.rules.illumination import select_illumination


def mask_defects(reduced: Reduced, p: ReduceParams) -> dict[str, Any]:
    """Measure the PSF FWHM; flag cosmic rays (their ``objlim`` from that FWHM) and satellite trails in
    ``reduced.dq`` (as the parameters ask), never on pixels already flagged BAD; their metrics."""
    seeing = estimate_fwhm(reduced.sci, reduced.var, reduced.dq)
    out: dict[str, Any] = {"fwhm_px": seeing.fwhm_px, "fwhm_n_stars": seeing.n_stars, "fwhm_method": seeing.reason
                           if seeing.fwhm_px is not None else f"no estimate ({seeing.reason}): cosmic-ray "
                           "detection falls back to its default objlim"}
    if p.cosmic_rays:
        cr = detect_cosmics(reduced.sci, reduced.var, reduced.dq, fwhm=seeing.fwhm_px,
                            params=CosmicParams(sigclip=p.cr_sigclip, sigfrac=p.cr_sigfrac))
        reduced.dq[cr] |= COSMIC_RAY
        out["cosmic_ray_pixels"] = int(cr.sum())
    if p.trails:
        found = find_trails(reduced.sci, reduced.var, reduced.dq, TrailParams(detect_nsigma=p.trail_nsigma))
        reduced.dq[found.mask] |= TRAIL
        out["trails"] = [{"angle_deg": t.angle, "rho_px": t.rho, "length_px": t.length, "width_px": t.width,
                          "peak_e": t.peak} for t in found.lines]
        out["trail_pixels"] = int(found.mask.sum())
    return out


def _trimmed_wcs(header: fits.Header, chip: ChipFrame) -> fits.Header:
    """The chip header's cards with CRPIX moved to the trimmed (data-section) pixel grid."""
    out = fits.Header()
    copy_cards(out, header)
    rows, cols = _sections(chip)[0]
    for axis, start in (("CRPIX1", cols.start or 0), ("CRPIX2", rows.start or 0)):
        if axis in out:
            out[axis] = float(out[axis]) - start
    for key in ("DATASEC", "BIASSEC", "TRIMSEC"):
        out.remove(key, ignore_missing=True)
    return out


class ReduceRunner(_CalibRunner):
    spec = REDUCE

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        frame = inputs.frame(task.inputs_with("raw")[0].id)
        bias_id, flat_id = task.inputs_with("bias")[0].id, task.inputs_with("flat")[0].id
        bpm_id = task.inputs_with("bpm")[0].id if task.inputs_with("bpm") else None  # None: planned before maps
        dark_id = task.inputs_with("dark")[0].id if task.inputs_with("dark") else None
        bias = read_master_bias(inputs.product(bias_id).path)
        flat = read_master_flat(inputs.product(flat_id).path)
        bpm = read_bad_pixel_map(inputs.product(bpm_id).path) if bpm_id is not None else None
        dark, dark_var = None, None
        if dark_id is not None:
            dark, dark_var = dark_for_exposure(read_master_dark(inputs.product(dark_id).path),
                                               float(frame.row["exptime"]))
        chip, exposure = chip_of(frame, self.registry)
        gain, read_noise, saturation = _chip_numbers(chip)
        with fits.open(frame.path) as hdul:
            raw_primary, chip_header = hdul[0].header, hdul[frame.hdu_index].header
            datasec, biassec = _sections(chip)
            params = params_of(ReduceParams, task)
            reduced = reduce_frame(hdul[frame.hdu_index].section, datasec=datasec, biassec=biassec,
                                   master_bias=bias, master_flat=flat, gain=gain, read_noise=read_noise,
                                   saturation=saturation, bad_pixel_mask=bpm, overscan_method=params.overscan_method,
                                   overscan_order=params.overscan_order, dark=dark, dark_var=dark_var)
        masks = mask_defects(reduced, params)
        illum_id = task.inputs_with("illumination")[0].id if task.inputs_with("illumination") else None
        sci, var = reduced.sci, reduced.var
        if illum_id is not None:
            sci, var, applied = apply_illumination(sci, var, reduced.dq,
                                                   *read_illumination(inputs.product(illum_id).path))
            masks.update(applied)
        factor = float(fits.getheader(inputs.product(flat_id).path, 0).get("FLATSCL", 1.0))
        sci, var = sci / np.float32(factor), var / np.float32(factor * factor)
        masks["mosaic_factor"] = factor
        header = fits.Header()
        copy_cards(header, raw_primary)
        header.update(_trimmed_wcs(chip_header, chip))
        cards = [("BUNIT", "electron", "SCI in e-, VAR in e-^2"), ("GAIN", 1.0, "[e-/count] after reduction"),
                 ("RDNOISE", read_noise, "[e-] read noise"),
                 ("SATURATE", saturation * gain, "[e-] approx. saturation above bias"),
                 ("PIXSCALE", exposure.pixel_scale_arcsec or 0.0, "[arcsec/px] nominal"),
                 ("EXPTIME", float(frame.row["exptime"]), "[s]"), ("CHIP", chip.name, "chip name"),
                 ("WISPBIAS", bias_id, "master bias used"), ("WISPFLAT", flat_id, "master flat used"),
                 ("WISPBPM", bpm_id or "", "bad-pixel map used (DQ BAD)")]
        if dark_id is not None:
            cards.append(("WISPDARK", dark_id, "master dark used"))
        if illum_id is not None:
            cards.append(("WISPILLU", illum_id, "night-sky flat (+ fringes) applied"))
        cards.append(("FLATSCL", factor, "SCI divided by this mosaic gain factor"))
        for key, value, comment in [*provenance(self.spec, task), *cards]:
            header[key] = (value, comment)
        path = write_fits(workdir / "reduced.fits", header, [
            _image(sci, "SCI"), _image(var, "VAR"), _image(reduced.dq, "DQ")])
        row = frame.row
        columns = {**_group_columns(task, "instrument", "chip", "filter", "night", "field", "frame_id",
                                    "exposure_id"),
                   "mjd_obs": row["mjd_obs"], "ra_deg": row["ra_deg"], "dec_deg": row["dec_deg"],
                   "metrics": {"dq_flagged_fraction": float(np.mean(reduced.dq != 0)), **masks}}

        def explain(session: Session, product_id: str) -> None:
            when = row["date_obs"]
            used = [("bias", "master_bias", bias_id, None), ("flat", "master_flat", flat_id, row["filter"])]
            if bpm_id is not None:
                used.append(("bpm", BPM_KIND, bpm_id, row["filter"]))
            if dark_id is not None:
                used.append(("dark", "master_dark", dark_id, None))
            inst, chip, night = row["instrument"], row["chip"], row["night"]
            choices = [(kind, used_id, select_calibration(session, product_kind, inst, chip, filt, when, night))
                       for kind, product_kind, used_id, filt in used]
            if illum_id is not None:
                choices.append(("illumination", illum_id,
                                select_illumination(session, inst, chip, row["filter"], when, night)))
            for kind, used_id, sel in choices:
                reason = sel.reason if sel.chosen_id == used_id else (
                    f"{used_id} was chosen when the task was planned; now: {sel.reason}")
                session.execute(insert(table("calib_selections")).values(
                    frame_id=row["id"], kind=kind, chosen_id=used_id, candidates=sel.candidates, reason=reason,
                    decided_at=utcnow()))

        return Output(path, columns, extra=explain)
