"""The Wisp night simulator: raw "simcam" exposures of a night plus the exact truth behind every pixel.

``simulate_night(SimConfig(), outdir)`` writes ``outdir/raw/sim_*.fits``, ``outdir/refcat.fits`` and
``outdir/truth/``; see ``wisp/sim/README.md`` for the file formats, units and conventions.
"""

from wisp.sim.config import FILTERS, FilterSpec, SimConfig, Site
from wisp.sim.night import Progress, SimResult, simulate_night

__all__ = ["FILTERS", "FilterSpec", "Progress", "SimConfig", "SimResult", "Site", "simulate_night"]
