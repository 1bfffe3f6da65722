"""Adapters from the bench's worker to Wisp's science modules (``services/<stage>/science``).

Only public functions, called as their docstrings document. Every adapter imports lazily, so the harness
can report "not available yet" for a stage whose module is missing instead of failing as a whole;
:func:`missing` says which stage is importable.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

#: job -> (module, attribute) that must import for the job to run "ours"
REQUIRES: dict[str, tuple[str, str]] = {
    "bias": ("services.calib.science", "make_master_bias"),
    "combine": ("services.calib.science", "make_master_bias"),
    "masters": ("services.calib.science", "make_master_flat"),
    "reduce": ("services.calib.science", "reduce_frame"),
    "extract": ("services.catalog.science", "extract"),
    "coadd": ("services.coadd.science", "combine"),
    "astrometry": ("services.astrometry.science", "solve_chip"),
}


def missing(job: str) -> str | None:
    """None if our side of ``job`` can run, else why not (module or function not there yet)."""
    module, attr = REQUIRES[job]
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any import failure means "not runnable", with the reason shown in the table
        return f"TODO: {module} not importable yet ({type(exc).__name__}: {exc})"
    if not hasattr(mod, attr):
        return f"TODO: {module}.{attr} not there yet"
    return None


RawFrame = tuple[np.ndarray, fits.Header, fits.Header]


def _sections(hdr: fits.Header) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    from services.calib.science import parse_section
    return parse_section(hdr["DATASEC"]), parse_section(hdr["BIASSEC"])


# ---------------------------------------------------------------- calib

def prepare() -> None:
    """Import the calib science and load its compiled (numba) kernels from the on-disk cache, compiling them
    if the cache is cold (once per install): what a long-running calib service does once at start-up."""
    from services.calib.science import kernels
    kernels.warm()


def master_bias_files(paths: Sequence[str]) -> Any:
    """``make_master_bias`` over trimmed, overscan-corrected frames in FITS files (primary HDU, ADU), read
    band by band through ``hdu.section`` (no whole frame is ever in memory)."""
    from services.calib.science import make_master_bias
    hduls = [fits.open(p, memmap=False) for p in paths]
    try:
        return make_master_bias([h[0].section for h in hduls])
    finally:
        for h in hduls:
            h.close()


def master_bias(frames: Sequence[RawFrame]) -> Any:
    """``make_master_bias`` over lazily overscan-corrected, trimmed raw biases (ADU)."""
    from services.calib.science import make_master_bias, overscan_trimmed
    views = []
    for raw, hdr, _ in frames:
        datasec, biassec = _sections(hdr)
        views.append(overscan_trimmed(raw, datasec, biassec))
    return make_master_bias(views)


def master_flat(frames: Sequence[RawFrame], mbias: Any) -> Any:
    """``make_master_flat`` (bias-subtracted, per-second, median-scaled, normalised to median 1)."""
    from services.calib.science import make_master_flat, overscan_trimmed
    views, exptimes = [], []
    for raw, hdr, phdr in frames:
        datasec, biassec = _sections(hdr)
        views.append(overscan_trimmed(raw, datasec, biassec))
        exptimes.append(float(phdr["EXPTIME"]))
    return make_master_flat(views, mbias, exptimes=exptimes)


def image_of(master: Any) -> np.ndarray:
    return np.asarray(master.image)


def save_master(path: str | Path, master: Any) -> None:
    """A MasterBias/MasterFlat as FITS: IMAGE (primary), VAR, NUSED and the scalar fields as header cards."""
    hdr = fits.Header()
    hdr["KIND"] = type(master).__name__
    hdr["NFRAMES"] = master.n_frames
    if hasattr(master, "level"):
        hdr["LEVEL"] = master.level
        hdr["LEVRATE"] = master.level_rate
    hdus: list[Any] = [fits.PrimaryHDU(np.asarray(master.image, np.float32), header=hdr)]
    if master.var is not None:
        hdus.append(fits.ImageHDU(np.asarray(master.var, np.float32), name="VAR"))
    if master.n_used is not None:
        hdus.append(fits.ImageHDU(np.asarray(master.n_used, np.int16), name="NUSED"))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def load_master(path: str | Path) -> Any:
    from services.calib.science import MasterBias, MasterFlat
    with fits.open(path) as hdul:
        hdr = hdul[0].header
        image = np.asarray(hdul[0].data, np.float32)
        var = np.asarray(hdul["VAR"].data, np.float32) if "VAR" in hdul else None
        n_used = np.asarray(hdul["NUSED"].data, np.uint16) if "NUSED" in hdul else None
    if hdr["KIND"] == "MasterBias":
        return MasterBias(image=image, var=var, n_used=n_used, noise=(), n_frames=int(hdr["NFRAMES"]), rejected=())
    return MasterFlat(image=image, var=var, n_used=n_used, level=float(hdr["LEVEL"]), level_rate=float(hdr["LEVRATE"]),
                      levels=(), n_frames=int(hdr["NFRAMES"]), rejected=())


def reduce(raw: np.ndarray, hdr: fits.Header, phdr: fits.Header, mbias: Any, mflat: Any
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``reduce_frame`` with the chip's GAIN, RDNOISE and SATURATE (no bad-pixel mask: ccdproc gets none)."""
    from services.calib.science import reduce_frame
    datasec, biassec = _sections(hdr)
    red = reduce_frame(raw, datasec=datasec, biassec=biassec, master_bias=mbias, master_flat=mflat,
                       gain=float(hdr["GAIN"]), read_noise=float(hdr["RDNOISE"]), saturation=float(hdr["SATURATE"]))
    return red.sci, red.var, red.dq


# ---------------------------------------------------------------- catalog

def extract(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, hdr: fits.Header, pixel_scale: float) -> np.ndarray:
    """``services.catalog.science.extract`` with its default parameters (no WCS, no zeropoint: only the
    detections and their windowed centroids are scored); returns an (N, 2) array of 0-based X, Y."""
    from services.catalog.science import extract as wisp_extract
    table = wisp_extract(sci, var, dq.astype(np.uint16), wcs=None, zeropoint=None,
                         exptime_s=float(hdr.get("EXPTIME", 1.0)), pixel_scale_arcsec=pixel_scale)
    return np.column_stack([np.asarray(table["X"], float), np.asarray(table["Y"], float)])


def positions(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based (x, y) from what :func:`extract` saved."""
    arr = np.asarray(table, float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def extract_defaults(pixel_scale: float) -> dict[str, Any]:
    """Our ``ExtractParams`` defaults as :class:`bench.peers.SexConfig` fields, so SExtractor runs with the
    same threshold, area, deblending, background mesh and (nearest available) Gaussian filter."""
    try:
        from services.catalog.science import ExtractParams
    except Exception:
        return {}
    p = ExtractParams()
    fwhm_px = p.filter_fwhm_arcsec / pixel_scale if p.filter_kernel == "gauss" else 2.0
    choices = {1.5: "gauss_1.5_3x3.conv", 2.0: "gauss_2.0_5x5.conv", 2.5: "gauss_2.5_5x5.conv",
               3.0: "gauss_3.0_7x7.conv", 4.0: "gauss_4.0_7x7.conv", 5.0: "gauss_5.0_9x9.conv"}
    best = min(choices, key=lambda f: abs(f - fwhm_px))
    return {"detect_thresh": p.detect_thresh, "detect_minarea": p.minarea, "filter_name": choices[best],
            "deblend_nthresh": p.deblend_nthresh, "deblend_mincont": p.deblend_cont, "back_size": p.back_size,
            "back_filtersize": p.back_filter_size, "clean": p.clean}


# ---------------------------------------------------------------- coadd

def has_target_grid() -> bool:
    try:
        mod = importlib.import_module("services.coadd.science")
    except Exception:
        return False
    return hasattr(mod, "target_grid")


def target_grid(headers: Sequence[fits.Header], shape: Sequence[int]) -> fits.Header:
    """``target_grid`` over the inputs' WCS (native scale, default margin) as a FITS header with NAXISn."""
    from astropy.wcs import WCS

    from services.coadd.science import target_grid as wisp_grid
    wcs, out_shape = wisp_grid([WCS(h) for h in headers], [(int(shape[0]), int(shape[1]))] * len(headers))
    hdr = wcs.to_header()
    hdr.insert(0, ("NAXIS", 2))
    hdr.insert(1, ("NAXIS1", int(out_shape[1])))
    hdr.insert(2, ("NAXIS2", int(out_shape[0])))
    return hdr


def coadd(inputs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, fits.Header]], grid: fits.Header,
          threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``resample`` (lanczos3) each input onto ``grid`` with its weight map, then ``combine``
    (weighted_mean); returns (coadd, weight map)."""
    from astropy.wcs import WCS

    from services.coadd.science import combine, resample
    dst = WCS(grid)
    shape = (int(grid["NAXIS2"]), int(grid["NAXIS1"]))
    boxes = [resample(sci, var, wht, WCS(hdr), dst, shape, kernel="lanczos3", threads=threads)
             for sci, var, wht, hdr in inputs]
    image, _, weight = combine(boxes, method="weighted_mean")
    return image, weight


# ---------------------------------------------------------------- astrometry (wired when solve_chip lands)

def load_refcat(path: str) -> Any:
    """Our reference catalogue in the standard columns (``read_table``; positions at its EPOCH)."""
    from services.astrometry.science import read_table
    return read_table(path)


def solve(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, hdr: fits.Header, refcat: Any
          ) -> tuple[fits.Header | None, dict[str, Any]]:
    """``solve_chip`` from the raw header WCS, at the mid-exposure epoch, in the frame's filter. Returns the
    solved header (None if no credible solution: ``InvalidInput``) and a few numbers for the record."""
    from services.astrometry.science import solve_chip
    from wisp.errors import InvalidInput

    exptime = float(hdr.get("EXPTIME", 0.0))
    epoch = 2000.0 + (float(hdr["MJD-OBS"]) + exptime / 2 / 86400.0 - 51544.5) / 365.25
    try:
        sol = solve_chip(sci, var, dq.astype(np.uint16), hdr, refcat, epoch=epoch, exptime=exptime,
                         airmass=float(hdr["AIRMASS"]) if "AIRMASS" in hdr else None,
                         band=str(hdr["FILTER"]) if "FILTER" in hdr else None)
    except InvalidInput as exc:
        return None, {"error": str(exc)[:200]}
    return sol.header, {"n_detected": sol.n_detected, "warnings": list(sol.warnings)}
