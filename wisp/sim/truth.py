"""Writing the truth: what was simulated, in the units and conventions stated in ``wisp/sim/README.md``.

Pixel coordinates in every truth table are 0-based (numpy ``data[y, x]``, pixel centres at integers);
WCS headers use FITS 1-based pixels, as FITS requires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from wisp.sim.artifacts import Trail
from wisp.sim.camera import Camera, Chip
from wisp.sim.config import FILTERS, SimConfig
from wisp.sim.detector import ChipDetector
from wisp.sim.expose import ChipExposure
from wisp.sim.schedule import Exposure
from wisp.sim.sources import Galaxies, Stars
from wisp.sim.wcs import true_wcs_header

FORMAT = "wisp-sim-truth/1"
PSF_KEYS = {"fwhm": "PSFFWHM", "beta": "PSFBETA", "radial": "PSFRAD", "tilt_x": "PSFTX", "tilt_y": "PSFTY",
            "e1": "PSFE1", "e2": "PSFE2", "astig": "PSFASTIG"}
TRAIL_KEYS = {"u0": "TRAILU0", "v0": "TRAILV0", "angle": "TRAILANG", "sigma": "TRAILSIG", "peak": "TRAILPK"}


def _table_hdu(columns: dict[str, Any], name: str, units: dict[str, str],
               meta: Sequence[tuple[str, object, str]] = ()) -> fits.BinTableHDU:
    hdu = fits.table_to_hdu(Table(columns))
    hdu.name = name
    for i, col in enumerate(columns, start=1):
        if col in units:
            hdu.header[f"TUNIT{i}"] = units[col]
    for card in meta:
        hdu.header.append(card)
    return hdu


def _mask_hdu(mask: np.ndarray, name: str) -> fits.CompImageHDU:
    """A uint8 mask, Rice-compressed as one tile (small and fast for sparse masks; GZIP would embed the
    wall-clock time and break byte-identical output)."""
    return fits.CompImageHDU(mask, name=name, compression_type="RICE_1", tile_shape=mask.shape)


def _write(path: Path, hdus: Sequence[fits.ImageHDU | fits.CompImageHDU | fits.BinTableHDU]) -> None:
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path, overwrite=True)


def exposure_record(exposure: Exposure) -> dict[str, Any]:
    """JSON-safe description of one exposure's truth (pointings, photometry, PSF, sky, trail flag)."""
    spec = FILTERS.get(exposure.filter)
    return {
        "expid": exposure.expid, "file": exposure.filename, "truth_file": truth_name(exposure),
        "imagetyp": exposure.imagetyp, "filter": exposure.filter, "exptime": exposure.exptime,
        "date_obs": exposure.date_obs, "mjd_obs": exposure.mjd, "epoch": exposure.epoch,
        "object": exposure.object, "field": exposure.field, "dither": exposure.dither,
        "airmass": exposure.airmass,
        "header": vars(exposure.header), "true": vars(exposure.true),
        "pointing_error_arcmin": exposure.pointing_error, "rotation_error_deg": exposure.true.rotation,
        "zeropoint": spec.zeropoint if spec and exposure.imagetyp == "OBJECT" else None,
        "extinction": spec.extinction if spec and exposure.imagetyp == "OBJECT" else None,
        "sky_rate": exposure.sky_rate, "sky_grad": list(exposure.sky_grad), "lamp": exposure.lamp,
        "psf": vars(exposure.psf) if exposure.psf else None, "trail": exposure.trail,
    }


def truth_name(exposure: Exposure) -> str:
    """Per-exposure truth file name, next to the raw file name: ``sim_0001_bias_truth.fits``."""
    return exposure.filename.replace(".fits", "_truth.fits")


def write_night_json(path: Path, config: SimConfig, camera: Camera, k_sip: float,
                     exposures: list[Exposure]) -> None:
    """``night.json``: the config, the camera (per chip true gain, read noise, bias, saturation) and the
    exposure list."""
    chips = [{
        "chip_id": c.chip_id, "extname": c.extname, "ccdname": c.ccdname, "gain": c.gain,
        "read_noise": c.read_noise, "bias_level": c.bias_level, "saturate": c.saturate,
        "full_well": round(c.full_well, 3), "qe": c.qe, "x0": c.x0, "y0": c.y0,
        "axis_x": c.axis_x, "axis_y": c.axis_y,
    } for c in camera.chips]
    doc = {
        "format": FORMAT,
        "conventions": {
            "pixels": "truth tables and axis_x/axis_y are 0-based (numpy data[y, x]); FITS WCS is 1-based",
            "units": "gain e-/ADU, read_noise e-, bias_level/saturate ADU, full_well e-, sky_rate e-/px/s",
        },
        "config": config.to_dict(),
        "camera": {"ncols": camera.ncols, "nrows": camera.nrows, "r_corner_px": camera.r_corner,
                   "sip_k": k_sip, "chips": chips},
        "exposures": [exposure_record(e) for e in exposures],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def write_detector(truth_dir: Path, config: SimConfig, camera: Camera, dets: list[ChipDetector]) -> None:
    """``bias.fits`` (float32 ADU incl. overscan), ``flat_<f>.fits`` (float32), ``bpm.fits`` (uint8 bits
    1 hot, 2 cold, 4 bad column) with one 'CCD<n>' HDU per chip, and ``defects.fits`` tables; with darks
    or ``dark_rate`` > 0 ``dark.fits`` (float32 e-/s), per fringe filter ``fringe_<f>.fits`` (float32,
    fringe pattern per unit sky)."""
    _write(truth_dir / "bias.fits", [fits.ImageHDU(d.bias, name=c.extname) for c, d in zip(camera.chips, dets,
                                                                                           strict=True)])
    for f in config.filters:
        _write(truth_dir / f"flat_{f}.fits",
               [fits.ImageHDU(d.flats[f], name=c.extname) for c, d in zip(camera.chips, dets, strict=True)])
    if config.n_dark > 0 or config.dark_rate > 0:
        _write(truth_dir / "dark.fits", [fits.ImageHDU(d.dark_image(1.0).astype(np.float32), name=c.extname)
                                         for c, d in zip(camera.chips, dets, strict=True)])
    for f in config.fringe_filters:
        _write(truth_dir / f"fringe_{f}.fits",
               [fits.ImageHDU(d.fringes[f], name=c.extname) for c, d in zip(camera.chips, dets, strict=True)])
    _write(truth_dir / "bpm.fits", [_mask_hdu(d.bpm, c.extname)
                                    for c, d in zip(camera.chips, dets, strict=True)])
    ids = np.concatenate([np.full(d.hot_x.size, c.chip_id) for c, d in zip(camera.chips, dets, strict=True)])
    hot = _table_hdu({
        "chip": ids, "x": np.concatenate([d.hot_x for d in dets]), "y": np.concatenate([d.hot_y for d in dets]),
        "dark": np.concatenate([d.hot_dark for d in dets]), "offset": np.concatenate([d.hot_offset for d in dets]),
    }, "HOTPIX", {"dark": "electron / s", "offset": "adu"})
    bad = _table_hdu({
        "chip": np.concatenate([np.full(d.badcol_x.size, c.chip_id) for c, d in zip(camera.chips, dets,
                                                                                   strict=True)]),
        "x": np.concatenate([d.badcol_x for d in dets]), "y0": np.concatenate([d.badcol_y0 for d in dets]),
        "kind": np.array([k for d in dets for k in d.badcol_kind], dtype="U4"),
        "value": np.concatenate([d.badcol_value for d in dets]),
    }, "BADCOLS", {})
    _write(truth_dir / "defects.fits", [hot, bad])


def write_catalogues(outdir: Path, truth_dir: Path, config: SimConfig, stars: Stars, galaxies: Galaxies,
                     refcat: dict[str, np.ndarray]) -> None:
    """``refcat.fits`` (noisy, r < limit), ``truth/stars.fits`` and ``truth/galaxies.fits`` (true)."""
    epoch = [("EPOCH", config.refcat_epoch, "[yr] epoch of the positions")]
    mag_units = {f: "mag" for f in FILTERS} | {f + "_err": "mag" for f in FILTERS}
    units = {"ra": "deg", "dec": "deg", "ra_err": "mas", "dec_err": "mas", "pmra": "mas / yr",
             "pmdec": "mas / yr", "pmra_err": "mas / yr", "pmdec_err": "mas / yr"} | mag_units
    _write(outdir / "refcat.fits", [_table_hdu(refcat, "REFCAT", units, epoch)])
    star_cols = {"id": stars.id, "ra": stars.ra, "dec": stars.dec, "pmra": stars.pmra, "pmdec": stars.pmdec,
                 **stars.mags}
    _write(truth_dir / "stars.fits", [_table_hdu(star_cols, "STARS", units, epoch)])
    gal_cols = {"id": galaxies.id, "ra": galaxies.ra, "dec": galaxies.dec, "r_e": galaxies.r_e,
                "n": galaxies.n, "q": galaxies.q, "pa": galaxies.pa, **galaxies.mags}
    _write(truth_dir / "galaxies.fits",
           [_table_hdu(gal_cols, "GALAXIES", units | {"r_e": "arcsec", "pa": "deg"})])


def _exposure_cards(config: SimConfig, camera: Camera, k_sip: float, exposure: Exposure,
                    trail: Trail | None) -> list[tuple[str, object, str]]:
    """Primary-header cards of a per-exposure truth file."""
    rec = exposure_record(exposure)
    cards: list[tuple[str, object, str]] = [
        ("EXPID", exposure.expid, "exposure number"), ("RAWFILE", exposure.filename, "raw file"),
        ("IMAGETYP", exposure.imagetyp, ""), ("FILTER", exposure.filter, ""),
        ("EXPTIME", exposure.exptime, "[s]"), ("MJD-OBS", exposure.mjd, "[d] start, UTC"),
        ("EPOCH", exposure.epoch, "[yr] Julian epoch, mid-exposure"),
        ("AIRMASS", exposure.airmass, "at mid-exposure"),
        ("HDRRA", exposure.header.ra, "[deg] header pointing"), ("HDRDEC", exposure.header.dec, "[deg]"),
        ("TRUERA", exposure.true.ra, "[deg] true pointing"), ("TRUEDEC", exposure.true.dec, "[deg]"),
        ("TRUEROT", exposure.true.rotation, "[deg] true rotation (header has 0)"),
        ("PNTERR", exposure.pointing_error, "[arcmin] true - header pointing"),
        ("RCORNER", camera.r_corner, "[px] corner radius, unit of field patterns"),
        ("SIPK", k_sip, "[px^-2] radial SIP coefficient"),
        ("PIXORIG", 0, "truth table x, y are 0-based pixel coordinates"),
        ("LAMP", exposure.lamp, "[e-/px] dome lamp (flats)"),
    ]
    if exposure.imagetyp == "FLAT" and config.flat_blocks > 1:
        cards.append(("FLATBLK", exposure.block, "flat block: 0 evening, 1 morning"))
    if exposure.imagetyp == "FLAT" and config.dome_flat_gradient:
        cards.append(("LAMPGRAD", config.dome_flat_gradient, "lamp x (1 + LAMPGRAD u / RCORNER)"))
    if exposure.imagetyp == "OBJECT" and exposure.psf is not None:
        zp, ext = rec["zeropoint"], rec["extinction"]
        cards += [
            ("ZP", zp, "[mag] gives 1 e-/s above the atmosphere"), ("EXTCOEF", ext, "[mag/airmass]"),
            ("ZPEXP", round(zp - ext * exposure.airmass + 2.5 * np.log10(exposure.exptime), 6),
             "[mag] gives 1 e- in this exposure"),
            ("SKYRATE", exposure.sky_rate, "[e-/px/s] sky at the optical axis, before flat"),
            ("SKY", round(exposure.sky_rate * exposure.exptime, 4), "[e-/px] sky in the exposure at the axis"),
            ("SKYGU", exposure.sky_grad[0], "fractional sky change per RCORNER along u"),
            ("SKYGV", exposure.sky_grad[1], "fractional sky change per RCORNER along v"),
        ] + [(PSF_KEYS[k], v, f"PSF model {k} (see wisp.sim.psf.PsfModel)") for k, v in rec["psf"].items()]
        if exposure.fringe > 0:
            cards.append(("FRNGAMP", exposure.fringe, "fringe e- = FRNGAMP x sky e- x fringe_<f>"))
    cards.append(("TRAIL", exposure.trail, "satellite trail present"))
    if trail is not None:
        cards += [(TRAIL_KEYS[k], v, f"trail {k} (see wisp.sim.artifacts.Trail)") for k, v in vars(trail).items()]
    return cards


def _chip_truth_hdu(config: SimConfig, camera: Camera, k_sip: float, exposure: Exposure, chip: Chip,
                    result: ChipExposure) -> fits.CompImageHDU:
    """The mask of one chip, its header carrying the bias drift and, for science, sky and true WCS."""
    hdu = _mask_hdu(result.mask, chip.extname)
    hdu.header["CHIPID"] = (chip.chip_id, "chip number")
    hdu.header["DRIFT"] = (result.drift, "[ADU] bias shift this exposure (data+overscan)")
    if exposure.imagetyp == "OBJECT":
        u_c = (camera.nx - 1) / 2.0 - chip.axis_x
        v_c = (camera.ny - 1) / 2.0 - chip.axis_y
        sky = exposure.sky_rate * exposure.exptime
        gu, gv = exposure.sky_grad
        hdu.header["SKYC"] = (sky * (1.0 + (gu * u_c + gv * v_c) / camera.r_corner), "[e-/px] sky at the chip centre")
        hdu.header["SKYDX"] = (sky * gu / camera.r_corner, "[e-/px/px] sky slope along x")
        hdu.header["SKYDY"] = (sky * gv / camera.r_corner, "[e-/px/px] sky slope along y")
        if exposure.fringe > 0:
            hdu.header["FRNGAMP"] = (exposure.fringe, "fringe e- = FRNGAMP x sky e- x fringe_<f>")
        hdu.header.extend(true_wcs_header(chip, exposure.true, config.pixel_scale, k_sip))
    return hdu


def write_exposure_truth(path: Path, config: SimConfig, camera: Camera, k_sip: float, exposure: Exposure,
                         chips: list[ChipExposure], trail: Trail | None) -> None:
    """Per exposure: primary header (exposure truth), one compressed uint8 mask 'CCD<n>' per chip (bits 1 CR,
    2 trail, 4 saturated, 8 bleed) whose header holds the chip truth and, for OBJECT, the true TAN-SIP
    WCS; a 'SOURCES' table (OBJECT) and a 'COSMICS' table."""
    primary = fits.PrimaryHDU()
    for card in _exposure_cards(config, camera, k_sip, exposure, trail):
        primary.header.append(card)
    hdus: list[Any] = [primary] + [_chip_truth_hdu(config, camera, k_sip, exposure, chip, result)
                                   for chip, result in zip(camera.chips, chips, strict=True)]
    if exposure.imagetyp == "OBJECT":
        cols = {k: np.concatenate([c.rows[k] for c in chips]) for k in chips[0].rows}
        hdus.append(_table_hdu(cols, "SOURCES", {
            "ra": "deg", "dec": "deg", "x": "pix", "y": "pix", "flux": "electron", "flux_onchip": "electron",
            "flux_model": "electron", "mag": "mag", "psf_fwhm": "arcsec", "psf_theta": "deg", "gal_re": "pix",
            "gal_theta": "deg"},
            [("PIXORIG", 0, "x, y are 0-based (FITS = x + 1)")]))
    cr = {"chip": np.concatenate([np.full(c.cosmics.x0.size, ch.chip_id, dtype=np.int16)
                                  for ch, c in zip(camera.chips, chips, strict=True)])}
    for k in ("x0", "y0", "x1", "y1", "charge"):
        cr[k] = np.concatenate([getattr(c.cosmics, k) for c in chips])
    hdus.append(_table_hdu(cr, "COSMICS", {"charge": "electron", "x0": "pix", "y0": "pix", "x1": "pix",
                                           "y1": "pix"}))
    fits.HDUList(hdus).writeto(path, overwrite=True)
