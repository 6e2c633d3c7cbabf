"""The ``taocache`` command. Thin: each area registers its subcommands, which parse, call the library, print."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``register(subparsers)``, adding subcommands whose ``func(args)`` returns an exit code.
COMMAND_MODULES = (
    "taocache.cache.commands",
    "taocache.cache.teacache_commands",
    "taocache.cache.tune_commands",
    "taocache.world.commands",
    "taocache.bench.commands",
    "taocache.edit.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taocache", description="Output caching, editing and benchmarks for diffusers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as err:  # bad input, or a file that cannot be read or written
        print(f"taocache {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
