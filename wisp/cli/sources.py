"""``wisp sources --ra --dec --radius``: cone search in the source catalogues."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wisp.cli.frames import print_table
from wisp.client import WispClient, gateway_url


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("sources", help="cone search in the source catalogues")
    p.add_argument("--ra", type=float, required=True, help="centre RA (deg)")
    p.add_argument("--dec", type=float, required=True, help="centre Dec (deg)")
    p.add_argument("--radius", type=float, required=True, help="radius (deg)")
    p.add_argument("--kind", choices=("catalog", "coadd_catalog", "any"), default="any")
    p.add_argument("--filter")
    p.add_argument("--mag-max", type=float, help="only sources brighter than this (MAG_AUTO)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    url = gateway_url(args.gateway)
    with WispClient(url) as client:
        answer = client.sources(args.ra, args.dec, args.radius, kind=args.kind, filter=args.filter,
                                mag_max=args.mag_max, limit=args.limit)
    if args.json:
        json.dump(answer, sys.stdout, indent=2)
        print()
        return 0
    rows = [{**r, "ra_deg": f"{r['ra_deg']:.6f}", "dec_deg": f"{r['dec_deg']:.6f}",
             "mag": "" if r["mag"] is None else f"{r['mag']:.3f}", "distance_arcsec": f"{r['distance_arcsec']:.2f}"}
            for r in answer["sources"]]
    print_table(rows, ("ra_deg", "dec_deg", "mag", "filter", "kind", "distance_arcsec", "product_id"))
    print(f"{len(rows)} of {answer['total']} sources")
    return 0
