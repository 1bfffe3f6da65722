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
from services.calib.science.badpix import BPM_BADCOL, BPM_COLD, BPM_HOT, find_bad_pixels
from services.calib.science.cosmics import CosmicParams, detect_cosmics
from services.calib.science.darks import MasterDark, dark_for_exposure, make_master_dark
from services.calib.science.illumcorr import apply_illumination
from services.calib.science.mosaic import exposure_factors, sampled_level
from services.calib.science.overscan import overscan_trimmed
from services.calib.science.seeing import estimate_fwhm
from services.calib.science.trails import TrailParams, find_trails
from wisp.db import table
from wisp.db.types import utcnow
from wisp.errors import InvalidInput
from wisp.fitsio import scan_fits
from wisp.instruments import ChipFrame, InstrumentRegistry, normalise
from wisp.pipeline.files import copy_cards, provenance, write_fits
from wisp.pipeline.inputs import FrameInput, InputLoader
from wisp.pipeline.model import Output, StageSpec, Task
from wisp.pipeline.params import BadPixelParams, CombineParams, DarkParams, ReduceParams
from wisp.pipeline.rules.calib import (
    BAD_PIXEL_MAP,
    BPM_KIND,
    MASTER_BIAS,
    MASTER_DARK,
    MASTER_FLAT,
    REDUCE,
    select_calibration,
)
from wisp.pipeline.rules.illumination import select_illumination

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


def read_master_dark(path: Path) -> MasterDark:
    with fits.open(path, memmap=False) as h:
        hdr = h[0].header
        var = h["VAR"].data if "VAR" in h else None
        rate = h["SCI"].data.astype(np.float32)
        return MasterDark(rate=rate, var=var, n_used=np.zeros((1, 1), np.uint16),
                          exptime=float(hdr.get("DARKEXP", np.nan)), n_frames=int(hdr.get("NCOMBINE", 0)),
                          rejected=(), level=float(hdr.get("DARKLEV", np.nan)))


def read_bad_pixel_map(path: Path) -> np.ndarray:
    """The map of a ``bad_pixel_map`` product: uint8 bits (see :class:`BadPixelMapRunner`)."""
    with fits.open(path, memmap=False) as h:
        return np.asarray(h["BPM"].data, dtype=np.uint8)


def read_illumination(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An illumination-correction product: (super-flat float32, fringe frame float32 per unit sky or None)."""
    with fits.open(path, memmap=False) as h:
        superflat = np.asarray(h["SUPERFLAT"].data, dtype=np.float32)
        fringe = np.asarray(h["FRINGE"].data, dtype=np.float32) if "FRINGE" in h else None
    return superflat, fringe


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
        factor, n_chips, note = self._mosaic_factor(frames, [inputs.frame(i.id) for i in task.inputs_with("mosaic")])
        header = self._header(task, chip, [
            ("NCOMBINE", master.n_frames, "flat frames combined"),
            ("FLATLEV", master.level, "[ADU] median bias-subtracted level of the inputs"),
            ("FLATRATE", master.level_rate, "[ADU/s] the same per second of exposure"),
            ("FLATSCL", factor, "mosaic gain factor (reduction divides by it)"),
            ("FLATNCHP", n_chips, "chips FLATSCL compares")])
        hdus = [_image(master.image, "SCI")] + ([_image(master.var, "VAR")] if master.var is not None else [])
        path = write_fits(workdir / "master_flat.fits", header, hdus)
        metrics = {"n_frames": master.n_frames, "level_adu": master.level, "level_rate_adu_s": master.level_rate,
                   "mosaic_factor": factor, "mosaic_chips": n_chips, "rejected": _rejections(master.rejected),
                   **({"mosaic_factor_note": note} if note else {})}
        return Output(path, {**_group_columns(task, "instrument", "chip", "filter", "night", "valid_from",
                                              "valid_to"), "metrics": metrics})

    def _mosaic_factor(self, own: list[FrameInput], others: list[FrameInput]) -> tuple[float, int, str]:
        """This chip's mosaic gain factor from every chip's frames of the flat exposures, the number of chips
        compared, and why the factor is 1 when it cannot be measured ('' otherwise)."""
        if not others:
            return 1.0, 1, ""
        levels: dict[str, dict[str, float]] = {}
        gains: dict[str, float] = {}
        by_file: dict[Path, list[FrameInput]] = {}
        for f in own + others:
            by_file.setdefault(f.path, []).append(f)
        for path, frames in by_file.items():  # one exposure file: described and opened once for its chips
            chips = {c.hdu_index: c for c in chip_of(frames[0], self.registry)[1].chips}
            with fits.open(path) as hdul:
                for f in frames:
                    chip = chips[f.hdu_index]
                    if chip.gain is not None:
                        gains[chip.name] = float(chip.gain)
                    view = overscan_trimmed(hdul[f.hdu_index].section, *_sections(chip))
                    levels.setdefault(str(f.row["exposure_id"]), {})[chip.name] = sampled_level(view)
        name = chip_of(own[0], self.registry)[0].name
        factors = exposure_factors(list(levels.values()), gains)
        if name not in factors:
            why = "no gain" if name not in gains else "no positive flat level"
            return 1.0, len(factors), f"chip {name} has {why}: not harmonised with the mosaic"
        return factors[name], len(factors), ""


class MasterDarkRunner(_CalibRunner):
    spec = MASTER_DARK

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        frames = [inputs.frame(i.id) for i in task.inputs_with("raw")]
        bias = read_master_bias(inputs.product(task.inputs_with("bias")[0].id).path)
        chip, _ = chip_of(frames[0], self.registry)
        p = params_of(DarkParams, task)
        with ExitStack() as stack:
            views = [overscan_trimmed(stack.enter_context(fits.open(f.path))[f.hdu_index].section,
                                      *_sections(chip)) for f in frames]
            master = make_master_dark(views, bias, exptimes=[float(f.row["exptime"]) for f in frames],
                                      sigma=p.sigma, maxiters=p.maxiters)
        header = self._header(task, chip, [
            ("BUNIT", "adu/s", "SCI: dark current in ADU/s, VAR in (ADU/s)^2"),
            ("NCOMBINE", master.n_frames, "dark frames combined"),
            ("DARKEXP", master.exptime, "[s] mean exposure time of the darks combined"),
            ("DARKLEV", master.level, "[ADU/s] median dark current")])
        hdus = [_image(master.rate, "SCI")] + ([_image(master.var, "VAR")] if master.var is not None else [])
        path = write_fits(workdir / "master_dark.fits", header, hdus)
        metrics = {"n_frames": master.n_frames, "level_adu_s": master.level, "exptime_s": master.exptime,
                   "rejected": _rejections(master.rejected)}
        return Output(path, {**_group_columns(task, "instrument", "chip", "night", "valid_from", "valid_to"),
                             "metrics": metrics})


class BadPixelMapRunner(_CalibRunner):
    """The bad-pixel map of a chip from its master flat, the flat's bias and (cameras with darks) a master
    dark. File: header-only primary (provenance, counts) and the image HDU ``BPM``, uint8, 0 good, else
    bits 1 hot (bias offset or dark current), 2 cold (low response in the flat), 4 bad column segment
    (:mod:`services.calib.science.badpix`; the same bits as the simulator's truth). A reduction sets
    :data:`wisp.dq.BAD` wherever the map is non-zero."""

    spec = BAD_PIXEL_MAP

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        flat_in = inputs.product(task.inputs_with("flat")[0].id)
        flat = read_master_flat(flat_in.path)
        bias = read_master_bias(inputs.product(task.inputs_with("bias")[0].id).path)
        darks = task.inputs_with("dark")
        dark = read_master_dark(inputs.product(darks[0].id).path) if darks else None
        p = params_of(BadPixelParams, task)
        filt = str(flat_in.row["filter"] or "")
        bpm = find_bad_pixels(bias, {filt: flat}, None if dark is None else dark.rate,
                              dark_var=None if dark is None else dark.var, hot_sigma=p.hot_sigma,
                              cold_sigma=p.cold_sigma, badcol_sigma=p.badcol_sigma,
                              badcol_min_rows=p.badcol_min_rows, grow=p.grow)
        header = fits.Header()
        for key, value, comment in provenance(self.spec, task):
            header[key] = (value, comment)
        for key in ("instrument", "chip", "filter", "night"):
            if flat_in.row.get(key):
                header[key.upper()[:8]] = flat_in.row[key]
        for key, value, comment in [
                ("BPMHOT", BPM_HOT, "BPM bit: hot (bias offset or dark current)"),
                ("BPMCOLD", BPM_COLD, "BPM bit: cold (low response in the flat)"),
                ("BPMCOL", BPM_BADCOL, "BPM bit: bad column segment"),
                ("NHOT", bpm.n_hot, "pixels with the hot bit"), ("NCOLD", bpm.n_cold, "pixels with the cold bit"),
                ("NBADCOL", bpm.n_badcol_pixels, "pixels with the bad-column bit"),
                ("NBAD", int(np.count_nonzero(bpm.mask)), "pixels with any bit"),
                ("NCOLSEG", len(bpm.columns), "bad column segments")]:
            header[key] = (value, comment)
        hdu = fits.ImageHDU(np.ascontiguousarray(bpm.mask, dtype=np.uint8), name="BPM")
        hdu.header["COMMENT"] = "0 good; bits 1 hot, 2 cold, 4 bad column (services/calib/science/badpix.py)"
        path = write_fits(workdir / "bad_pixel_map.fits", header, [hdu])
        metrics = {"n_hot": bpm.n_hot, "n_cold": bpm.n_cold, "n_badcol_pixels": bpm.n_badcol_pixels,
                   "n_bad": int(np.count_nonzero(bpm.mask)), "bad_fraction": bpm.fraction,
                   "columns": [{"x": c.x, "y0": c.y0, "y1": c.y1, "kind": c.kind, "value": c.value,
                                "source": c.source} for c in bpm.columns],
                   "noise": bpm.noise, "sources": list(bpm.sources)}
        columns = {**_group_columns(task, "instrument", "chip", "filter", "valid_from", "valid_to"),
                   "night": flat_in.row["night"], "metrics": metrics}
        return Output(path, columns)


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
            for kind, product_kind, used_id, filt in used:
                sel = select_calibration(session, product_kind, row["instrument"], row["chip"], filt, when,
                                         row["night"])
                reason = sel.reason if sel.chosen_id == used_id else (
                    f"{used_id} was chosen when the task was planned; now: {sel.reason}")
                session.execute(insert(table("calib_selections")).values(
                    frame_id=row["id"], kind=kind, chosen_id=used_id, candidates=sel.candidates, reason=reason,
                    decided_at=utcnow()))
            later: list[tuple[str, str | None, Any]] = [("illumination", illum_id, lambda: select_illumination(
                session, row["instrument"], row["chip"], row["filter"], when, row["night"]))]
            for what, made_id, choose in later:
                if made_id is None:
                    continue
                now = choose()
                session.execute(insert(table("calib_selections")).values(
                    frame_id=row["id"], kind=what, chosen_id=made_id, candidates=getattr(now, "candidates", []),
                    reason=now.reason if now.chosen_id == made_id else (
                        f"{made_id} was chosen when the task was planned; now: {now.reason}"), decided_at=utcnow()))

        return Output(path, columns, extra=explain)
