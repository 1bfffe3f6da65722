"""Parameters of source extraction: one frozen, validated dataclass with documented defaults.

Defaults follow SExtractor's ``default.sex`` where it has an equivalent (DETECT_THRESH 1.5, DETECT_MINAREA 5,
DEBLEND_NTHRESH 32, DEBLEND_MINCONT 0.005, BACK_SIZE 64, BACK_FILTERSIZE 3, PHOT_AUTOPARAMS 2.5, 3.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from wisp import dq
from wisp.errors import InvalidInput
from wisp.names import reject_unknown

FILTERS = ("gauss", "pyramid3", "none")


@dataclass(frozen=True)
class ExtractParams:
    """How to find and measure sources on a background-containing image in e-.

    Background: ``back_size`` mesh (px), ``back_filter_size`` median filter (meshes), ``back_fthresh``
    (filter only meshes deviating by more than this, data units; 0 = all).
    Detection: ``detect_thresh`` (sigma of the *unfiltered* per-pixel noise, as in SExtractor), ``minarea``
    (px); the image is filtered with ``filter_kernel`` 'gauss' (a Gaussian of ``filter_fwhm_arcsec``, ±3
    sigma; ~PSF-matched), 'pyramid3' (SExtractor's default.conv) or 'none'; ``filter_type`` 'conv' (plain
    convolution, SExtractor's meaning of the threshold) or 'matched' (sep's noise-normalised filter: the
    threshold is then in sigma of the filtered image, so 1.5 finds noise peaks); deblending with
    ``deblend_nthresh`` levels and ``deblend_cont`` minimum contrast (1 = off); SExtractor cleaning with
    ``clean``/``clean_param``.
    Photometry: ``apertures_arcsec`` circular aperture *diameters* (arcsec); Kron AUTO aperture of
    ``kron_factor`` × the first-moment radius, at least ``kron_min_radius`` (both in units of A, B);
    ``subpix`` aperture sub-sampling (0 = exact). Without a variance map, ``source_poisson`` adds the
    sources' own shot noise (the image is in e-, so gain 1) to the background noise.
    DQ (``wisp.dq`` bits): ``dq_mask_bits`` (and NaN, var <= 0) are excluded from the background and, with
    ``fill_masked``, interpolated from valid neighbours for detection and photometry (as SExtractor
    interpolates zero-weight pixels); pixels too far from valid ones stay masked (sep scales an aperture's
    flux by its unmasked area). Either way they set BADPIX. ``dq_saturated_bits`` (and, if set, pixels >=
    ``saturation_e`` e- in sci, like SExtractor's SATUR_LEVEL) are excluded from the background only and set
    SATURATED.
    ``mask_neighbours``: other detections' pixels are left out of the Kron and half-light radii and of the
    windowed-centroid window size (SExtractor's MASK_TYPE CORRECT/BLANK; False = MASK_TYPE NONE).
    Classification: ``psf_fwhm_arcsec`` fixes the PSF FWHM (else the densest FWHM cluster of clean sources
    of S/N ≥ ``psf_min_snr``); CLASS is 1 (point source) when |FWHM / PSF FWHM − 1| < ``class_tol`` + 3/SNR,
    0 otherwise (extended, or sharper than the PSF), 0.5 (undecided) when S/N < ``class_min_snr``.
    """

    back_size: int = 64
    back_filter_size: int = 3
    back_fthresh: float = 0.0
    detect_thresh: float = 1.5
    minarea: int = 5
    filter_kernel: str = "gauss"
    filter_fwhm_arcsec: float = 1.0
    filter_type: str = "conv"
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    apertures_arcsec: tuple[float, ...] = (2.0, 4.0, 8.0)
    kron_factor: float = 2.5
    kron_min_radius: float = 3.5
    subpix: int = 5
    source_poisson: bool = True
    dq_mask_bits: int = dq.BAD | dq.COSMIC_RAY | dq.TRAIL | dq.NO_DATA
    dq_saturated_bits: int = dq.SATURATED
    fill_masked: bool = True
    saturation_e: float | None = None
    mask_neighbours: bool = True
    psf_fwhm_arcsec: float | None = None
    psf_min_snr: float = 50.0
    class_tol: float = 0.2
    class_min_snr: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "apertures_arcsec", tuple(float(d) for d in self.apertures_arcsec))
        checks = [
            (self.back_size >= 8, f"back_size={self.back_size} must be >= 8 px"),
            (self.back_filter_size >= 1 and self.back_filter_size % 2 == 1,
             f"back_filter_size={self.back_filter_size} must be an odd number >= 1"),
            (self.back_fthresh >= 0, "back_fthresh must be >= 0"),
            (self.detect_thresh > 0, f"detect_thresh={self.detect_thresh} must be > 0 sigma"),
            (self.minarea >= 1, f"minarea={self.minarea} must be >= 1 px"),
            (self.filter_kernel in FILTERS, f"filter_kernel={self.filter_kernel!r} must be one of {FILTERS}"),
            (self.filter_fwhm_arcsec > 0, "filter_fwhm_arcsec must be > 0"),
            (self.filter_type in ("matched", "conv"), f"filter_type={self.filter_type!r}: 'matched' or 'conv'"),
            (1 <= self.deblend_nthresh <= 64, f"deblend_nthresh={self.deblend_nthresh} must be in 1..64"),
            (0 <= self.deblend_cont <= 1, f"deblend_cont={self.deblend_cont} must be in [0, 1]"),
            (self.clean_param > 0, "clean_param must be > 0"),
            (len(self.apertures_arcsec) >= 1 and min(self.apertures_arcsec) > 0,
             f"apertures_arcsec={self.apertures_arcsec} needs at least one diameter, all > 0"),
            (self.kron_factor > 0 and self.kron_min_radius >= 0,
             "kron_factor must be > 0 and kron_min_radius >= 0"),
            (self.subpix >= 0, "subpix must be >= 0"),
            (0 <= self.dq_mask_bits < 65536 and 0 <= self.dq_saturated_bits < 65536,
             "dq_mask_bits and dq_saturated_bits must be uint16 bitmasks"),
            (self.psf_fwhm_arcsec is None or self.psf_fwhm_arcsec > 0, "psf_fwhm_arcsec must be > 0 or None"),
            (self.saturation_e is None or self.saturation_e > 0, "saturation_e must be > 0 or None"),
            (self.psf_min_snr > 0 and self.class_min_snr >= 0 and self.class_tol > 0,
             "psf_min_snr and class_tol must be > 0, class_min_snr >= 0"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise InvalidInput("invalid extraction parameters: " + "; ".join(problems), code="catalog.params")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (for provenance)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractParams:
        """Build from a (e.g. per-instrument or per-request) dict; unknown names get a "did you mean" hint."""
        reject_unknown(data, [f.name for f in fields(cls)], what="extraction parameter", code="catalog.params")
        return cls(**data)
