"""Satellite and aircraft trails on a reduced science chip: line detection, profile fit and a pixel mask.

Pure science: numpy arrays in, a boolean mask (pixels to give the DQ bit :data:`wisp.dq.TRAIL`) and the
measured lines out; no I/O. Pixel coordinates are 0-based (numpy ``[y, x]``, pixel centres at integers).

Method (in the spirit of Astro-WISE's binned Hough transform, ACSTOOLS ``satdet`` and Rubin's
``maskStreaks``):

1. *Significance image.* Pixels with DQ bits in ``ignore_bits`` (bad, saturated, no data; saturated pixels
   grown by ``sat_grow`` px to cover bleed ends) or non-finite/non-positive VAR are unusable. The sky is
   removed with a ``back_size`` px mesh background (sep) and each pixel becomes ``z = (sci - sky) / sqrt(var)``.
2. *Binning.* ``z`` is summed over ``bin_size``² blocks and divided by sqrt(usable pixels): a binned pixel is
   N(0, 1) on pure sky. A trail narrower than a block keeps its full S/N per block, and the Hough transform of
   the binned image is ``bin_size``² cheaper.
3. *Source mask.* Binned pixels above ``source_nsigma`` are opened morphologically (a disk of
   ``source_open`` binned px): thin features (trails, cosmic rays, bleed columns) vanish, extended objects
   (stars, galaxies) remain, except components that are long and thin (a wide, bright trail); what remains
   is grown by ``source_grow`` binned px and left out of the transform.
4. *Hough (Radon) transform* of the binned S/N, clipped to ±``clip``: for each normal angle phi and
   distance r (``x cos phi + y sin phi = r``, 1 binned px bins) the sum of the values over the number of
   pixels summed, sqrt'ed: a line of S/N per unit length ``k`` gives ~ k sqrt(length). Every angle's row is
   standardised by its median and MAD over r (this absorbs residual sky errors and crowding), and also
   computed for pairs of adjacent r bins (a trail split between two bins).
5. *Candidates*: the highest standardised peak above ``detect_nsigma``, refined on the full-resolution
   pixels of a band around it (the angle and offset giving the sharpest mean cross-profile), then verified:

   * a Gaussian + constant fit of the *median* cross-profile (sources crossed by the line do not bias it):
     amplitude > ``fit_nsigma`` x its error, sigma in [``min_sigma``, ``max_sigma``] px (narrower: a column
     or row defect, which is then left out of the search), sky measured on both sides (not the chip edge);
   * presence along the line: matched-filter ridge amplitudes in slices of ``seg_len`` / 8 px, their median
     per ``seg_len`` px segment (a star on the line does not make a segment present); the trail must be
     present (segment S/N > ``seg_nsigma``) over a run of >= ``min_length`` px and >= 2 segments, in >= 60 %
     of the run's measurable segments. The run's ends are placed at the slice boundary that maximises the
     likelihood of "trail inside, nothing outside" (trails may end on the chip); a run reaching unusable
     slices at the chip edge extends to it;
   * the line is refitted through the centroids of its segments (the transform's angle is coarse for
     short trails) and measured again;
   * a line fading by more than ``spike_ratio`` towards one end whose bright end runs into a masked source
     is rejected as a diffraction spike or halo feature.

   An accepted trail is masked over its run, out to where the fitted profile (at the brightest tenth of
   the segment amplitudes) drops below ``edge_nsigma`` x the sky noise, plus ``pad`` px. Blocks touched by
   the mask leave the transform (updated incrementally), which is searched again, up to ``max_trails``; a
   rejected candidate's neighbourhood in (phi, r) is suppressed and the next peak tried, up to
   ``max_candidates``.

Stars, galaxies, cosmic rays, bad columns (DQ BAD, or unflagged but 1 px wide) and bleed trails (DQ SATURATED)
do not make lines: they are masked, clipped, too narrow, or fail the segment test (their signal is concentrated
in one place along the line). Not handled: symmetric diffraction spikes through a saturated star (they are
reported as a trail, and masked).

Steps 1-4 (the chip's state and the transform) are in :mod:`.trails_hough`, the measurements of a candidate
line (step 5) in :mod:`.trails_profile`; this module holds the parameters, the results, the search loop, the
refinement of candidates and the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.calib.science.trails_hough import Chip
from services.calib.science.trails_profile import FWHM_PER_SIGMA, measure, sharpness
from wisp.dq import BAD, NO_DATA, SATURATED


@dataclass(frozen=True)
class TrailParams:
    """Parameters of :func:`find_trails` (see the module docstring for their role). Lengths in px."""

    ignore_bits: int = BAD | SATURATED | NO_DATA  #: DQ bits of pixels left out of detection and fits
    sat_grow: int = 2  #: px by which SATURATED pixels are grown (partially filled bleed ends, halo)
    back_size: int = 64  #: sky mesh (px)
    bin_size: int = 4  #: px per side of the blocks the Hough transform works on
    min_bin_fill: float = 0.25  #: usable fraction a block needs
    clip: float = 5.0  #: binned S/N clipped to ±clip before the transform
    source_nsigma: float = 3.0  #: binned S/N above which a block may belong to a source
    source_open: int = 2  #: radius (binned px) of the opening that removes thin features from the sources
    source_grow: int = 1  #: binned px by which the source mask is grown
    long_source: float = 24.0  #: binned px: sources longer than this and ``thin_ratio`` x longer than wide
    thin_ratio: float = 4.0  #: are treated as (wide) trails, not masked
    detect_nsigma: float = 7.0  #: threshold on the standardised transform
    fit_nsigma: float = 5.0  #: the profile amplitude must exceed this x its error
    min_sigma: float = 0.6  #: px: narrower profiles are pixel defects, not trails
    max_sigma: float = 15.0  #: px
    spike_ratio: float = 4.0  #: a line fading by more than this from a bright source is a diffraction spike
    seg_len: float = 32.0  #: px: segments along the line for the presence test
    seg_nsigma: float = 3.0  #: S/N a segment needs to count as "trail present"
    min_length: float = 64.0  #: px: shortest stretch accepted
    edge_nsigma: float = 0.2  #: mask out to where the trail adds less than this x the sky noise
    pad: float = 0.5  #: px added to the mask's half-width (pixel centre vs pixel edge)
    max_trails: int = 8
    max_candidates: int = 40


@dataclass(frozen=True)
class TrailLine:
    """One detected trail. ``angle`` deg: direction from +x towards +y in [0, 180); ``rho`` px: every point
    (x, y) on the line has ``x sin(angle) - y cos(angle) = rho``; ``x0, y0, x1, y1``: 0-based ends of the
    masked stretch (px), ``length`` px between them; ``sigma`` px: Gaussian sigma of the cross-profile
    (``fwhm`` = 2.355 sigma); ``width`` px: full width of the mask; ``peak`` e-/px: fitted ridge level above
    the sky; ``flux_per_px`` e- per px of length (integral across the profile, peak x sigma x sqrt(2 pi));
    ``mean_sb`` e-/px: mean of SCI - sky over the masked pixels; ``snr``: standardised Hough peak;
    ``profile_snr``: amplitude / error of the profile fit; ``n_pixels``: pixels masked for this line."""

    angle: float
    rho: float
    x0: float
    y0: float
    x1: float
    y1: float
    length: float
    sigma: float
    fwhm: float
    width: float
    peak: float
    flux_per_px: float
    mean_sb: float
    snr: float
    profile_snr: float
    n_pixels: int


@dataclass(frozen=True)
class Trails:
    """Result of :func:`find_trails`: ``mask`` bool (ny, nx), True on trail pixels; ``lines`` the trails, in
    the order found (brightest first); ``n_candidates`` peaks examined (accepted and rejected)."""

    mask: np.ndarray
    lines: list[TrailLine] = field(default_factory=list)
    n_candidates: int = 0


def _verify(chip: Chip, phi: float, r: float, snr: float, p: TrailParams,
            ) -> tuple[TrailLine | None, np.ndarray | None, str]:
    """Refine a candidate line (full-res phi, r) and measure it; (line, mask pixels (y, x), reason)."""
    b = p.bin_size
    dphi = math.pi / chip.n_theta
    half0 = max(16.0, 4.0 * b) + 4.0
    ys, xs = chip.band(phi, r, half0)
    use = chip.usable[ys, xs]
    ys, xs = ys[use], xs[use]
    if ys.size < p.min_length * 4:
        return None, None, "too few usable pixels along the line"
    e = chip.resid[ys, xs].astype(np.float64)
    e = np.minimum(e, np.percentile(e, 99.5))  # cosmic rays
    fx, fy = xs.astype(float), ys.astype(float)
    # rotate about the point of the line nearest the band's centre of mass
    c0, s0 = math.cos(phi), math.sin(phi)
    t0 = -fx.mean() * s0 + fy.mean() * c0
    px, py = r * c0 - t0 * s0, r * s0 + t0 * c0
    best = (-np.inf, 0.0, 0.0)
    for dp in np.linspace(-1.5 * dphi, 1.5 * dphi, 25):
        ph = phi + dp
        d = (fx - px) * math.cos(ph) + (fy - py) * math.sin(ph)
        val, pos = sharpness(d, e, half0 - 4.0)
        if val > best[0]:
            best = (val, ph, pos)
    _, phi, pos = best
    r = px * math.cos(phi) + py * math.sin(phi) + pos

    m = measure(chip, phi, r, p)
    if isinstance(m, str):
        return None, None, m
    for _ in range(2):  # follow the segment centroids (the transform's angle is coarse for short trails)
        if abs(m.phi2 - m.phi) * 0.5 * (m.s_hi - m.s_lo) < 0.05 and abs(m.r2 - m.r) < 0.05:
            break
        m2 = measure(chip, m.phi2, m.r2, p)
        if isinstance(m2, str):
            if chip.defect is not None:  # the refined line is a pixel defect seen at a slant
                return None, None, m2
            break
        m = m2
    phi, r_line, amp, amp_err, sig = m.phi, m.r, m.amp, m.amp_err, m.sig
    s_lo, s_hi = m.s_lo, m.s_hi
    c, s = math.cos(phi), math.sin(phi)
    thresh = p.edge_nsigma * chip.sky_noise
    halfwidth = sig * math.sqrt(2.0 * math.log(m.amp_hi / thresh)) if m.amp_hi > thresh else 0.0
    halfwidth = max(halfwidth, 2.0 * sig) + p.pad

    # the mask (every pixel, usable or not)
    my, mx = chip.band(phi, r_line, halfwidth)
    ma = -mx * s + my * c
    keep = (ma >= s_lo - p.pad) & (ma <= s_hi + p.pad)
    my, mx = my[keep], mx[keep]
    ok = chip.good[my, mx]
    mean_sb = float(np.mean(chip.resid[my, mx][ok])) if ok.any() else float("nan")

    # report in the line-direction convention: angle = phi + 90 deg
    ang = (math.degrees(phi) + 90.0) % 180.0
    s_in = [-np.inf, np.inf]  # where the centre line is on the chip
    for lo_hi in ((r_line * c - (chip.nx - 1)) / s, r_line * c / s) if abs(s) > 1e-12 else (), \
            (-r_line * s / c, (chip.ny - 1 - r_line * s) / c) if abs(c) > 1e-12 else ():
        s_in = [max(s_in[0], min(lo_hi)), min(s_in[1], max(lo_hi))]
    sv0, sv1 = max(s_lo, s_in[0]), min(s_hi, s_in[1])
    if sv0 > sv1:
        sv0 = sv1 = 0.5 * (sv0 + sv1)
    x0, y0 = r_line * c - sv0 * s, r_line * s + sv0 * c
    x1, y1 = r_line * c - sv1 * s, r_line * s + sv1 * c
    line = TrailLine(
        angle=float(ang), rho=float(r_line), x0=float(x0), y0=float(y0), x1=float(x1), y1=float(y1),
        length=float(math.hypot(x1 - x0, y1 - y0)), sigma=float(sig),
        fwhm=float(sig * FWHM_PER_SIGMA), width=float(2.0 * halfwidth), peak=float(amp),
        flux_per_px=float(amp * sig * math.sqrt(2.0 * math.pi)), mean_sb=mean_sb, snr=float(snr),
        profile_snr=float(amp / amp_err), n_pixels=int(my.size))
    return line, np.vstack([my, mx]), "ok"


def find_trails(sci: np.ndarray, var: np.ndarray, dq: np.ndarray, params: TrailParams | None = None) -> Trails:
    """Detect satellite/aircraft trails on a reduced chip and mask them.

    ``sci`` float e- (flat-fielded, sky not subtracted), ``var`` e-^2, ``dq`` uint16 bits of :mod:`wisp.dq`
    (all (ny, nx)). Returns :class:`Trails`: ``mask`` (bool, True on trail pixels: set DQ TRAIL there) and
    the measured lines. Raises ValueError for mismatched shapes or a chip without a usable pixel.
    """
    p = params or TrailParams()
    sci = np.asarray(sci, dtype=np.float32)
    var = np.asarray(var, dtype=np.float32)
    dq = np.asarray(dq)
    if sci.ndim != 2 or var.shape != sci.shape or dq.shape != sci.shape:
        raise ValueError(f"sci, var and dq must be 2-D of one shape; got {sci.shape}, {var.shape}, {dq.shape}")
    chip = Chip(sci, var, dq, p)
    lines: list[TrailLine] = []
    rejected: list[tuple[int, float]] = []
    n_cand = 0
    b = p.bin_size
    while len(lines) < p.max_trails and n_cand < p.max_candidates:
        t, off = chip.transform()
        for it, kr in rejected:
            chip.suppress(t, it, kr)
        found = False
        while n_cand < p.max_candidates:
            it, k = (int(v) for v in np.unravel_index(int(np.argmax(t)), t.shape))
            snr = float(t[it, k])
            if not snr > p.detect_nsigma:
                break
            n_cand += 1
            phi = float(chip.phi[it])
            r_b = chip.r0 + k + off[it, k]
            r_full = b * r_b + 0.5 * (b - 1) * (math.cos(phi) + math.sin(phi))
            line, pix, _reason = _verify(chip, phi, r_full, snr, p)
            if line is not None and pix is not None and chip.trail_mask[pix[0], pix[1]].mean() > 0.5:
                line = None  # the same trail again
            if line is None or pix is None:
                rejected.append((int(it), float(k + off[it, k])))
                chip.suppress(t, int(it), float(k + off[it, k]))
                if chip.defect is not None:
                    dy, dx = chip.band(*chip.defect, 2.0)
                    chip.excluded[dy, dx] = True
                    chip.defect = None
                    found = True  # recompute the transform without it
                    break
                continue
            lines.append(line)
            chip.trail_mask[pix[0], pix[1]] = True
            chip.excluded[pix[0], pix[1]] = True
            found = True
            break
        if not found:
            break
    return Trails(mask=chip.trail_mask.copy(), lines=lines, n_candidates=n_cand)
