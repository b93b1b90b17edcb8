"""The error types the CLI turns into one line on stderr and an exit status, and the API raises."""

from __future__ import annotations

import signal

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
