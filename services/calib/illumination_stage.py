"""The illumination stage's adapter: reduce a night's science block in memory, make the night-sky flat (and
fringe frame), write one product with ``SUPERFLAT`` (and ``FRINGE``). The rule is
:mod:`wisp.pipeline.rules.illumination`; the science :mod:`services.calib.science.illumcorr`."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from services.calib.science import reduce_frame
from services.calib.science.darks import dark_for_exposure
from services.calib.science.illumcorr import make_illumination
from services.calib.science.illumination import SourceMasking
from services.calib.stages import (
    _CalibRunner,
    _chip_numbers,
    _group_columns,
    _image,
    _sections,
    chip_of,
    params_of,
    read_bad_pixel_map,
    read_master_bias,
    read_master_dark,
    read_master_flat,
)
from wisp.pipeline.files import write_fits
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Output, Task
from wisp.pipeline.params import IlluminationParams
from wisp.pipeline.rules.illumination import ILLUMINATION


class IlluminationRunner(_CalibRunner):
    spec = ILLUMINATION

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        frames = [inputs.frame(i.id) for i in task.inputs_with("raw")]
        bias = read_master_bias(inputs.product(task.inputs_with("bias")[0].id).path)
        flat = read_master_flat(inputs.product(task.inputs_with("flat")[0].id).path)
        bpm_refs, dark_refs = task.inputs_with("bpm"), task.inputs_with("dark")
        bpm = read_bad_pixel_map(inputs.product(bpm_refs[0].id).path) if bpm_refs else None
        master_dark = read_master_dark(inputs.product(dark_refs[0].id).path) if dark_refs else None
        p = params_of(IlluminationParams, task)
        overscan = {"overscan_method": task.params.get("overscan_method", "median_rows"),
                    "overscan_order": int(task.params.get("overscan_order", 1))}
        scis, vars_, dqs = [], [], []
        chip = None
        for frame in frames:
            chip, _ = chip_of(frame, self.registry)
            gain, read_noise, saturation = _chip_numbers(chip)
            datasec, biassec = _sections(chip)
            dark, dark_var = (None, None) if master_dark is None else dark_for_exposure(
                master_dark, float(frame.row["exptime"]))
            with fits.open(frame.path) as hdul:  # the reduction's chain, as in ReduceRunner
                red = reduce_frame(hdul[frame.hdu_index].section, datasec=datasec, biassec=biassec,
                                   master_bias=bias, master_flat=flat, gain=gain, read_noise=read_noise,
                                   saturation=saturation, bad_pixel_mask=bpm, dark=dark, dark_var=dark_var,
                                   **overscan)
            scis.append(red.sci)
            vars_.append(red.var)
            dqs.append(red.dq)
        assert chip is not None  # a task has >= 3 raw frames
        result = make_illumination(scis, dqs, vars_, fringe=bool(task.params.get("fringe")), method=p.method,
                                   box=p.box, order=p.order, fringe_smooth_px=p.fringe_smooth_px,
                                   masking=SourceMasking(thresh=p.mask_thresh, dilate_px=p.mask_dilate_px))
        m = result.metrics
        extra = [("NCOMBINE", m["n_frames"], "science frames combined"),
                 ("SFRMS", m["superflat_rms"], "rms of SUPERFLAT about 1"),
                 ("SFPTP", m["superflat_peak_to_peak"], "max - min of SUPERFLAT")]
        if result.fringe is not None:
            extra.append(("FRNGRMS", m["fringe_rms_rel"], "rms of the fringes / sky (FRINGE per unit sky)"))
        header = self._header(task, chip, extra)
        hdus = [_image(result.superflat, "SUPERFLAT")]
        if result.fringe is not None:
            hdus.append(_image(result.fringe, "FRINGE"))
        path = write_fits(workdir / "illumination.fits", header, hdus)
        return Output(path, {**_group_columns(task, "instrument", "chip", "filter", "night", "valid_from",
                                              "valid_to"), "metrics": m})
