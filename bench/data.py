"""The bench's inputs: simulated nights (cached in ``bench/.data/``) and readers for their truth.

Two nights are made with ``wisp.sim.simulate_night`` and kept until their config changes:
``night/`` is the default ``SimConfig()`` (4 chips of 1024², 5 biases, 3 flats × (g, r), 5 dithers ×
(g, r)); ``bias20/`` is the same camera with 20 biases and nothing else (the simulator derives every
random stream from the seed and a name, so the camera and its truth bias are the same in both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from wisp.sim import SimConfig, simulate_night

BENCH = Path(__file__).resolve().parent
DATA = BENCH / ".data"
WORK = BENCH / ".work"


@dataclass(frozen=True)
class ChipInfo:
    """Per-chip camera truth from ``night.json``: gain e-/ADU, read noise e-, bias level and saturation ADU."""

    chip_id: int
    extname: str
    gain: float
    read_noise: float
    bias_level: float
    saturate: float


class Night:
    """One simulated night on disk, with lazy accessors for its raw files and truth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw_dir = root / "raw"
        self.truth_dir = root / "truth"

    @cached_property
    def doc(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.truth_dir / "night.json").read_text())
        return result

    @property
    def config(self) -> SimConfig:
        return SimConfig.from_dict(self.doc["config"])

    @property
    def chips(self) -> list[ChipInfo]:
        return [ChipInfo(c["chip_id"], c["extname"], c["gain"], c["read_noise"], c["bias_level"], c["saturate"])
                for c in self.doc["camera"]["chips"]]

    def chip(self, extname: str) -> ChipInfo:
        return next(c for c in self.chips if c.extname == extname)

    def exposures(self, imagetyp: str, filt: str | None = None) -> list[dict[str, Any]]:
        """Exposure records (``night.json``) of one type (``BIAS``, ``FLAT``, ``OBJECT``), optionally one filter."""
        return [e for e in self.doc["exposures"]
                if e["imagetyp"] == imagetyp and (filt is None or e["filter"] == filt)]

    def raw(self, exposure: dict[str, Any]) -> Path:
        return self.raw_dir / str(exposure["file"])

    def truth(self, exposure: dict[str, Any]) -> Path:
        return self.truth_dir / str(exposure["truth_file"])

    def truth_bias(self, extname: str) -> np.ndarray:
        """Noise-free bias (ADU) of a chip including the overscan columns (add an exposure's DRIFT)."""
        return np.asarray(fits.getdata(self.truth_dir / "bias.fits", extname), dtype=np.float64)

    def truth_flat(self, filt: str, extname: str) -> np.ndarray:
        return np.asarray(fits.getdata(self.truth_dir / f"flat_{filt}.fits", extname), dtype=np.float64)

    def truth_bpm(self, extname: str) -> np.ndarray:
        return np.asarray(fits.getdata(self.truth_dir / "bpm.fits", extname))

    def drift(self, exposure: dict[str, Any], extname: str) -> float:
        return float(fits.getheader(self.truth(exposure), extname)["DRIFT"])

    def chip_truth(self, exposure: dict[str, Any], extname: str) -> tuple[np.ndarray, fits.Header]:
        """The truth mask (bits 1 CR, 2 trail, 4 saturated, 8 bleed) and its header (DRIFT, SKY*, true WCS)."""
        with fits.open(self.truth(exposure)) as hdul:
            return np.asarray(hdul[extname].data), hdul[extname].header.copy()

    def true_wcs(self, exposure: dict[str, Any], extname: str) -> WCS:
        return WCS(fits.getheader(self.truth(exposure), extname))

    def true_wcs_header(self, exposure: dict[str, Any], extname: str) -> fits.Header:
        """Only the WCS cards of the chip's true (TAN-SIP) WCS."""
        hdr = fits.getheader(self.truth(exposure), extname)
        return WCS(hdr).to_header(relax=True)

    def exposure_header(self, exposure: dict[str, Any]) -> fits.Header:
        return fits.getheader(self.truth(exposure), 0)

    def sources(self, exposure: dict[str, Any]) -> Table:
        """The truth SOURCES table of a science exposure (one row per source and chip it touches)."""
        return Table.read(self.truth(exposure), hdu="SOURCES")

    @property
    def refcat(self) -> Path:
        return self.root / "refcat.fits"


def _ensure(root: Path, config: SimConfig, log: Any) -> Night:
    stamp = root / "truth" / "night.json"
    want = json.loads(json.dumps(config.to_dict()))
    if stamp.exists():
        have = json.loads(stamp.read_text()).get("config")
        n_raw = len(list((root / "raw").glob("sim_*.fits")))
        if have == want and n_raw == config.n_exposures:
            return Night(root)
    log(f"simulating {root.name}: {config.n_exposures} exposures of {config.n_chips} chips into {root}")
    simulate_night(config, root)
    return Night(root)


def default_config() -> SimConfig:
    return SimConfig()


def bias_config(n_bias: int) -> SimConfig:
    """The default camera with only ``n_bias`` biases (same camera, same truth bias)."""
    return SimConfig(n_bias=n_bias, n_flats_per_filter=0, n_dither_per_field_filter=0)


def ensure_nights(log: Any = print, n_bias_big: int = 20) -> tuple[Night, Night]:
    """The default night and a biases-only night with ``n_bias_big`` biases, simulated if not cached."""
    DATA.mkdir(parents=True, exist_ok=True)
    night = _ensure(DATA / "night", default_config(), log)
    biases = _ensure(DATA / f"bias{n_bias_big}", bias_config(n_bias_big), log)
    return night, biases
