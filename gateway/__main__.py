"""``python -m gateway --port PORT``: run the HTTP gateway (settings from WISP_* variables)."""

from __future__ import annotations

import argparse

import uvicorn

from gateway.app import create_app
from wisp.config import load_settings
from wisp.logs import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    settings = load_settings()
    setup_logging("gateway", settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
