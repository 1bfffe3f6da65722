"""Input checks, background estimation and detection (sep, i.e. SExtractor's algorithms)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage

from services.catalog.science.params import ExtractParams
from wisp.errors import InvalidInput

PYRAMID3 = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])  # SExtractor default.conv
FILL_SIGMA = 1.5  # px: masked pixels are interpolated from valid ones within ~2.5 sigma (holes up to ~7 px)
FILL_TRUNCATE = 3.0
FILL_MIN_WEIGHT = 0.02


@dataclass(frozen=True)
class Prepared:
    """Checked inputs: ``data`` background-subtracted (e-; masked pixels interpolated where possible, 0 in
    ``holes``), ``var`` per-pixel variance (e-², None = use the global background RMS), ``bad`` every masked
    pixel (DQ, NaN, var <= 0), ``holes`` the masked pixels too far from valid ones to be interpolated (sep's
    mask), ``saturated`` (DQ saturated), ``back`` the background map (e-), ``back_global``/``rms_global``
    sep's global background and RMS (e-)."""

    data: np.ndarray
    var: np.ndarray | None
    bad: np.ndarray
    holes: np.ndarray
    saturated: np.ndarray
    back: np.ndarray
    back_global: float
    rms_global: float


def fill(images: list[np.ndarray], bad: np.ndarray) -> np.ndarray:
    """Interpolate each image over the ``bad`` pixels (in place) by normalised Gaussian convolution of the valid
    ones, box by box around each connected bad region; returns the pixels left unfilled (no valid pixel near
    enough). SExtractor likewise interpolates zero-weight pixels, so that a bad column or a cosmic ray
    neither splits a source nor fakes one."""
    if not bad.any():
        return bad
    pad = math.ceil(FILL_TRUNCATE * FILL_SIGMA)
    ny, nx = bad.shape
    left = bad.copy()
    labels, _ = ndimage.label(bad)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        y0, y1 = max(box[0].start - pad, 0), min(box[0].stop + pad, ny)
        x0, x1 = max(box[1].start - pad, 0), min(box[1].stop + pad, nx)
        sub = bad[y0:y1, x0:x1]
        den = ndimage.gaussian_filter((~sub).astype(np.float32), FILL_SIGMA, mode="constant", truncate=FILL_TRUNCATE)
        ok = (labels[y0:y1, x0:x1] == label) & (den > FILL_MIN_WEIGHT)  # this region only: its box is complete
        for image in images:
            tile = image[y0:y1, x0:x1]
            num = ndimage.gaussian_filter(np.where(sub, np.float32(0), tile), FILL_SIGMA, mode="constant",
                                          truncate=FILL_TRUNCATE)
            tile[ok] = num[ok] / den[ok]
        left[y0:y1, x0:x1] &= ~ok
    return left


def prepare(sci: np.ndarray, var: np.ndarray | None, dq: np.ndarray | None, params: ExtractParams) -> Prepared:
    """Validate the arrays, build the masks, subtract sep's mesh background (DQ-masked, saturated pixels
    excluded) and interpolate the masked pixels. The caller's arrays are never modified."""
    sci = np.asarray(sci)
    if sci.ndim != 2 or min(sci.shape) < 8:
        raise InvalidInput(f"sci must be a 2-D image of at least 8x8 px, got shape {sci.shape}", code="catalog.input")
    data = np.array(sci, dtype=np.float32, order="C", copy=True)  # a native-order copy: the input stays intact
    bad = ~np.isfinite(data)
    saturated = np.zeros(data.shape, bool)
    if dq is not None:
        dq = np.asarray(dq)
        if dq.shape != data.shape or not np.issubdtype(dq.dtype, np.integer):
            raise InvalidInput(f"dq must be an integer bitmask of shape {data.shape}, got {dq.dtype} {dq.shape}",
                               code="catalog.input")
        bad |= (dq & params.dq_mask_bits) != 0
        saturated = (dq & params.dq_saturated_bits) != 0
    vararr = None
    if var is not None:
        var = np.asarray(var)
        if var.shape != data.shape:
            raise InvalidInput(f"var must have the shape of sci {data.shape}, got {var.shape}", code="catalog.input")
        vararr = np.array(var, dtype=np.float32, order="C", copy=True)
        bad |= ~(np.isfinite(vararr) & (vararr > 0))
    if params.saturation_e is not None:
        with np.errstate(invalid="ignore"):
            saturated = saturated | (data >= params.saturation_e)
    if bad.all():
        raise InvalidInput("every pixel is masked (DQ, NaN or var <= 0): nothing to extract", code="catalog.input")
    data[bad] = 0.0
    bkg = sep.Background(data, mask=bad | saturated, bw=params.back_size, bh=params.back_size,
                         fw=params.back_filter_size, fh=params.back_filter_size, fthresh=params.back_fthresh)
    back = bkg.back(dtype=np.float32)
    data -= back
    if vararr is not None:
        vararr[bad] = 0.0
    holes = fill([data] if vararr is None else [data, vararr], bad) if params.fill_masked else bad
    data[holes] = 0.0
    if vararr is not None and holes.any():
        vararr[holes] = np.median(vararr[~bad])  # any finite value: holes are masked in every sep call
    return Prepared(data, vararr, bad, holes, saturated, back, float(bkg.globalback), float(bkg.globalrms))


def kernel(params: ExtractParams, pixel_scale_arcsec: float) -> np.ndarray | None:
    """The detection filter: a Gaussian of ``filter_fwhm_arcsec`` (±3 sigma), SExtractor's 3x3 pyramid, or None
    (no filtering); sep normalises the kernel itself."""
    if params.filter_kernel == "none":
        return None
    if params.filter_kernel == "pyramid3":
        return PYRAMID3
    sigma = params.filter_fwhm_arcsec / pixel_scale_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    half = max(1, math.ceil(3.0 * sigma))
    r = np.arange(-half, half + 1, dtype=float)
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return np.outer(g, g)


def detect(prep: Prepared, params: ExtractParams, pixel_scale_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Run sep.extract: objects (sep's structured array) and the int32 segmentation map (id = index + 1).

    With a variance map the threshold is ``detect_thresh`` × sqrt(var) per pixel; without, ``detect_thresh`` ×
    the global background RMS (as SExtractor does with no weight map).
    """
    npix = prep.data.size
    if sep.get_extract_pixstack() < npix:
        sep.set_extract_pixstack(npix)  # never overflow on a crowded or badly-subtracted chip
    common = dict(mask=prep.holes, minarea=params.minarea, filter_kernel=kernel(params, pixel_scale_arcsec),
                  filter_type=params.filter_type, deblend_nthresh=params.deblend_nthresh,
                  deblend_cont=params.deblend_cont, clean=params.clean, clean_param=params.clean_param,
                  segmentation_map=True)
    gain = 1.0 if params.source_poisson else None
    try:
        if prep.var is not None:
            objects, segmap = sep.extract(prep.data, params.detect_thresh, var=prep.var, **common)
        else:
            objects, segmap = sep.extract(prep.data, params.detect_thresh, err=prep.rms_global, gain=gain,
                                          **common)
    except Exception as exc:
        if type(exc) is not Exception:  # sep raises bare Exceptions for pixel-buffer/deblending overflows
            raise
        raise InvalidInput(f"source detection failed: {exc}", code="catalog.detect") from exc
    return objects, segmap.astype(np.int32, copy=False)
