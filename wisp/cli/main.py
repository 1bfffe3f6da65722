"""Entry point of the ``wisp`` command: one sub-command per module, each with ``register``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wisp import __version__
from wisp.errors import WispError

_COMMANDS = (
    "wisp.cli.up",
    "wisp.cli.sim",
    "wisp.cli.ingest",
    "wisp.cli.frames",
    "wisp.cli.lineage",
    "wisp.cli.refcat",
    "wisp.cli.sources",
    "wisp.cli.why",
    "wisp.cli.invalidate",
    "wisp.cli.admin",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every sub-command registered."""
    import importlib

    parser = argparse.ArgumentParser(prog="wisp", description="Wisp: wide-field imaging survey pipeline")
    parser.add_argument("--version", action="version", version=f"wisp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; user errors print one line and exit 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except WispError as exc:
        print(f"wisp {args.command}: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
