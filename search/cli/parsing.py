"""The parser of the `archsearch` command: one subparser per module of search/cli, each a one-line error."""

from __future__ import annotations

import argparse
import importlib
import sys

from search.errors import printable


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2, no usage dump."""

    def error(self, message: str):
        print(f"{self.prog}: error: {printable(message)}", file=sys.stderr)
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):
        # Python 3.11's argparse reads `--flag=--` as the flag with no value at all (an empty list that
        # no type check sees); no flag of ours takes "--", so it is refused here.
        for arg in sys.argv[1:] if args is None else args:
            if isinstance(arg, str) and arg.startswith("--") and arg.partition("=")[2] == "--":
                self.error(f"argument {arg.partition('=')[0]}: expected a value, got '--'")
        return super().parse_known_args(args, namespace)


def build_parser(commands: tuple[str, ...]) -> Parser:
    parser = Parser(prog="archsearch", description="Search MLP shapes and hyperparameters under a parameter budget.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for name in commands:
        module = importlib.import_module(f"search.cli.{name}_cmd")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser
