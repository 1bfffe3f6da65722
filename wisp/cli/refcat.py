"""``wisp refcat import PATH``: make a reference catalogue product from a FITS, CSV or Parquet table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wisp.client import WispClient, gateway_url


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("refcat", help="reference catalogues")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = actions.add_parser("import", help="import a table (columns ra, dec [deg], optional pmra/pmdec "
                                            "[mas/yr], magnitudes per band)")
    imp.add_argument("path", type=Path)
    imp.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    url = gateway_url(args.gateway)
    with WispClient(url) as client:
        answer = client.import_refcat(args.path)
    print(f"{answer['status']}: {answer['product_id']} — {answer['n_stars']} stars in {answer['n_partitions']} "
          f"sky partitions, bands {', '.join(answer['bands']) or 'none'}")
    return 0
