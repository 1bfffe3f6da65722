"""The calib stages' adapters for the masters (bias, flat, dark, bad-pixel map) and what every calib adapter
shares (reading products, chip numbers, headers). Read inputs, call the science, write files; nothing clever."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from astropy.io import fits

from services.calib.science import (
    MasterBias,
    MasterFlat,
    make_master_bias,
    make_master_flat,
)
from services.calib.science.badpix import BPM_BADCOL, BPM_COLD, BPM_HOT, find_bad_pixels
from services.calib.science.darks import MasterDark, make_master_dark
from services.calib.science.mosaic import exposure_factors, sampled_level
from services.calib.science.overscan import overscan_trimmed
from wisp.errors import InvalidInput
from wisp.fitsio import scan_fits
from wisp.instruments import ChipFrame, InstrumentRegistry, normalise
from wisp.pipeline.files import provenance, write_fits
from wisp.pipeline.inputs import FrameInput, InputLoader
from wisp.pipeline.model import Output, StageSpec, Task
from wisp.pipeline.params import BadPixelParams, CombineParams, DarkParams
from wisp.pipeline.rules.calib import (
    BAD_PIXEL_MAP,
    MASTER_BIAS,
    MASTER_DARK,
    MASTER_FLAT,
)

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
        factor, n_chips, note = self._mosaic_factor(chip.name, frames,
                                                    [inputs.frame(i.id) for i in task.inputs_with("mosaic")])
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

    def _mosaic_factor(self, name: str, own: list[FrameInput], others: list[FrameInput]
                       ) -> tuple[float, int, str]:
        """Chip ``name``'s mosaic gain factor from every chip's frames of the flat exposures, the number of chips
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
