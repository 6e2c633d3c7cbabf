"""The ``taocache`` command. Thin: each module of this package registers its subcommands, which parse the
command line, call the library and print."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``register(subparsers)``, adding subcommands whose ``func(args)`` returns an exit code.
COMMAND_MODULES = (
    "taocache.cli.run",
    "taocache.cli.teacache",
    "taocache.cli.tune",
    "taocache.cli.world",
    "taocache.cli.bench",
    "taocache.cli.edit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taocache", description="Output caching, editing and benchmarks for diffusers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, or a file that cannot be read or written
        print(f"taocache {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
