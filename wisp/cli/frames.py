"""``wisp frames`` (query raw frames) and ``wisp frame ID`` (one frame's metadata)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wisp.client import WispClient, gateway_url

COLUMNS = ("id", "instrument", "chip", "obstype", "filter", "exptime_s", "date_obs", "object")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("frames", help="query raw frames")
    p.add_argument("--instrument")
    p.add_argument("--chip")
    p.add_argument("--filter")
    p.add_argument("--type", dest="obstype", help="bias, dark, flat, science or other")
    p.add_argument("--from", dest="date_from", help="DATE-OBS >= this (ISO 8601, UTC)")
    p.add_argument("--to", dest="date_to", help="DATE-OBS < this (ISO 8601, UTC)")
    p.add_argument("--object")
    p.add_argument("--ra", type=float, help="cone centre RA (deg)")
    p.add_argument("--dec", type=float, help="cone centre Dec (deg)")
    p.add_argument("--radius", type=float, help="cone radius (deg)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--summary", action="store_true", help="counts by type, filter and chip")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.set_defaults(func=run)
    q: argparse.ArgumentParser = sub.add_parser("frame", help="show one raw frame's metadata")
    q.add_argument("frame_id")
    q.add_argument("--gateway", default=None)
    q.set_defaults(func=run_one)


def _client(args: argparse.Namespace) -> WispClient:
    return WispClient(gateway_url(args.gateway))


def print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """A plain aligned text table."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def run(args: argparse.Namespace) -> int:
    filters = {k: getattr(args, k) for k in ("instrument", "chip", "filter", "obstype", "date_from",
                                             "date_to", "object", "ra", "dec", "radius")}
    with _client(args) as client:
        if args.summary:
            groups = client.frame_summary(**filters)
            if args.json:
                json.dump(groups, sys.stdout, indent=2)
                print()
            else:
                print_table(groups, ("instrument", "obstype", "filter", "chip", "frames"))
                print(f"total: {sum(g['frames'] for g in groups)} frames")
            return 0
        page = client.frames(**filters, limit=args.limit)
    if args.json:
        json.dump(page, sys.stdout, indent=2)
        print()
    else:
        print_table(page["frames"], COLUMNS)
        print(f"{len(page['frames'])} of {page['total']} frames")
    return 0


def run_one(args: argparse.Namespace) -> int:
    with _client(args) as client:
        json.dump(client.frame(args.frame_id), sys.stdout, indent=2)
    print()
    return 0
