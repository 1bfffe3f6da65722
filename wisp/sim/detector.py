"""Fixed-for-the-night detector truth per chip: bias structure, defects (hot/cold pixels, bad columns),
dark current, the true flat field per filter and (optionally) fringe patterns. Pure functions; arrays are
numpy ``[y, x]`` with 0-based indices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wisp.sim.camera import Camera, Chip
from wisp.sim.config import SimConfig, stream

BPM_HOT = 1
BPM_COLD = 2
BPM_BADCOL = 4


@dataclass(frozen=True)
class ChipDetector:
    """Detector truth of one chip.

    ``bias``: float32 (ny, nx + overscan), ADU, the noise-free raw value of a zero-second exposure
    (level + row/column gradients + fixed column pattern in the data section + hot-pixel and hot-column
    offsets; the overscan carries the level and the row term only). ``flats``: float32 (ny, nx) true
    relative response per filter (1 = nominal QE on the optical axis). ``bpm``: uint8 (ny, nx) with bits
    ``BPM_HOT | BPM_COLD | BPM_BADCOL``. Hot pixels: 0-based ``hot_x, hot_y``, dark current ``hot_dark``
    (e-/s) and bias offset ``hot_offset`` (ADU). Bad columns: ``badcol_x``, first bad row
    ``badcol_y0`` (bad up to the top), ``badcol_kind`` ('dead': flat response ``badcol_value``;
    'hot': bias offset ``badcol_value`` ADU). ``dark_rate``: uniform dark current (e-/s/px) on top of the
    hot pixels'. ``fringes``: per fringe filter, the fringe pattern per unit sky (float32 (ny, nx), zero
    mean, max |pattern| = 1; fringe e- = amplitude x sky e- x pattern).
    """

    bias: np.ndarray
    flats: dict[str, np.ndarray]
    bpm: np.ndarray
    hot_x: np.ndarray
    hot_y: np.ndarray
    hot_dark: np.ndarray
    hot_offset: np.ndarray
    badcol_x: np.ndarray
    badcol_y0: np.ndarray
    badcol_kind: tuple[str, ...]
    badcol_value: np.ndarray
    dark_rate: float = 0.0
    fringes: dict[str, np.ndarray] = field(default_factory=dict)

    def dark_image(self, exptime: float) -> np.ndarray:
        """Expected dark charge (e-) for an exposure of ``exptime`` s: ``dark_rate`` everywhere plus the hot
        pixels' dark current (float64, ny x nx)."""
        dark = np.full(self.bpm.shape, self.dark_rate * exptime)
        dark[self.hot_y, self.hot_x] += self.hot_dark * exptime
        return dark


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def bias_structure(config: SimConfig, chip: Chip, rng: np.random.Generator) -> np.ndarray:
    """Noise-free bias (ADU, float64, ny x (nx + overscan)) without defects; data-section mean = level."""
    ny, nx, nos = config.chip_ny, config.chip_nx, config.overscan
    y = np.arange(ny, dtype=float)[:, None]
    x = np.arange(nx, dtype=float)[None, :]
    row = rng.uniform(-3.0, 3.0) * (y / (ny - 1) - 0.5) + rng.uniform(2.0, 8.0) * np.exp(-y / 40.0)
    col = rng.uniform(-2.0, 2.0) * (x / (nx - 1) - 0.5) + rng.normal(0.0, 0.8, (1, nx))
    data = row + col
    bias = np.empty((ny, nx + nos))
    offset = chip.bias_level - data.mean()
    bias[:, :nx] = data + offset
    bias[:, nx:] = row + offset
    return bias


def _dust(rng: np.random.Generator, n: int, nx: int, ny: int) -> np.ndarray:
    """Multiplicative dust-donut attenuation (ny x nx): soft annuli 10-35 px in radius, 1-5 % deep."""
    att = np.ones((ny, nx))
    for _ in range(n):
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        r_out = rng.uniform(10.0, 35.0)
        r_in, depth = 0.45 * r_out, rng.uniform(0.01, 0.05)
        xa, xb = max(0, int(cx - r_out - 6)), min(nx, int(cx + r_out + 7))
        ya, yb = max(0, int(cy - r_out - 6)), min(ny, int(cy + r_out + 7))
        yy, xx = np.mgrid[ya:yb, xa:xb]
        r = np.hypot(xx - cx, yy - cy)
        ring = 1.0 / (1.0 + np.exp(-(r_out - r) / 1.5)) / (1.0 + np.exp(-(r - r_in) / 1.5))
        att[ya:yb, xa:xb] *= 1.0 - depth * ring
    return att


def fringe_pattern(rng: np.random.Generator, nx: int, ny: int) -> np.ndarray:
    """An interference-like fringe pattern (float32 (ny, nx), zero mean, max |value| = 1): the sum of three
    cosine waves of 18-40 px period whose phase also grows quadratically about a point of the chip (curved
    fringes whose spacing changes by up to ~1.7x; the phase gradient never vanishes on the chip)."""
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    size = float(max(nx, ny))
    pattern = np.zeros((ny, nx))
    for _ in range(3):
        period, angle = rng.uniform(18.0, 40.0), rng.uniform(0.0, np.pi)
        xc, yc = rng.uniform(0.0, nx), rng.uniform(0.0, ny)
        kappa = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35)
        weight, phase = rng.uniform(0.5, 1.0), rng.uniform(0.0, 2.0 * np.pi)
        order = (x * np.cos(angle) + y * np.sin(angle)) / period \
            + kappa * ((x - xc) ** 2 + (y - yc) ** 2) / (period * size)
        pattern += weight * np.cos(2.0 * np.pi * order + phase)
    pattern -= pattern.mean()
    return (pattern / np.abs(pattern).max()).astype(np.float32)


def build_detector(config: SimConfig, camera: Camera, chip: Chip) -> ChipDetector:
    """Draw the night's bias structure, defects and flats for one chip (deterministic per seed and chip)."""
    rng = stream(config.seed, "detector", chip.chip_id)
    nx, ny = camera.nx, camera.ny
    bias = bias_structure(config, chip, rng)
    bpm = np.zeros((ny, nx), dtype=np.uint8)

    n_hot = max(1, round(config.hot_pixel_fraction * nx * ny))
    n_cold = max(1, round(config.cold_pixel_fraction * nx * ny))
    flat_idx = rng.choice(nx * ny, n_hot + n_cold, replace=False)
    hot_y, hot_x = np.divmod(flat_idx[:n_hot], nx)
    cold_y, cold_x = np.divmod(flat_idx[n_hot:], nx)
    hot_dark = _log_uniform(rng, 1.0, 300.0, n_hot)
    hot_offset = _log_uniform(rng, 5.0, 500.0, n_hot)
    bias[hot_y, hot_x] += hot_offset
    bpm[hot_y, hot_x] |= BPM_HOT
    bpm[cold_y, cold_x] |= BPM_COLD
    response = np.ones((ny, nx))
    response[cold_y, cold_x] = rng.uniform(0.05, 0.6, n_cold)

    badcol_x = rng.choice(np.arange(10, nx - 10), config.bad_columns, replace=False)
    badcol_y0 = rng.integers(0, ny // 2, config.bad_columns)
    kinds = tuple("dead" if k % 2 == 0 else "hot" for k in range(config.bad_columns))
    values = np.array([rng.uniform(0.0, 0.3) if k == "dead" else rng.uniform(20.0, 150.0) for k in kinds])
    for x, y0, kind, value in zip(badcol_x, badcol_y0, kinds, values, strict=True):
        if kind == "dead":
            response[y0:, x] *= value
        else:
            bias[y0:, x] += value
        bpm[y0:, x] |= BPM_BADCOL

    prnu = 1.0 + 0.01 * rng.standard_normal((ny, nx))
    base = response * prnu * _dust(rng, config.dust_per_chip, nx, ny)
    u, v = camera.focal_plane(chip, np.arange(nx, dtype=float)[None, :], np.arange(ny, dtype=float)[:, None])
    rho2 = (u**2 + v**2) / camera.r_corner**2
    flats = {}
    for filt in config.filters:
        frng = stream(config.seed, "flat", filt, chip.chip_id)
        illum = stream(config.seed, "illumination", filt).uniform(-0.01, 0.01, 2)
        shape = (1.0 - config.vignetting * rho2) * (1.0 + (illum[0] * u + illum[1] * v) / camera.r_corner)
        colour = 1.0 + 0.004 * frng.standard_normal((ny, nx))
        flats[filt] = (chip.qe[filt] * shape * base * colour).astype(np.float32)

    # optional extras draw from their own streams, so that they change nothing else
    fringes = {filt: fringe_pattern(stream(config.seed, "fringe", filt, chip.chip_id), nx, ny)
               for filt in config.fringe_filters}
    return ChipDetector(
        bias=bias.astype(np.float32), flats=flats, bpm=bpm,
        hot_x=hot_x, hot_y=hot_y, hot_dark=hot_dark, hot_offset=hot_offset,
        badcol_x=badcol_x, badcol_y0=badcol_y0, badcol_kind=kinds, badcol_value=values,
        dark_rate=config.dark_rate, fringes=fringes,
    )
