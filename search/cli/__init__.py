"""The `archsearch` command: one module per subcommand, registered here."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from models.budget import BudgetError
from search.errors import Interrupted, UsageError

COMMANDS = ("budget", "baseline", "search", "grid", "worker", "best", "export", "report", "dashboard")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2, no usage dump."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> Parser:
    parser = Parser(prog="archsearch", description="Search MLP shapes and hyperparameters under a parameter budget.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"search.cli.{name}_cmd")
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (UsageError, BudgetError) as error:
        print(f"archsearch: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"archsearch: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run() -> None:
    sys.exit(main())
