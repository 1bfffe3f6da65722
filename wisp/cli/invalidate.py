"""``wisp invalidate ID --reason ...``, ``wisp reprocess [ID ...]`` and ``wisp job ID``: mark a product bad,
remake what became outdated, follow the job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from wisp.client import WispClient, gateway_url
from wisp.pipeline.params import parse_assignment


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "invalidate", help="mark a product bad; every product derived from it becomes outdated")
    p.add_argument("product_id")
    p.add_argument("--reason", required=True, help="why it is bad (recorded with it)")
    _common(p, _invalidate)
    p = sub.add_parser("reprocess", help="remake outdated products (default: all of them) as one job")
    p.add_argument("product_ids", nargs="*", help="outdated products to remake (default: every outdated one)")
    p.add_argument("--param", action="append", default=[], metavar="STAGE.NAME=VALUE",
                   help="parameter override for every product of the job, e.g. reduce.cr_sigclip=5 (repeatable)")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="follow the job for up to S seconds")
    _common(p, _reprocess)
    p = sub.add_parser("job", help="a job's progress: what it remade and what is pending")
    p.add_argument("job_id")
    _common(p, _job)


def _common(p: argparse.ArgumentParser, func: Any) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.set_defaults(func=func)


def _dump(doc: Any) -> int:
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 0


def _invalidate(args: argparse.Namespace) -> int:
    with WispClient(gateway_url(args.gateway)) as client:
        answer = client.invalidate(args.product_id, args.reason)
    if args.json:
        return _dump(answer)
    print(f"{answer['product_id']} ({answer['kind']}) marked bad: {answer['reason']}")
    print(f"  {len(answer['outdated'])} derived products now outdated" + (":" if answer["outdated"] else ""))
    for pid in answer["outdated"]:
        print(f"    {pid}")
    return 0


def _print_job(job: dict[str, Any]) -> None:
    print(f"{job['id']}: {job['kind']} {job['status']} ({len(job['remade'])} remade, {len(job['pending'])} pending, "
          f"{len(job['extra'])} extra)")
    for r in job["remade"]:
        where = " ".join(str(r[k]) for k in ("chip", "filter", "field") if r.get(k))
        print(f"    {r['stage']:<14} {r['outdated']} -> {r['by']}  {where}")
    for pid in job["pending"]:
        print(f"    pending        {pid}")
    for pid in job["extra"]:
        print(f"    extra          {pid}")


def _reprocess(args: argparse.Namespace) -> int:
    with WispClient(gateway_url(args.gateway)) as client:
        params: dict[str, dict[str, Any]] = {}
        for text in args.param:
            stage, name, value = parse_assignment(text)
            params.setdefault(stage, {})[name] = value
        answer = client.reprocess(args.product_ids or None, params or None)
        if args.wait > 0:
            deadline = time.monotonic() + args.wait
            job = client.job(answer["job_id"])
            while job["status"] == "running" and time.monotonic() < deadline:
                time.sleep(1.0)
                job = client.job(answer["job_id"])
            answer["job"] = job
    if args.json:
        return _dump(answer)
    print(f"job {answer['job_id']}: {len(answer['outdated'])} outdated products, {len(answer['roots'])} to remake "
          f"first, {len(answer['commands'])} commands sent")
    for cmd in answer["commands"]:
        print(f"    {cmd['stage']:<14} {cmd['product_id']} replaces {cmd['replaces']}")
    for pid, why in answer["blocked"].items():
        print(f"    blocked {pid}: {why}")
    if "job" in answer:
        _print_job(answer["job"])
        return 0 if answer["job"]["status"] == "succeeded" else 1
    return 0


def _job(args: argparse.Namespace) -> int:
    with WispClient(gateway_url(args.gateway)) as client:
        job = client.job(args.job_id)
    if args.json:
        return _dump(job)
    _print_job(job)
    return 0
