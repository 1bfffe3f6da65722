"""Parameters of the astrometry stage: one frozen dataclass with documented defaults, overridable per
instrument or per request (:meth:`AstrometryParams.from_dict` rejects unknown names with a hint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from wisp.errors import InvalidInput
from wisp.names import reject_unknown


@dataclass(frozen=True)
class AstrometryParams:
    """Detection: ``detect_thresh`` (sigma), ``detect_minarea`` (px), ``aper_rhalf`` (aperture radius for
    fluxes in stellar half-light radii; 6 = ~3.8 FWHM of a beta=3 Moffat, aperture loss ~0.4 %),
    ``background_box`` (px).
    Matching: the header WCS may be off by ``max_shift_arcmin`` and ``max_rot_deg`` (voted on a grid of
    ``rot_step_deg``) with a scale error within ``scale_tol``; ``n_bright`` detections vote;
    ``match_radius_px`` the final radius of the affine matching; ``min_matches`` pairs at least.
    Fitting: ``sip_order`` (lowered when fewer than ``min_stars_per_term`` stars per polynomial term),
    ``clip_sigma``, ``max_iter``; after a first fit the references are re-matched within
    ``final_radius_arcsec`` and the fit repeated ``refine_rounds`` times. Only stars with ``snr`` >=
    ``astrom_min_snr`` enter the fit, unless fewer than ``astrom_min_keep`` of the matches pass (then
    all). Star weights use the reference position errors plus a centroid error of ``centroid_coeff`` x
    FWHM / SNR (px; calibrated on simulated Moffat stars with windowed centroids).
    Photometry: stars with SNR >= ``zp_min_snr`` and a finite reference magnitude, clipped at
    ``zp_clip`` robust sigmas; ``zp_floor_mag`` added in quadrature to each star's error.
    ``ref_mag_limit``: references fainter than this (in the band, when known) are not used (None: all).
    """

    detect_thresh: float = 5.0
    detect_minarea: int = 5
    aper_rhalf: float = 6.0
    background_box: int = 64
    max_shift_arcmin: float = 8.0
    max_rot_deg: float = 3.0
    rot_step_deg: float = 0.5
    scale_tol: float = 0.01
    n_bright: int = 50
    match_radius_px: float = 2.0
    min_matches: int = 6
    sip_order: int = 3
    min_stars_per_term: float = 2.5
    clip_sigma: float = 3.0
    max_iter: int = 10
    final_radius_arcsec: float = 1.0
    astrom_min_snr: float = 20.0
    astrom_min_keep: int = 30
    refine_rounds: int = 2
    centroid_coeff: float = 0.6
    zp_min_snr: float = 20.0
    zp_clip: float = 3.0
    zp_floor_mag: float = 0.005
    ref_mag_limit: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.detect_thresh <= 0 or self.detect_minarea < 1 or self.aper_rhalf <= 0:
            problems.append("detect_thresh and aper_rhalf must be > 0, detect_minarea >= 1")
        if self.max_shift_arcmin <= 0 or self.max_rot_deg < 0 or self.rot_step_deg <= 0:
            problems.append("max_shift_arcmin and rot_step_deg must be > 0, max_rot_deg >= 0")
        if not 1 <= self.sip_order <= 6:
            problems.append(f"sip_order={self.sip_order} must be in 1..6")
        if self.min_matches < 3 or self.n_bright < self.min_matches:
            problems.append("min_matches must be >= 3 and n_bright >= min_matches")
        if problems:
            raise InvalidInput("invalid astrometry parameters: " + "; ".join(problems),
                               code="astrometry.bad_params")

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: AstrometryParams | None = None) -> AstrometryParams:
        """``base`` (default: the defaults) with ``values`` applied; unknown names raise ``InvalidInput``
        with a "did you mean" hint."""
        reject_unknown(values, [f.name for f in fields(cls)], what="astrometry parameter",
                       code="astrometry.bad_params")
        return replace(base or cls(), **values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every parameter."""
        return asdict(self)
