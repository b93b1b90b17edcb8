"""The `archsearch` command: one module per subcommand, registered here.

This module imports only the standard library when it loads: the console script (`run`) and a spawned
worker's `python -m search` hold Ctrl-C and SIGTERM (`hold_stops`) before anything heavy is imported, so a
stop during the start-up is one line (a spawned worker's, none: its parent says how to resume) and its exit
status, never a traceback.
"""

from __future__ import annotations

import signal
import sys

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
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: list[int] = []  # the first stop that arrived before the command's own handling began


def hold_stops() -> None:
    """From now until the command's own handling begins, a stop is noted, not raised: raised in the middle
    of an import it would print a traceback; the command raises it as soon as its handling begins."""
    for signum in HELD_SIGNALS:
        signal.signal(signum, _hold)


def _hold(signum: int, frame: object) -> None:
    if not _held:
        _held.append(signum)


def __getattr__(name: str) -> type:
    if name == "Parser":  # for the benches' own parsers; argparse loads only when asked for
        from search.cli.parsing import Parser

        return Parser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser():
    from search.cli.parsing import build_parser as build

    return build(COMMANDS)


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    """Run one command; every outcome is an exit status and at most one line on stderr.

    2: bad input or an unusable environment (nothing was written); 130 and 143: Ctrl-C and SIGTERM
    (the running trials were marked failed, the study resumes); 1: a bug, said in one line.
    `exiting`: the process ends after this command (the console script), so stops are ignored after it."""
    import warnings

    from search.api import signals

    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    for stream in (sys.stdout, sys.stderr):  # names from non-UTF-8 argv must print, not raise
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    with signals.handled(then_ignore=exiting):
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    import os

    from models.budget import BudgetError
    from search.api import signals
    from search.api.running import is_spawned
    from search.errors import Interrupted, Terminated, UsageError, as_usage_error, printable, worded_for_the_cli

    try:
        with worded_for_the_cli():  # its messages name the flags the user typed, not the API's arguments
            if _held:
                signals.raise_held(_held.pop())
            args = build_parser().parse_args(argv)
            return args.handler(args) or 0
    except (UsageError, BudgetError) as error:
        print(f"archsearch: error: {printable(str(as_usage_error(error)))}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"archsearch: {printable(str(error))}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt as stop:  # Terminated is SIGTERM's
        terminated = isinstance(stop, Terminated)
        if not is_spawned():  # a spawned worker's parent prints the one line that says how to resume
            print(f"archsearch: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
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
    hold_stops()  # first, before anything heavy loads
    sys.exit(main(exiting=True))
