"""``wisp lineage ID``: what went into a product (or, with ``--down``, everything derived from it)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wisp.client import WispClient, gateway_url


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("lineage", help="show the lineage of a product, frame or exposure")
    p.add_argument("entity_id")
    p.add_argument("--down", action="store_true", help="what was derived from it (default: what went into it)")
    p.add_argument("--json", action="store_true", help="the whole tree as JSON")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.set_defaults(func=run)


def _label(node: dict[str, Any]) -> str:
    bits = [node.get("kind", "")]
    bits += [f"{k}={node[k]}" for k in ("instrument", "chip", "filter", "field", "obstype", "filename")
             if node.get(k)]
    role = f"[{node['role']}] " if node.get("role") else (f"[{node['stage']}] " if node.get("stage") else "")
    return f"{role}{node['id']}  {' '.join(b for b in bits if b)}"


def print_tree(node: dict[str, Any], indent: int = 0) -> None:
    print("  " * indent + _label(node) + ("  (see above)" if node.get("repeated") else ""))
    for child in node.get("inputs", []) + node.get("derived", []):
        print_tree(child, indent + 1)


def run(args: argparse.Namespace) -> int:
    url = gateway_url(args.gateway)
    with WispClient(url) as client:
        answer = client.lineage(args.entity_id, "down" if args.down else "up")
    if args.json:
        json.dump(answer, sys.stdout, indent=2)
        print()
        return 0
    print_tree(answer["tree"])
    kinds: dict[str, int] = {}
    for node in answer["nodes"][1:]:
        kinds[node.get("kind", "?")] = kinds.get(node.get("kind", "?"), 0) + 1
    print("— " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return 0
