"""``wisp sim OUTDIR``: simulate a night of raw "simcam" exposures with their truth (see wisp.sim)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from wisp.errors import InvalidInput
from wisp.sim import SimConfig, simulate_night


def _chip_size(text: str) -> tuple[int, int]:
    """'1024' -> (1024, 1024); '2048x4096' -> (2048, 4096) as (nx, ny)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"chip size {text!r} is not NX or NXxNY") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"chip size {text!r} is not NX or NXxNY")
    return parts[0], parts[-1]


def register(sub: Any) -> None:
    """Add the ``sim`` sub-command to an argparse sub-parser collection."""
    defaults = SimConfig()
    p: argparse.ArgumentParser = sub.add_parser(
        "sim", help="simulate a night of raw exposures plus truth",
        description="Simulate a night: OUTDIR/raw/*.fits, OUTDIR/refcat.fits and OUTDIR/truth/.")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    p.add_argument("--chips", type=int, default=defaults.n_chips, help="number of CCDs, 1-16 (default %(default)s)")
    p.add_argument("--chip-size", type=_chip_size, default=(defaults.chip_nx, defaults.chip_ny),
                   metavar="NX[xNY]", help=f"data pixels per chip (default {defaults.chip_nx}x{defaults.chip_ny})")
    p.add_argument("--exposures", type=int, default=defaults.n_dither_per_field_filter,
                   help="science exposures per field and filter (default %(default)s)")
    p.add_argument("--filters", default=",".join(defaults.filters), help="comma-separated (default %(default)s)")
    p.add_argument("--bias", type=int, default=defaults.n_bias, help="bias frames (default %(default)s)")
    p.add_argument("--flats", type=int, default=defaults.n_flats_per_filter,
                   help="dome flats per filter (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the command-line options describe (defaults for everything else)."""
    filters = tuple(f.strip() for f in args.filters.split(",") if f.strip())
    nx, ny = args.chip_size
    return replace(SimConfig(), seed=args.seed, n_chips=args.chips, chip_nx=nx, chip_ny=ny,
                   n_dither_per_field_filter=args.exposures, filters=filters, n_bias=args.bias,
                   n_flats_per_filter=args.flats)


def run(args: argparse.Namespace) -> int:
    """Simulate, printing one line per exposure (unless --quiet) and a summary; returns the exit status."""
    config = config_from_args(args)
    if args.outdir.exists() and not args.outdir.is_dir():
        raise InvalidInput(f"{args.outdir} exists and is not a directory", code="sim.outdir")
    started = time.monotonic()

    def progress(done: int, total: int, name: str) -> None:
        if not args.quiet:
            print(f"[{done:>{len(str(total))}}/{total}] {name}  {time.monotonic() - started:6.1f} s",
                  file=sys.stderr, flush=True)

    result = simulate_night(config, args.outdir, progress)
    counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(result.counts.items()))
    print(f"simulated {len(result.raw_files)} exposures ({counts}) of {config.n_chips} chips "
          f"in {time.monotonic() - started:.1f} s")
    print(f"output: {result.outdir.resolve()} ({result.n_bytes / 1e6:.1f} MB; raw/, refcat.fits, truth/)")
    return 0
