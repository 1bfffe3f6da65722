"""``wisp ingest PATH...``: upload files and folders to the gateway at ``WISP_GATEWAY_URL``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wisp.client import WispClient, gateway_url
from wisp.errors import InvalidInput, WispError
from wisp.fitsio import fits_files


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ingest", help="upload raw FITS files (and the FITS files in folders) through the gateway")
    p.add_argument("paths", nargs="+", type=Path, help="files or folders (folders: *.fits/.fit/.fts[.gz|.fz])")
    p.add_argument("--json", action="store_true", help="print one JSON entry per file on stdout")
    p.add_argument("--gateway", default=None, help="gateway URL (default $WISP_GATEWAY_URL)")
    p.add_argument("--retry-for", type=float, default=120.0,
                   help="seconds to keep retrying while the stack is unavailable (default 120)")
    p.set_defaults(func=run)


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders walked (sorted) for FITS-like names; hidden files skipped."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(fits_files(path))
        else:
            out.append(path)
    return out


def ingest_one(client: WispClient, path: Path, retry_for_s: float) -> dict[str, Any]:
    """One entry of the report: path, status, frame ids, and the error for a rejection."""
    entry: dict[str, Any] = {"path": str(path), "status": None, "frame_ids": []}
    if not path.is_file():
        entry.update(status="rejected", error={"code": "file.not_found", "message": f"{path}: no such file"})
        return entry
    try:
        answer = client.upload(path, retry_for_s=retry_for_s)
        entry.update(status=answer["status"], exposure_id=answer.get("exposure_id"),
                     instrument=answer.get("instrument"), frame_ids=answer.get("frame_ids", []))
    except InvalidInput as exc:
        entry.update(status="rejected", error={"code": exc.code, "message": exc.message, **exc.details})
    except WispError as exc:  # unavailable after retries, or a server-side bug: this file is not done
        entry.update(status="failed", error={"code": exc.code, "message": exc.message})
    return entry


def run(args: argparse.Namespace) -> int:
    url = gateway_url(args.gateway)
    files = expand(args.paths)
    if not files:
        print("wisp ingest: no FITS files found in the given paths", file=sys.stderr)
        return 2
    report: list[dict[str, Any]] = []
    with WispClient(url) as client:
        for i, path in enumerate(files, 1):
            entry = ingest_one(client, path, args.retry_for)
            report.append(entry)
            status = entry["status"]
            what = (f"{len(entry['frame_ids'])} frame(s)" if status in ("ingested", "duplicate")
                    else f"[{entry['error']['code']}] {entry['error']['message']}")
            print(f"[{i:>{len(str(len(files)))}}/{len(files)}] {status:<9} {path.name}: {what}",
                  file=sys.stderr, flush=True)
    counts = {s: sum(e["status"] == s for e in report) for s in ("ingested", "duplicate", "rejected", "failed")}
    print("wisp ingest: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0 if counts["rejected"] == 0 and counts["failed"] == 0 else 1
