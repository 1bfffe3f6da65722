"""The coadd adapter: every solved exposure of a field and filter onto one tangent plane, weighted and
stacked, in e-/s on the inputs' median zeropoint. Outliers across the dithers (cosmic rays the reduction
missed) get weight 0 in the stack; the file keeps, per input, its mask as a DQ plane (bit COSMIC_RAY) on the
input's own pixels: a compressed uint16 image whose EXTNAME is the reduced product's id (upper-cased by
FITS; the card WISPIN has it as is), with the input's WCS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sep
from astropy.io import fits
from astropy.wcs import WCS

from services.coadd.science import combine, find_outliers, photometric_scale, resample, target_grid, without_masked
from wisp.dq import COSMIC_RAY, weight
from wisp.errors import InvalidInput
from wisp.pipeline.files import provenance, write_fits
from wisp.pipeline.inputs import InputLoader
from wisp.pipeline.model import Output, Task
from wisp.pipeline.rules.sky import COADD

BACK_MESH_PX = 64


def _frame(reduced: Path, solution: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, WCS, float]:
    """Background-subtracted SCI and VAR per second (e-/s, e-²/s²), weight, solved WCS, zeropoint (mag)."""
    sol = fits.getheader(solution)
    if "MAGZP" not in sol:
        raise InvalidInput(f"solution {sol.get('WISPID')} has no zeropoint: cannot put it on the coadd's scale",
                           code="coadd.no_zeropoint")
    with fits.open(reduced, memmap=False) as h:
        exptime = float(h[0].header["EXPTIME"])
        sci = np.ascontiguousarray(h["SCI"].data, dtype=np.float32)
        var = np.ascontiguousarray(h["VAR"].data, dtype=np.float32)
        w = weight(var, h["DQ"].data)
    bad = w == 0
    sci = np.where(bad, 0.0, sci).astype(np.float32)
    background = sep.Background(sci, mask=bad, bw=BACK_MESH_PX, bh=BACK_MESH_PX)
    sci -= background.back()
    # Weights from the background noise only: a weight that includes the sources' own photon noise would
    # favour the faint side of every star and bias coadd fluxes low.
    sky_var = np.square(background.rms(), dtype=np.float32)
    w = np.where(bad | ~(sky_var > 0), 0.0, 1.0 / np.maximum(sky_var, 1e-12)).astype(np.float32)
    scale = 1.0 / exptime
    return sci * scale, var * scale**2, w / scale**2, WCS(sol), float(sol["MAGZP"])


def _mask_hdu(mask: np.ndarray, input_id: str, wcs: WCS) -> fits.CompImageHDU:
    header = wcs.to_header(relax=True)
    header["WISPIN"] = (input_id, "reduced product whose pixels these are")
    header["NOUTLIER"] = (int(mask.sum()), "pixels rejected as outliers across the inputs")
    return fits.CompImageHDU(np.where(mask, COSMIC_RAY, 0).astype(np.uint16), header=header, name=input_id,
                             compression_type="RICE_1")


class CoaddRunner:
    spec = COADD

    def run(self, task: Task, inputs: InputLoader, workdir: Path) -> Output:
        reduced = {p.row["frame_id"]: p for p in (inputs.product(i.id) for i in task.inputs_with("reduced"))}
        solutions = {p.row["frame_id"]: p for p in (inputs.product(i.id) for i in task.inputs_with("solution"))}
        if set(reduced) != set(solutions):
            raise InvalidInput("the coadd's reduced frames and solutions are not of the same raw frames",
                               code="coadd.inputs")
        frames = [_frame(reduced[f].path, solutions[f].path) for f in sorted(reduced)]
        zp_target = float(np.median([f[4] for f in frames]))
        grid, shape = target_grid([f[3] for f in frames], [f[0].shape for f in frames])
        boxes = [resample(sci, var, w, wcs, grid, shape, photometric_scale=photometric_scale(zp, zp_target))
                 for sci, var, w, wcs, zp in frames]
        masks = find_outliers(boxes, usable=[f[2] > 0 for f in frames])
        image, _, weight_map = combine([without_masked(b, m) for b, m in zip(boxes, masks, strict=True)])
        ids = [reduced[f].row["id"] for f in sorted(reduced)]
        header = grid.to_header()
        for key, value, comment in provenance(self.spec, task):
            header[key] = (value, comment)
        header["BUNIT"] = ("electron/s", "SCI in e-/s on the zeropoint MAGZP")
        header["MAGZP"] = (zp_target, "m = MAGZP - 2.5 log10(SCI [e-/s])")
        header["NCOMBINE"] = (len(frames), "chips combined")
        for key in ("instrument", "filter", "night", "field"):
            if task.group.get(key):
                header[key.upper()[:8]] = task.group[key]
        path = write_fits(workdir / "coadd.fits", header, [
            fits.ImageHDU(image.astype(np.float32), header=grid.to_header(), name="SCI"),
            fits.ImageHDU(weight_map.astype(np.float32), header=grid.to_header(), name="WEIGHT"),
            *[_mask_hdu(m, i, f[3]) for m, i, f in zip(masks, ids, frames, strict=True)]])
        centre = grid.wcs_pix2world([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]], 0)[0]
        covered = float(np.mean(weight_map > 0))
        columns = {k: task.group[k] for k in ("instrument", "filter", "night", "field") if task.group.get(k)}
        columns.update(ra_deg=float(centre[0]), dec_deg=float(centre[1]),
                       metrics={"n_inputs": len(frames), "zeropoint_mag": zp_target, "shape": list(shape),
                                "coverage_fraction": covered,
                                "outlier_pixels": {i: int(m.sum()) for i, m in zip(ids, masks, strict=True)}})
        return Output(path, columns)
