"""Single-frame cosmic-ray detection: L.A.Cosmic (van Dokkum 2001, PASP 113, 1420) on our noise model.

Pure science: numpy arrays in, a boolean mask out. The input is one reduced chip: SCI in electrons with the
sky *not* subtracted (any additive level is fine: only differences and VAR are used), its VAR (e-^2) and
optionally its DQ plane (:mod:`wisp.dq`) and the PSF FWHM (px). The steps, all in one numba kernel
(:func:`.cosmics_kernels.lacosmic`):

1. pixels with a DQ bit of ``ignore_bits`` (BAD, SATURATED, NO_DATA by default) or a non-finite or
   non-positive SCI/VAR are never flagged and are replaced by the median of their valid 5x5 neighbours
   before any filtering; nothing within ``sat_guard`` px of a SATURATED pixel is flagged either (the steep
   walls of saturated cores and the charge at the ends of bleed columns look sharp);
2. L+ = the Laplacian of the 2x-subsampled image, negatives clipped, rebinned to the original pixels
   (computed on the original grid: each quarter-pixel is ``2 v - h - w``, h/w its outer neighbours);
3. noise = sqrt(5x5 median of VAR), the variance the pixel would have without the cosmic ray (VAR carries
   the flat-field, bias and read-noise terms that a gain/read-noise model misses);
4. S' = (L+ - 5x5 median of L+) / (2 noise), the Laplacian significance with large structure removed;
5. cores: S' > ``sigclip`` and S' / F > ``objlim``, F = (3x3 median - 7x7 median of the 3x3 median) /
   noise being the fine-structure image (stars and galaxies are smooth: large F);
6. compact spots (``blob``, not in L.A.Cosmic): a low-energy hit spread over 2x2 pixels has a Laplacian of
   only its per-pixel excess, half that of a 1-pixel hit. A 2x2 block is a core when its summed excess
   over the median of the two pixel rings around it exceeds ``sigclip`` times that sum's noise, every
   pixel of it exceeds every pixel of the inner ring, the inner ring's mean excess is < 1/4 of the block's
   and the inner ring rises above the outer ring by < 1/``blob_objlim`` of the block's excess (a PSF of
   FWHM >= 2 px fails all three);
7. L.A.Cosmic's growth: 8-neighbours of cores with S' > ``sigclip``, then their 8-neighbours with
   S' > ``sigfrac * sigclip``;
8. flux growth (it replaces L.A.Cosmic's re-iterations). First, until nothing is added, 8-neighbours of
   flagged pixels exceeding the median of their unflagged 5x5 neighbours by ``sigclip`` x noise: this
   follows long or 2-pixel-wide tracks (whose S'/F fails ``objlim`` along most of their length) from the
   part that was detected. Then ``grow`` rings from every flagged pixel: an 8-neighbour of a flagged
   pixel is flagged when it exceeds the median of its unflagged 5x5 neighbours by ``grow_sigma`` x noise
   (``grow_sigma - 1`` when two of its 4-neighbours are flagged, i.e. it lies along a track;
   ``grow_sigma + 0.5`` when it touches flagged pixels only by a corner), unless that 5x5 median exceeds
   the median of the 9x9 window's border by ``obj_sigma`` x noise (the pixel is on a star or galaxy, whose
   profile would be taken for charge: a cosmic ray on a star must not eat the star). This catches the faint
   wings of tracks, whose Laplacian is suppressed by the bright pixel next to them. Growth steps over a
   masked pixel (a track crossing a bad column goes on on the other side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.calib.science.cosmics_kernels import lacosmic
from wisp.dq import BAD, NO_DATA, SATURATED

#: DQ bits whose pixels are ignored (never flagged, replaced before filtering)
IGNORE_BITS = BAD | SATURATED | NO_DATA


@dataclass(frozen=True)
class CosmicParams:
    """Detection parameters; significances are in units of a pixel's cosmic-ray-free noise (see the module).

    ``sigclip``: S' (and 2x2-spot significance) of a core, and the excess that grown pixels need while
    following a track; ``sigfrac``: second-ring neighbours of cores need
    S' > ``sigfrac * sigclip``; ``objlim``: minimum S'/F of a core (None: :func:`default_objlim` of the
    FWHM); ``grow``: rings of flux growth (0: L.A.Cosmic's growth only); ``grow_sigma``: their threshold;
    ``sat_guard``: px around SATURATED pixels never flagged; ``blob``: detect 2x2 spots;
    ``blob_objlim``: their minimum contrast over the ring around them; ``obj_sigma``: no flux growth where
    the local median is this far above its surroundings (an object); ``ignore_bits``: DQ bits of pixels
    that are never flagged and not used.
    """

    sigclip: float = 5.0
    sigfrac: float = 0.5
    objlim: float | None = None
    grow: int = 2
    grow_sigma: float = 2.5
    sat_guard: int = 3
    blob: bool = True
    blob_objlim: float = 5.0
    obj_sigma: float = 1.5
    ignore_bits: int = IGNORE_BITS


def default_objlim(fwhm: float | None) -> float:
    """``objlim`` for a PSF of ``fwhm`` px: 2 for FWHM >= 3 px, 5 (L.A.Cosmic's default, safe for
    undersampled data) for FWHM <= 2 px or unknown, linear in between.

    A well-sampled star has S'/F ~ 0.3-0.5 (its core Laplacian is small next to its fine structure), so
    objlim 2 keeps a wide margin while accepting 2-pixel-wide tracks, whose 3x3 median keeps part of the
    track (S'/F ~ 1.5-3) and which objlim 5 rejects.
    """
    if fwhm is None or not np.isfinite(fwhm) or fwhm <= 2.0:
        return 5.0
    return float(max(2.0, 5.0 - 3.0 * (fwhm - 2.0)))


def detect_cosmics(sci: np.ndarray, var: np.ndarray, dq: np.ndarray | None = None, *, fwhm: float | None = None,
                   params: CosmicParams | None = None) -> np.ndarray:
    """Boolean mask (True = cosmic ray) of one reduced chip.

    ``sci``: electrons, sky included (float, 2-D); ``var``: its variance, e-^2 (same shape); ``dq``: DQ bits
    (:mod:`wisp.dq`), pixels with any of ``params.ignore_bits`` are never flagged; ``fwhm``: PSF FWHM in px
    if known (sets ``objlim`` when ``params.objlim`` is None).
    """
    p = params or CosmicParams()
    sci = np.asarray(sci)
    var = np.asarray(var)
    if sci.ndim != 2 or sci.shape != var.shape:
        raise ValueError(f"sci and var must be 2-D of one shape; got {sci.shape} and {var.shape}")
    if dq is not None and np.shape(dq) != sci.shape:
        raise ValueError(f"dq shape {np.shape(dq)} differs from sci {sci.shape}")
    if not (p.sigclip > 0 and 0 < p.sigfrac <= 1 and p.grow >= 0 and p.grow_sigma > 1 and p.sat_guard >= 0
            and p.blob_objlim > 0 and (p.objlim is None or p.objlim > 0)):
        raise ValueError(f"invalid parameters {p}")
    objlim = p.objlim if p.objlim is not None else default_objlim(fwhm)
    sci32 = np.ascontiguousarray(sci, dtype=np.float32)
    var32 = np.ascontiguousarray(var, dtype=np.float32)
    dq16 = np.zeros(sci.shape, dtype=np.uint16) if dq is None else np.ascontiguousarray(dq, dtype=np.uint16)
    labels = lacosmic(sci32, var32, dq16, np.uint16(p.ignore_bits), float(p.sigclip), float(p.sigfrac),
                      float(objlim), int(p.grow), float(p.grow_sigma), int(p.sat_guard), bool(p.blob),
                      float(p.blob_objlim), float(p.obj_sigma))
    return labels != 0
