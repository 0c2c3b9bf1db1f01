"""The ``fastsmtp`` command line: ``fastsmtp <subcommand> ...``.

Each subcommand is two functions: ``add_<name>_parser(subparsers)`` declares its options
and ``cmd_<name>(args) -> int`` runs it; :data:`SUBCOMMANDS` lists the ``add_*`` functions,
so a new subcommand is one more module (``serve``, ``demo``, ``campaign.args``) and one
more list entry.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .campaign.args import add_send_parser
from .demo import add_demo_parser
from .info import add_info_parser
from .serve import add_serve_parser
from .worker import add_worker_parser

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

log = logging.getLogger("fastsmtp.cli")


#: Every subcommand's parser declaration, in help order.
SUBCOMMANDS: list[Callable[[Any], None]] = [
    add_demo_parser, add_serve_parser, add_send_parser, add_worker_parser, add_info_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of :data:`SUBCOMMANDS`."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fastsmtp", description="fastsmtp: fast asyncio SMTP tools")
    parser.add_argument("--version", action="version", version=f"fastsmtp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fastsmtp`` and ``python -m fastsmtp``."""
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (OSError, ValueError) as exc:
        print(f"fastsmtp {args.command}: {exc}", file=sys.stderr)
        return 1
