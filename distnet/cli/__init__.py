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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distnet",
        description="Data-parallel training of numpy neural networks on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"distnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"distnet.cli.{name}").register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except DistnetError as err:
        print(f"distnet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distnet: interrupted", file=sys.stderr)
        return 130
