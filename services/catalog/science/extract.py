"""``extract``: a reduced image (e-) in, a source catalogue (astropy Table) out. Pure: no I/O.

Steps: mask (DQ, NaN, var <= 0) → sep mesh background (also masking saturated pixels) → interpolate masked
pixels → detection on the background-subtracted image (threshold per pixel from var, else the global RMS;
filtered; deblended) → windowed centroids → Kron (AUTO) and circular-aperture photometry, half-light radii →
Moffat-fit FWHM → PSF locus and CLASS → magnitudes, sky coordinates, FLAGS.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Column, Table
from astropy.wcs import WCS

from services.catalog.science.detect import Prepared, detect, prepare
from services.catalog.science.measure import photometry, windowed_centroids
from services.catalog.science.params import ExtractParams
from services.catalog.science.shape import classify, moffat_fwhm, psf_locus
from wisp.errors import InvalidInput

# name: (unit, description); the order is the column order of the catalogue. Fluxes are e-, written with the
# FITS unit 'ct' (counts) because FITS has no unit for electrons.
COLUMNS: dict[str, tuple[str | None, str]] = {
    "NUMBER": (None, "Running source number (1-based)"),
    "X": ("pix", "Windowed centroid along x, 0-based (0 = centre of the first pixel)"),
    "Y": ("pix", "Windowed centroid along y, 0-based"),
    "ERRX2": ("pix2", "Variance of the (isophotal) position along x"),
    "ERRY2": ("pix2", "Variance of the (isophotal) position along y"),
    "XERR": ("pix", "sqrt(ERRX2)"),
    "YERR": ("pix", "sqrt(ERRY2)"),
    "RA": ("deg", "Right ascension (ICRS) of (X, Y) from the WCS; NaN without one"),
    "DEC": ("deg", "Declination (ICRS) of (X, Y) from the WCS; NaN without one"),
    "FLUX_APER": ("ct", "Flux (e-) in circular apertures of the meta APERnn diameters (arcsec)"),
    "FLUXERR_APER": ("ct", "1-sigma error of FLUX_APER (e-)"),
    "MAG_APER": ("mag", "ZP - 2.5 log10(FLUX_APER / EXPTIME); NaN if flux <= 0 or no zeropoint"),
    "MAGERR_APER": ("mag", "1-sigma error of MAG_APER"),
    "FLAGS_APER": (None, "Per-aperture flags: 8 truncated at the edge, 16 masked pixels inside"),
    "FLUX_AUTO": ("ct", "Flux (e-) in the Kron (AUTO) elliptical aperture"),
    "FLUXERR_AUTO": ("ct", "1-sigma error of FLUX_AUTO (e-)"),
    "MAG_AUTO": ("mag", "ZP - 2.5 log10(FLUX_AUTO / EXPTIME); NaN if flux <= 0 or no zeropoint"),
    "MAGERR_AUTO": ("mag", "1-sigma error of MAG_AUTO"),
    "KRON_RADIUS": (None, "Scale of the AUTO aperture in units of A and B: max(k × Kron radius, minimum)"),
    "A": ("pix", "Isophotal RMS size along the major axis"),
    "B": ("pix", "Isophotal RMS size along the minor axis"),
    "THETA": ("deg", "Position angle of the major axis, from +x towards +y, in [-90, 90]"),
    "ELLIPTICITY": (None, "1 - B/A"),
    "FWHM": ("arcsec", "FWHM of a circular Moffat fitted to the core (2 × FLUX_RADIUS if the fit failed)"),
    "FLUX_RADIUS": ("pix", "Half-light radius (of FLUX_AUTO)"),
    "BACKGROUND": ("ct", "Background (e- per pixel) at (X, Y)"),
    "NPIX": (None, "Isophotal area above the detection threshold (pixels)"),
    "SNR": (None, "FLUX_AUTO / FLUXERR_AUTO"),
    "CLASS": (None, "Point-source indicator: 1 point source, 0 extended or artefact, 0.5 undecided"),
    "FLAGS": (None, "Extraction flags, see services.catalog.science.flags"),
}


def magnitudes(flux: np.ndarray, err: np.ndarray, zeropoint: float | None, exptime_s: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """m = zp - 2.5 log10(flux / exptime) and its error; NaN where flux <= 0 or the zeropoint is unknown."""
    good = np.isfinite(flux) & (flux > 0)
    safe = np.where(good, flux, 1.0)
    zp = math.nan if zeropoint is None else zeropoint
    mag = np.where(good, zp - 2.5 * np.log10(safe / exptime_s), np.nan)
    magerr = np.where(good, 2.5 / math.log(10.0) * err / safe, np.nan)
    return mag, magerr


def _sky(wcs: WCS | None, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) in degrees of 0-based pixel positions, with every distortion the WCS has; NaN without a WCS."""
    if wcs is None or len(x) == 0:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)
    if not wcs.has_celestial:
        raise InvalidInput("the WCS has no celestial axes", code="catalog.input")
    cel = wcs if wcs.naxis == 2 else wcs.celestial
    ra, dec = cel.pixel_to_world_values(x, y)
    return np.asarray(ra, float), np.asarray(dec, float)


def _measure(prep: Prepared, params: ExtractParams, pixel_scale_arcsec: float) -> dict[str, np.ndarray]:
    """Detect and measure: every catalogue column but RA/DEC/mags/CLASS, plus sep's raw ``_objects``."""
    objects, segmap = detect(prep, params, pixel_scale_arcsec)
    x, y, winflag = windowed_centroids(prep, objects, segmap, params)
    cols = photometry(prep, objects, segmap, x, y, params, pixel_scale_arcsec)
    var = prep.var if prep.var is not None else prep.rms_global**2
    fwhm_px = moffat_fwhm(prep.data, var, segmap, prep.bad, x, y, cols["FLUX_RADIUS"])
    cols.update(X=x, Y=y, FWHM=fwhm_px * pixel_scale_arcsec, NPIX=objects["npix"].astype(np.int32),
                ERRX2=objects["errx2"].astype(float), ERRY2=objects["erry2"].astype(float))
    cols["FLAGS"] = (cols["FLAGS"] | winflag).astype(np.int32)
    return cols


def extract(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, *, wcs: WCS | None,
            zeropoint: float | None, exptime_s: float, pixel_scale_arcsec: float,
            params: ExtractParams | None = None) -> Table:
    """The source catalogue of one reduced image.

    ``sci`` image in e- (background included), ``var`` its variance (e-², incl. the sources' shot noise) or
    None (then the global background RMS, plus shot noise if ``params.source_poisson``), ``dq`` uint16 DQ
    bitmask or None; ``wcs`` for RA/DEC (None → NaN); ``zeropoint`` mag giving 1 e-/s (None → NaN
    magnitudes); ``exptime_s`` s; ``pixel_scale_arcsec`` arcsec/px (aperture sizes, FWHM). One row per
    source with the columns of COLUMNS; ``meta`` (FITS-header-safe) holds EXPTIME (s), MAGZP (if given),
    PIXSCALE, the aperture diameters APERnn (arcsec), the background BACKMEAN/BACKRMS (e-), the PSF FWHM used
    for CLASS (PSFFWHM, arcsec; absent if unknown), NSOURCES and DETTHRES (sigma).
    """
    params = params or ExtractParams()
    if not (exptime_s > 0 and math.isfinite(exptime_s)):
        raise InvalidInput(f"exptime_s={exptime_s} must be > 0", code="catalog.input")
    if not (pixel_scale_arcsec > 0 and math.isfinite(pixel_scale_arcsec)):
        raise InvalidInput(f"pixel_scale_arcsec={pixel_scale_arcsec} must be > 0", code="catalog.input")
    if zeropoint is not None and not math.isfinite(zeropoint):
        raise InvalidInput(f"zeropoint={zeropoint} must be finite or None", code="catalog.input")
    prep = prepare(sci, var, dq, params)
    cols = _measure(prep, params, pixel_scale_arcsec)
    n = len(cols["X"])

    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(cols["FLUXERR_AUTO"] > 0, cols["FLUX_AUTO"] / cols["FLUXERR_AUTO"], np.nan)
    psf = params.psf_fwhm_arcsec or psf_locus(cols["FWHM"], snr, cols["FLAGS"], params.psf_min_snr)
    ra, dec = _sky(wcs, cols["X"], cols["Y"])
    mag_aper, magerr_aper = magnitudes(cols["FLUX_APER"], cols["FLUXERR_APER"], zeropoint, exptime_s)
    mag_auto, magerr_auto = magnitudes(cols["FLUX_AUTO"], cols["FLUXERR_AUTO"], zeropoint, exptime_s)
    cols.update(NUMBER=np.arange(1, n + 1, dtype=np.int32), XERR=np.sqrt(cols["ERRX2"]),
                YERR=np.sqrt(cols["ERRY2"]), RA=ra, DEC=dec, MAG_APER=mag_aper, MAGERR_APER=magerr_aper,
                FLAGS_APER=cols.pop("_aper_flags").astype(np.int16), MAG_AUTO=mag_auto, MAGERR_AUTO=magerr_auto,
                ELLIPTICITY=1.0 - cols["B"] / cols["A"], SNR=snr,
                CLASS=classify(cols["FWHM"], snr, psf, params.class_tol, params.class_min_snr))

    table = Table([Column(cols[name], name=name, unit=unit, description=desc)
                   for name, (unit, desc) in COLUMNS.items()])
    meta: dict[str, float | int | None] = {
        "EXPTIME": float(exptime_s), "MAGZP": zeropoint, "PIXSCALE": float(pixel_scale_arcsec),
        "BACKMEAN": prep.back_global, "BACKRMS": prep.rms_global, "PSFFWHM": psf, "NSOURCES": n,
        "DETTHRES": params.detect_thresh, **{f"APER{i + 1:02d}": d for i, d in enumerate(params.apertures_arcsec)}}
    # only known values: FITS headers cannot hold NaN
    table.meta.update({k: v for k, v in meta.items() if v is not None and math.isfinite(v)})
    return table

