"""The `distnet` command: one sub-module per sub-command, each thin over the library.

Each sub-module defines `register(subparsers)`, which adds its parser and sets
`run=<function(args) -> int>`. Library imports happen inside `run`, so `distnet --help`
never pays for importing ray.
"""

import argparse
import importlib
import sys

from distnet import __version__
from distnet.errors import DistnetError

COMMANDS = ("gradcheck", "data", "train", "eval", "predict", "submit")


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other bad input (sub-commands inherit this)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="distnet",
        description="Data-parallel training of numpy neural networks on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"distnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"distnet.cli.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    """Run `distnet ARGV...` and return its exit status (--help and usage errors too)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:
        return done.code or 0
    try:
        return args.run(args) or 0
    except DistnetError as err:
        print(f"distnet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distnet: interrupted", file=sys.stderr)
        return 130
