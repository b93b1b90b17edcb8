"""The `archsearch` command: one module per subcommand, registered here."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import warnings

from models.budget import BudgetError
from search.api import signals
from search.checks import printable
from search.errors import Interrupted, Terminated, UsageError, as_usage_error

DEBUG_ENV = "ARCHSEARCH_DEBUG"  # set to 1 to see the traceback of an unexpected error

COMMANDS = (
    "budget",
    "baseline",
    "search",
    "grid",
    "frontier",
    "worker",
    "best",
    "export",
    "report",
    "dashboard",
)


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


def build_parser() -> Parser:
    parser = Parser(prog="archsearch", description="Search MLP shapes and hyperparameters under a parameter budget.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"search.cli.{name}_cmd")
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    """Run one command; every outcome is an exit status and at most one line on stderr.

    2: bad input or an unusable environment (nothing was written); 130 and 143: Ctrl-C and SIGTERM
    (the running trials were marked failed, the study resumes); 1: a bug, said in one line.
    `exiting`: the process ends after this command (the console script), so stops are ignored after it."""
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    for stream in (sys.stdout, sys.stderr):  # names from non-UTF-8 argv must print, not raise
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    with signals.handled(then_ignore=exiting):
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args) or 0
    except (UsageError, BudgetError) as error:
        print(f"archsearch: error: {printable(str(as_usage_error(error)))}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"archsearch: {printable(str(error))}", file=sys.stderr)
        return error.status
    except Terminated:
        print("archsearch: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("archsearch: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        print(f"archsearch: error: {printable(str(as_usage_error(error)))}", file=sys.stderr)
        return 2
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        reason = printable(str(error).strip().splitlines()[0]) if str(error).strip() else ""
        print(
            f"archsearch: internal error: {type(error).__name__}: {reason} (a bug: please report it; "
            f"{DEBUG_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def run() -> None:
    sys.exit(main(exiting=True))
