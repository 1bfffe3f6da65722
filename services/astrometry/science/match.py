"""Matching detected stars to reference stars projected with an approximate (header) WCS.

1. Propose: for each trial rotation (scale 1) of the brightest references about the chip centre,
   histogram the offsets of every (detection, reference) pair; the true transform piles its pairs into
   one 2x2-bin window while chance pairs spread evenly. The best windows (a few per search, distinct
   shifts) are candidates.
2. Refine each candidate: nearest-neighbour matching with all stars and a shrinking radius, refitting an
   affine transform (rotation, scale, shear, shift) each time.
3. Verify: a candidate counts only if its final pairs (within ``radius_px``) number at least
   ``min_matches``, could not arise by chance (Poisson false-alarm probability below 1e-6 over every
   window and rotation tried, given the star densities), and its transform is sane (scale within
   ``3 * scale_tol``, rotation within the search, shear < 1 %). The best verified candidate wins; none
   verified -> ``InvalidInput`` ``astrometry.no_match`` with the numbers.

Pixel coordinates are 0-based; the affine maps reference (header-WCS) pixels to detected pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import poisson

from wisp.errors import InvalidInput

N_CANDIDATES = 4
FALSE_ALARM = 1e-6


@dataclass(frozen=True)
class Match:
    """One-to-one pairs ``det_index[k] <-> ref_index[k]`` (indices into the inputs), the affine ``transform``
    (2x3, ref px -> det px), its ``rotation_deg`` (counter-clockwise on the pixel grid), ``scale``,
    ``shift_px`` (where the chip centre's reference position lands, minus the centre), residual
    ``rms_px``, the vote ``n_vote`` of the winning candidate, the chance count per vote window
    ``vote_background`` and the chance expectation ``expected_chance`` of the final pairs."""

    det_index: np.ndarray
    ref_index: np.ndarray
    transform: np.ndarray
    rotation_deg: float
    scale: float
    shift_px: tuple[float, float]
    rms_px: float
    n_vote: int
    vote_background: float
    expected_chance: float

    @property
    def n(self) -> int:
        """Number of matched pairs."""
        return int(self.det_index.size)


def apply_affine(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 2x3 affine to 0-based pixel coordinates."""
    return t[0, 0] * x + t[0, 1] * y + t[0, 2], t[1, 0] * x + t[1, 1] * y + t[1, 2]


def _similarity(theta_deg: float, cx: float, cy: float, dx: float, dy: float) -> np.ndarray:
    """Rotation by theta about (cx, cy), then a shift (dx, dy), as a 2x3 affine."""
    c, s = np.cos(np.radians(theta_deg)), np.sin(np.radians(theta_deg))
    rot = np.array([[c, -s], [s, c]])
    return np.hstack([rot, (np.array([cx, cy]) - rot @ [cx, cy] + [dx, dy])[:, None]])


def _vote(dx: np.ndarray, dy: np.ndarray, rx: np.ndarray, ry: np.ndarray, centre: tuple[float, float],
          angles: np.ndarray, max_shift: float, bin_px: float) -> tuple[list[tuple[int, float, float, float]], float]:
    """Candidates (peak count, angle, shift x, shift y), best first, and the mean chance count per window."""
    nbin = int(np.ceil(2.0 * max_shift / bin_px)) + 1
    found: list[tuple[int, float, float, float]] = []
    total_pairs = 0
    for theta in angles:
        px, py = apply_affine(_similarity(theta, *centre, 0.0, 0.0), rx, ry)
        ox = (dx[:, None] - px[None, :]).ravel()
        oy = (dy[:, None] - py[None, :]).ravel()
        ix = np.floor((ox + max_shift) / bin_px).astype(np.int64)
        iy = np.floor((oy + max_shift) / bin_px).astype(np.int64)
        ok = (ix >= 0) & (ix < nbin) & (iy >= 0) & (iy < nbin)
        total_pairs += int(ok.sum())
        hist = np.bincount(iy[ok] * nbin + ix[ok], minlength=nbin * nbin).reshape(nbin, nbin)
        window = (hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]).ravel()
        top = np.argpartition(-window, 1)[:2]
        for k in top[np.lexsort((top, -window[top]))]:
            wy, wx = divmod(int(k), nbin - 1)
            lo_x, lo_y = wx * bin_px - max_shift, wy * bin_px - max_shift
            inside = ok & (ox >= lo_x) & (ox < lo_x + 2 * bin_px) & (oy >= lo_y) & (oy < lo_y + 2 * bin_px)
            if inside.any():
                found.append((int(window[k]), float(theta), float(np.median(ox[inside])),
                              float(np.median(oy[inside]))))
    found.sort(key=lambda c: (-c[0], abs(c[1]), c[2], c[3]))
    distinct: list[tuple[int, float, float, float]] = []
    for cand in found:
        if all(np.hypot(cand[2] - d[2], cand[3] - d[3]) > 2 * bin_px for d in distinct):
            distinct.append(cand)
        if len(distinct) == N_CANDIDATES:
            break
    background = 4.0 * total_pairs / max(len(angles), 1) / (nbin * nbin)
    return distinct, background


def nearest_pairs(px: np.ndarray, py: np.ndarray, tree: cKDTree, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest pairs (index into px/py, index into the tree's points) within ``radius``; the
    closest pair wins any conflict. Sorted by the first index."""
    if px.size == 0:
        empty = np.zeros(0, dtype=int)
        return empty, empty
    dist, det = tree.query(np.column_stack([px, py]), k=1, distance_upper_bound=radius)
    ref = np.flatnonzero(np.isfinite(dist))
    if ref.size == 0:
        return ref, ref
    order = np.lexsort((ref, dist[ref]))
    ref, det = ref[order], det[ref[order]]
    _, first = np.unique(det, return_index=True)
    keep = np.sort(first)
    ref, det = ref[keep], det[keep]
    order = np.argsort(ref, kind="stable")
    return ref[order], det[order]


def _fit_affine(rx: np.ndarray, ry: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    design = np.column_stack([rx, ry, np.ones_like(rx)])
    coef = np.linalg.lstsq(design, np.column_stack([dx, dy]), rcond=None)[0]
    return np.asarray(coef.T)


def _refine(transform: np.ndarray, rx: np.ndarray, ry: np.ndarray, tree: cKDTree, start: float,
            radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrinking-radius nearest-neighbour matching with affine refits; (transform, ref idx, det idx)."""
    det_xy = tree.data
    radius = start
    for _ in range(16):
        px, py = apply_affine(transform, rx, ry)
        ri, di = nearest_pairs(px, py, tree, radius)
        if ri.size >= 4:
            transform = _fit_affine(rx[ri], ry[ri], det_xy[di, 0], det_xy[di, 1])
        if radius <= radius_px:
            break
        radius = max(radius_px, radius / 1.5)
    px, py = apply_affine(transform, rx, ry)
    ri, di = nearest_pairs(px, py, tree, radius_px)
    return transform, ri, di


def _shape_of(t: np.ndarray) -> tuple[float, float, float]:
    """(rotation deg, scale, shear) of an affine's linear part."""
    lin = t[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    rot = float(np.degrees(np.arctan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1])))
    sv = np.linalg.svd(lin, compute_uv=False)
    return rot, scale, float(sv[0] / max(sv[1], 1e-12) - 1.0)


def match_stars(det_x: np.ndarray, det_y: np.ndarray, det_flux: np.ndarray, ref_x: np.ndarray,
                ref_y: np.ndarray, ref_mag: np.ndarray, *, shape: tuple[int, int], max_shift_px: float,
                max_rot_deg: float = 3.0, rot_step_deg: float = 0.5, scale_tol: float = 0.01,
                n_bright: int = 50, radius_px: float = 2.0, min_matches: int = 8) -> Match:
    """Match detections (0-based px, flux) to references projected with the header WCS (0-based px, mag).

    ``shape`` (ny, nx) of the chip; the true transform may shift the references by up to ``max_shift_px``
    and rotate them by up to ``max_rot_deg`` (grid of ``rot_step_deg``), with a scale within ``scale_tol``.
    Raises ``InvalidInput`` ``astrometry.no_match`` (with the numbers) when no transform is credible.
    """
    ny, nx = shape
    det_x, det_y = np.asarray(det_x, float), np.asarray(det_y, float)
    ref_x, ref_y = np.asarray(ref_x, float), np.asarray(ref_y, float)
    numbers = {"n_detected": int(det_x.size), "n_reference": int(ref_x.size), "min_matches": min_matches}
    if det_x.size < min_matches or ref_x.size < min_matches:
        raise InvalidInput(f"no astrometric match: {det_x.size} detected and {ref_x.size} reference stars, need "
                           f"{min_matches} of each", code="astrometry.no_match", **numbers)
    diag = float(np.hypot(nx, ny))
    bin_px = float(np.clip((scale_tol + np.radians(rot_step_deg) / 2.0) * diag / 2.0 + 4.0, 6.0, 64.0))
    reach = max_shift_px + diag * (scale_tol + np.radians(max_rot_deg))
    near = np.flatnonzero((ref_x > -reach) & (ref_x < nx - 1 + reach) & (ref_y > -reach) & (ref_y < ny - 1 + reach))
    d_sel = np.lexsort((det_x, -np.asarray(det_flux, float)))[:n_bright]
    n_ref = int(np.ceil(2.0 * d_sel.size * (nx + 2 * reach) * (ny + 2 * reach) / float(nx * ny)))
    r_sel = near[np.lexsort((near, np.asarray(ref_mag, float)[near]))][:n_ref]
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    angles = np.arange(-max_rot_deg, max_rot_deg + 1e-9, rot_step_deg)
    search = max_shift_px + 2 * bin_px
    candidates, background = _vote(det_x[d_sel], det_y[d_sel], ref_x[r_sel], ref_y[r_sel], centre, angles,
                                   search, bin_px)
    trials = float((2.0 * search / bin_px) ** 2 * angles.size)
    tree = cKDTree(np.column_stack([det_x, det_y]))
    rx, ry = ref_x[near], ref_y[near]
    best: tuple[int, np.ndarray, np.ndarray, np.ndarray, int, float] | None = None
    tried = []
    for peak, theta, sx, sy in candidates:
        transform, ri, di = _refine(_similarity(theta, *centre, sx, sy), rx, ry, tree, 2.0 * bin_px, radius_px)
        px, py = apply_affine(transform, rx, ry)
        on_chip = int(((px > 0) & (px < nx - 1) & (py > 0) & (py < ny - 1)).sum())
        expected = det_x.size * max(on_chip, 1) / float(nx * ny) * np.pi * radius_px**2
        chance = float(poisson.sf(ri.size - 1, expected)) * trials if ri.size else 1.0
        rot, scale, shear = _shape_of(transform)
        sane = abs(scale - 1.0) <= 3 * scale_tol and abs(rot) <= max_rot_deg + rot_step_deg and shear < 0.01
        tried.append(f"{ri.size} pairs (vote {peak}, chance {chance:.2g}{'' if sane else ', insane transform'})")
        if ri.size >= min_matches and chance < FALSE_ALARM and sane and (best is None or ri.size > best[0]):
            best = (int(ri.size), transform, ri, di, peak, expected)
    if best is None:
        raise InvalidInput(
            f"no astrometric match: {len(candidates)} candidate transforms from {d_sel.size} detections x "
            f"{r_sel.size} references ({background:.2f} chance pairs per vote window) gave "
            f"{'; '.join(tried) or 'nothing'}; need {min_matches} pairs within {radius_px} px",
            code="astrometry.no_match", vote_background=round(background, 3),
            best_pairs=max((int(t.split()[0]) for t in tried), default=0), **numbers)
    _, transform, ri, di, peak, expected = best
    px, py = apply_affine(transform, rx, ry)
    resid = np.hypot(px[ri] - det_x[di], py[ri] - det_y[di])
    rot, scale, _ = _shape_of(transform)
    cx, cy = apply_affine(transform, np.array(centre[0]), np.array(centre[1]))
    order = np.argsort(di, kind="stable")
    return Match(det_index=di[order], ref_index=near[ri][order], transform=transform, rotation_deg=rot,
                 scale=scale, shift_px=(float(cx - centre[0]), float(cy - centre[1])),
                 rms_px=float(np.sqrt(np.mean(resid**2))), n_vote=peak, vote_background=background,
                 expected_chance=float(expected))
