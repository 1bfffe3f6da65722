"""The established tools: detection of what is installed, their versions, and their configurations.

Peers: ``ccdproc`` (Python, in the venv), ``source-extractor`` (SExtractor), ``SWarp``, ``scamp`` and
``solve-field`` (astrometry.net, with an index built from our simulated reference catalogue by
``build-astrometry-index``). Missing tools make their rows read "skipped: <tool> not installed (run
bench/setup.sh)" instead of failing the run.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

SEX_SHARE = Path("/usr/share/source-extractor")
#: variance given to pixels SExtractor must ignore (our DQ-masked pixels): above WEIGHT_THRESH
BAD_VAR = 1e30


@dataclass(frozen=True)
class Peer:
    """An external tool: its executable (or Python module), the Debian package and its version if present."""

    name: str
    exe: str | None
    package: str
    version: str | None

    @property
    def available(self) -> bool:
        return self.version is not None

    def skip_reason(self) -> str:
        how = "run bench/setup.sh" if self.exe else "install it into .venv"
        return f"skipped: {self.name} not installed ({how})"


def _exe_version(exe: str, args: Sequence[str], pattern: str) -> str | None:
    path = shutil.which(exe)
    if path is None:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def _py_version(module: str) -> str | None:
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def detect() -> dict[str, Peer]:
    """Every peer, with ``version=None`` when it is not installed."""
    return {
        "ccdproc": Peer("ccdproc", None, "ccdproc (pip)", _py_version("ccdproc")),
        "source-extractor": Peer("source-extractor", "source-extractor", "source-extractor",
                                 _exe_version("source-extractor", ["-v"], r"version ([\d.]+)")),
        "swarp": Peer("SWarp", "SWarp", "swarp", _exe_version("SWarp", ["-v"], r"version ([\d.]+)")),
        "scamp": Peer("SCAMP", "scamp", "scamp", _exe_version("scamp", ["-v"], r"version ([\d.]+)")),
        "solve-field": Peer("solve-field", "solve-field", "astrometry.net",
                            _exe_version("solve-field", ["--version"], r"([\d.]+)")
                            if shutil.which("build-astrometry-index") else None),
    }


def python_versions() -> dict[str, str]:
    return {m: v for m in ("numpy", "scipy", "astropy", "ccdproc", "sep", "reproject")
            if (v := _py_version(m)) is not None}


# ---------------------------------------------------------------- SExtractor

SEX_PARAMS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE",
              "ERRTHETAWIN_IMAGE", "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_APER", "FLUXERR_APER", "FLUX_ISO",
              "FLUXERR_ISO", "BACKGROUND", "FLAGS", "FLAGS_WEIGHT", "FLUX_RADIUS", "FWHM_IMAGE", "ELONGATION",
              "A_IMAGE", "B_IMAGE", "THETA_IMAGE", "ISOAREA_IMAGE"]


@dataclass(frozen=True)
class SexConfig:
    """The SExtractor settings the bench uses; ``harness`` sets them to match our ``extract`` defaults."""

    detect_thresh: float = 1.5
    detect_minarea: int = 5
    filter_name: str = "gauss_3.0_5x5.conv"
    deblend_nthresh: int = 32
    deblend_mincont: float = 0.005
    back_size: int = 64
    back_filtersize: int = 3
    phot_aperture_px: float = 10.0
    clean: bool = True

    def describe(self) -> str:
        return (f"DETECT_THRESH {self.detect_thresh}, DETECT_MINAREA {self.detect_minarea}, FILTER "
                f"{self.filter_name}, DEBLEND {self.deblend_nthresh}/{self.deblend_mincont}, BACK_SIZE "
                f"{self.back_size}/{self.back_filtersize}, WEIGHT_TYPE MAP_VAR")


def write_sex_files(workdir: Path, params: Sequence[str] = SEX_PARAMS) -> Path:
    """The parameter file (output columns) in ``workdir``; returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.param"
    path.write_text("\n".join(params) + "\n")
    return path


def sex_inputs(sci_path: Path, var_path: Path, dq_path: Path, out_base: Path,
               mask_bits: int = 1 | 4 | 8 | 16) -> tuple[Path, Path]:
    """SExtractor's view of a reduced chip: SCI with NaN set to 0 and VAR with DQ-masked or non-finite pixels
    set to :data:`BAD_VAR` (so it ignores and interpolates them, as our ``extract`` does with DQ)."""
    with fits.open(sci_path) as h:
        sci = np.asarray(h[0].data, np.float32)
        hdr = h[0].header.copy()
    var = np.asarray(fits.getdata(var_path), np.float32)
    dq = np.asarray(fits.getdata(dq_path)).astype(np.int64)
    bad = ((dq & mask_bits) != 0) | ~np.isfinite(var) | ~np.isfinite(sci) | (var <= 0)
    sci_out, var_out = Path(f"{out_base}.sci.fits"), Path(f"{out_base}.var.fits")
    fits.PrimaryHDU(np.where(np.isfinite(sci), sci, 0.0).astype(np.float32), header=hdr).writeto(sci_out,
                                                                                              overwrite=True)
    fits.PrimaryHDU(np.where(bad, BAD_VAR, var).astype(np.float32)).writeto(var_out, overwrite=True)
    return sci_out, var_out


def sex_command(image: Path, catalog: Path, param_file: Path, cfg: SexConfig, weight: Path | None,
                catalog_type: str = "FITS_1.0", threads: int = 1, pixel_scale: float = 0.26,
                seeing: float = 1.0) -> list[str]:
    """A ``source-extractor`` command line with every setting explicit (no config file needed)."""
    cmd = [
        "source-extractor", str(image), "-c", str(SEX_SHARE / "default.sex"),
        "-CATALOG_NAME", str(catalog), "-CATALOG_TYPE", catalog_type, "-PARAMETERS_NAME", str(param_file),
        "-DETECT_THRESH", str(cfg.detect_thresh), "-ANALYSIS_THRESH", str(cfg.detect_thresh),
        "-DETECT_MINAREA", str(cfg.detect_minarea), "-FILTER", "Y",
        "-FILTER_NAME", str(SEX_SHARE / cfg.filter_name),
        "-DEBLEND_NTHRESH", str(cfg.deblend_nthresh), "-DEBLEND_MINCONT", str(cfg.deblend_mincont),
        "-CLEAN", "Y" if cfg.clean else "N", "-BACK_SIZE", str(cfg.back_size),
        "-BACK_FILTERSIZE", str(cfg.back_filtersize), "-PHOT_APERTURES", str(cfg.phot_aperture_px),
        "-GAIN", "1.0", "-GAIN_KEY", "NOGAINKEY", "-SATUR_LEVEL", "1e9", "-SATUR_KEY", "NOSATKEY",
        "-PIXEL_SCALE", str(pixel_scale), "-SEEING_FWHM", str(seeing),
        "-STARNNW_NAME", str(SEX_SHARE / "default.nnw"), "-CHECKIMAGE_TYPE", "NONE",
        "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N", "-NTHREADS", str(threads),
        "-MEMORY_PIXSTACK", "3000000", "-MEMORY_OBJSTACK", "30000",
    ]
    if weight is not None:
        cmd += ["-WEIGHT_TYPE", "MAP_VAR", "-WEIGHT_IMAGE", str(weight), "-WEIGHT_THRESH", f"{BAD_VAR / 10:g}"]
    return cmd


# ---------------------------------------------------------------- SWarp

def swarp_command(images: Sequence[Path], weights: Sequence[Path], out: Path, out_weight: Path, threads: int = 1,
                  resampling: str = "LANCZOS3", subtract_back: bool = False) -> list[str]:
    """``SWarp`` with LANCZOS3, weighted combination, inverse-variance weight maps; the output grid comes from
    ``<out>.head`` (written by the harness: the same grid as ours), each input's WCS from ``<input>.head``."""
    return [
        "SWarp", *[str(p) for p in images], "-c", "/dev/null",
        "-IMAGEOUT_NAME", str(out), "-WEIGHTOUT_NAME", str(out_weight),
        "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", ",".join(str(w) for w in weights),
        "-COMBINE", "Y", "-COMBINE_TYPE", "WEIGHTED", "-RESAMPLE", "Y", "-RESAMPLING_TYPE", resampling,
        "-OVERSAMPLING", "0", "-INTERPOLATE", "N", "-FSCALASTRO_TYPE", "FIXED", "-FSCALE_KEYWORD", "NOFSCALE",
        "-FSCALE_DEFAULT", "1.0", "-GAIN_KEYWORD", "NOGAIN", "-GAIN_DEFAULT", "0.0",
        "-SUBTRACT_BACK", "Y" if subtract_back else "N", "-CELESTIAL_TYPE", "NATIVE",
        "-PROJECTION_TYPE", "TAN", "-CENTER_TYPE", "MANUAL", "-HEADER_ONLY", "N",
        "-RESAMPLE_DIR", str(out.parent), "-DELETE_TMPFILES", "Y", "-COPY_KEYWORDS", "FILTER",
        "-WRITE_FILEINFO", "N", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", "-NTHREADS", str(threads),
        "-VMEM_DIR", str(out.parent), "-MEM_MAX", "2048", "-COMBINE_BUFSIZE", "1024",
    ]


# ---------------------------------------------------------------- SCAMP

def write_ldac_refcat(refcat: Table, epoch: float, path: Path) -> int:
    """Our reference catalogue as a SCAMP ``ASTREF_CATALOG FILE`` (FITS-LDAC), positions propagated with
    their proper motions from the catalogue epoch to ``epoch`` (and ``OBSDATE`` = ``epoch``)."""
    cat_epoch = float(refcat.meta.get("EPOCH", 2016.0))
    dt = epoch - cat_epoch
    dec = np.asarray(refcat["dec"], float)
    ra = np.asarray(refcat["ra"], float) + np.asarray(refcat["pmra"], float) * dt / 3.6e6 / np.cos(np.radians(dec))
    dec = dec + np.asarray(refcat["pmdec"], float) * dt / 3.6e6
    n = len(refcat)
    era = np.hypot(np.asarray(refcat["ra_err"], float), np.asarray(refcat["pmra_err"], float) * abs(dt))
    edec = np.hypot(np.asarray(refcat["dec_err"], float), np.asarray(refcat["pmdec_err"], float) * abs(dt))
    cols = [
        fits.Column("X_WORLD", "1D", "deg", array=ra), fits.Column("Y_WORLD", "1D", "deg", array=dec),
        fits.Column("ERRA_WORLD", "1E", "deg", array=np.maximum(era, edec) / 3.6e6),
        fits.Column("ERRB_WORLD", "1E", "deg", array=np.minimum(era, edec) / 3.6e6),
        fits.Column("ERRTHETA_WORLD", "1E", "deg", array=np.zeros(n)),
        fits.Column("MAG", "1E", "mag", array=np.asarray(refcat["r"], float)),
        fits.Column("MAGERR", "1E", "mag", array=np.asarray(refcat["r_err"], float)),
        fits.Column("OBSDATE", "1D", "yr", array=np.full(n, epoch)),
    ]
    _write_ldac(path, fits.Header(), fits.BinTableHDU.from_columns(cols))
    return n


def _write_ldac(path: Path, image_header: fits.Header, objects: fits.BinTableHDU) -> None:
    text = image_header.tostring(endcard=True)
    cards = np.array([text[i:i + 80] for i in range(0, len(text), 80)])
    imhead = fits.BinTableHDU.from_columns(
        [fits.Column("Field Header Card", f"{cards.size * 80}A", array=np.array(["".join(cards)]))])
    imhead.header["EXTNAME"] = "LDAC_IMHEAD"
    imhead.header["TDIM1"] = f"(80, {cards.size})"
    objects.header["EXTNAME"] = "LDAC_OBJECTS"
    fits.HDUList([fits.PrimaryHDU(), imhead, objects]).writeto(path, overwrite=True)


SCAMP_PARAMS = ["NUMBER", "XWIN_IMAGE", "YWIN_IMAGE", "ERRAWIN_IMAGE", "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE",
                "FLUX_AUTO", "FLUXERR_AUTO", "FLUX_RADIUS", "ELONGATION", "FLAGS", "FLAGS_WEIGHT"]


def scamp_command(catalogs: Sequence[Path], refcat: Path, threads: int = 1, position_maxerr_arcmin: float = 5.0,
                  posangle_maxerr_deg: float = 2.0, distort_degrees: int = 3) -> list[str]:
    """``scamp`` against a local reference catalogue (no network), distortion of ``distort_degrees``,
    one astrometric instrument per filter, output ``<catalog>.head`` next to each catalogue."""
    return [
        "scamp", *[str(c) for c in catalogs], "-c", "/dev/null",
        "-ASTREF_CATALOG", "FILE", "-ASTREFCAT_NAME", str(refcat),
        "-ASTREFCENT_KEYS", "X_WORLD,Y_WORLD", "-ASTREFERR_KEYS", "ERRA_WORLD,ERRB_WORLD,ERRTHETA_WORLD",
        "-ASTREFMAG_KEY", "MAG", "-ASTREFMAGERR_KEY", "MAGERR", "-ASTREFOBSDATE_KEY", "OBSDATE",
        "-MATCH", "Y", "-POSITION_MAXERR", str(position_maxerr_arcmin),
        "-POSANGLE_MAXERR", str(posangle_maxerr_deg), "-PIXSCALE_MAXERR", "1.05", "-CROSSID_RADIUS", "2.0",
        "-DISTORT_DEGREES", str(distort_degrees), "-ASTRINSTRU_KEY", "FILTER", "-STABILITY_TYPE", "INSTRUMENT",
        "-MOSAIC_TYPE", "UNCHANGED", "-SOLVE_PHOTOM", "N", "-CHECKPLOT_TYPE", "NONE", "-CHECKPLOT_DEV", "NULL",
        "-WRITE_XML", "N", "-VERBOSE_TYPE", "NORMAL", "-NTHREADS", str(threads), "-SN_THRESHOLDS", "10,100",
        "-AHEADER_GLOBAL", "/dev/null", "-HEADER_SUFFIX", ".head",
    ]


def read_scamp_head(path: Path) -> list[fits.Header]:
    """SCAMP's ``.head`` output: one header per extension, TAN + PV (TPV) distortion; returned with
    ``CTYPE`` set to ``RA---TPV``/``DEC--TPV`` so astropy applies the PV polynomial."""
    text = path.read_text(errors="replace")
    headers = []
    for block in re.split(r"^END\s*$", text, flags=re.MULTILINE):
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith(("HISTORY", "COMMENT"))]
        if not lines:
            continue
        hdr = fits.Header.fromstring("\n".join(ln.ljust(80)[:80] for ln in lines), sep="\n")
        if "CTYPE1" in hdr:
            hdr["CTYPE1"] = "RA---TPV"
            hdr["CTYPE2"] = "DEC--TPV"
            headers.append(hdr)
    return headers


# ---------------------------------------------------------------- astrometry.net

def build_index_commands(refcat_fits: Path, outdir: Path, presets: Sequence[int] = (0, 1),
                         uid_base: int = 77000) -> list[list[str]]:
    """``build-astrometry-index`` runs over our reference catalogue (columns ra, dec, sorted by r), one index
    per quad-scale preset; -P 0 suits fields of ~6' (a chip is 4.4' across)."""
    return [["build-astrometry-index", "-i", str(refcat_fits), "-e", "1",
             "-o", str(outdir / f"index-wisp-{p:02d}.fits"), "-P", str(p), "-S", "r", "-A", "ra", "-D", "dec",
             "-E", "-j", "0.05", "-I", str(uid_base + p), "-M"]
            for p in presets]


def astrometry_cfg(index_dir: Path, path: Path) -> Path:
    path.write_text(f"cpulimit 60\nadd_path {index_dir}\nautoindex\n")
    return path


def solve_field_command(image: Path, outdir: Path, cfg: Path, ra: float, dec: float, scale: float,
                        radius_deg: float = 0.2, tweak_order: int = 1) -> list[str]:
    """``solve-field`` with the image's own detection (image2xy), a pointing hint and a scale range of ±5 %."""
    return [
        "solve-field", str(image), "--config", str(cfg), "--dir", str(outdir), "--overwrite", "--no-plots",
        "--no-verify", "--scale-units", "arcsecperpix", "--scale-low", f"{scale * 0.95:.4f}",
        "--scale-high", f"{scale * 1.05:.4f}", "--ra", f"{ra:.6f}", "--dec", f"{dec:.6f}",
        "--radius", str(radius_deg), "--tweak-order", str(tweak_order), "--crpix-center",
        "--new-fits", "none", "--corr", "none", "--rdls", "none", "--match", "none", "--index-xyls", "none",
        "--cpulimit", "60", "--no-remove-lines",
    ]


def versions_text(peers: Mapping[str, Peer]) -> str:
    return ", ".join(f"{p.name} {p.version}" for p in peers.values() if p.version)
