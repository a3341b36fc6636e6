"""The ``mtlbench`` command line: one subcommand per user job."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .norms import regulariser_names


def _list(args: argparse.Namespace) -> int:
    print("regularisers: " + ", ".join(regulariser_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlbench", description="Tensor-trace-norm deep multi-task learning benchmark."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="list what the suite provides")
    listing.set_defaults(handler=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
