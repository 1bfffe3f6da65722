"""The Python side of every measured job, run as ``python -m bench.worker JOB TOOL SPEC.json``.

One fresh interpreter per (job, tool), so start-up and import costs are paid as they would be by a user.
Inputs are read from and outputs written to FITS files named in the spec (the harness scores them later).
Around the compute of each unit of work (one frame, one stack, one coadd) the worker measures wall time and
the ``tracemalloc`` peak of what was allocated there (numpy reports its buffers to tracemalloc); the last
line of stdout is a JSON report: ``inproc_s`` and ``inproc_cpu_s`` (wall and CPU, summed), ``tracemalloc_mb``
(maximum), ``peak_rss_mb`` (this process's VmHWM) and job details. Each tool is warmed up before its timed
calls (ccdproc: one tiny call of each function; ours: import and load the compiled kernels, ``warm_s``).
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits


class Meter:
    """Accumulates in-process compute time and the largest tracemalloc peak over the measured sections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.peak_bytes = 0

    @contextmanager
    def section(self) -> Iterator[None]:
        tracemalloc.start()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.peak_bytes = max(self.peak_bytes, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    def report(self, **extra: Any) -> dict[str, Any]:
        return {"inproc_s": self.seconds, "inproc_cpu_s": self.cpu_seconds, "tracemalloc_mb": self.peak_bytes / 2**20,
                **extra}


def read_raw(path: str, ext: str) -> tuple[np.ndarray, fits.Header, fits.Header]:
    """A raw chip as float32 ADU (BZERO applied), its extension header and the primary header."""
    with fits.open(path, memmap=False) as hdul:
        return (np.asarray(hdul[ext].data, dtype=np.float32), hdul[ext].header.copy(), hdul[0].header.copy())


def write_image(path: str | Path, data: np.ndarray, header: fits.Header | None = None) -> None:
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(path, overwrite=True)


def write_reduced(out: dict[str, str], sci: np.ndarray, var: np.ndarray, dq: np.ndarray | None,
                  header: fits.Header) -> None:
    """Reduced chip as three single-HDU files (what SExtractor/SWarp read directly): SCI, VAR, DQ."""
    write_image(out["sci"], sci, header)
    write_image(out["var"], var)
    fits.PrimaryHDU(np.zeros(sci.shape, np.uint8) if dq is None else dq.astype(np.int16)).writeto(
        out["dq"], overwrite=True)


# ---------------------------------------------------------------- ccdproc (the established Python peer)

def _warm_ccdproc() -> None:
    """One tiny ``combine`` and ``ccd_process`` before the timed calls, so that neither side's in-process
    time contains first-call costs (lazy imports, caches); ours gets :func:`_prepare_ours`."""
    import astropy.units as u
    import ccdproc
    from astropy.stats import mad_std
    frames = [_ccd(np.random.default_rng(i).normal(100.0, 1.0, (8, 10)).astype(np.float32)) for i in range(3)]
    ccdproc.combine(frames, method="average", sigma_clip=True)
    ccdproc.combine(frames, method="average", sigma_clip=True, sigma_clip_func=np.ma.median,
                    sigma_clip_dev_func=mad_std)
    ccdproc.ccd_process(frames[0], oscan="[9:10,1:8]", oscan_median=True, trim="[1:8,1:8]", error=True,
                        gain=1.0 * u.electron / u.adu, readnoise=1.0 * u.electron,
                        master_bias=ccdproc.trim_image(frames[1], fits_section="[1:8,1:8]"),
                        master_flat=ccdproc.trim_image(frames[2], fits_section="[1:8,1:8]"), gain_corrected=False)


def _ccd(data: np.ndarray, unit: str = "adu") -> Any:
    from astropy.nddata import CCDData
    return CCDData(data, unit=unit)


def _ccdproc_bias_frame(raw: np.ndarray, hdr: fits.Header) -> Any:
    import ccdproc
    ccd = ccdproc.subtract_overscan(_ccd(raw), fits_section=hdr["BIASSEC"], median=True, model=None)
    return ccdproc.trim_image(ccd, fits_section=hdr["DATASEC"])


def ccdproc_bias(spec: dict[str, Any]) -> dict[str, Any]:
    """Master bias: overscan (median per row), trim, ``ccdproc.combine(average, sigma_clip)``."""
    import ccdproc
    _warm_ccdproc()
    meter = Meter()
    frames = [read_raw(f, spec["ext"]) for f in spec["files"]]
    with meter.section():
        ccds = [_ccdproc_bias_frame(d, h) for d, h, _ in frames]
        master = ccdproc.combine(ccds, method="average", sigma_clip=True, sigma_clip_low_thresh=3.0,
                                 sigma_clip_high_thresh=3.0, mem_limit=16e9)
    write_image(spec["out"], np.asarray(master.data))
    return meter.report(n=len(frames))


def ccdproc_masters(spec: dict[str, Any]) -> dict[str, Any]:
    """Per chip: master bias as above; per filter: flats overscan/trim/bias-subtracted, scaled to a common
    median and combined (average, sigma clip)."""
    import ccdproc
    _warm_ccdproc()
    meter = Meter()
    for ext, job in spec["chips"].items():
        biases = [read_raw(f, ext) for f in job["bias"]]
        with meter.section():
            mbias = ccdproc.combine([_ccdproc_bias_frame(d, h) for d, h, _ in biases], method="average",
                                    sigma_clip=True, mem_limit=16e9)
        write_image(job["out_bias"], np.asarray(mbias.data))
        for filt, files in job["flats"].items():
            flats = [read_raw(f, ext) for f in files]
            with meter.section():
                procs = [ccdproc.ccd_process(_ccd(d), oscan=h["BIASSEC"], oscan_median=True, trim=h["DATASEC"],
                                             master_bias=mbias) for d, h, _ in flats]
                mflat = ccdproc.combine(procs, method="average", sigma_clip=True, mem_limit=16e9,
                                        scale=lambda a: 1.0 / np.ma.median(a))
            write_image(job["out_flat"][filt], np.asarray(mflat.data))
    return meter.report()


def ccdproc_reduce(spec: dict[str, Any]) -> dict[str, Any]:
    """``ccdproc.ccd_process``: overscan, trim, master bias, master flat, gain, read noise -> uncertainty."""
    import astropy.units as u
    import ccdproc
    _warm_ccdproc()
    meter = Meter()
    masters: dict[str, Any] = {}
    for item in spec["frames"]:
        raw, hdr, phdr = read_raw(item["raw"], item["ext"])
        for key in ("bias", "flat"):
            path = item[key]
            if path not in masters:
                masters[path] = _ccd(fits.getdata(path).astype(np.float32))
        with meter.section():
            red = ccdproc.ccd_process(
                _ccd(raw), oscan=hdr["BIASSEC"], oscan_median=True, trim=hdr["DATASEC"], error=True,
                gain=float(hdr["GAIN"]) * u.electron / u.adu, readnoise=float(hdr["RDNOISE"]) * u.electron,
                master_bias=masters[item["bias"]], master_flat=masters[item["flat"]], gain_corrected=False)
        out_hdr = _reduced_header(hdr, phdr)
        var = np.asarray(red.uncertainty.array, dtype=np.float64) ** 2
        write_reduced(item["out"], np.asarray(red.data), var, None, out_hdr)
    return meter.report(n=len(spec["frames"]))


def ccdproc_combine(spec: dict[str, Any]) -> dict[str, Any]:
    """``ccdproc.combine`` of trimmed, overscan-corrected frames given as file names, as the astropy CCD guide
    recommends for a master bias (average with sigma clipping about the median with ``mad_std``; here 3
    sigma like ours); ``mem_limit`` left at its default (16 GB: one chunk)."""
    import ccdproc
    from astropy.stats import mad_std
    _warm_ccdproc()
    meter = Meter()
    with meter.section():
        master = ccdproc.combine(list(spec["files"]), method="average", sigma_clip=True, sigma_clip_low_thresh=3.0,
                                 sigma_clip_high_thresh=3.0, sigma_clip_func=np.ma.median,
                                 sigma_clip_dev_func=mad_std, unit="adu")
    write_image(spec["out"], np.asarray(master.data))
    return meter.report(n=len(spec["files"]))


def _reduced_header(hdr: fits.Header, phdr: fits.Header) -> fits.Header:
    """The cards a reduced chip keeps: the raw header WCS and the exposure/detector keywords."""
    out = fits.Header()
    for key in ("EXTNAME", "CHIPID", "CCDNAME", "GAIN", "RDNOISE", "SATURATE", "DETSEC", "WCSAXES", "CTYPE1",
                "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2",
                "CD2_1", "CD2_2"):
        if key in hdr:
            out[key] = hdr[key]
    for key in ("INSTRUME", "FILTER", "EXPTIME", "DATE-OBS", "MJD-OBS", "AIRMASS", "EXPID", "OBJECT", "RA", "DEC"):
        if key in phdr:
            out[key] = phdr[key]
    out["BUNIT"] = "electron"
    return out


# ---------------------------------------------------------------- ours (Wisp's science modules)

def _prepare_ours() -> float:
    """Import our calib science and load its compiled kernels from numba's on-disk cache (or compile them,
    the first time after an install) before the timed calls; returns the seconds it took (reported, and
    inside the process wall time, not inside in-proc)."""
    from bench import ours
    t0 = time.perf_counter()
    ours.prepare()
    return time.perf_counter() - t0


def ours_bias(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    warm_s = _prepare_ours()
    meter = Meter()
    frames = [read_raw(f, spec["ext"]) for f in spec["files"]]
    with meter.section():
        master = ours.master_bias(frames)
    write_image(spec["out"], ours.image_of(master))
    return meter.report(n=len(frames), warm_s=warm_s)


def ours_combine(spec: dict[str, Any]) -> dict[str, Any]:
    """``make_master_bias`` streaming row bands of trimmed frames straight from their files (``hdu.section``)."""
    from bench import ours
    warm_s = _prepare_ours()
    meter = Meter()
    with meter.section():
        master = ours.master_bias_files(spec["files"])
    write_image(spec["out"], ours.image_of(master))
    return meter.report(n=len(spec["files"]), warm_s=warm_s)


def warm(spec: dict[str, Any]) -> dict[str, Any]:
    """Not a measurement: load or compile our kernels (the harness runs this before the measured workers)."""
    return {"warm_s": _prepare_ours()}


def ours_masters(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    warm_s = _prepare_ours()
    meter = Meter()
    for ext, job in spec["chips"].items():
        biases = [read_raw(f, ext) for f in job["bias"]]
        with meter.section():
            mbias = ours.master_bias(biases)
        ours.save_master(job["out_bias"], mbias)
        for filt, files in job["flats"].items():
            flats = [read_raw(f, ext) for f in files]
            with meter.section():
                mflat = ours.master_flat(flats, mbias)
            ours.save_master(job["out_flat"][filt], mflat)
    return meter.report(warm_s=warm_s)


def ours_reduce(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    warm_s = _prepare_ours()
    meter = Meter()
    masters: dict[str, Any] = {}
    for item in spec["frames"]:
        raw, hdr, phdr = read_raw(item["raw"], item["ext"])
        for key in ("bias", "flat"):
            if item[key] not in masters:
                masters[item[key]] = ours.load_master(item[key])
        with meter.section():
            sci, var, dq = ours.reduce(raw, hdr, phdr, masters[item["bias"]], masters[item["flat"]])
        write_reduced(item["out"], sci, var, dq, _reduced_header(hdr, phdr))
    return meter.report(n=len(spec["frames"]), warm_s=warm_s)


def ours_cosmics(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import jobs_cosmics
    return jobs_cosmics.ours_cosmics(spec)


def astroscrappy_cosmics(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import jobs_cosmics
    return jobs_cosmics.astroscrappy_cosmics(spec)


def ours_extract(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    meter = Meter()
    for item in spec["frames"]:
        sci = fits.getdata(item["sci"]).astype(np.float32)
        var = fits.getdata(item["var"]).astype(np.float32)
        dq = fits.getdata(item["dq"])
        hdr = fits.getheader(item["sci"])
        with meter.section():
            table = ours.extract(sci, var, dq, hdr, float(spec["pixel_scale"]))
        np.save(item["out"], table)
    return meter.report(n=len(spec["frames"]))


def ours_coadd(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    meter = Meter()
    inputs = []
    for item in spec["frames"]:
        hdr = fits.Header.fromtextfile(item["wcs"])
        inputs.append((fits.getdata(item["sci"]).astype(np.float32), fits.getdata(item["var"]).astype(np.float32),
                       fits.getdata(item["wht"]).astype(np.float32), hdr))
    grid = fits.Header.fromtextfile(spec["grid"])
    with meter.section():
        sci, weight = ours.coadd(inputs, grid, threads=int(spec.get("threads", 1)))
    write_image(spec["out"], sci, grid)
    write_image(spec["out_weight"], weight, grid)
    return meter.report(n=len(inputs))


def ours_grid(spec: dict[str, Any]) -> dict[str, Any]:
    """The coadd target grid from our ``target_grid`` (not measured; SWarp gets the same grid)."""
    from bench import ours
    headers = [fits.Header.fromtextfile(item["wcs"]) for item in spec["frames"]]
    grid = ours.target_grid(headers, spec["shape"])
    grid.totextfile(spec["out"], overwrite=True)
    return {}


def ours_astrometry(spec: dict[str, Any]) -> dict[str, Any]:
    from bench import ours
    meter = Meter()
    refcat = ours.load_refcat(spec["refcat"])
    results = {}
    for item in spec["frames"]:
        sci = fits.getdata(item["sci"]).astype(np.float32)
        hdr = fits.getheader(item["sci"])
        var = fits.getdata(item["var"]).astype(np.float32)
        dq = fits.getdata(item["dq"])
        with meter.section():
            wcs_header, info = ours.solve(sci, var, dq, hdr, refcat)
        if wcs_header is not None:
            wcs_header.totextfile(item["out"], overwrite=True)
        results[item["name"]] = info
    return meter.report(n=len(spec["frames"]), chips=results)


JOBS: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("bias", "ccdproc"): ccdproc_bias,
    ("masters", "ccdproc"): ccdproc_masters,
    ("reduce", "ccdproc"): ccdproc_reduce,
    ("combine", "ccdproc"): ccdproc_combine,
    ("combine", "ours"): ours_combine,
    ("warm", "ours"): warm,
    ("cosmics", "ours"): ours_cosmics,
    ("cosmics", "astroscrappy"): astroscrappy_cosmics,
    ("bias", "ours"): ours_bias,
    ("masters", "ours"): ours_masters,
    ("reduce", "ours"): ours_reduce,
    ("extract", "ours"): ours_extract,
    ("grid", "ours"): ours_grid,
    ("coadd", "ours"): ours_coadd,
    ("astrometry", "ours"): ours_astrometry,
}


def peak_rss_mb() -> float | None:
    """This process's own peak resident memory (``VmHWM``, MB). Unlike ``ru_maxrss`` from ``wait4`` it does not
    include the harness: Linux carries the parent's high-water mark over ``exec`` into the child's
    ``ru_maxrss``, which floors every child's number at the harness's own size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str]) -> int:
    job, tool, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    warnings.simplefilter("ignore")  # astropy/ccdproc chatter would only clutter the harness's error tails
    report = JOBS[(job, tool)](spec)
    report["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
