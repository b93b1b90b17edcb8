"""The error types the CLI turns into one line on stderr and an exit status, and the API raises."""

from __future__ import annotations

import contextvars
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from models.budget import BudgetError


class UsageError(Exception):
    """Bad input or an unusable environment, with a message that says what to do (exit status 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, as schedulers (Slurm, Kubernetes, systemd) stop a job: handled exactly like Ctrl-C.

    A KeyboardInterrupt, so that Optuna marks the running trial failed on its way out."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the message says how to resume; the exit status is 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.status = 128 + signum


def as_usage_error(error: BaseException) -> UsageError | None:
    """Bad input found by a lower layer (a budget no net meets, a path that cannot be used) as the one
    UsageError line the CLI prints and the API raises; None for anything else (a bug)."""
    if isinstance(error, UsageError):
        return error
    if isinstance(error, BudgetError):
        return UsageError(str(error))
    if isinstance(error, OSError) and not isinstance(error, BrokenPipeError):
        where = f" {error.filename}" if error.filename else ""
        return UsageError(f"cannot use{where}: {error.strerror or error}")
    return None


def printable(text: str) -> str:
    """`text` with each character that would break or garble a one-line message escaped (newline, NUL,
    lone surrogates); everything else, including letters of any script, as it is."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


# Whether messages are read on the command line (set by search/cli for the length of a command) or from
# Python (the default): a notebook user who wrote `budget=810` should read `budget=`, not `--budget`.
_FOR_THE_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("archsearch_messages_for_the_cli", default=False)


@contextmanager
def worded_for_the_cli() -> Iterator[None]:
    """Messages made inside the block name the command line's flags (`--max-depth`); outside it, the API's
    keyword arguments (`max_depth=`)."""
    token = _FOR_THE_CLI.set(True)
    try:
        yield
    finally:
        _FOR_THE_CLI.reset(token)


def worded(cli: str, api: str) -> str:
    """The words of a message as its reader gave the setting: `cli` on the command line, `api` from Python."""
    return cli if _FOR_THE_CLI.get() else api


def argument(name: str, value: str | None = None) -> str:
    """A setting as a message names it: the flag (`--max-depth`) on the command line, the keyword argument
    (`max_depth=`) from Python; with `value`, the value as the message shows it (`--host 'x'`, `host='x'`).
    `name` is the keyword's, as the API and the option tables spell it."""
    flag = f"--{name.replace('_', '-')}"
    if value is None:
        return worded(flag, f"{name}=")
    return worded(f"{flag} {value}", f"{name}={value}")
