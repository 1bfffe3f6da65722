"""The "simcam" raw format: one multi-extension FITS per exposure, byte-for-byte deterministic.

Primary HDU (no data): INSTRUME, TELESCOP, ORIGIN, IMAGETYP (BIAS | DARK | FLAT | OBJECT), FILTER ('NONE'
for bias and dark), EXPTIME [s], DATE-OBS (UTC, 'YYYY-MM-DDThh:mm:ss.sss'), MJD-OBS, RA, DEC [deg, telescope
pointing], AIRMASS, OBJECT, EXPID, NCHIPS, OBSERVER, SIMSEED, site keywords, DATE (= end of exposure).
One ImageHDU per chip, uint16 stored as int16 with BZERO = 32768, shape (ny, nx + overscan): EXTNAME
'CCD<n>', CHIPID, CCDNAME, GAIN [e-/ADU], RDNOISE [e-], SATURATE [ADU], DATASEC, BIASSEC, DETSEC and the
header (TAN-only) WCS. CHECKSUM/DATASUM on every HDU, time-stamped with DATE, not with the wall clock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from wisp import __version__
from wisp.sim.camera import Camera, Chip
from wisp.sim.config import SimConfig
from wisp.sim.schedule import Exposure
from wisp.sim.wcs import header_wcs_cards

INSTRUME = "WISPSIM"
TELESCOP = "WISP-1M"
ORIGIN = "wisp sim"


def primary_header(config: SimConfig, exposure: Exposure) -> fits.Header:
    """The primary header of a raw exposure."""
    site = config.site
    cards: list[tuple[str, object, str]] = [
        ("INSTRUME", INSTRUME, "instrument"),
        ("TELESCOP", TELESCOP, "telescope"),
        ("ORIGIN", ORIGIN, f"wisp {__version__} night simulator"),
        ("OBSERVAT", site.name, "observatory"),
        ("OBS-LAT", site.lat_deg, "[deg] geodetic latitude"),
        ("OBS-LONG", site.lon_deg, "[deg] geodetic longitude, east positive"),
        ("OBS-ELEV", site.height_m, "[m] height above the ellipsoid"),
        ("IMAGETYP", exposure.imagetyp, "BIAS, DARK, FLAT or OBJECT" if config.n_dark else "BIAS, FLAT or OBJECT"),
        ("FILTER", exposure.filter, "filter name, NONE for bias"),
        ("EXPTIME", float(exposure.exptime), "[s] exposure time"),
        ("DATE-OBS", exposure.date_obs, "UTC start of the exposure"),
        ("MJD-OBS", exposure.mjd, "[d] MJD (UTC) at the start of the exposure"),
        ("RA", exposure.header.ra, "[deg] telescope pointing, ICRS"),
        ("DEC", exposure.header.dec, "[deg] telescope pointing, ICRS"),
        ("AIRMASS", exposure.airmass, "air mass at mid-exposure"),
        ("OBJECT", exposure.object, "field name, BIAS, DARK or DOMEFLAT" if config.n_dark
         else "field name, BIAS or DOMEFLAT"),
        ("EXPID", exposure.expid, "exposure number, unique in the night"),
        ("NCHIPS", config.n_chips, "number of chip extensions"),
        ("OBSERVER", config.observer, "observer"),
        ("SIMSEED", config.seed, "simulation seed"),
        ("DATE", exposure.date_end, "UTC file write time (end of exposure)"),
    ]
    if exposure.dither >= 0:
        cards.append(("DITHER", exposure.dither, "dither index within field and filter"))
    header = fits.Header()
    for card in cards:
        header.append(card)
    return header


def chip_header(config: SimConfig, camera: Camera, chip: Chip, exposure: Exposure) -> fits.Header:
    """The extension header of one chip (without the data-shape keywords astropy adds)."""
    nx, ny, nos = camera.nx, camera.ny, camera.overscan
    cards: list[tuple[str, object, str]] = [
        ("EXTNAME", chip.extname, "extension name"),
        ("CHIPID", chip.chip_id, "chip number, 1-based"),
        ("CCDNAME", chip.ccdname, "detector name"),
        ("GAIN", chip.gain, "[e-/ADU] nominal gain"),
        ("RDNOISE", chip.read_noise, "[e-] read noise"),
        ("SATURATE", chip.saturate, "[ADU] saturation level (raw value)"),
        ("DATASEC", f"[1:{nx},1:{ny}]", "data section"),
        ("BIASSEC", f"[{nx + 1}:{nx + nos},1:{ny}]", "overscan section"),
        ("DETSEC", f"[{chip.x0 + 1}:{chip.x0 + nx},{chip.y0 + 1}:{chip.y0 + ny}]", "position in the mosaic"),
        ("CCDSUM", "1 1", "binning"),
        ("BUNIT", "adu", ""),
        *header_wcs_cards(chip, exposure.header, config.pixel_scale),
    ]
    header = fits.Header()
    for card in cards:
        header.append(card)
    return header


def write_raw(path: Path, config: SimConfig, camera: Camera, exposure: Exposure,
              pixels: list[np.ndarray]) -> int:
    """Write one raw exposure (``pixels``: uint16 per chip, in chip order); return the file size in bytes."""
    primary = fits.PrimaryHDU(header=primary_header(config, exposure))
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [primary]
    for chip, data in zip(camera.chips, pixels, strict=True):
        hdus.append(fits.ImageHDU(data=data, header=chip_header(config, camera, chip, exposure)))
    hdul = fits.HDUList(hdus)
    hdul.update_extend()  # before the checksums: writeto would add EXTEND after them otherwise
    for hdu in hdul:
        hdu.add_checksum(when=exposure.date_end)
    hdul.writeto(path, overwrite=True)
    return path.stat().st_size
