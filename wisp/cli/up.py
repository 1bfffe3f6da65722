"""``wisp up``: the whole local stack in the foreground; Ctrl-C stops all of it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from wisp.logs import setup_logging
from wisp.stack import LocalStack


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "up", help="start the local stack (NATS, SQLite, filesystem store, services, gateway)")
    p.add_argument("--data-dir", type=Path, default=Path("./wisp-data"),
                   help="where the database, objects, NATS state and logs live (default ./wisp-data)")
    p.add_argument("--port", type=int, default=8080, help="gateway HTTP port (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--watch", type=Path, default=None,
                   help="folder watched for new raw files (default DATA_DIR/inbox)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("wisp-up", as_json=False)
    log = logging.getLogger("wisp.up")
    stack = LocalStack(args.data_dir, args.port, host=args.host, watch_dir=args.watch)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stack.request_stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        stack.wait_ready()
        print(f"Wisp is up: gateway {stack.gateway_url}  (API docs {stack.gateway_url}/docs)", flush=True)
        print(f"  data in {stack.data_dir}; drop raw files into {stack.watch_dir}; Ctrl-C stops", flush=True)
        supervisor = threading.Thread(target=stack.supervise, name="supervisor", daemon=True)
        supervisor.start()
        supervisor.join()
    finally:
        stack.stop()
        print("Wisp stopped.", file=sys.stderr, flush=True)
    return 0
