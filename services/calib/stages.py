"""The calib stages' adapters: read inputs, call the science, write product files. Nothing clever here."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from astropy.io import fits
from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.calib.science import (
    COSMIC_RAY,
    TRAIL,
    MasterBias,
    MasterFlat,
    Reduced,
    make_master_bias,
    make_master_flat,
    reduce_frame,
)
from services.calib.science.cosmics import CosmicParams, detect_cosmics
from services.calib.science.overscan import overscan_trimmed
from services.calib.science.trails import TrailParams, find_trails
from wisp.db import table
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.fitsio import scan_fits
from wisp.instruments import ChipFrame, InstrumentRegistry, normalise
from wisp.pipeline.files import copy_cards, provenance, write_fits
from wisp.pipeline.inputs import FrameInput, InputLoader
from wisp.pipeline.model import Output, StageSpec, Task
from wisp.pipeline.params import CombineParams, ReduceParams
from wisp.pipeline.rules.calib import MASTER_BIAS, MASTER_FLAT, REDUCE, select_calibration

MAX_PIXELS = 400_000_000


def chip_of(frame: FrameInput, registry: InstrumentRegistry) -> tuple[ChipFrame, Any]:
    """The chip description (sections 0-based, gain e-/ADU, read noise e-, saturation ADU) and the
    normalised exposure, from the raw file through its instrument description."""
    name = frame.row["filename"]
    with scan_fits(frame.path, max_pixels_per_hdu=MAX_PIXELS, filename=name) as layout:
        exposure = normalise(layout, registry.identify(layout, name), name)
    chip = next(c for c in exposure.chips if c.hdu_index == frame.hdu_index)
    return chip, exposure


def _group_columns(task: Task, *keys: str) -> dict[str, Any]:
    out: dict[str, Any] = {k: task.group.get(k) for k in keys if task.group.get(k) is not None}
    for k in ("valid_from", "valid_to"):
        if k in out:
            out[k] = datetime.fromisoformat(out[k])
    return out


def _rejections(rejected: Any) -> list[dict[str, Any]]:
    return [{"frame": int(r.index), "reason": r.reason} for r in rejected]


def _image(data: np.ndarray, name: str) -> fits.ImageHDU:
    return fits.ImageHDU(np.ascontiguousarray(data), name=name)


def read_master_bias(path: Path) -> MasterBias:
    with fits.open(path, memmap=False) as h:
        var = h["VAR"].data if "VAR" in h else None
        return MasterBias(image=h["SCI"].data.astype(np.float32), var=var, n_used=None, noise=(),
                          n_frames=int(h[0].header.get("NCOMBINE", 0)), rejected=())


def read_master_flat(path: Path) -> MasterFlat:
    with fits.open(path, memmap=False) as h:
        hdr = h[0].header
        var = h["VAR"].data if "VAR" in h else None
        return MasterFlat(image=h["SCI"].data.astype(np.float32), var=var, n_used=None,
                          level=float(hdr.get("FLATLEV", np.nan)), level_rate=float(hdr.get("FLATRATE", np.nan)),
                          levels=(), n_frames=int(hdr.get("NCOMBINE", 0)), rejected=())


class _CalibRunner:
    spec: StageSpec

    def __init__(self, registry: InstrumentRegistry) -> None:
        self.registry = registry

    def _header(self, task: Task, chip: ChipFrame, extra: list[tuple[str, Any, str]]) -> fits.Header:
        header = fits.Header()
        for key, value, comment in provenance(self.spec, task) + extra:
            header[key] = (value, comment)
        header["CHIP"] = (chip.name, "chip name")
        for key in ("instrument", "filter", "night"):
            if task.group.get(key):
                header[key.upper()[:8]] = task.group[key]
        return header


P = TypeVar("P")


def params_of(cls: type[P], task: Task) -> P:
    """A stage's parameters from its task (defaults for any the task does not name)."""
    return cls(**{k: v for k, v in task.params.items() if k in cls.__dataclass_fields__})  # type: ignore[attr-defined]


def _combine_kwargs(task: Task) -> dict[str, Any]:
    p = params_of(CombineParams, task)
    return {"sigma": p.sigma, "maxiters": p.maxiters, "clip_noise": p.clip_noise}


def mask_defects(reduced: Reduced, p: ReduceParams) -> dict[str, Any]:
    """Flag cosmic rays and satellite trails in ``reduced.dq`` (as the parameters ask); their metrics."""
    out: dict[str, Any] = {}
    if p.cosmic_rays:
        cr = detect_cosmics(reduced.sci, reduced.var, reduced.dq,
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


class MasterBiasRunner(_CalibRunner):
    spec = MASTER_BIAS

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        frames = [inputs.frame(i.id) for i in task.inputs_with("raw")]
        chip, _ = chip_of(frames[0], self.registry)
        with ExitStack() as stack:
            views = [overscan_trimmed(stack.enter_context(fits.open(f.path))[f.hdu_index].section,
                                      *_sections(chip)) for f in frames]
            master = make_master_bias(views, **_combine_kwargs(task))
        header = self._header(task, chip, [("NCOMBINE", master.n_frames, "bias frames combined"),
                                           ("RDNOISE", master.read_noise_adu, "[ADU] read noise measured")])
        hdus = [_image(master.image, "SCI")] + ([_image(master.var, "VAR")] if master.var is not None else [])
        path = write_fits(workdir / "master_bias.fits", header, hdus)
        metrics = {"n_frames": master.n_frames, "read_noise_adu": master.read_noise_adu,
                   "rejected": _rejections(master.rejected)}
        return Output(path, {**_group_columns(task, "instrument", "chip", "night", "valid_from", "valid_to"),
                             "metrics": metrics})


class MasterFlatRunner(_CalibRunner):
    spec = MASTER_FLAT

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        frames = [inputs.frame(i.id) for i in task.inputs_with("raw")]
        bias = read_master_bias(inputs.product(task.inputs_with("bias")[0].id).path)
        chip, _ = chip_of(frames[0], self.registry)
        with ExitStack() as stack:
            views = [overscan_trimmed(stack.enter_context(fits.open(f.path))[f.hdu_index].section,
                                      *_sections(chip)) for f in frames]
            master = make_master_flat(views, bias, exptimes=[float(f.row["exptime"]) for f in frames],
                                      **_combine_kwargs(task))
        header = self._header(task, chip, [
            ("NCOMBINE", master.n_frames, "flat frames combined"),
            ("FLATLEV", master.level, "[ADU] median bias-subtracted level of the inputs"),
            ("FLATRATE", master.level_rate, "[ADU/s] the same per second of exposure")])
        hdus = [_image(master.image, "SCI")] + ([_image(master.var, "VAR")] if master.var is not None else [])
        path = write_fits(workdir / "master_flat.fits", header, hdus)
        metrics = {"n_frames": master.n_frames, "level_adu": master.level, "level_rate_adu_s": master.level_rate,
                   "rejected": _rejections(master.rejected)}
        return Output(path, {**_group_columns(task, "instrument", "chip", "filter", "night", "valid_from",
                                              "valid_to"), "metrics": metrics})


Section = tuple[slice, slice]


def _sections(chip: ChipFrame) -> tuple[Section, Section]:
    """Data and overscan sections (0-based numpy slices)."""
    if chip.datasec is None or chip.biassec is None:
        raise InvalidInput(f"chip {chip.name} has no overscan section (BIASSEC); calibration without "
                           "overscan is not supported yet", code="calib.no_overscan", chip=chip.name)
    return chip.datasec, chip.biassec


def _chip_numbers(chip: ChipFrame) -> tuple[float, float, float]:
    """Gain (e-/ADU), read noise (e-) and saturation (ADU); the description guarantees them for reduction."""
    if chip.gain is None or chip.read_noise is None or chip.saturation is None:
        raise InvalidInput(f"chip {chip.name}: gain, read noise and saturation are needed to reduce it",
                           code="calib.chip_parameters", chip=chip.name)
    return float(chip.gain), float(chip.read_noise), float(chip.saturation)


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
        bias = read_master_bias(inputs.product(bias_id).path)
        flat = read_master_flat(inputs.product(flat_id).path)
        chip, exposure = chip_of(frame, self.registry)
        gain, read_noise, saturation = _chip_numbers(chip)
        with fits.open(frame.path) as hdul:
            raw_primary, chip_header = hdul[0].header, hdul[frame.hdu_index].header
            datasec, biassec = _sections(chip)
            params = params_of(ReduceParams, task)
            reduced = reduce_frame(hdul[frame.hdu_index].section, datasec=datasec, biassec=biassec,
                                   master_bias=bias, master_flat=flat, gain=gain, read_noise=read_noise,
                                   saturation=saturation, overscan_method=params.overscan_method,
                                   overscan_order=params.overscan_order)
        masks = mask_defects(reduced, params)
        header = fits.Header()
        copy_cards(header, raw_primary)
        header.update(_trimmed_wcs(chip_header, chip))
        cards = [("BUNIT", "electron", "SCI in e-, VAR in e-^2"), ("GAIN", 1.0, "[e-/count] after reduction"),
                 ("RDNOISE", read_noise, "[e-] read noise"),
                 ("SATURATE", saturation * gain, "[e-] approx. saturation above bias"),
                 ("PIXSCALE", exposure.pixel_scale_arcsec or 0.0, "[arcsec/px] nominal"),
                 ("EXPTIME", float(frame.row["exptime"]), "[s]"), ("CHIP", chip.name, "chip name"),
                 ("WISPBIAS", bias_id, "master bias used"), ("WISPFLAT", flat_id, "master flat used")]
        for key, value, comment in [*provenance(self.spec, task), *cards]:
            header[key] = (value, comment)
        path = write_fits(workdir / "reduced.fits", header, [
            _image(reduced.sci, "SCI"), _image(reduced.var, "VAR"), _image(reduced.dq, "DQ")])
        row = frame.row
        columns = {**_group_columns(task, "instrument", "chip", "filter", "night", "field", "frame_id",
                                    "exposure_id"),
                   "mjd_obs": row["mjd_obs"], "ra_deg": row["ra_deg"], "dec_deg": row["dec_deg"],
                   "metrics": {"dq_flagged_fraction": float(np.mean(reduced.dq != 0)), **masks}}

        def explain(session: Session, product_id: str) -> None:
            when = row["date_obs"]
            for kind, used, filt in (("bias", bias_id, None), ("flat", flat_id, row["filter"])):
                sel = select_calibration(session, f"master_{kind}", row["instrument"], row["chip"], filt, when,
                                         row["night"])
                reason = sel.reason if sel.chosen_id == used else (
                    f"{used} was chosen when the task was planned; now: {sel.reason}")
                session.execute(insert(table("calib_selections")).values(
                    frame_id=row["id"], kind=kind, chosen_id=used, candidates=sel.candidates, reason=reason,
                    decided_at=utcnow()))

        return Output(path, columns, extra=explain)
