"""``wisp why ID``: which master bias, flat, bad-pixel map (and dark) a frame got and why, or why none."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wisp.client import WispClient, gateway_url


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("why", help="explain the calibrations chosen for a frame")
    p.add_argument("entity_id", help="a raw frame id, or a product made from one (e.g. a reduced frame)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.set_defaults(func=run)


def _candidates(choice: dict[str, Any]) -> None:
    for cand in choice["candidates"]:
        if cand["verdict"] != "chosen":
            print(f"      not {cand['id']}: {cand['reason']}")


def run(args: argparse.Namespace) -> int:
    url = gateway_url(args.gateway)
    with WispClient(url) as client:
        answer = client.why(args.entity_id)
    if args.json:
        json.dump(answer, sys.stdout, indent=2)
        print()
        return 0
    f = answer["frame"]
    print(f"{f['id']}: {f['obstype']} frame of {f['instrument']} {f['chip']}"
          + (f" in {f['filter']}" if f["filter"] else "") + f", taken {f['date_obs']}")
    if answer["recorded"]:
        print("  used when it was reduced:")
        for choice in answer["recorded"]:
            print(f"    {choice['kind']}: {choice['reason']}")
            _candidates(choice)
    else:
        print("  not reduced yet")
    print("  the choice today:")
    for choice in answer["now"]:
        print(f"    {choice['kind']}: {choice['reason']}")
        _candidates(choice)
    return 0
